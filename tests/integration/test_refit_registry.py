"""Refit before registering, on a real MLflow store: the registered model is the one refitted
on all the snapshot's ratings, its run's metrics are the protocol's fit's and say so; the
promotion gate compares the candidate's split fit (the refit has seen its test rows) with
a refitted champion on the rows that champion never saw, and refuses when too few remain.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from recolab.adapters.mlflow import model_format as fmt
from recolab.adapters.mlflow import registry as reg
from recolab.application.training import register_and_promote
from recolab.domain import EventBus
from recolab.ml.experiment import CONTRACT, refit_config
from recolab.ml.fitting import fit, with_overrides
from recolab.ml.rescoring import compare_on_split
from recolab.ml.scorer import NeuMFScorer
from tests.integration.promotion_data import (
    MODEL,
    TRAINED,
    grouped_platform,
    rate_through_the_api,
)


@pytest.mark.slow
def test_the_refit_is_registered_and_the_gate_compares_the_split_fit(tmp_path: Path) -> None:
    platform = grouped_platform(tmp_path)
    registry = platform.model_registry()
    uri = platform.settings.resolved_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    bus = EventBus()

    first = platform.train("B", overrides=TRAINED, refit=True)
    assert first.refitted is not None
    all_rows = len(first.snapshot.ratings)
    assert first.refitted.train_rows == all_rows > first.fit_result.train_rows
    outcome = register_and_promote(first, registry, bus)
    assert outcome.decision.promote, outcome.decision.reason

    # MLflow says which model was registered and what its metrics measure.
    run = client.get_run(outcome.run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["model.fitted_on"] == "all_ratings"
    assert tags["metrics.measured_on"].startswith(
        f"protocol B test split of snapshot {first.snapshot_id}, by the model fitted on its "
        f"training split ({first.fit_result.train_rows} rows"
    )
    assert params["model.fitted_on"] == "all_ratings"
    assert params["model.epochs"] == str(first.fit_result.epochs_kept)
    assert params["model.train_rows"] == str(all_rows)
    assert params["split_fit.train_rows"] == str(first.fit_result.train_rows)
    assert metrics["ndcg_at_10"] == pytest.approx(first.primary_value)  # the split fit's
    assert metrics["refit_seconds"] > 0
    refit_curve = client.get_metric_history(outcome.run_id, "refit/train/loss")
    assert len(refit_curve) == first.fit_result.epochs_kept

    # The registered weights are the refit's, not the split fit's.
    served = fmt.load_scorer(f"models:/{MODEL}/{outcome.version}", uri, outcome.version)
    users = first.snapshot.ratings["user_id"].to_numpy()[:50]
    movies = first.snapshot.ratings["movie_id"].to_numpy()[:50]
    refitted = NeuMFScorer.from_fit_result(first.refitted).score_pairs(users, movies)
    split = NeuMFScorer.from_fit_result(first.fit_result).score_pairs(users, movies)
    assert np.allclose(served.score_pairs(users, movies), refitted, atol=1e-6)
    assert not np.allclose(refitted, split, atol=1e-4)

    # A refitted champion was trained on every row of its snapshot.
    version = reg.champion_version(client, MODEL)
    assert version is not None
    trained_on, about = reg.champion_training_rows(client, version, first.snapshot.path.parent)
    assert trained_on is not None and len(trained_on) == all_rows
    assert about["champion_fitted_on"] == "all_ratings"

    # Nightly: 39 users rate through the API; a candidate under C on the new snapshot.
    rate_through_the_api(platform, range(1, 40))
    new_snapshot = platform.build_features("grouped").id
    second = platform.train("C", new_snapshot, overrides=TRAINED, refit=True)
    comparison = registry.compare_with_champion(second)
    assert comparison is not None
    # Only the new ratings can judge the champion: each of the 39 users' latest rating.
    assert comparison.rows == comparison.data["test_rows_compared"] == 39
    # The candidate compared is its split fit (whose figures the run reports), not its refit.
    assert second.refitted is not None
    champion = fmt.load_scorer(f"models:/{MODEL}/{outcome.version}", uri, outcome.version)

    def same_data(fitted: object) -> float:
        scorer = NeuMFScorer.from_fit_result(fitted)  # type: ignore[arg-type]
        return compare_on_split(
            scorer, champion, second.snapshot, "C", champion_trained_on=trained_on
        ).candidate

    assert comparison.candidate == pytest.approx(same_data(second.fit_result))
    assert comparison.candidate != pytest.approx(same_data(second.refitted))

    # 39 comparable rows are fewer than the gate's 50: the champion stays, and says why.
    nightly = register_and_promote(second, registry, bus)
    assert not nightly.decision.promote
    assert nightly.decision.reason.startswith("only 39 test rows can compare")
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == outcome.version


@pytest.mark.slow
def test_an_ensemble_is_registered_as_one_network_that_scores_the_members_mean(
    tmp_path: Path,
) -> None:
    platform = grouped_platform(tmp_path)
    uri = platform.settings.resolved_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = platform.train("B", overrides=[*TRAINED, "ensemble=2"], refit=True)
    assert run.refitted is not None
    outcome = register_and_promote(run, platform.model_registry(), EventBus())

    logged = client.get_run(outcome.run_id).data
    assert logged.params["model.ensemble"] == "2"
    assert "the mean of that fit and 1 refit(s)" in logged.tags["metrics.measured_on"]
    assert logged.params["model.train_rows"] == str(len(run.snapshot.ratings))

    # What the service loads scores the mean of the split fit and a refit seeded seed + 1.
    served = fmt.load_scorer(f"models:/{MODEL}/{outcome.version}", uri, outcome.version)
    users = run.snapshot.ratings["user_id"].to_numpy()[:50]
    movies = run.snapshot.ratings["movie_id"].to_numpy()[::7][:50]
    split = NeuMFScorer.from_fit_result(run.fit_result).score_pairs(users, movies)
    config = refit_config(run.fit_result.config, run.fit_result.epochs_kept)
    alone = fit(run.snapshot.ratings[CONTRACT], with_overrides(config, ensemble=1, seed=43))
    refit = NeuMFScorer.from_fit_result(alone).score_pairs(users, movies)
    assert not np.allclose(split, refit, atol=1e-4)
    # implicit scores are probabilities: the networks' logits are averaged
    mean_logit = (_logit(split) + _logit(refit)) / 2
    assert np.allclose(_logit(served.score_pairs(users, movies)), mean_logit, atol=1e-4)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)
