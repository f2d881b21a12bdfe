"""Use case: train a model, register it, and promote it only when it beats the popularity
baseline and the champion measured on the same data."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from recolab.domain.errors import InvalidValue
from recolab.domain.events import ModelPromoted
from recolab.domain.ports import EventPublisher
from recolab.domain.promotion import (
    MIN_COMPARABLE_ROWS,
    HeadToHead,
    PromotionDecision,
    decide_promotion,
)


class TrainedModel(Protocol):
    """What promotion needs to know about a training run (opaque otherwise)."""

    @property
    def protocol_name(self) -> str: ...
    @property
    def snapshot_id(self) -> str: ...
    @property
    def primary_metric(self) -> str: ...
    @property
    def higher_is_better(self) -> bool: ...
    @property
    def primary_value(self) -> float: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...


@dataclass(frozen=True, slots=True)
class ChampionComparison:
    """The current champion and the candidate measured on the same rows of the candidate's
    test split (its snapshot and protocol), and what those rows were."""

    version: str
    candidate: float
    champion: float
    data: Mapping[str, object]
    rows: int | None = None  # how many test rows both were measured on


class ModelRegistry(Protocol):
    model_name: str

    def log_and_register(self, run: TrainedModel) -> tuple[str, str]:
        """Track the run and register its model: (run id, model version)."""
        ...

    def compare_with_champion(self, run: TrainedModel) -> ChampionComparison | None:
        """The champion re-scored on `run`'s own test split beside `run`'s model, whatever
        protocol or snapshot the champion was trained under; None when there is no champion."""
        ...

    def promote(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None: ...
    def keep_as_challenger(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None: ...
    def make_challenger(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None:
        """Give `version` the `challenger` alias (an online experiment may try it)."""
        ...


P = TypeVar("P")  # an evaluation protocol
S = TypeVar("S")  # a feature snapshot
C = TypeVar("C")  # a training configuration
R = TypeVar("R")  # a training run


def fit_model(
    protocol: str,
    protocols: Mapping[str, P],
    snapshot: Callable[[], S],
    configure: Callable[[P], C],
    fit: Callable[[S, str, C], R],
) -> R:
    """Fit and evaluate a model under `protocol` (a key of `protocols`) on `snapshot()`,
    configured by `configure(protocol)`; nothing is registered."""
    if protocol not in protocols:
        raise InvalidValue(f"protocol = {protocol!r}: expected one of {', '.join(protocols)}")
    data = snapshot()
    return fit(data, protocol, configure(protocols[protocol]))


# The baseline a candidate must beat under its protocol: popularity where the experiment
# ranks with it (B, C); under A (rating prediction) popularity is not run, and the bias-only
# model (mu + b_u + b_i) is the simplest rating predictor it reports.
BASELINES = ("popularity", "bias_only")


def baseline_of(run: TrainedModel) -> tuple[str, float | None]:
    """(name, figure) of the baseline `run` must beat, from its metrics
    (`baseline_<name>_<metric>`); the figure is None when the run measured none."""
    for name in BASELINES:
        value = run.metrics.get(f"baseline_{name}_{run.primary_metric}")
        if value is not None:
            return name, float(value)
    return BASELINES[0], None


def challenger_eligible(
    run: TrainedModel,
    decision: PromotionDecision,
    champion: ChampionComparison | None,
    min_rows: int,
) -> bool:
    """Whether a candidate may be tried online: it would be promoted, or it strictly beats
    the baseline and only the number of comparable test rows kept the offline head-to-head
    from being made (a retrain on the champion's own snapshot)."""
    if decision.promote:
        return True
    if champion is None or champion.rows is None or champion.rows >= min_rows:
        return False
    baseline, value = decision.baseline, run.primary_value
    if baseline is None or not (math.isfinite(baseline) and math.isfinite(value)):
        return False
    return value > baseline if run.higher_is_better else value < baseline


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    run_id: str
    version: str
    decision: PromotionDecision
    previous_champion: str | None
    metrics: Mapping[str, float]
    details: Mapping[str, object]


def register_and_promote(
    run: TrainedModel,
    registry: ModelRegistry,
    bus: EventPublisher,
    *,
    min_comparable_rows: int = MIN_COMPARABLE_ROWS,
    as_challenger: bool = False,
) -> TrainingOutcome:
    """Register the run's model; move the champion alias only if it beats the baseline under
    its protocol and the champion re-scored on the same data, at least `min_comparable_rows`
    test rows of it (see `decide_promotion`).

    `as_challenger`: a model that would be promoted gets the `challenger` alias instead, for
    an online experiment to decide (`recolab experiment start`, `recolab online-report
    --promote`). So does one the offline comparison cannot judge (too few test rows the
    champion was not trained on: a retrain on the champion's own snapshot) as long as it
    beats the baseline: traffic can compare what a held-out split cannot."""
    run_id, version = registry.log_and_register(run)
    baseline_name, baseline = baseline_of(run)
    champion = registry.compare_with_champion(run)
    decision = decide_promotion(
        run.primary_value,
        None
        if champion is None
        else HeadToHead(champion.candidate, champion.champion, champion.rows),
        baseline,
        metric=run.primary_metric,
        higher_is_better=run.higher_is_better,
        baseline_name=baseline_name,
        min_rows=min_comparable_rows,
    )
    previous = None if champion is None else champion.version
    details: dict[str, object] = {
        "metric": run.primary_metric,
        "snapshot": run.snapshot_id,
        "protocol": run.protocol_name,
        "baseline_name": baseline_name,
        "champion_version": previous,
        "min_comparable_rows": min_comparable_rows,
        **({} if champion is None else {f"same_data.{k}": v for k, v in champion.data.items()}),
    }
    if as_challenger:
        if challenger_eligible(run, decision, champion, min_comparable_rows):
            registry.make_challenger(version, decision, details)
        else:
            registry.keep_as_challenger(version, decision, details)
    elif decision.promote:
        registry.promote(version, decision, details)
        bus.publish(
            ModelPromoted(
                model_name=registry.model_name,
                version=version,
                previous_version=previous,
                metric=run.primary_metric,
                # both on the same data when there was a champion
                value=(
                    run.primary_value
                    if decision.candidate_same_data is None
                    else decision.candidate_same_data
                ),
                previous_value=decision.champion,
            )
        )
    else:
        registry.keep_as_challenger(version, decision, details)
    return TrainingOutcome(run_id, version, decision, previous, dict(run.metrics), details)
