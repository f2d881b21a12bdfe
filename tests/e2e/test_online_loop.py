"""The online-experiment loop, whole, on the demo data: train a champion, register a better
model as the challenger, start a canary, let simulated users answer (they rate what they
like, by the demo's planted taste), read the online report, and let the gate decide.

- A planted better challenger (more epochs on the same data): the report finds it better,
  its hit-rate difference's lower bound above zero, and the gate promotes it; the service
  then answers everyone with it.
- Two identical models (the champion's own weights registered again): 20 experiments with
  20 assignment seeds (names), each reported and judged right after its traffic, promote
  nothing.

The service is the real runtime (`bootstrap_serving`: routing, cache, the history writer,
the rating write path) called in-process; the HTTP layer over it has tests of its own. The
steps are scripts/online_demo.py's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recolab.adapters.mlflow.experiments import read_state, start_experiment, stop_experiment
from recolab.application.recommend import RecommendRequest
from recolab.bootstrap import bootstrap
from recolab.config import Settings
from recolab.domain.experiments import Experiment
from scripts.online_demo import MODEL, mlflow_client, report, traffic, train_pair, workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return workspace(tmp_path_factory.mktemp("online-loop"))


@pytest.fixture(scope="module")
def trained(settings: Settings) -> dict[str, str]:
    """A weak champion (version 1) and a better challenger (version 2), same snapshot."""
    pair = train_pair(settings)
    champion, challenger = pair["champion"], pair["challenger"]
    assert challenger.decision.promote, challenger.decision.reason  # better on the same data
    state = read_state(mlflow_client(settings), MODEL)
    assert (state.champion_version, state.challenger_version) == (
        champion.version,
        challenger.version,
    )
    return {"champion": champion.version, "challenger": challenger.version}


def test_a_planted_better_challenger_is_found_better_online_and_promoted(
    settings: Settings, trained: dict[str, str]
) -> None:
    client = mlflow_client(settings)
    start_experiment(client, MODEL, Experiment("better-canary", "canary", 0.5))

    served = traffic(settings, rounds=4, seed=0)
    assert set(served) == {"champion", "challenger"}
    assert served["challenger"]["rate"] > served["champion"]["rate"]

    outcome = report(settings, promote=True)
    difference = outcome.report.difference
    assert difference is not None and difference.lower_bound > 0, outcome.report.to_dict()
    assert difference.hit_rate_interval.low > 0  # the whole interval above zero
    assert outcome.promoted, outcome.decision.reason
    state = read_state(client, MODEL)
    assert state.champion_version == trained["challenger"]
    assert state.experiment is None and state.challenger_version is None
    # The report is an MLflow run linked to both versions.
    tags = client.get_run(outcome.report_id).data.tags
    assert tags.get("online.champion_version") == trained["champion"]
    assert tags.get("online.challenger_version") == trained["challenger"]

    # The service now answers everyone with the promoted model.
    runtime = bootstrap(settings, serving=True).serving_runtime()
    try:
        result = runtime.recommend(RecommendRequest(user_id=1, n=5))
    finally:
        runtime.close()
    assert (result.model_version, result.variant, result.experiment) == (
        trained["challenger"],
        "champion",
        None,
    )


def test_two_identical_models_promote_nothing_in_20_of_20_seeds(
    settings: Settings, trained: dict[str, str]
) -> None:
    client = mlflow_client(settings)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    source = client.get_model_version_download_uri(MODEL, champion.version)  # same weights
    twin = client.create_model_version(MODEL, source, run_id=champion.run_id)
    decisions: list[Any] = []
    for seed in range(20):
        experiment = Experiment(f"twins-{seed}", "canary", 0.5)
        start_experiment(client, MODEL, experiment, version=str(twin.version))
        traffic(settings, rounds=1, seed=seed)
        outcome = report(settings, promote=True, seed=seed)
        decisions.append(outcome.decision)
        assert outcome.report.experiment == experiment.name
        assert set(outcome.report.variants) == {"champion", "challenger"}
        stop_experiment(client, MODEL)
    assert [d.promote for d in decisions] == [False] * 20, [d.reason for d in decisions]
    assert np.all(np.array([d.lower_bound for d in decisions], dtype=float) <= 0)
    assert read_state(client, MODEL).champion_version == str(champion.version)
