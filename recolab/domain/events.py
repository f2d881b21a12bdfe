"""Domain events (past tense) and a small synchronous in-process event bus."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from recolab.domain.experiments import CHAMPION
from recolab.domain.values import MovieId, RatingScore, Timestamp, UserId


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    # 128 random bits as hex, like uuid4().hex at a tenth of its cost: one event is built
    # per answer, cached answers included.
    event_id: str = field(default_factory=lambda: os.urandom(16).hex())
    occurred_at: Timestamp = field(default_factory=Timestamp.now)


@dataclass(frozen=True, kw_only=True)
class MovieRated(DomainEvent):
    user_id: UserId
    movie_id: MovieId
    score: RatingScore
    previous_score: RatingScore | None = None


@dataclass(frozen=True, kw_only=True)
class UserRegistered(DomainEvent):
    user_id: UserId


class RankedItem(Protocol):
    """One recommended movie as an event carries it (the use case's items fit as they are)."""

    @property
    def movie_id(self) -> int: ...
    @property
    def rank(self) -> int: ...
    @property
    def score(self) -> float: ...
    @property
    def source(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class RecommendationsGenerated(DomainEvent):
    """A user was answered with recommendations, freshly built or from the cache (`cached`).

    `requested` is the strategy asked for ("auto" follows the tier), `strategy` the one
    used, and `fallback` says why they differ when the requested one could not be used.
    `experiment` names the online experiment the answer belongs to (None: none ran) and
    `variant` which of its models answered (`recolab.domain.experiments`: champion,
    challenger, or shadow for a challenger's answer scored off the request path, never shown).
    """

    user_id: UserId
    tier: str
    requested: str
    strategy: str
    items: Sequence[RankedItem]
    diversity_score: float
    model_version: str | None = None
    cached: bool = False
    fallback: str | None = None
    experiment: str | None = None
    variant: str = CHAMPION

    @property
    def n_recommendations(self) -> int:
        return len(self.items)


@dataclass(frozen=True, kw_only=True)
class ModelPromoted(DomainEvent):
    model_name: str
    version: str
    previous_version: str | None
    metric: str
    value: float
    previous_value: float | None = None


E = TypeVar("E", bound=DomainEvent)
Handler = Callable[[Any], None]


class EventBus:
    """Calls every handler subscribed to an event's type (or a base type), in order.

    A failing handler does not stop the others; their errors are raised together afterwards.
    """

    def __init__(self) -> None:
        self._handlers: defaultdict[type[DomainEvent], list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        self._handlers[event_type].append(handler)

    def publish(self, event: DomainEvent) -> None:
        errors: list[Exception] = []
        for event_type in type(event).__mro__:
            for handler in self._handlers.get(event_type, []):
                try:
                    handler(event)
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise ExceptionGroup(f"handlers failed for {type(event).__name__}", errors)
