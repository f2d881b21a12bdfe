"""Domain events and the in-process event bus."""

from __future__ import annotations

import dataclasses

import pytest

from recolab.domain import (
    DomainEvent,
    EventBus,
    ModelPromoted,
    MovieId,
    MovieRated,
    RatingScore,
    RecommendationsGenerated,
    Timestamp,
    UserId,
    UserRegistered,
)
from recolab.domain.ports import EventPublisher


def _rated(stars: float = 4.0) -> MovieRated:
    return MovieRated(user_id=UserId(1), movie_id=MovieId(2), score=RatingScore(stars))


def test_handlers_are_called_in_subscription_order() -> None:
    bus = EventBus()
    calls: list[str] = []
    bus.subscribe(MovieRated, lambda e: calls.append(f"first {e.score.value}"))
    bus.subscribe(MovieRated, lambda e: calls.append(f"second {e.movie_id.value}"))
    bus.publish(_rated(3.5))
    assert calls == ["first 3.5", "second 2"]


def test_handlers_only_receive_their_event_type() -> None:
    bus = EventBus()
    rated: list[MovieRated] = []
    registered: list[UserRegistered] = []
    bus.subscribe(MovieRated, rated.append)
    bus.subscribe(UserRegistered, registered.append)
    event = UserRegistered(user_id=UserId(3))
    bus.publish(event)
    assert rated == []
    assert registered == [event]


def test_base_type_subscription_receives_every_event_after_specific_handlers() -> None:
    bus = EventBus()
    seen: list[tuple[str, DomainEvent]] = []
    bus.subscribe(DomainEvent, lambda e: seen.append(("any", e)))
    bus.subscribe(MovieRated, lambda e: seen.append(("rated", e)))
    first = _rated()
    second = UserRegistered(user_id=UserId(5))
    bus.publish(first)
    bus.publish(second)
    assert seen == [("rated", first), ("any", first), ("any", second)]


def test_publishing_without_handlers_is_fine() -> None:
    EventBus().publish(_rated())


def test_a_failing_handler_does_not_stop_the_others() -> None:
    bus = EventBus()
    calls: list[str] = []

    def boom(event: MovieRated) -> None:
        raise RuntimeError("cache down")

    def also_boom(event: DomainEvent) -> None:
        raise KeyError("missing")

    bus.subscribe(MovieRated, boom)
    bus.subscribe(MovieRated, lambda e: calls.append("after boom"))
    bus.subscribe(DomainEvent, also_boom)
    bus.subscribe(DomainEvent, lambda e: calls.append("base"))
    with pytest.raises(ExceptionGroup, match="MovieRated") as info:
        bus.publish(_rated())
    assert calls == ["after boom", "base"]
    assert [type(e) for e in info.value.exceptions] == [RuntimeError, KeyError]


def test_events_have_unique_ids_and_timestamps() -> None:
    before = Timestamp.now()
    events = [_rated() for _ in range(50)]
    after = Timestamp.now()
    assert len({e.event_id for e in events}) == 50
    assert all(len(e.event_id) == 32 for e in events)
    assert all(before <= e.occurred_at <= after for e in events)


def test_events_are_immutable_and_keyword_only() -> None:
    event = _rated()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.score = RatingScore(1.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        MovieRated(UserId(1), MovieId(2), RatingScore(4.0))  # type: ignore[call-arg, arg-type]


def test_event_payloads() -> None:
    rerated = MovieRated(
        user_id=UserId(1),
        movie_id=MovieId(2),
        score=RatingScore(2.0),
        previous_score=RatingScore(4.0),
    )
    assert rerated.previous_score == RatingScore(4.0)
    assert _rated().previous_score is None
    generated = RecommendationsGenerated(
        user_id=UserId(1),
        tier="casual",
        requested="auto",
        strategy="hybrid",
        items=(),
        diversity_score=0.4,
    )
    assert generated.model_version is None and generated.fallback is None
    assert (generated.cached, generated.n_recommendations) == (False, 0)
    promoted = ModelPromoted(
        model_name="neumf", version="3", previous_version="2", metric="val/ndcg@10", value=0.31
    )
    assert promoted.previous_value is None
    assert isinstance(promoted, DomainEvent)
    stamp = Timestamp.from_unix(0)
    pinned = UserRegistered(user_id=UserId(1), event_id="abc", occurred_at=stamp)
    assert (pinned.event_id, pinned.occurred_at) == ("abc", stamp)


def test_event_bus_is_an_event_publisher() -> None:
    received: list[DomainEvent] = []
    bus = EventBus()
    bus.subscribe(DomainEvent, received.append)
    publisher: EventPublisher = bus  # mypy checks the port is satisfied
    event = _rated()
    publisher.publish(event)
    assert received == [event]
