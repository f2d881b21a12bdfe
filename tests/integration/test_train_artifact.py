"""The `train` flow's Prefect artifact names each metric as MLflow does (`ndcg_at_10`, not
`ndcg@10`): one name per metric, whichever page a user reads it on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.test_ingest_artifact import tables

SMALL_DEMO = [
    "pipeline.demo.n_users=60",
    "pipeline.demo.n_movies=150",
    "pipeline.demo.n_ratings=3000",
]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_train_artifact_uses_the_mlflow_metric_names(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from prefect import get_client

    from flows.pipeline import pipeline

    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECOLAB_DATABASE_URL", sqlite_url)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    result = pipeline(dataset="demo", max_epochs=1, overrides=SMALL_DEMO)

    async def read() -> str | None:
        async with get_client() as client:
            found = await client.read_latest_artifacts()
            return next((str(a.data) for a in found if a.key == "train-demo"), None)

    markdown = asyncio.run(read())
    assert markdown is not None
    table = next(t for t in tables(markdown) if t[0] == ["metric", "value"])
    shown = {row[0] for row in table[1:]}
    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    logged = set(client.get_run(result["train"]["run_id"]).data.metrics)
    assert {"ndcg_at_10", "baseline_popularity_ndcg_at_10"} <= shown
    assert sorted(shown - logged) == []
