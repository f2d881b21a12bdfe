"""SIGTERM to a `recolab` command leaves no process behind.

Each command starts in a session (process group) of its own; once it is up (the service
answering, the pipeline's temporary Prefect API answering), SIGTERM goes to the command's
pid only, as a supervisor or `kill` sends it, and within a bounded time no process of
that group may remain: not the BentoML server and its workers, not Prefect's uvicorn.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recolab.config import PROJECT_ROOT
from tests.e2e.conftest import free_port, wait_for
from tests.integration.test_service_inprocess import make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STARTUP_TIMEOUT_S = 240  # bentoml, mlflow, prefect and torch imports on two busy cores
GONE_WITHIN_S = 30
PREFECT_APP = "prefect.server.api.server:create_app"


def group_members(pgid: int) -> dict[int, str]:
    """The live (not zombie) processes of group `pgid`: pid -> command line (Linux /proc)."""
    members: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
            if int(pgrp) != pgid or state in ("Z", "X"):
                continue
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # gone meanwhile
        members[int(entry.name)] = argv.strip()
    return members


@contextlib.contextmanager
def command_in_own_group(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m recolab.cli ARGS` as the leader of a new session; whatever is left of the
    group is killed afterwards, so a failing test leaves nothing running either."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "recolab.cli", *args],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def assert_group_ends_after_sigterm(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM to the command's pid only; then the whole group must be gone in time."""
    pgid = process.pid
    assert group_members(pgid), "the command is not running"
    os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + GONE_WITHIN_S
    left = group_members(pgid)
    while left and time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)  # reap the leader: a zombie is not left behind
        left = group_members(pgid)
    tail = log.read_text(errors="replace")[-3000:]
    assert not left, f"still running {GONE_WITHIN_S}s after SIGTERM: {left}\n{tail}"


def test_sigterm_to_recolab_serve_stops_the_server_and_its_workers(tmp_path: Path) -> None:
    env = {**os.environ, **make_workspace(tmp_path, champion_poll_interval_s=3600)}
    env["BENTOML_HOME"] = str(tmp_path / "bentoml")
    env.pop("RECOLAB_REDIS_URL", None)
    port = free_port()
    log = tmp_path / "serve.log"
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    with command_in_own_group(args, env, log) as process:
        # /status answers once a worker has built the service (/livez answers earlier)
        wait_for(f"http://127.0.0.1:{port}/status", process, log, STARTUP_TIMEOUT_S, (200, 503))
        assert_group_ends_after_sigterm(process, log)


def test_sigterm_to_recolab_pipeline_stops_prefects_temporary_server(tmp_path: Path) -> None:
    env = {**os.environ}
    env.update(
        RECOLAB_ENV="test",
        RECOLAB_DATABASE_URL=f"sqlite:///{tmp_path / 'recolab.db'}",
        RECOLAB_DATA_DIR=str(tmp_path / "data"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        GX_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_TELEMETRY="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",  # busy cores
    )
    for var in ("PREFECT_API_URL", "RECOLAB_REDIS_URL", "RECOLAB_CONFIG_DIR"):
        env.pop(var, None)
    log = tmp_path / "pipeline.log"
    with command_in_own_group(["pipeline", "--dataset", "demo"], env, log) as process:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not prefect_server_answers(process.pid):
            if process.poll() is not None:
                pytest.fail(f"pipeline exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no Prefect server after {STARTUP_TIMEOUT_S}s:\n{log.read_text()}")
            time.sleep(0.5)
        # and the flow run under way (Prefect's own SIGTERM bridge is armed then)
        while "flow run" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no flow run started:\n{log.read_text()}")
            time.sleep(0.2)
        assert_group_ends_after_sigterm(process, log)


def prefect_server_answers(pgid: int) -> bool:
    """Whether the group's uvicorn running Prefect's API answers /api/health."""
    for argv in group_members(pgid).values():
        if PREFECT_APP in argv and "--port" in argv:
            parts = argv.split()
            port = parts[parts.index("--port") + 1]
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).is_success
    return False
