"""Features -> train -> MLflow register -> promote, on a temp SQLite database and MLflow store."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest

from recolab.application.training import register_and_promote
from recolab.bootstrap import Platform, bootstrap
from recolab.config import PROJECT_ROOT, Settings
from recolab.domain import EventBus, ModelPromoted

FAST = ["max_epochs=3", "batch_size=512", "val_negatives=20", "patience=5"]


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    config_dir = tmp_path / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", config_dir)
    settings = Settings(
        data_dir=tmp_path / "data",
        config_dir=config_dir,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    platform = bootstrap(settings)
    from recolab.adapters.ingest.demo import generate_demo
    from recolab.adapters.ingest.movielens import read_movielens
    from recolab.adapters.sql.loading import load_dataset

    data = read_movielens(
        generate_demo(tmp_path / "demo", n_users=150, n_movies=200, n_ratings=8000, seed=5)
    )
    load_dataset(platform.engine, data.ratings, data.movies, dataset="demo", source="test")
    platform.build_features("demo")
    return platform


@pytest.mark.slow
def test_only_a_better_model_moves_the_champion(platform: Platform) -> None:
    bus = EventBus()
    promoted: list[ModelPromoted] = []
    bus.subscribe(ModelPromoted, promoted.append)
    registry = platform.model_registry()

    # Untrained and without the popularity prior (which alone ranks like the popularity baseline).
    bad = platform.train("B", overrides=[*FAST, "lr=0.0", "popularity_weight=0.0"])
    first = register_and_promote(bad, registry, bus)
    assert first.decision.promote and first.version == "1"

    good = platform.train("B", overrides=[*FAST, "lr=0.01"])
    assert good.primary_value > bad.primary_value
    second = register_and_promote(good, registry, bus)
    assert second.decision.promote and second.previous_champion == "1"

    same = platform.train("B", overrides=[*FAST, "lr=0.01"])
    assert same.primary_value == pytest.approx(good.primary_value)  # seeded: reproducible
    third = register_and_promote(same, registry, bus)
    assert not third.decision.promote

    uri = platform.settings.resolved_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("recolab-neumf", "champion").version) == "2"
    assert "challenger" in str(client.get_model_version("recolab-neumf", "3").tags)
    assert [(e.version, e.previous_version) for e in promoted] == [("1", None), ("2", "1")]

    # the champion loads on CPU from the registry and scores like the in-memory model
    platform.champion.check()
    scorer = platform.champion.current()
    assert scorer is not None and scorer.version == "2"
    user = int(good.fit_result.users.ids[0])
    from recolab.domain import MovieId, UserId

    rated = {MovieId(int(m)) for m in good.snapshot.ratings.query("user_id == @user")["movie_id"]}
    top = scorer.top_k(UserId(user), 5, rated)
    assert len(top) == 5 and all(0.0 <= s <= 1.0 for _, s in top)
    assert not {m for m, _ in top} & rated
