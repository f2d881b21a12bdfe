"""Live services for the end-to-end tests: a fresh PostgreSQL database, a Redis URL, a real
MLflow tracking server, a Prefect test API, and `bentoml serve` started as a subprocess.

Every process here is started in its own session and stopped by its process group, so a
failing test leaves nothing running. PostgreSQL and Redis come from
``RECOLAB_TEST_POSTGRES_URL`` and ``RECOLAB_TEST_REDIS_URL``: unset, the tests skip locally
and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from recolab.config import PROJECT_ROOT
from tests.conftest import fresh_postgres_database, require_service

SECRET = "e2e-platform-secret-0123456789-abcdefghijklmnop"  # >= 32 bytes: RECOLAB_ENV=test
MLFLOW_STARTUP_TIMEOUT_S = 120
SERVICE_STARTUP_TIMEOUT_S = 240  # bentoml, mlflow and torch imports on two busy cores
CHAMPION_POLL_INTERVAL_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def start_process(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `command` in a new session (its own process group), output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group this test started (server and its workers), SIGKILL if it lingers."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # workers left by a leader that exited
        os.killpg(process.pid, signal.SIGKILL)


def wait_for(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
    ok: tuple[int, ...] = (200,),
) -> None:
    """Poll `url` until it answers with one of `ok`; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args!r} exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=5).status_code in ok:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not up after {timeout_s}s:\n{_tail(log)}")


@dataclass(frozen=True)
class Stack:
    """Where the live platform's parts are, and the environment RecoLab processes get."""

    root: Path
    database_url: str
    redis_url: str
    tracking_uri: str
    artifacts: Path
    config_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "RECOLAB_ENV": "test",
            "RECOLAB_JWT_SECRET": SECRET,
            "RECOLAB_DATABASE_URL": self.database_url,
            "RECOLAB_REDIS_URL": self.redis_url,
            "RECOLAB_DATA_DIR": str(self.root / "data"),
            "RECOLAB_CONFIG_DIR": str(self.config_dir),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "BENTOML_HOME": str(self.root / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "GX_ANALYTICS_ENABLED": "false",
        }


@pytest.fixture(scope="module")
def e2e_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    server = require_service("RECOLAB_TEST_POSTGRES_URL")
    with fresh_postgres_database(server, "recolab_e2e") as url:
        yield url


@pytest.fixture(scope="module")
def e2e_redis_url() -> str:
    return require_service("RECOLAB_TEST_REDIS_URL")


@dataclass
class MlflowServer:
    """A live `mlflow server`: SQLite backend, artifacts proxied into a temp folder."""

    url: str
    artifacts: Path
    process: subprocess.Popen[bytes]
    log: Path

    def wait(self) -> None:
        wait_for(f"{self.url}/health", self.process, self.log, MLFLOW_STARTUP_TIMEOUT_S)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Started, not yet waited for (`stack` waits), so it boots while Prefect's API does."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1"}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(var, None)
    log = root / "mlflow.log"
    process = start_process(command, env, log)
    try:
        yield MlflowServer(f"http://127.0.0.1:{port}", root / "artifacts", process, log)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    e2e_postgres_url: str,
    e2e_redis_url: str,
    mlflow_server: MlflowServer,
) -> Iterator[Stack]:
    """The platform's configuration, also set in this process's environment (the flows
    read `Settings()` from it); the service polls the champion alias every second."""
    root = tmp_path_factory.mktemp("platform")
    config_dir = root / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", config_dir)
    serving = config_dir / "serving.yaml"
    data: dict[str, Any] = yaml.safe_load(serving.read_text()) or {}
    data["champion_poll_interval_s"] = CHAMPION_POLL_INTERVAL_S
    serving.write_text(yaml.safe_dump(data))
    mlflow_server.wait()
    result = Stack(
        root,
        e2e_postgres_url,
        e2e_redis_url,
        mlflow_server.url,
        mlflow_server.artifacts,
        config_dir,
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in result.env.items():
            mp.setenv(name, value)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield result


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API for the flows run in this process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@dataclass
class LiveService:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None


def start_service(stack: Stack, ready: bool = True) -> Iterator[LiveService]:
    """`bentoml serve serving.service:RecoLab` on a free port with the stack's environment;
    waits until ready (a champion loaded) unless `ready` is False."""
    port = free_port()
    env = {**os.environ, **stack.env}
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:RecoLab"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(PROJECT_ROOT)]
    log = stack.root / f"serve-{port}.log"
    process = start_process(command, env, log)
    service = LiveService(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for(
            f"{service.url}/readyz" if ready else f"{service.url}/status",
            process,
            log,
            SERVICE_STARTUP_TIMEOUT_S,
            ok=(200,) if ready else (200, 503),
        )
        yield service
    finally:
        stop_process(process)
