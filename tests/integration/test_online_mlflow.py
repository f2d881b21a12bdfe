"""Online reports and promotion on a real (temporary) MLflow store: the report run (params,
metrics, tags naming both versions, JSON and plot), the tags on the model versions, and the
promotion (aliases moved, experiment stopped) or the record of why not. The offline
comparison: the training gate's recorded figures when made against the current champion,
else both registered models re-scored on the challenger's split (slow: trains two models)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mlflow
import pytest

from recolab.adapters.mlflow.experiments import read_state, start_experiment
from recolab.adapters.mlflow.online import (
    EXPERIMENT,
    MlflowExperimentRegistry,
    MlflowOnlineReports,
    recorded_comparison,
)
from recolab.adapters.mlflow.registry import record_comparison, set_champion, tag_challenger
from recolab.adapters.mlflow.tracking import mlflow_client
from recolab.application.online import OnlineReporting
from recolab.domain.experiments import Experiment
from recolab.domain.promotion import PromotionDecision
from tests.unit.application.test_online import Config, FakeHistory
from tests.unit.domain.online_data import simulate

MODEL = "recolab-neumf"


def gate_record(client: mlflow.MlflowClient, version: str, champion: str | None) -> None:
    """What the training gate records on a version registered as challenger."""
    decision = PromotionDecision(True, "beats champion", 0.33, 0.30, 0.2, 0.31)
    record_comparison(
        client,
        MODEL,
        version,
        {
            **asdict(decision),
            "metric": "ndcg@10",
            "snapshot": "snap",
            "protocol": "B",
            "champion_version": champion,
            "same_data.protocol": "B",
            "same_data.test_rows_compared": 400,
        },
    )
    tag_challenger(client, MODEL, version, decision.reason)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, mlflow.MlflowClient]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=(tmp_path / "model").as_uri())
    set_champion(client, MODEL, "1")
    gate_record(client, "2", champion="1")
    start_experiment(client, MODEL, Experiment("v2-vs-v1", "canary", 0.5), version="2")
    return uri, client


def reporting(uri: str, tmp_path: Path, challenger_rate: float) -> OnlineReporting:
    data = simulate(2, users=200, champion_rate=0.2, challenger_rate=challenger_rate)
    return OnlineReporting(
        FakeHistory(data),
        MlflowExperimentRegistry(uri, MODEL, tmp_path / "features"),
        MlflowOnlineReports(uri, tmp_path / "artifacts", MODEL),
    )


def test_a_report_is_a_run_linked_to_both_versions_and_promotion_moves_the_aliases(
    store: tuple[str, mlflow.MlflowClient], tmp_path: Path
) -> None:
    uri, client = store
    outcome = reporting(uri, tmp_path, 0.35).run(Config(), promote=True)
    assert outcome.promoted, outcome.decision
    assert outcome.offline is not None and outcome.offline.source == "recorded"

    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == outcome.report_id and run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["experiment"] == "v2-vs-v1" and params["hit_window_s"] == "86400.0"
    assert params["confidence"] == "0.99" and json.loads(params["rank_cutoffs"]) == [1, 5, 10]
    report = outcome.report
    assert metrics["champion/hit_rate"] == pytest.approx(report.variants["champion"].hit_rate)
    assert metrics["challenger/hit_rate_at_5"] == pytest.approx(
        report.variants["challenger"].hit_rate_at[5]
    )
    assert report.difference is not None
    assert metrics["difference/lower_bound"] == pytest.approx(report.difference.lower_bound)
    assert metrics["difference/lower_bound"] > 0 and metrics["promoted"] == 1.0
    assert (tags["online.champion_version"], tags["online.challenger_version"]) == ("1", "2")
    assert tags["online.decision"] == "promoted"
    assert tags["online.promotion.promote"] == "True"

    saved = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/online/report.json")
    assert saved["decision"]["promote"] is True and saved["offline"]["source"] == "recorded"
    assert saved["offline"]["challenger"] == 0.31 and saved["offline"]["champion"] == 0.30
    assert saved["report"]["variants"]["challenger"]["users"] == 200
    plot = client.download_artifacts(run.info.run_id, "online/hit_rate.png", str(tmp_path))
    assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the versions point at the report; the registry has moved on
    for version in ("1", "2"):
        assert client.get_model_version(MODEL, version).tags["online.report_run"] == run.info.run_id
    promoted = client.get_model_version(MODEL, "2").tags
    assert promoted["online.promotion.promote"] == "True"
    assert promoted["online.promotion.previous_champion"] == "1"
    assert promoted["online.promotion.report_run"] == run.info.run_id
    assert "challenger" not in promoted  # the gate's challenger tag: it is not one any more
    assert client.get_model_version(MODEL, "1").tags["online.replaced_by"] == "2"
    state = read_state(client, MODEL)
    assert (state.champion_version, state.challenger_version, state.experiment) == ("2", None, None)
    assert not any(k.startswith("experiment.") for k in client.get_registered_model(MODEL).tags)


def test_a_challenger_not_better_online_stays_with_the_reason_recorded(
    store: tuple[str, mlflow.MlflowClient], tmp_path: Path
) -> None:
    uri, client = store
    outcome = reporting(uri, tmp_path, 0.2).run(Config(), promote=True)
    assert outcome.decision is not None and not outcome.promoted
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["online.promotion.promote"] == "False"
    assert tags["online.promotion.reason"] == outcome.decision.reason
    assert "online" in tags["online.promotion.failed"]
    state = read_state(client, MODEL)
    assert (state.champion_version, state.challenger_version) == ("1", "2")
    assert state.experiment is not None and state.experiment.name == "v2-vs-v1"
    run = client.get_run(outcome.report_id)
    assert run.data.tags["online.decision"] == "stays challenger"


def test_a_report_without_promotion_touches_no_alias(
    store: tuple[str, mlflow.MlflowClient], tmp_path: Path
) -> None:
    uri, client = store
    outcome = reporting(uri, tmp_path, 0.35).run(Config())
    assert outcome.decision is None
    run = client.get_run(outcome.report_id)
    assert run.data.tags["online.decision"] == "not asked" and "promoted" not in run.data.metrics
    assert "online.promotion.promote" not in client.get_model_version(MODEL, "2").tags
    assert read_state(client, MODEL).challenger_version == "2"


def test_the_recorded_comparison_counts_only_against_the_champion_it_was_made_with(
    store: tuple[str, mlflow.MlflowClient],
) -> None:
    _, client = store
    tags = client.get_model_version(MODEL, "2").tags
    recorded = recorded_comparison(tags, "1")
    assert recorded is not None and recorded.higher_is_better and recorded.metric == "ndcg@10"
    assert recorded.head_to_head is not None
    assert (recorded.head_to_head.candidate, recorded.head_to_head.champion) == (0.31, 0.30)
    assert recorded.head_to_head.rows == 400
    assert recorded_comparison(tags, "3") is None  # another champion now: re-score


@pytest.mark.slow
def test_without_a_usable_record_both_versions_are_re_scored_on_the_challengers_split(
    tmp_path: Path,
) -> None:
    """Two models trained on one snapshot under protocol B (fitted on its training split):
    re-scoring (challenger 1, champion 2) gives the figures the gate recorded for 2 vs 1."""
    from recolab.application.training import register_and_promote
    from recolab.domain import EventBus
    from tests.integration.promotion_data import TRAINED, grouped_platform

    platform = grouped_platform(tmp_path)
    registry, bus = platform.model_registry(), EventBus()
    first = register_and_promote(platform.train("B", overrides=TRAINED), registry, bus)
    second = register_and_promote(
        platform.train("B", overrides=[*TRAINED, "seed=7"]), registry, bus, as_challenger=True
    )
    uri = platform.settings.resolved_tracking_uri
    client = mlflow_client(uri)
    gate = client.get_model_version(MODEL, second.version).tags
    assert gate["promotion.champion_version"] == first.version

    online = MlflowExperimentRegistry(uri, MODEL, platform.settings.features_dir)
    figures = online.offline_comparison(champion=second.version, challenger=first.version)
    assert figures.source == "re-scored" and figures.metric == "ndcg@10"
    h = figures.head_to_head
    assert h is not None and h.rows == int(gate["promotion.same_data.test_rows_compared"]) > 0
    assert h.candidate == pytest.approx(float(gate["promotion.champion"]), abs=1e-6)
    assert h.champion == pytest.approx(float(gate["promotion.candidate_same_data"]), abs=1e-6)
    platform.close()
