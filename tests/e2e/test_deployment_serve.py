"""A real Prefect server, `recolab deploy` serving the flows, runs triggered as the UI does.

`prefect server start` (SQLite under a temp PREFECT_HOME) on a free port; `recolab deploy`
against it; then `run_deployment` (what the UI's "Run" button calls: create a flow run
from the deployment, with parameters) for `ingest` and `features` on a small demo dataset
in a temp SQLite database, each waited on until COMPLETED. Processes are stopped after.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVER_TIMEOUT_S = 180  # `prefect server start` takes 20-60 s on two busy cores
RUN_TIMEOUT_S = 240
SMALL_DEMO = [
    "pipeline.demo.n_users=60",
    "pipeline.demo.n_movies=120",
    "pipeline.demo.n_ratings=3000",
]
PREFECT_VARS = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_DATABASE_CONNECTION_URL")
RECOLAB_VARS = ("RECOLAB_REDIS_URL", "MLFLOW_TRACKING_URI", "RECOLAB_NIGHTLY_RETRAIN")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # a session of its own, so stopping it stops its children (uvicorn, flow runs) too
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait(what: str, ready: Any, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"{what} not ready after {SERVER_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(API URL, RecoLab database URL) of a Prefect server with the deployments served."""
    root = tmp_path_factory.mktemp("deployments")
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    db_url = f"sqlite:///{root / 'recolab.db'}"
    base = {k: v for k, v in os.environ.items() if k not in PREFECT_VARS + RECOLAB_VARS}
    base.update(
        PREFECT_HOME=str(root / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    bin_dir = Path(sys.executable).parent
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    server_log = root / "server.log"
    server = _start(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
        base,
        server_log,
    )
    deploy: subprocess.Popen[bytes] | None = None
    try:
        _wait(
            "prefect server",
            lambda: httpx.get(f"{api_url}/health", timeout=2).status_code == 200,
            server,
            server_log,
        )
        deploy_log = root / "deploy.log"
        deploy = _start(
            [str(bin_dir / "recolab"), "deploy"],
            {
                **base,
                "PREFECT_API_URL": api_url,
                "RECOLAB_ENV": "dev",
                "RECOLAB_DATA_DIR": str(root / "data"),
                "RECOLAB_DATABASE_URL": db_url,
            },
            deploy_log,
        )
        flows = ("ingest", "features", "train", "pipeline", "tune", "monitor", "online-report")
        names = [f"{flow}/recolab" for flow in flows]
        _wait(
            "recolab deploy",
            lambda: all(
                httpx.get(f"{api_url}/deployments/name/{n}", timeout=2).status_code == 200
                for n in names
            ),
            deploy,
            deploy_log,
        )
        yield api_url, db_url
    finally:
        if deploy is not None:
            _stop(deploy)
        _stop(server)


def _run(api_url: str, name: str, parameters: dict[str, Any]) -> Any:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return run_deployment(name, parameters=parameters, timeout=RUN_TIMEOUT_S)


def test_triggered_deployments_run_to_completion(served: tuple[str, str]) -> None:
    api_url, db_url = served
    ingested = _run(api_url, "ingest/recolab", {"dataset": "demo", "overrides": SMALL_DEMO})
    assert ingested.state.is_completed(), ingested.state
    assert ingested.parameters["overrides"] == SMALL_DEMO  # the UI's parameters reached it
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(s.ratings)).scalar_one() == 3000
    finally:
        engine.dispose()
    built = _run(api_url, "features/recolab", {})
    assert built.state.is_completed(), built.state


def test_nightly_schedule_is_registered_and_off_in_dev(served: tuple[str, str]) -> None:
    api_url, _ = served
    deployment = httpx.get(f"{api_url}/deployments/name/pipeline/recolab", timeout=10).json()
    (schedule,) = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * *"
    assert schedule["active"] is False
    assert schedule["parameters"] == {"skip_ingest": True, "use_tuned": True}


def test_the_monitor_runs_hourly_and_its_event_retrains(served: tuple[str, str]) -> None:
    api_url, _ = served
    monitor = httpx.get(f"{api_url}/deployments/name/monitor/recolab", timeout=10).json()
    (schedule,) = monitor["schedules"]
    assert schedule["schedule"]["cron"] == "0 * * * *" and schedule["active"] is False
    pipeline = httpx.get(f"{api_url}/deployments/name/pipeline/recolab", timeout=10).json()
    related = f"{api_url}/automations/related-to/prefect.deployment.{pipeline['id']}"
    (automation,) = httpx.get(related, timeout=10).json()
    assert automation["enabled"]
    assert automation["trigger"]["expect"] == ["recolab.retrain.requested"]
    assert automation["trigger"]["match"] == {"prefect.resource.id": "recolab.model.recolab-neumf"}
    (action,) = automation["actions"]
    assert action["type"] == "run-deployment" and action["deployment_id"] == pipeline["id"]
    assert action["parameters"]["skip_ingest"] is True and action["parameters"]["use_tuned"]
