"""The event-handler table: what happens after each domain event.

Handlers are plain functions taking the event and, as keyword-only arguments, the
collaborators they need (by name: `cache`, `metrics`, `history`, `last_served`);
`recolab.bootstrap` binds them. A collaborator that a process does not have (metrics, the
history and the last answers served exist only in the service) leaves its handlers out of
that process's bus.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

from recolab.application.recommend import cache_group
from recolab.domain.events import (
    DomainEvent,
    EventBus,
    ModelPromoted,
    MovieRated,
    RecommendationsGenerated,
    UserRegistered,
)
from recolab.domain.ports import Cache, RecommendationHistory, ServiceMetrics

log = logging.getLogger(__name__)


class ExperimentMetrics(Protocol):
    def variant_answer(
        self, *, experiment: str | None, variant: str, version: str | None
    ) -> None: ...


class LastServed(Protocol):
    """The last answers served per user (per worker, bounded), for online hit counters."""

    def remember(self, event: RecommendationsGenerated) -> None: ...
    def rated(self, event: MovieRated) -> int:
        """Count the hits the rating makes on the user's remembered answers; how many."""
        ...


def drop_cached_recommendations(event: MovieRated, *, cache: Cache) -> None:
    """A new rating makes the user's cached answers stale (the movie is rated now).

    The drop also moves the group's generation on, so an answer being built from the
    ratings read before this one is not stored after it (see `Cache`). It runs after the
    rating's commit: an answer built from ratings read after this drop includes it.
    """
    cache.drop(cache_group(event.user_id.value))


def count_rating(event: MovieRated, *, metrics: ServiceMetrics) -> None:
    metrics.rating(replaced=event.previous_score is not None)


def count_online_hit(event: MovieRated, *, last_served: LastServed) -> None:
    """A rating of a movie the user was shown shortly before is a hit for that answer's
    variant (Prometheus, per worker: the `online-report` flow counts them exactly)."""
    last_served.rated(event)


def remember_answer(event: RecommendationsGenerated, *, last_served: LastServed) -> None:
    last_served.remember(event)


def count_variant_answer(event: RecommendationsGenerated, *, metrics: ExperimentMetrics) -> None:
    metrics.variant_answer(
        experiment=event.experiment, variant=event.variant, version=event.model_version
    )


def count_recommendations(event: RecommendationsGenerated, *, metrics: ServiceMetrics) -> None:
    metrics.recommendation(
        strategy=event.strategy,
        tier=event.tier,
        cached=event.cached,
        requested=event.requested,
        fallback=event.fallback is not None,
    )


def log_recommendations(event: RecommendationsGenerated) -> None:
    if not log.isEnabledFor(logging.INFO):  # the extras cost more than the check
        return
    log.info(
        "recommendations served",
        extra={
            "user_id": event.user_id.value,
            "tier": event.tier,
            "requested": event.requested,
            "strategy": event.strategy,
            "fallback": event.fallback,
            "cached": event.cached,
            "model_version": event.model_version,
            "experiment": event.experiment,
            "variant": event.variant,
            "n": event.n_recommendations,
        },
    )


def record_history(event: RecommendationsGenerated, *, history: RecommendationHistory) -> None:
    """Keep what was served; a cached answer was kept when it was built."""
    if not event.cached:
        history.record(event)


def count_registration(event: UserRegistered, *, metrics: ServiceMetrics) -> None:
    metrics.registration()


def log_promotion(event: ModelPromoted) -> None:
    log.info(
        "model %s version %s is the champion: %s %.4f (was version %s, %s)",
        event.model_name,
        event.version,
        event.metric,
        event.value,
        event.previous_version,
        "none" if event.previous_value is None else f"{event.previous_value:.4f}",
    )


Handler = Callable[..., None]

EVENT_HANDLERS: Mapping[type[DomainEvent], Sequence[Handler]] = {
    MovieRated: (drop_cached_recommendations, count_rating, count_online_hit),
    RecommendationsGenerated: (
        count_recommendations,
        count_variant_answer,
        log_recommendations,
        record_history,
        remember_answer,
    ),
    UserRegistered: (count_registration,),
    ModelPromoted: (log_promotion,),
}


def collaborators_of(handler: Handler) -> tuple[str, ...]:
    """The names of the collaborators `handler` takes (its keyword-only parameters)."""
    code = handler.__code__
    names = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    return tuple(names)


def bind(
    handlers: Mapping[type[DomainEvent], Sequence[Handler]],
    collaborators: Mapping[str, Any],
) -> dict[type[DomainEvent], list[Callable[[Any], None]]]:
    """Each handler with its collaborators bound, by event type.

    A name missing from `collaborators` is an error; a collaborator given as None is one
    this process does not have, and the handlers that need it are left out.
    """
    bound: dict[type[DomainEvent], list[Callable[[Any], None]]] = {}
    for event_type, for_event in handlers.items():
        for handler in for_event:
            needs = {name: collaborators[name] for name in collaborators_of(handler)}
            if all(value is not None for value in needs.values()):
                bound.setdefault(event_type, []).append(partial(handler, **needs))
    return bound


def message_bus(collaborators: Mapping[str, Any]) -> EventBus:
    """An event bus with every handler of `EVENT_HANDLERS` subscribed, bound to
    `collaborators` (see `bind`)."""
    bus = EventBus()
    for event_type, handlers in bind(EVENT_HANDLERS, collaborators).items():
        for handler in handlers:
            bus.subscribe(event_type, handler)
    return bus
