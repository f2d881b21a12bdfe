"""A temp workspace for the flow tests: the project's configs copied into it, and every
RecoLab setting (data folder, configs, database, MLflow store, overrides) pointed at it
through the environment, which every process a test starts (Prefect's included) reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recolab.config import PROJECT_ROOT, Settings


def temp_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], **env: str
) -> None:
    """Point RecoLab at `tmp_path` (SQLite database and MLflow store there), with
    `overrides` as RECOLAB_OVERRIDES and `env` as further variables."""
    config_dir = tmp_path / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", config_dir)
    settings = {
        "RECOLAB_DATA_DIR": str(tmp_path / "data"),
        "RECOLAB_CONFIG_DIR": str(config_dir),
        "RECOLAB_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "RECOLAB_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECOLAB_OVERRIDES": json.dumps(overrides),
        **env,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def demo_snapshot(tmp_path: Path, dataset: str, **demo: int) -> tuple[Settings, str]:
    """Generated demo data (`demo`: generate_demo's sizes and seed) loaded into the
    workspace's database and a feature snapshot of `dataset` built: the settings and the
    snapshot's id."""
    from recolab.adapters.ingest.demo import generate_demo
    from recolab.adapters.ingest.movielens import read_movielens
    from recolab.adapters.sql.loading import load_dataset
    from recolab.bootstrap import bootstrap

    platform = bootstrap()
    data = read_movielens(generate_demo(tmp_path / "demo", **demo))
    load_dataset(platform.engine, data.ratings, data.movies, dataset="demo", source="test")
    snapshot = platform.build_features(dataset)
    platform.close()
    return platform.settings, snapshot.id
