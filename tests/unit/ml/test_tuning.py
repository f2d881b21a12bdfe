"""Settings selection with Optuna: the search space of configs/tune.yaml, the pruning callback,
and the guard that keeps every protocol's test split away from selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from recolab.config import PROJECT_ROOT, ConfigError, parse_override
from recolab.ml.datamodule import HeldOut, Interactions
from recolab.ml.evaluation.protocols import leave_latest_out, stratified_user_split
from recolab.ml.experiment import PROTOCOLS, load_config
from recolab.ml.fitting import fit
from recolab.ml.tuning import (
    PruneOnValidation,
    SearchSpaceError,
    SelectionData,
    SelectionLeak,
    ValidationLeakGuard,
    best_overrides,
    load_tune_config,
    make_pruner,
    parse_space,
    run_search,
    selection_data,
)

CONFIGS = PROJECT_ROOT / "configs"
SPLITS = {"test_fraction": 0.25, "split_seed": 42, "n_folds": 5, "fold_seed": 42}
FAST = ["batch_size=256", "val_negatives=20", "steps_per_execution=1"]
TINY_SEARCH = [
    "tune.max_epochs=2",
    "tune.pruner.kind=none",
    "tune.space={lr: {type: float, low: 0.005, high: 0.05, log: true}, "
    "gmf_dim: {type: categorical, choices: [8, 16]}}",
]


def ratings(n_users: int = 60, n_items: int = 80, n: int = 2500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(1, n_users + 1, n),
            "movie_id": rng.integers(1, n_items + 1, n),
            "rating": rng.integers(1, 11, n) / 2,
            "timestamp": rng.integers(0, 10**6, n),
        }
    )
    return frame.drop_duplicates(["user_id", "movie_id"]).reset_index(drop=True)


# -- the search space -----------------------------------------------------------------------


def test_the_shipped_search_space_loads() -> None:
    config = load_tune_config(CONFIGS)
    kinds = {d.name: d.kind for d in config.dimensions()}
    assert kinds["lr"] == "float" and kinds["num_negatives"] == "int"
    assert kinds["mlp_layers"] == "categorical"
    assert config.protocol in ("B", "C")
    assert config.n_trials or config.timeout_minutes


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lrr": {"type": "float", "low": 0.1, "high": 1}}, "unknown training setting 'lrr'"),
        ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "low .* must be below high"),
        ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log scale needs low"),
        ({"lr": {"type": "normal", "low": 0.0, "high": 0.1}}, "type must be float, int"),
        ({"lr": {"type": "float", "low": "a", "high": 0.1}}, "low must be a float"),
        ({"lr": {"type": "float", "low": 0.1, "high": 1, "scale": 2}}, "unknown key.*scale"),
        ({"num_negatives": {"type": "int", "low": 1.5, "high": 8}}, "low must be a int"),
        ({"num_negatives": {"type": "int", "low": 1, "high": 8, "step": 0}}, "step must be"),
        ({"gmf_dim": {"type": "categorical", "choices": []}}, "non-empty `choices`"),
        ({"mlp_layers": {"type": "categorical", "choices": [64]}}, "not a valid mlp_layers"),
        ({"max_epochs": {"type": "int", "low": 1, "high": 9}}, "set by the search itself"),
        ({"lr": 0.01}, "expected a mapping with `type`"),
        ({}, "expected a mapping"),
    ],
)
def test_a_bad_search_space_is_a_clear_error(space: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        parse_space(space)


def test_a_bad_space_in_an_override_fails_when_the_config_loads() -> None:
    with pytest.raises(SearchSpaceError, match=r"tune.space.lr: a log scale"):
        load_tune_config(CONFIGS, ["tune.space.lr.low=0"])
    with pytest.raises(ConfigError, match=r"pruner\.kind"):
        load_tune_config(CONFIGS, ["tune.pruner.kind=hyperband"])
    with pytest.raises(ConfigError, match="set by the search itself"):
        load_tune_config(CONFIGS, ["tune.fixed.max_epochs=3"])
    assert parse_override("tune.n_trials=3").section == "tune"


def test_the_budget_is_trials_minutes_or_both() -> None:
    assert load_tune_config(CONFIGS, ["tune.n_trials=7"]).n_trials == 7
    by_time = load_tune_config(CONFIGS, timeout_minutes=5)
    assert (by_time.n_trials, by_time.timeout_minutes) == (None, 5)
    both = load_tune_config(CONFIGS, n_trials=3, timeout_minutes=1.5)
    assert (both.n_trials, both.timeout_minutes) == (3, 1.5)
    with pytest.raises(ConfigError, match="a budget is needed"):
        load_tune_config(CONFIGS, ["tune.n_trials=null", "tune.timeout_minutes=null"])
    with pytest.raises(ConfigError, match="n_trials"):
        load_tune_config(CONFIGS, n_trials=0)


def test_categorical_list_choices_round_trip_through_optuna() -> None:
    (layers,) = parse_space({"mlp_layers": {"type": "categorical", "choices": [[8, 4], [16]]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = {tuple(layers.suggest(study.ask())) for _ in range(20)}
    assert seen == {(8, 4), (16,)}


def test_best_overrides_go_through_the_override_parser() -> None:
    overrides = best_overrides({"gmf_dim": 16, "lr": 0.02, "mlp_layers": [8, 4]}, epochs=3)
    config = load_config(CONFIGS, PROTOCOLS["B"], overrides)
    assert (config.gmf_dim, config.lr, config.mlp_layers, config.max_epochs) == (
        16,
        0.02,
        (8, 4),
        3,
    )
    # the user's own overrides come after and win
    assert load_config(CONFIGS, PROTOCOLS["B"], [*overrides, "lr=0.5"]).lr == 0.5


# -- pruning ------------------------------------------------------------------------------


@dataclass
class FakeTrial:
    prune_from: int | None = None  # should_prune() is True from this report on
    reports: list[tuple[int, float]] = field(default_factory=list)

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.prune_from is not None and len(self.reports) > self.prune_from


def trainer(epoch: int, metrics: dict[str, float], sanity: bool = False) -> Any:
    return SimpleNamespace(
        current_epoch=epoch,
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        sanity_checking=sanity,
        should_stop=False,
    )


def test_pruning_callback_reports_every_epoch_and_stops_when_told() -> None:
    trial = FakeTrial(prune_from=1)
    callback = PruneOnValidation(trial, "val/ndcg@10")
    first = trainer(0, {"val/ndcg@10": 0.30})
    callback.on_validation_end(first, None)  # type: ignore[arg-type]
    assert not first.should_stop and callback.pruned_at is None
    callback.on_validation_end(trainer(0, {}, sanity=True), None)  # type: ignore[arg-type]
    callback.on_validation_end(trainer(1, {"val/rmse": 1.0}), None)  # type: ignore[arg-type]
    second = trainer(1, {"val/ndcg@10": 0.10})
    callback.on_validation_end(second, None)  # type: ignore[arg-type]
    assert second.should_stop and callback.pruned_at == 1
    assert [(step, round(value, 4)) for step, value in trial.reports] == [(0, 0.3), (1, 0.1)]


def test_median_pruner_prunes_a_trial_below_the_median_through_the_callback() -> None:
    study = optuna.create_study(
        direction="maximize",
        pruner=make_pruner(load_tune_config(CONFIGS, ["tune.pruner.n_startup_trials=1"]).pruner),
    )
    good = study.ask()
    for epoch, value in enumerate([0.3, 0.4, 0.5]):
        good.report(value, epoch)
    study.tell(good, 0.5)
    bad = study.ask()
    callback = PruneOnValidation(bad, "val/ndcg@10")
    states = []
    for epoch, value in enumerate([0.05, 0.04, 0.03]):
        step = trainer(epoch, {"val/ndcg@10": value})
        callback.on_validation_end(step, None)  # type: ignore[arg-type]
        states.append(step.should_stop)
    # n_warmup_steps=1 in tune.yaml: epoch 0 is never pruned
    assert states == [False, True, True] and callback.pruned_at == 2


# -- selection never sees a protocol's test split -------------------------------------------


@pytest.mark.parametrize("protocol", ["B", "C"])
def test_selection_data_is_the_protocols_own_training_split(protocol: str) -> None:
    frame = ratings()
    data = selection_data(frame, protocol, SPLITS)
    _, test = stratified_user_split(frame, 0.25, 42) if protocol == "B" else leave_latest_out(frame)
    keys = ["user_id", "movie_id"]
    assert data.train.merge(data.test, on=keys).empty
    assert len(data.train) + len(data.test) == len(frame)
    assert data.test[keys].sort_values(keys).values.tolist() == (
        test[keys].sort_values(keys).values.tolist()
    )


def test_protocol_a_cannot_be_tuned_on_the_whole_dataset() -> None:
    with pytest.raises(ConfigError, match="every rating"):
        selection_data(ratings(), "A", SPLITS)


def test_the_data_module_validates_only_on_training_rows() -> None:
    frame = ratings()
    data = selection_data(frame, "B", SPLITS)
    guard = ValidationLeakGuard(data.train, data)
    config = load_config(CONFIGS, PROTOCOLS["B"], [*FAST, "max_epochs=1"])
    fit(data.train, config, callbacks=[guard])
    assert guard.validated is not None and len(guard.validated) > 20
    keys = ["user_id", "movie_id"]
    assert guard.validated.merge(data.test, on=keys).empty
    assert len(guard.validated.merge(data.train, on=keys)) == len(guard.validated)


def test_the_guard_catches_a_data_module_that_validates_on_test_rows() -> None:
    frame = ratings()
    data = selection_data(frame, "C", SPLITS)
    fitted_on = pd.concat([data.train, data.test.head(3)])  # a split that kept test rows
    guard = ValidationLeakGuard(fitted_on, data)
    users = np.searchsorted(guard.users, data.test["user_id"].head(3).to_numpy())
    items = np.searchsorted(guard.items, data.test["movie_id"].head(3).to_numpy())
    clean_train = Interactions(users[:0], items[:0], np.zeros(0, np.float32))
    module = SimpleNamespace(train=clean_train, val=None, val_ranking=HeldOut(users, items))
    with pytest.raises(SelectionLeak, match="inner validation split: 3 of its 3 rows"):
        guard.on_fit_start(SimpleNamespace(datamodule=module), None)  # type: ignore[arg-type]


def leaking_rows(data: SelectionData) -> pd.DataFrame:
    """A deliberately broken objective: selection on the whole dataset, test rows included."""
    return pd.concat([data.train, data.test])


def test_a_selection_that_can_see_test_rows_fails() -> None:
    data = selection_data(ratings(), "B", SPLITS)
    base = load_config(CONFIGS, PROTOCOLS["B"], FAST)
    tune = load_tune_config(CONFIGS, TINY_SEARCH, n_trials=1)
    with pytest.raises(SelectionLeak, match="in protocol B's test split"):
        run_search(data, base, tune, rows=leaking_rows)


def test_a_search_on_the_training_split_finds_a_best_configuration() -> None:
    data = selection_data(ratings(), "C", SPLITS)
    base = load_config(CONFIGS, PROTOCOLS["C"], FAST)
    tune = load_tune_config(CONFIGS, TINY_SEARCH, n_trials=2)
    trials: list[Any] = []
    found = run_search(data, base, tune, trials.append)
    assert [t.number for t in trials] == [0, 1]
    for trial in trials:  # the inner validation metric, every epoch, within the budget
        assert 1 <= len(trial.history) <= 2 and trial.state == "COMPLETE"
        assert all("val/ndcg@10" in row for row in trial.history)
    best = max(trials, key=lambda t: t.value)
    assert found.best_trial == best.number and found.best_value == pytest.approx(best.value)
    assert found.params == best.params and found.metric == "val/ndcg@10"
    assert found.n_train_rows == len(data.train) and found.n_complete == 2
    config = load_config(CONFIGS, PROTOCOLS["C"], found.overrides)
    assert config.gmf_dim == found.params["gmf_dim"] and config.max_epochs == found.epochs
    # seeded TPE: the same search draws the same settings
    again = run_search(data, base, tune)
    assert again.params == found.params


def test_trial_zero_is_the_shipped_configuration_so_the_best_is_never_worse() -> None:
    """With the shipped space every default can be drawn: trial 0 trains exactly them."""
    from recolab.ml.tuning import default_trial

    base = load_config(CONFIGS, PROTOCOLS["B"], [])
    shipped = load_tune_config(CONFIGS, [])
    assert shipped.start_from_defaults
    defaults = default_trial(base, shipped.dimensions())
    assert set(defaults) == {d.name for d in shipped.dimensions()}
    assert defaults["lr"] == base.lr and defaults["mlp_layers"] == "[32, 16]"
    # a default the space cannot draw is left to the sampler
    tiny = load_tune_config(CONFIGS, TINY_SEARCH)
    assert default_trial(base, tiny.dimensions()) == {"lr": base.lr}  # gmf_dim 128 not in [8, 16]

    data = selection_data(ratings(), "B", SPLITS)
    fast = load_config(CONFIGS, PROTOCOLS["B"], [*FAST, "lr=0.02", "gmf_dim=16"])
    trials: list[Any] = []
    run_search(data, fast, load_tune_config(CONFIGS, TINY_SEARCH, n_trials=2), trials.append)
    assert trials[0].params == {"lr": 0.02, "gmf_dim": 16}
    assert trials[1].params != trials[0].params
    off = load_tune_config(CONFIGS, [*TINY_SEARCH, "tune.start_from_defaults=false"], n_trials=1)
    first: list[Any] = []
    run_search(data, fast, off, first.append)
    assert first[0].params != {"lr": 0.02, "gmf_dim": 16}
