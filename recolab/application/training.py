"""Use case: train a model, register it, and promote it only when it beats the champion."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from recolab.domain.errors import InvalidValue
from recolab.domain.events import ModelPromoted
from recolab.domain.ports import EventPublisher
from recolab.domain.promotion import PromotionDecision, decide_promotion


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


class ModelRegistry(Protocol):
    model_name: str

    def log_and_register(self, run: TrainedModel) -> tuple[str, str]:
        """Track the run and register its model: (run id, model version)."""
        ...

    def comparable_champion(
        self, metric: str, protocol: str, snapshot_id: str
    ) -> tuple[str, float] | None:
        """The champion's (version, metric value) when measured under the same terms."""
        ...

    def promote(self, version: str, decision: PromotionDecision) -> None: ...
    def keep_as_challenger(self, version: str, decision: PromotionDecision) -> None: ...


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


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    run_id: str
    version: str
    decision: PromotionDecision
    previous_champion: str | None
    metrics: Mapping[str, float]


def register_and_promote(
    run: TrainedModel, registry: ModelRegistry, bus: EventPublisher
) -> TrainingOutcome:
    """Register the run's model; move the champion alias only if it is strictly better."""
    run_id, version = registry.log_and_register(run)
    champion = registry.comparable_champion(run.primary_metric, run.protocol_name, run.snapshot_id)
    decision = decide_promotion(
        run.primary_value,
        None if champion is None else champion[1],
        metric=run.primary_metric,
        higher_is_better=run.higher_is_better,
    )
    previous = None if champion is None else champion[0]
    if decision.promote:
        registry.promote(version, decision)
        bus.publish(
            ModelPromoted(
                model_name=registry.model_name,
                version=version,
                previous_version=previous,
                metric=run.primary_metric,
                value=run.primary_value,
                previous_value=decision.champion,
            )
        )
    else:
        registry.keep_as_challenger(version, decision)
    return TrainingOutcome(run_id, version, decision, previous, dict(run.metrics))
