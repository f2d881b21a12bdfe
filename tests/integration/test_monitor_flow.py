"""The `monitor` flow under a Prefect test server, on a temp database, feature store and
MLflow store: a champion registered on a snapshot, ratings sent after it that drift.

It emits one `recolab.retrain.requested` event and records one request however often it
runs on the same state; with the `pipeline` deployment's trigger registered, the event runs
that deployment with the monitor's parameters and the champion's dataset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from sqlalchemy import insert, select

from recolab.config import Settings
from tests.integration.workspace import demo_snapshot, temp_workspace

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
DATASET = "mini"  # the champion's snapshot's dataset: the retrain's, not the deployment's demo
MONITOR = ["monitor.min_recent_ratings=50", "monitor.new_ratings=100000"]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Demo data, a snapshot of it, and a champion registered on that snapshot."""
    temp_workspace(tmp_path, monkeypatch, MONITOR, RECOLAB_MODEL_NAME="monitored")
    settings, snapshot_id = demo_snapshot(
        tmp_path, DATASET, n_users=80, n_movies=120, n_ratings=3000, seed=3
    )
    register_champion(settings, snapshot_id)
    return settings


def register_champion(settings: Settings, snapshot_id: str) -> str:
    """A model version whose run names its snapshot as training does (no model needed)."""
    uri = settings.resolved_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name("monitor-test")
    experiment = (
        found.experiment_id
        if found
        else client.create_experiment(
            "monitor-test", artifact_location=(settings.data_dir / "ml").resolve().as_uri()
        )
    )
    run = client.create_run(experiment, tags={"snapshot": snapshot_id, "dataset": DATASET})
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{settings.model_name}'"):
        client.create_registered_model(settings.model_name)
    version = client.create_model_version(
        settings.model_name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(settings.model_name, "champion", version.version)
    return str(version.version)


def send_harsh_ratings(settings: Settings, n: int = 200) -> None:
    """`n` one-star ratings of known users and movies, stamped now: the ratings drifted."""
    from recolab.adapters.sql import schema as s
    from recolab.bootstrap import bootstrap

    platform = bootstrap(settings)
    with platform.engine.begin() as conn:
        rated = set(conn.execute(select(s.ratings.c.user_id, s.ratings.c.movie_id)).all())
        users = [u for (u,) in conn.execute(select(s.users.c.id))]
        movies = [m for (m,) in conn.execute(select(s.movies.c.id))]
        rng = np.random.default_rng(0)
        fresh: set[tuple[int, int]] = set()
        while len(fresh) < n:
            pair = (int(rng.choice(users)), int(rng.choice(movies)))
            if pair not in rated:
                fresh.add(pair)
        now = int(time.time())
        conn.execute(
            insert(s.ratings),
            [{"user_id": u, "movie_id": m, "score": 1.0, "timestamp": now} for u, m in fresh],
        )
    platform.close()


def requests(settings: Settings) -> list[Any]:
    from recolab.adapters.sql import schema as s
    from recolab.bootstrap import bootstrap

    platform = bootstrap(settings)
    with platform.engine.connect() as conn:
        rows = conn.execute(select(s.retrain_requests)).all()
    platform.close()
    return rows


@pytest.fixture
def captured_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Prefect's asserting events client (prefect.testing.fixtures.asserting_events_worker):
    every event a flow emits is kept for inspection."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    yield worker
    worker.drain()


def retrain_events(worker: Any) -> list[Any]:
    worker.wait_until_empty()
    return [e for e in worker._client.events if e.event == "recolab.retrain.requested"]


def test_no_champion_reports_nothing_to_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_events: Any
) -> None:
    from flows.monitor import monitor

    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECOLAB_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite'}")
    monkeypatch.setenv("RECOLAB_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty-mlflow.db'}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = monitor()
    assert result["status"] == "no_champion" and not result["triggered"]
    assert retrain_events(captured_events) == []


def test_drift_emits_one_retrain_event_and_records_one_request(
    settings: Settings, captured_events: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.monitor import monitor

    send_harsh_ratings(settings)
    dry = monitor(dry_run=True)
    assert dry["retrain"] and not dry["triggered"] and requests(settings) == []
    assert retrain_events(captured_events) == []

    first = monitor()
    assert first["status"] == "checked" and first["triggered"] and first["new_ratings"] == 200
    assert any(r.startswith("rating PSI") for r in first["reasons"])
    (row,) = requests(settings)
    assert row.id == first["request_id"] and row.model_version == "1"
    assert row.flow_run_id  # the monitor run that asked
    (event,) = retrain_events(captured_events)
    assert event.resource.id == "recolab.model.monitored"
    assert str(event.id) == first["trigger_id"]
    assert event.payload["dataset"] == DATASET and event.payload["model_version"] == "1"
    assert event.payload["request_id"] == row.id and "rating PSI" in event.payload["reason"]
    assert event.payload["parameters"] == {"skip_ingest": True, "use_tuned": True}

    second = monitor()
    assert second["retrain"] is False and second["already_requested"] == row.id
    assert "already asked" in second["message"]
    assert len(requests(settings)) == 1 and len(retrain_events(captured_events)) == 1

    with get_client(sync_client=True) as client:
        (artefact,) = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-monitor"]))
        )
    text = artefact.data
    assert "| rating PSI |" in text and "**over**" in text and "already asked" in text

    # a new champion serves: the same drift may ask again, once
    register_champion(settings, first["snapshot_id"])
    third = monitor()
    assert third["triggered"] and len(requests(settings)) == 2
    assert len(retrain_events(captured_events)) == 2


def test_the_event_runs_the_pipeline_deployment_with_the_tuned_parameters(
    settings: Settings,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.deploy import build_deployments
    from flows.monitor import monitor

    (pipeline,) = [d for d in build_deployments(settings) if d.flow_name == "pipeline"]
    deployment_id = pipeline.apply()
    send_harsh_ratings(settings)
    assert monitor()["triggered"]

    deadline = time.monotonic() + 90
    found: list[Any] = []
    with get_client(sync_client=True) as client:
        while not found and time.monotonic() < deadline:
            time.sleep(1)
            found = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
    assert len(found) == 1, "the trigger did not run the pipeline deployment"
    assert found[0].parameters == {
        "dataset": DATASET,
        "protocol": "B",
        "skip_ingest": True,
        "use_tuned": True,
    }
