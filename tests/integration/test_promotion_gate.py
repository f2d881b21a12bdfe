"""The promotion gate on a real MLflow store: the champion is re-scored on the candidate's own
test split whatever snapshot or protocol it was trained under, and no candidate below the
popularity baseline is ever promoted. The nightly path: ratings arrive through the API
between two trainings, so the retrain runs on a new feature snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from recolab.adapters.mlflow import registry as reg
from recolab.application.training import register_and_promote
from recolab.bootstrap import Platform
from recolab.domain import EventBus, ModelPromoted
from tests.integration.promotion_data import (
    MODEL,
    TRAINED,
    UNTRAINED,
    grouped_platform,
    rate_through_the_api,
)


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return grouped_platform(tmp_path)


@pytest.mark.slow
def test_the_gate_holds_across_snapshots_and_protocols(platform: Platform) -> None:
    bus = EventBus()
    promoted: list[ModelPromoted] = []
    bus.subscribe(ModelPromoted, promoted.append)
    registry = platform.model_registry()
    uri = platform.settings.resolved_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    # No champion, below popularity: registered, never promoted.
    untrained = platform.train("B", overrides=UNTRAINED)
    first = register_and_promote(untrained, registry, bus)
    popularity = untrained.metrics["baseline_popularity_ndcg@10"]
    assert untrained.primary_value < popularity
    assert not first.decision.promote and first.decision.baseline == pytest.approx(popularity)
    assert "popularity baseline" in first.decision.reason
    assert reg.champion_version(client, MODEL) is None
    # ... but the old rule promoted such models: one still holds the alias on existing stacks.
    reg.set_champion(client, MODEL, first.version)
    old_snapshot = untrained.snapshot_id

    # Ratings arrive through the API: the nightly retrain sees a new snapshot.
    rate_through_the_api(platform, range(1, 40))
    new_snapshot = platform.build_features("grouped").id
    assert new_snapshot != old_snapshot

    # A better candidate under another protocol (C) on the new snapshot: the champion
    # (protocol B, old snapshot) is re-scored under C on the candidate's split, and loses.
    better = platform.train("C", new_snapshot, overrides=TRAINED)
    second = register_and_promote(better, registry, bus)
    assert second.decision.promote, second.decision.reason
    assert second.decision.champion is not None and second.previous_champion == "1"
    assert second.decision.candidate_same_data is not None
    assert second.decision.candidate_same_data > second.decision.champion
    assert "beats champion" in second.decision.reason
    details = second.details
    assert (details["same_data.snapshot"], details["same_data.protocol"]) == (new_snapshot, "C")
    assert (details["same_data.champion_snapshot"], details["same_data.champion_protocol"]) == (
        old_snapshot,
        "B",
    )
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"

    # The nightly path again with a worse candidate (protocol B, new snapshot): the champion
    # is re-scored there, not treated as absent, and stays.
    worse = platform.train("B", new_snapshot, overrides=[*UNTRAINED, "seed=7"])
    third = register_and_promote(worse, registry, bus)
    assert not third.decision.promote and third.previous_champion == "2"
    assert third.decision.champion is not None and third.decision.candidate_same_data is not None
    assert third.decision.champion > third.decision.candidate_same_data
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
    assert [(e.version, e.previous_version) for e in promoted] == [("2", "1")]

    # Recorded on the model version and its run: the decision, both figures, the data.
    tags = client.get_model_version(MODEL, "3").tags
    assert tags["challenger"] == third.decision.reason
    assert tags["promotion.promote"] == "False" and tags["promotion.champion_version"] == "2"
    assert tags["promotion.same_data.snapshot"] == new_snapshot
    assert tags["promotion.same_data.champion_protocol"] == "C"
    assert float(tags["promotion.champion"]) == pytest.approx(third.decision.champion)
    assert float(tags["promotion.baseline"]) == pytest.approx(
        worse.metrics["baseline_popularity_ndcg@10"]
    )
    run = client.get_run(third.run_id)
    comparison = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/promotion/comparison.json")
    assert comparison["candidate_same_data"] == pytest.approx(third.decision.candidate_same_data)
    assert comparison["same_data.test_rows_compared"] > 0
    # The champion never was judged on rows it was trained on.
    assert comparison["same_data.test_rows_champion_trained_on"] > 0
    assert run.data.tags["promotion.reason"] == third.decision.reason


@pytest.fixture
def flow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The grouped platform, with the environment pointing the flows at it, under Prefect's
    test harness."""
    from prefect.testing.utilities import prefect_test_harness

    platform = grouped_platform(tmp_path)
    settings = platform.settings
    env = {
        "RECOLAB_DATA_DIR": str(settings.data_dir),
        "RECOLAB_CONFIG_DIR": str(settings.config_dir),
        "RECOLAB_DATABASE_URL": str(settings.database_url),
        "RECOLAB_MLFLOW_TRACKING_URI": str(settings.mlflow_tracking_uri),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RECOLAB_OVERRIDES", raising=False)
    with prefect_test_harness(server_startup_timeout=180):
        yield platform
    platform.close()


@pytest.mark.slow
def test_the_nightly_train_flow_keeps_a_better_champion(flow_env: Platform) -> None:
    from flows.train import train

    first = train(dataset="grouped", protocol="B", overrides=TRAINED)
    assert first["promoted"], first["reason"]
    assert first["comparison"]["champion_same_data"] is None
    assert first["comparison"]["candidate"] > first["comparison"]["baseline"]

    rate_through_the_api(flow_env, range(1, 40))
    snapshot = flow_env.build_features("grouped").id
    assert snapshot != first["snapshot"]

    nightly = train(dataset="grouped", protocol="B", snapshot_id=snapshot, overrides=UNTRAINED)
    assert not nightly["promoted"] and nightly["previous_champion"] == first["version"]
    comparison = nightly["comparison"]
    assert comparison["same_data.snapshot"] == snapshot
    assert comparison["same_data.champion_snapshot"] == first["snapshot"]
    assert comparison["baseline_name"] == "popularity" and comparison["protocol"] == "B"
    # The flow registered a champion refitted on every rating of its snapshot: only ratings
    # that arrived since (those of the new test split) can judge it.
    assert comparison["same_data.champion_fitted_on"] == "all_ratings"
    compared = comparison["same_data.test_rows_compared"]
    left_out = comparison["same_data.test_rows_champion_trained_on"]
    assert compared == comparison["same_data.test_rows"] - left_out
    assert 0 < compared <= 39 < left_out


@pytest.mark.slow
def test_a_candidate_registered_as_challenger_gets_that_alias_and_the_champion_stays(
    platform: Platform,
) -> None:
    from recolab.adapters.mlflow.experiments import read_state

    bus = EventBus()
    promoted: list[ModelPromoted] = []
    bus.subscribe(ModelPromoted, promoted.append)
    registry = platform.model_registry()
    uri = platform.settings.resolved_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    weak = register_and_promote(platform.train("B", overrides=UNTRAINED), registry, bus)
    reg.set_champion(client, MODEL, weak.version)  # a weak champion, as on old stacks

    better = platform.train("B", overrides=TRAINED)
    outcome = register_and_promote(better, registry, bus, as_challenger=True)

    assert outcome.decision.promote, outcome.decision.reason  # the gate passes it...
    state = read_state(client, MODEL)  # ... but traffic decides: challenger, not champion
    assert (state.champion_version, state.challenger_version) == (weak.version, outcome.version)
    assert registry.is_challenger(outcome.version) and not registry.is_challenger(weak.version)
    assert promoted == []
    tags = client.get_model_version(MODEL, outcome.version).tags
    assert tags["promotion.promote"] == "True" and tags["promotion.champion_version"] == "1"
