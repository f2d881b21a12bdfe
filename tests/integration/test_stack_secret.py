"""`make stack` runs with a JWT secret of its own, not the development default.

`scripts/stack.sh` creates a random secret once under its folder (`data/stack/jwt_secret`,
mode 0600, not in git), reuses it on every start and exports it, with the stack's URLs, to
the processes it starts and to a shell (`eval "$(scripts/stack.sh env)"`): `recolab token`
there signs with it, without the default-secret warning, and the service's settings check
tokens against it, also in production mode, which still refuses the default.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from recolab.adapters.runtime.security import MIN_SECRET_BYTES, serving_secret, verify
from recolab.application.access import AuthError
from recolab.config import DEFAULT_JWT_SECRET, PROJECT_ROOT, ConfigError, Settings

SCRIPT = PROJECT_ROOT / "scripts" / "stack.sh"
BIN = Path(sys.executable).parent
DEFAULT_WARNING = "default JWT secret"


def stack_env(stack_dir: Path) -> dict[str, str]:
    """What `scripts/stack.sh env` exports, as a mapping (the script's own parsing: bash)."""
    run = subprocess.run(
        ["bash", str(SCRIPT), "env"],
        env={**os.environ, "STACK_DIR": str(stack_dir), "BIN": str(BIN)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    exported: dict[str, str] = {}
    for line in run.stdout.splitlines():
        keyword, assignment = shlex.split(line)
        assert keyword == "export", line
        name, value = assignment.split("=", 1)
        exported[name] = value
    return exported


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RecoLab setting of the test process leaks into the stack's."""
    for name in list(os.environ):
        if name.startswith("RECOLAB_"):
            monkeypatch.delenv(name)


def test_the_secret_is_created_once_private_random_and_reused(
    tmp_path: Path, clean_env: None
) -> None:
    stack = tmp_path / "stack"
    first = stack_env(stack)
    secret_file = stack / "jwt_secret"
    secret = secret_file.read_text()
    assert first["RECOLAB_JWT_SECRET"] == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret.encode()) >= MIN_SECRET_BYTES and secret != DEFAULT_JWT_SECRET
    assert [p.name for p in stack.iterdir()] == ["jwt_secret"]  # no temporary file left
    assert first["RECOLAB_DATABASE_URL"].endswith("/recolab") and "MLFLOW_TRACKING_URI" in first

    before = secret_file.stat()
    assert stack_env(stack)["RECOLAB_JWT_SECRET"] == secret  # reused, not rewritten
    assert secret_file.stat().st_ino == before.st_ino
    assert secret_file.stat().st_mtime_ns == before.st_mtime_ns

    other = stack_env(tmp_path / "other")["RECOLAB_JWT_SECRET"]
    assert other != secret  # random per stack, not derived from anything


def test_a_loosened_file_is_made_private_again(tmp_path: Path, clean_env: None) -> None:
    stack = tmp_path / "stack"
    secret = stack_env(stack)["RECOLAB_JWT_SECRET"]
    (stack / "jwt_secret").chmod(0o644)
    assert stack_env(stack)["RECOLAB_JWT_SECRET"] == secret
    assert stat.S_IMODE((stack / "jwt_secret").stat().st_mode) == 0o600


def test_a_short_secret_file_is_an_error_that_names_it(tmp_path: Path, clean_env: None) -> None:
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "jwt_secret").write_text("too-short")
    run = subprocess.run(
        ["bash", str(SCRIPT), "env"],
        env={**os.environ, "STACK_DIR": str(stack)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0 and "export" not in run.stdout
    assert str(stack / "jwt_secret") in run.stderr and "at least 32" in run.stderr


def test_the_data_folder_is_not_in_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "data/stack/jwt_secret"], cwd=PROJECT_ROOT, check=False
    )
    assert ignored.returncode == 0


def test_recolab_token_signs_with_the_stack_secret_without_a_warning(
    tmp_path: Path, clean_env: None
) -> None:
    exported = stack_env(tmp_path / "stack")
    secret = exported["RECOLAB_JWT_SECRET"]
    run = subprocess.run(  # in a folder without a .env: only the stack's settings count
        [str(BIN / "recolab"), "token", "1"],
        env={**os.environ, **exported},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert DEFAULT_WARNING not in run.stderr
    token = run.stdout.strip()
    assert verify(token, secret).subject == "1"
    with pytest.raises(AuthError, match="invalid token"):
        verify(token, DEFAULT_JWT_SECRET)


def test_the_service_settings_take_the_stack_secret_also_in_production(
    tmp_path: Path,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What `recolab serve` reads: the stack's environment gives it the stack's secret."""
    exported = stack_env(tmp_path / "stack")
    monkeypatch.chdir(tmp_path)
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    assert serving_secret(Settings()) == exported["RECOLAB_JWT_SECRET"]
    assert DEFAULT_WARNING not in caplog.text
    assert serving_secret(Settings(env="prod")) == exported["RECOLAB_JWT_SECRET"]

    monkeypatch.delenv("RECOLAB_JWT_SECRET")  # production still refuses the default
    with pytest.raises(ConfigError, match="built-in default"):
        serving_secret(Settings(env="prod"))
