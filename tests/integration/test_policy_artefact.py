"""Every training run carries the served policy's per-tier table as an MLflow artefact."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recolab.bootstrap import bootstrap
from recolab.config import Settings

SMALL_DEMO = [
    "pipeline.demo.n_users=60",
    "pipeline.demo.n_movies=150",
    "pipeline.demo.n_ratings=3000",
    "max_epochs=1",
]

pytestmark = pytest.mark.slow


def test_training_run_logs_the_policy_table(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(
        data_dir=tmp_path / "data", database_url=sqlite_url, mlflow_tracking_uri=tracking
    )
    platform = bootstrap(settings, overrides=SMALL_DEMO)
    try:
        platform.ingest("demo", None)
        platform.build_features("demo")
        run = platform.train("B")
        folder = run.artefacts["policy"]
        table = json.loads((folder / "policy_table.json").read_text())
        assert table["protocol"] == "B"
        assert "sample" in table["users"] or "all" in table["users"]
        served = [t for t in table["by_tier"].values() if t["n_users"]]
        assert served and all(
            {"policy", "model", "popularity", "content_based"} <= set(t["systems"]) for t in served
        )
        assert all("verdict" in t for t in served)
        with caplog.at_level(logging.INFO, logger="recolab.progress"):
            run_id, version = platform.model_registry().log_and_register(run)
    finally:
        platform.close()
    client = mlflow.MlflowClient(tracking_uri=tracking)
    logged = {a.path for a in client.list_artifacts(run_id, "policy")}
    assert {"policy/policy_table.json", "policy/policy_table.md"} <= logged
    # the registration's progress: the run logged, then the model saved and registered
    said = [r.getMessage() for r in caplog.records if r.name == "recolab.progress.registry"]
    assert said[0].startswith("register: logging the run to MLflow"), said
    assert said[1].startswith(f"register: run {run_id} logged in"), said
    assert said[-1].startswith(f"register: version {version} of recolab-neumf in"), said
