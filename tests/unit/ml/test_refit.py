"""Refit before registering: the model to register is fitted on every rating of the snapshot
for the epochs the protocol's fit kept, while the run's figures stay the protocol's fit's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from recolab.ml.experiment import RefittedRecommender, TrainingRun, refit, refit_config, train
from recolab.ml.features import FeatureSnapshot
from recolab.ml.fitting import TrainConfig
from recolab.ml.rescoring import FITTED_ON_ALL, protocol_split, training_rows
from tests.unit.ml.test_metric_names import tiny_snapshot

CONFIG = TrainConfig(
    mode="implicit",
    gmf_dim=4,
    mlp_dim=4,
    mlp_layers=(8, 4),
    max_epochs=2,
    val_negatives=10,
    patience=5,
)


class RowsSeen(pl.Callback):
    """The rows the datamodule trains on, and whether any validation ran."""

    def __init__(self) -> None:
        self.rows: int | None = None
        self.validated = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = len(trainer.datamodule.train)  # type: ignore[attr-defined]

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validated = True


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> FeatureSnapshot:
    return tiny_snapshot(tmp_path_factory.mktemp("refit") / "features")


@pytest.fixture(scope="module")
def split_run(snapshot: FeatureSnapshot, tmp_path_factory: pytest.TempPathFactory) -> TrainingRun:
    return train(snapshot, "B", CONFIG, tmp_path_factory.mktemp("out"), baselines=False)


def test_the_refit_trains_on_every_rating_for_the_epochs_the_split_fit_kept(
    snapshot: FeatureSnapshot, split_run: TrainingRun
) -> None:
    seen = RowsSeen()
    run = refit(split_run, callbacks=[seen])
    assert run.refitted is not None and run.registered_fit is run.refitted
    # every rating of the snapshot, as counted by the datamodule; no validation slice
    assert seen.rows == run.refitted.train_rows == len(snapshot.ratings)
    assert not seen.validated
    # the split fit trained on the protocol's training split less its validation slice
    train_rows = len(protocol_split(snapshot, "B")[0])
    assert split_run.fit_result.train_rows < train_rows < len(snapshot.ratings)
    epochs = split_run.fit_result.epochs_kept
    assert len(run.refitted.history) == epochs == run.refitted.config.max_epochs
    assert set(run.refitted.users.ids) == set(snapshot.ratings["user_id"])
    # the figures are still the split fit's: the refit has seen the test rows
    assert run.summary is split_run.summary and run.fit_result is split_run.fit_result
    assert run.primary_value == split_run.primary_value
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            run.refitted.model.state_dict().values(),
            split_run.fit_result.model.state_dict().values(),
            strict=True,
        )
    )


def test_the_epochs_kept_are_the_best_epochs_plus_one(split_run: TrainingRun) -> None:
    fitted = split_run.fit_result
    assert fitted.best_epoch is not None
    assert fitted.epochs_kept == fitted.best_epoch + 1


def test_refit_off_registers_the_split_fit(split_run: TrainingRun) -> None:
    off = replace(split_run, config=replace(CONFIG, refit=False))
    assert refit(off) is off and off.registered_fit is off.fit_result


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_refit_config_runs_exactly_the_epochs_without_validation(mode: Any) -> None:
    config = refit_config(TrainConfig(mode=mode, max_epochs=30, patience=2), 4)
    assert (config.max_epochs, config.min_epochs) == (4, 4)
    assert config.val_fraction == 0.0 and config.val_negatives == 0
    with pytest.raises(ValueError, match="at least one epoch"):
        refit_config(config, 0)


def test_a_refitted_model_was_trained_on_all_rows(snapshot: FeatureSnapshot) -> None:
    rows = training_rows(snapshot, "C", FITTED_ON_ALL)
    assert len(rows) == len(snapshot.ratings)
    assert len(training_rows(snapshot, "C")) == len(protocol_split(snapshot, "C")[0])
    with pytest.raises(ValueError, match="fitted_on"):
        training_rows(snapshot, "C", "half of them")


def test_the_evaluated_recommender_is_refitted_on_every_rating_it_was_given(
    snapshot: FeatureSnapshot,
) -> None:
    """benchmarks/quality.py measures what the train flow registers: the early-stopped fit,
    then a refit on all of the protocol's training rows for the epochs that fit kept."""
    train_rows, _ = protocol_split(snapshot, "B")
    seen = RowsSeen()
    recommender = RefittedRecommender(CONFIG, callbacks=[seen]).fit(train_rows)
    first, scored = recommender.protocol_fit, recommender.result
    assert first is not None and scored is not None and scored is not first
    assert first.train_rows < len(train_rows)  # its validation slice held out
    assert seen.rows == scored.train_rows == len(train_rows)  # the last fit's datamodule
    assert any("val/ndcg@10" in row for row in first.history)
    assert not any("val/ndcg@10" in row for row in scored.history)  # nothing held out
    assert len(scored.history) == first.epochs_kept == scored.config.max_epochs
    users = train_rows["user_id"].to_numpy()[:20]
    movies = train_rows["movie_id"].to_numpy()[:20]
    assert not np.allclose(
        recommender.score(users, movies),
        RefittedRecommender(replace(CONFIG, refit=False)).fit(train_rows).score(users, movies),
    )


def test_with_refit_off_the_evaluated_recommender_is_the_early_stopped_fit(
    snapshot: FeatureSnapshot,
) -> None:
    train_rows, _ = protocol_split(snapshot, "B")
    recommender = RefittedRecommender(replace(CONFIG, refit=False)).fit(train_rows)
    assert recommender.result is recommender.protocol_fit
    assert recommender.result is not None and recommender.result.train_rows < len(train_rows)
