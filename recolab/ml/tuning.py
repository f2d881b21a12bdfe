"""Per-dataset selection of NeuMF settings with Optuna, on an inner validation split.

The search sees only a protocol's *training* rows (`selection_data`); each trial fits on them
and is judged by the validation metric that `fit` measures every epoch on a slice it holds
out of them (`val_per_user` positives per user, or a share of the ratings in explicit
mode): the inner validation split. The protocol's test rows are kept beside the data only
to check that nothing the trial trains or validates on is one of them (`assert_no_leak`,
`ValidationLeakGuard`); a trial that could see them fails the whole search.

Optuna pieces: a seeded TPE sampler, a median, successive-halving or no pruner fed after
every epoch by `PruneOnValidation` (a Lightning callback: optuna-integration's own imports
`lightning.pytorch`, while RecoLab trains with `pytorch_lightning`), and the search space of
configs/tune.yaml (`TuneConfig`, in recolab.ml.tune_config).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np
import optuna
import pandas as pd
import pytorch_lightning as pl

from recolab.config import ConfigError
from recolab.ml.datamodule import IdIndex
from recolab.ml.evaluation.protocols import leave_latest_out, stratified_user_split
from recolab.ml.fitting import TrainConfig, fit, with_overrides
from recolab.ml.tune_config import (
    Dimension,
    SearchSpaceError,
    TuneConfig,
    label_of,
    load_tune_config,
    make_pruner,
    make_sampler,
    parse_space,
)

log = logging.getLogger(__name__)
USER, ITEM = "user_id", "movie_id"
CONTRACT = [USER, ITEM, "rating", "timestamp"]
# Keys written as `model.<key>` in the best configuration's overrides (the rest `trainer.`).
MODEL_KEYS = frozenset(
    {"gmf_dim", "mlp_dim", "mlp_layers", "dropout", "use_bias", "init_std", "popularity_weight"}
)


class SelectionLeak(RuntimeError):
    """A selection trial could see rows of the protocol's test split."""


class TuningError(RuntimeError):
    """The search ended without a configuration to keep (e.g. every trial was pruned)."""


# -- what selection may see ---------------------------------------------------------------


@dataclass(frozen=True)
class SelectionData:
    """The rows a selection may use (`train`) and the protocol's test rows it must never
    see (`test`, kept only to check against)."""

    protocol: str
    train: pd.DataFrame
    test: pd.DataFrame


def selection_data(
    ratings: pd.DataFrame, protocol: str, splits: Mapping[str, Any]
) -> SelectionData:
    """The protocol's own split of `ratings` (the same functions and seeds as its run):
    B the per-user random split, C each user's latest rating held out.

    Protocol A tests every rating once across its folds, so no selection on the whole data
    is honest under it: tune A per fold (`run_search` on that fold's training rows)."""
    frame = ratings[CONTRACT]
    if protocol == "B":
        train, test = stratified_user_split(frame, splits["test_fraction"], splits["split_seed"])
    elif protocol == "C":
        train, test = leave_latest_out(frame)
    elif protocol == "A":
        raise ConfigError(
            "protocol A tests every rating in one of its folds: selection on the whole dataset "
            "would see test rows; tune under B or C (or per fold, on each fold's training rows)"
        )
    else:
        raise ConfigError(f"protocol = {protocol!r}: expected A, B or C")
    return SelectionData(protocol, train, test)


def leaked_rows(seen: pd.DataFrame, test: pd.DataFrame) -> int:
    """How many (user, movie) pairs of `seen` are test pairs."""
    if seen.empty or test.empty:
        return 0
    keys = pd.MultiIndex.from_frame(test[[USER, ITEM]].astype("int64"))
    return int(pd.MultiIndex.from_frame(seen[[USER, ITEM]].astype("int64")).isin(keys).sum())


def assert_no_leak(seen: pd.DataFrame, data: SelectionData, what: str) -> None:
    """Raise `SelectionLeak` when any row of `seen` is one of the protocol's test rows."""
    found = leaked_rows(seen, data.test)
    if found:
        raise SelectionLeak(
            f"{what}: {found} of its {len(seen)} rows are in protocol {data.protocol}'s test "
            "split; selection may only see the protocol's training split"
        )


class ValidationLeakGuard(pl.Callback):
    """Checks, when the fit starts, the rows its data module trains and validates on
    (decoded back to raw ids) against the protocol's test rows."""

    def __init__(self, fitted_on: pd.DataFrame, data: SelectionData) -> None:
        self.users = IdIndex(fitted_on[USER].to_numpy()).ids
        self.items = IdIndex(fitted_on[ITEM].to_numpy()).ids
        self.data = data
        self.validated: pd.DataFrame | None = None  # the inner validation rows, once seen

    def _rows(self, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({USER: self.users[users], ITEM: self.items[items]})

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = getattr(trainer, "datamodule", None)
        if module is None:
            raise SelectionLeak("no data module to check: selection trains through one")
        parts = [held for held in (module.val, module.val_ranking) if held is not None]
        self.validated = pd.concat(
            [self._rows(p.users, p.items) for p in parts]
            or [pd.DataFrame({USER: [], ITEM: []}, dtype="int64")]
        )
        assert_no_leak(self.validated, self.data, "the inner validation split")
        trained = self._rows(module.train.users, module.train.items)
        assert_no_leak(trained, self.data, "the trial's training rows")


# -- pruning ------------------------------------------------------------------------------


class TrialLike(Protocol):
    """What pruning needs of an `optuna.Trial`."""

    def report(self, value: float, step: int) -> None: ...
    def should_prune(self) -> bool: ...


class PruneOnValidation(pl.Callback):
    """Reports the monitored validation metric to the trial after every epoch; when the
    pruner says so, stops the fit (the objective then raises `optuna.TrialPruned`)."""

    def __init__(self, trial: TrialLike, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None
        self.reported: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        epoch, current = int(trainer.current_epoch), float(value)
        self.trial.report(current, step=epoch)
        self.reported.append((epoch, current))
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


# -- the search ---------------------------------------------------------------------------


@dataclass
class TrialOutcome:
    """One trial as the tracker records it."""

    number: int
    state: Literal["COMPLETE", "PRUNED"]
    params: dict[str, Any]
    metric: str
    value: float | None  # best inner-validation value (COMPLETE) or the last one (PRUNED)
    best_epoch: int | None
    history: list[dict[str, float]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchOutcome:
    """The best trial, as settings and as overrides `train` applies (`recolab.config`)."""

    protocol: str
    metric: str
    direction: str
    best_value: float
    best_trial: int
    params: dict[str, Any]
    epochs: int
    overrides: list[str]
    n_complete: int
    n_pruned: int
    n_train_rows: int
    n_test_rows: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_overrides(params: Mapping[str, Any], epochs: int) -> list[str]:
    """`section.key=value` overrides (values as JSON, which the override parser reads as
    YAML), epochs included: later overrides (the user's) still win over these."""
    values = {**params, "max_epochs": epochs}
    return [
        f"{'model' if key in MODEL_KEYS else 'trainer'}.{key}={json.dumps(value)}"
        for key, value in values.items()
    ]


def _check_validation(config: TrainConfig) -> None:
    off = (
        config.val_fraction <= 0
        if config.mode == "explicit"
        else config.val_negatives == 0 or config.val_max_users <= 0
    )
    if off:
        raise ConfigError(
            "selection is judged on the inner validation split: it is turned off "
            "(val_fraction <= 0, val_negatives = 0 or val_max_users <= 0)"
        )


Rows = Callable[[SelectionData], pd.DataFrame]


def _training_rows(data: SelectionData) -> pd.DataFrame:
    return data.train


def default_trial(base: TrainConfig, dimensions: Sequence[Dimension]) -> dict[str, Any]:
    """The shipped configuration as a trial's parameters: every dimension whose default the
    space can draw (the others are sampled as usual, and logged)."""
    params: dict[str, Any] = {}
    for dimension in dimensions:
        value = getattr(base, dimension.name)
        label = dimension.label(value)
        if label is None:
            log.info("trial 0: the default %s=%r is outside the space", dimension.name, value)
        else:
            params[dimension.name] = label
    return params


def run_search(
    data: SelectionData,
    base: TrainConfig,
    tune: TuneConfig,
    on_trial: Callable[[TrialOutcome], None] = lambda _: None,
    *,
    rows: Rows = _training_rows,
    **trainer_overrides: Any,
) -> SearchOutcome:
    """Search `tune.space` around `base` on `rows(data)` (the training split), judged by
    the per-epoch inner validation metric. `on_trial` sees every finished or pruned trial.
    `rows` exists for the leak test; any row of the test split fails the search."""
    base = with_overrides(base, **tune.fixed, max_epochs=tune.max_epochs)
    _check_validation(base)
    monitor, direction = base.monitor
    dimensions = tune.dimensions()
    start = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        params = {d.name: d.suggest(trial) for d in dimensions}
        config = with_overrides(base, **params)
        frame = rows(data)
        assert_no_leak(frame, data, "the rows a trial fits on")
        pruning = PruneOnValidation(trial, monitor)
        began = time.perf_counter()
        result = fit(
            frame,
            config,
            callbacks=[ValidationLeakGuard(frame, data), pruning],
            **trainer_overrides,
        )
        pruned = pruning.pruned_at is not None
        last = pruning.reported[-1][1] if pruning.reported else None
        outcome = TrialOutcome(
            number=trial.number,
            state="PRUNED" if pruned else "COMPLETE",
            params=params,
            metric=monitor,
            value=last if pruned else result.best_score,
            best_epoch=result.best_epoch,
            history=list(result.history),
            seconds=time.perf_counter() - began,
        )
        trial.set_user_attr("best_epoch", result.best_epoch)
        on_trial(outcome)
        log.info(
            "trial %d %s: %s = %s in %.1fs (%s)",
            trial.number,
            outcome.state.lower(),
            monitor,
            "n/a" if outcome.value is None else f"{outcome.value:.4f}",
            outcome.seconds,
            params,
        )
        if pruned:
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        if result.best_score is None or math.isnan(result.best_score):
            raise TuningError(f"trial {trial.number}: no {monitor} was measured")
        return float(result.best_score)

    study = optuna.create_study(
        direction="maximize" if direction == "max" else "minimize",
        sampler=make_sampler(tune),
        pruner=make_pruner(tune.pruner),
    )
    if tune.start_from_defaults:
        defaults = default_trial(base, dimensions)
        if defaults:
            study.enqueue_trial(defaults)
    timeout = None if tune.timeout_minutes is None else tune.timeout_minutes * 60
    study.optimize(objective, n_trials=tune.n_trials, timeout=timeout)
    states = [t.state for t in study.trials]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    if not complete:
        raise TuningError(
            f"no trial completed ({len(states)} run, all pruned or failed): raise the budget "
            "or loosen the pruner (tune.pruner.n_startup_trials, tune.pruner.kind=none)"
        )
    best = study.best_trial
    params = {d.name: _decoded(d, best.params[d.name]) for d in dimensions}
    best_epoch = best.user_attrs.get("best_epoch")
    epochs = tune.max_epochs if best_epoch is None else int(best_epoch) + 1
    return SearchOutcome(
        protocol=data.protocol,
        metric=monitor,
        direction=study.direction.name.lower(),
        best_value=float(best.value),  # type: ignore[arg-type]
        best_trial=best.number,
        params=params,
        epochs=epochs,
        overrides=best_overrides(params, epochs),
        n_complete=complete,
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        n_train_rows=len(data.train),
        n_test_rows=len(data.test),
        seconds=time.perf_counter() - start,
    )


def _decoded(dimension: Dimension, stored: Any) -> Any:
    if dimension.kind != "categorical":
        return stored
    labels = [label_of(c) for c in dimension.choices]
    return dimension.choices[labels.index(stored)]


__all__ = [
    "Dimension",
    "PruneOnValidation",
    "SearchOutcome",
    "SearchSpaceError",
    "SelectionData",
    "SelectionLeak",
    "TrialOutcome",
    "TuneConfig",
    "TuningError",
    "ValidationLeakGuard",
    "assert_no_leak",
    "best_overrides",
    "load_tune_config",
    "make_pruner",
    "make_sampler",
    "parse_space",
    "run_search",
    "selection_data",
]
