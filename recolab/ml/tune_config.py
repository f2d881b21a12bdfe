"""configs/tune.yaml: the search space, budget, sampler and pruner of a settings search.

`space` maps training settings (recolab.ml.fitting.TrainConfig keys) to a spec: `type: float`
or `int` with `low`, `high` and optionally `log: true` or `step`, or `type: categorical`
with `choices` (a choice may be a list, e.g. MLP layer sizes). Every mistake is a
`SearchSpaceError` (a `ConfigError`) that names the setting and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, field_validator

from recolab.config import ConfigError, load_section
from recolab.ml.fitting import TrainConfig, refuse_unknown_keys

# Settings a search may not vary: the mode is the protocol's; epochs are `max_epochs` below.
FIXED_BY_TUNING = ("mode", "max_epochs")


class SearchSpaceError(ConfigError):
    """configs/tune.yaml's `space` names an unknown setting or a range Optuna cannot draw."""


# -- the search space ---------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One tuned setting: a float or int range (optionally log-scaled or stepped), or a
    list of choices (a choice may be a list, e.g. MLP layer sizes)."""

    name: str
    kind: Literal["float", "int", "categorical"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def label(self, value: Any) -> Any | None:
        """`value` as this dimension's trial parameter, or None when the space cannot draw
        it (out of range, off the step, not a choice)."""
        if self.kind == "categorical":
            label = label_of(list(value) if isinstance(value, tuple) else value)
            return label if label in [label_of(c) for c in self.choices] else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not self.low <= value <= self.high:
            return None
        if self.step:
            steps = (value - self.low) / self.step
            if abs(steps - round(steps)) > 1e-9:
                return None
        return int(value) if self.kind == "int" else float(value)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.log, step=step
            )
        labels = [label_of(c) for c in self.choices]
        picked = trial.suggest_categorical(self.name, labels)
        return self.choices[labels.index(picked)]


def label_of(choice: Any) -> Any:
    # Optuna's categorical choices are scalars: a list choice travels as its JSON text.
    return json.dumps(choice) if isinstance(choice, list | tuple | dict) else choice


_SPEC_KEYS = {"type", "low", "high", "log", "step", "choices"}


def parse_space(space: Mapping[str, Any]) -> tuple[Dimension, ...]:
    """configs/tune.yaml's `space` (setting -> spec) as dimensions; every mistake is a
    `SearchSpaceError` that names the setting and what is wrong with it."""
    if not isinstance(space, Mapping) or not space:
        raise SearchSpaceError("tune.space: expected a mapping of setting -> spec, got nothing")
    try:
        refuse_unknown_keys(space, "tune.space: ")
    except ValueError as exc:
        raise SearchSpaceError(str(exc)) from None
    return tuple(_dimension(str(name), spec) for name, spec in space.items())


def _dimension(name: str, spec: Any) -> Dimension:
    where = f"tune.space.{name}"
    if name in FIXED_BY_TUNING:
        raise SearchSpaceError(f"{where}: {name} is set by the search itself, not tuned")
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(f"{where}: expected a mapping with `type`, got {spec!r}")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise SearchSpaceError(f"{where}: unknown key(s) {unknown}; known: {sorted(_SPEC_KEYS)}")
    kind = spec.get("type")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}: categorical needs a non-empty `choices` list")
        for choice in choices:
            _check_value(where, name, choice)
        return Dimension(name, "categorical", choices=tuple(choices))
    if kind not in ("float", "int"):
        raise SearchSpaceError(f"{where}: type must be float, int or categorical, got {kind!r}")
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    log_scale = spec.get("log", False)
    number = int if kind == "int" else (int, float)
    for key, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number):
            raise SearchSpaceError(f"{where}: {key} must be a {kind}, got {value!r}")
    assert low is not None and high is not None
    if not low < high:
        raise SearchSpaceError(f"{where}: low ({low}) must be below high ({high})")
    if not isinstance(log_scale, bool):
        raise SearchSpaceError(f"{where}: log must be true or false, got {log_scale!r}")
    if log_scale and low <= 0:
        raise SearchSpaceError(f"{where}: a log scale needs low > 0, got {low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise SearchSpaceError(f"{where}: step must be a positive {kind}, got {step!r}")
        if log_scale and kind == "float":
            raise SearchSpaceError(f"{where}: a float range takes either log or step, not both")
    for value in (low, high):
        _check_value(where, name, value)
    return Dimension(name, kind, float(low), float(high), log_scale, step)


def _check_value(where: str, name: str, value: Any) -> None:
    try:
        TrainConfig.from_dict({name: value})
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(f"{where}: {value!r} is not a valid {name}: {exc}") from None


# -- configs/tune.yaml --------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplerConfig(_Section):
    seed: int = 0
    n_startup_trials: int = Field(default=5, ge=0)  # random trials before TPE models the space


class PrunerConfig(_Section):
    kind: Literal["median", "successive_halving", "none"] = "median"
    n_startup_trials: int = Field(default=3, ge=0)  # median: trials completed before pruning
    n_warmup_steps: int = Field(default=1, ge=0)  # median: epochs of a trial never pruned
    min_resource: int = Field(default=1, ge=1)  # successive halving: epochs of the first rung
    reduction_factor: int = Field(default=3, ge=2)


class TuneConfig(_Section):
    """configs/tune.yaml: the protocol whose training split is searched, the budget, the
    sampler, the pruner, settings every trial shares, and the search space."""

    protocol: Literal["A", "B", "C"] = "B"
    n_trials: int | None = Field(default=20, ge=1)
    timeout_minutes: float | None = Field(default=None, gt=0)
    max_epochs: int = Field(default=8, ge=1)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Any] = Field(default_factory=dict)
    # Trial 0 is the shipped configuration (each setting the space can draw), so the best of
    # a search is never worse than the defaults on the inner validation split.
    start_from_defaults: bool = True

    @field_validator("fixed")
    @classmethod
    def _known_fixed(cls, value: dict[str, Any]) -> dict[str, Any]:
        refuse_unknown_keys(value)
        taken = sorted(set(value) & set(FIXED_BY_TUNING))
        if taken:
            raise ValueError(f"{taken} are set by the search itself (tune.max_epochs)")
        return value

    def dimensions(self) -> tuple[Dimension, ...]:
        return parse_space(self.space)


def load_tune_config(
    config_dir: Path,
    overrides: Iterable[str] = (),
    *,
    n_trials: int | None = None,
    timeout_minutes: float | None = None,
) -> TuneConfig:
    """configs/tune.yaml with the `tune.key=value` overrides. A budget given here replaces
    the file's: one alone (trials or minutes) is then the only budget; both, both."""
    config = load_section(TuneConfig, "tune", config_dir=config_dir, overrides=overrides)
    config.dimensions()  # a bad space fails here, before any trial
    if n_trials is not None or timeout_minutes is not None:
        if n_trials is not None and n_trials < 1:
            raise ConfigError(f"tune: n_trials = {n_trials}: expected at least 1")
        if timeout_minutes is not None and timeout_minutes <= 0:
            raise ConfigError(f"tune: timeout_minutes = {timeout_minutes}: expected more than 0")
        config = config.model_copy(
            update={"n_trials": n_trials, "timeout_minutes": timeout_minutes}
        )
    if config.n_trials is None and config.timeout_minutes is None:
        raise ConfigError("tune: a budget is needed: n_trials, timeout_minutes or both")
    return config


def make_sampler(config: TuneConfig) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        seed=config.sampler.seed, n_startup_trials=config.sampler.n_startup_trials
    )


def make_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner:
    if config.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
        )
    if config.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_resource, reduction_factor=config.reduction_factor
        )
    return optuna.pruners.NopPruner()
