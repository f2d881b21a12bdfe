"""The real event-handler table, bound to fakes of our own ports."""

from __future__ import annotations

from typing import Any

from recolab.application.handlers import EVENT_HANDLERS, message_bus
from recolab.application.recommend import Recommender, RecommendRequest, cache_group
from recolab.application.users import RateMovie, rate_movie, register_user
from recolab.domain import (
    ModelPromoted,
    MovieRated,
    RecommendationsGenerated,
    UserRegistered,
)
from recolab.domain.events import EventBus

from .fakes import FakeCache, FakeCatalogue, FakeUoW
from .test_use_cases import make_store, scorer_for


class FakeMetrics:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def recommendation(self, **labels: Any) -> None:
        self.calls.append(("recommendation", labels))

    def rating(self, **labels: Any) -> None:
        self.calls.append(("rating", labels))

    def registration(self) -> None:
        self.calls.append(("registration", {}))

    def variant_answer(self, **labels: Any) -> None:
        self.calls.append(("variant_answer", labels))


class FakeHistory:
    def __init__(self) -> None:
        self.recorded: list[RecommendationsGenerated] = []

    def record(self, event: RecommendationsGenerated) -> None:
        self.recorded.append(event)


class FakeLastServed:
    def __init__(self) -> None:
        self.remembered: list[RecommendationsGenerated] = []
        self.ratings: list[MovieRated] = []

    def remember(self, event: RecommendationsGenerated) -> None:
        self.remembered.append(event)

    def rated(self, event: MovieRated) -> int:
        self.ratings.append(event)
        return 0


def test_every_published_event_has_a_handler() -> None:
    for event_type in (MovieRated, RecommendationsGenerated, UserRegistered, ModelPromoted):
        assert EVENT_HANDLERS[event_type], event_type.__name__


def _service(
    cache: FakeCache, metrics: Any, history: Any, last_served: Any = None
) -> tuple[Recommender, EventBus, Any]:
    store = make_store()
    bus = message_bus(
        {"cache": cache, "metrics": metrics, "history": history, "last_served": last_served}
    )
    rec = Recommender(
        uow_factory=lambda: FakeUoW(store),
        catalogue=FakeCatalogue(store),
        scorer=lambda: scorer_for(store),
        cache=cache,
        bus=bus,
        shortlist=50,
    )
    return rec, bus, store


def test_recommendations_are_counted_and_fresh_ones_recorded() -> None:
    cache, metrics, history = FakeCache(), FakeMetrics(), FakeHistory()
    rec, _, _ = _service(cache, metrics, history)
    fresh = rec.recommend(RecommendRequest(user_id=3, n=5))
    cached = rec.recommend(RecommendRequest(user_id=3, n=5))
    assert (fresh.cached, cached.cached) == (False, True)
    assert len(history.recorded) == 1  # a cached answer was recorded when it was built
    event = history.recorded[0]
    assert (event.user_id.value, event.tier, event.requested) == (3, "casual", "auto")
    assert (event.strategy, event.model_version) == ("hybrid", "7")
    assert [(i.movie_id, i.rank) for i in event.items] == [
        (i.movie_id, i.rank) for i in fresh.items
    ]
    counted = [labels for name, labels in metrics.calls if name == "recommendation"]
    assert [c["cached"] for c in counted] == [False, True]
    assert counted[0] == {
        "strategy": "hybrid",
        "tier": "casual",
        "cached": False,
        "requested": "auto",
        "fallback": False,
    }


def test_a_rating_drops_the_users_cached_answers_and_is_counted() -> None:
    cache, metrics = FakeCache(), FakeMetrics()
    rec, bus, store = _service(cache, metrics, FakeHistory())
    first = rec.recommend(RecommendRequest(user_id=3, n=5))
    assert cache.data[cache_group(3)]
    rate_movie(RateMovie(3, first.items[0].movie_id, 4.5), FakeUoW(store), bus)
    assert cache_group(3) not in cache.data
    assert ("rating", {"replaced": False}) in metrics.calls
    register_user(FakeUoW(store), bus)
    assert ("registration", {}) in metrics.calls


def test_handlers_whose_collaborators_a_process_lacks_are_left_out() -> None:
    cache = FakeCache()
    rec, bus, store = _service(cache, None, None)  # the CLI and the flows: no metrics, no history
    first = rec.recommend(RecommendRequest(user_id=3, n=5))
    rate_movie(RateMovie(3, first.items[0].movie_id, 4.5), FakeUoW(store), bus)
    assert cache_group(3) not in cache.data  # invalidation still runs


def test_answers_are_counted_by_variant_remembered_and_ratings_checked_for_hits() -> None:
    cache, metrics, served = FakeCache(), FakeMetrics(), FakeLastServed()
    rec, bus, store = _service(cache, metrics, FakeHistory(), served)
    fresh = rec.recommend(RecommendRequest(user_id=3, n=5))
    rec.recommend(RecommendRequest(user_id=3, n=5))  # cached: served again, remembered again
    by_variant = [labels for name, labels in metrics.calls if name == "variant_answer"]
    assert by_variant == [{"experiment": None, "variant": "champion", "version": "7"}] * 2
    assert [e.cached for e in served.remembered] == [False, True]
    assert [i.movie_id for i in served.remembered[0].items] == [i.movie_id for i in fresh.items]
    rate_movie(RateMovie(3, fresh.items[1].movie_id, 4.5), FakeUoW(store), bus)
    assert [(e.user_id.value, e.movie_id.value) for e in served.ratings] == [
        (3, fresh.items[1].movie_id)
    ]
