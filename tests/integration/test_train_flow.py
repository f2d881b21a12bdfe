"""Features -> train -> MLflow register -> promote, on a temp SQLite database and MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from recolab.application.training import register_and_promote
from recolab.bootstrap import Platform
from recolab.domain import EventBus, ModelPromoted
from tests.integration.promotion_data import TRAINED, UNTRAINED, grouped_platform


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return grouped_platform(tmp_path)


@pytest.mark.slow
def test_only_a_better_model_moves_the_champion(platform: Platform) -> None:
    bus = EventBus()
    promoted: list[ModelPromoted] = []
    bus.subscribe(ModelPromoted, promoted.append)
    registry = platform.model_registry()

    # Untrained and without the popularity prior: below popularity, so never promoted.
    bad = platform.train("B", overrides=UNTRAINED)
    first = register_and_promote(bad, registry, bus)
    assert not first.decision.promote and first.version == "1"

    good = platform.train("B", overrides=TRAINED)
    assert good.primary_value > good.metrics["baseline_popularity_ndcg@10"] > bad.primary_value
    second = register_and_promote(good, registry, bus)
    assert second.decision.promote and second.previous_champion is None

    same = platform.train("B", overrides=TRAINED)
    assert same.primary_value == pytest.approx(good.primary_value)  # seeded: reproducible
    third = register_and_promote(same, registry, bus)
    assert not third.decision.promote and third.previous_champion == "2"
    assert third.decision.champion == pytest.approx(third.decision.candidate_same_data)

    uri = platform.settings.resolved_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("recolab-neumf", "champion").version) == "2"
    for version in ("1", "3"):
        assert "challenger" in client.get_model_version("recolab-neumf", version).tags
    assert [(e.version, e.previous_version) for e in promoted] == [("2", None)]

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
