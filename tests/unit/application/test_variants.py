"""The recommender answers each user with their variant's model (canary), scores the
challenger in shadow off the request path, and keeps its cache right across experiments."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from recolab.application.recommend import (
    RecommendationResult,
    Recommender,
    RecommendRequest,
    Route,
)
from recolab.domain import RecommendationsGenerated
from recolab.domain.experiments import CHALLENGER, CHAMPION, SHADOW, Experiment, assign_variant

from .fakes import FakeCache, FakeCatalogue, FakeScorer, FakeUoW, RecordingBus, Store
from .test_use_cases import make_store


def scorers(store: Store) -> tuple[FakeScorer, FakeScorer]:
    """A champion (version 1) and a challenger (version 2) that rank differently."""
    users = (3, 4)
    champion = {u: {m.value: ((m.value * 37 + u) % 101) / 100 for m in store.movies} for u in users}
    challenger = {u: {m.value: ((m.value * 53 + u) % 97) / 97 for m in store.movies} for u in users}
    return FakeScorer("1", champion), FakeScorer("2", challenger)


class Router:
    """Routes as the service's VariantRouter does, from an experiment we set by hand."""

    def __init__(self, champion: FakeScorer, challenger: FakeScorer) -> None:
        self.champion, self.challenger = champion, challenger
        self.experiment: Experiment | None = None

    def __call__(self, user_id: int) -> Route:
        e = self.experiment
        if e is None:
            return Route(self.champion)
        if e.mode == "shadow":
            shadow = (
                self.challenger
                if assign_variant(user_id, Experiment(e.name, "canary", e.share)) == CHALLENGER
                else None
            )
            return Route(self.champion, CHAMPION, e.name, shadow=shadow)
        if assign_variant(user_id, e) == CHALLENGER:
            return Route(self.challenger, CHALLENGER, e.name)
        return Route(self.champion, CHAMPION, e.name)


class SyncShadow:
    """Runs each shadow job at once, in the caller's thread (the worst case for an answer:
    the job shares everything with the request), and records what it returns."""

    def __init__(self) -> None:
        self.recorded: list[RecommendationsGenerated] = []

    def submit(self, job: Callable[[], RecommendationsGenerated]) -> bool:
        self.recorded.append(job())
        return True


class CountingUoW(FakeUoW):
    opened = 0

    def __enter__(self) -> Any:
        CountingUoW.opened += 1
        return super().__enter__()


def build(
    store: Store, route: Callable[[int], Route] | None, shadow: Any = None, cache: Any = None
) -> tuple[Recommender, RecordingBus]:
    bus = RecordingBus()
    rec = Recommender(
        uow_factory=lambda: CountingUoW(store),
        catalogue=FakeCatalogue(store),
        scorer=lambda: None,
        cache=cache or FakeCache(),
        bus=bus,
        shortlist=50,
        route=route,
        shadow=shadow,
    )
    return rec, bus


def _users_in(experiment: Experiment) -> tuple[int, int]:
    """One of the known users (3, 4) in the share and one out of it, for this name."""
    inside = [u for u in (3, 4) if assign_variant(u, experiment) == CHALLENGER]
    outside = [u for u in (3, 4) if assign_variant(u, experiment) == CHAMPION]
    assert inside and outside, "pick another experiment name"
    return inside[0], outside[0]


CANARY = Experiment("canary-a", "canary", 0.5)


def test_the_challenger_answers_the_canary_users_and_the_champion_the_rest() -> None:
    store = make_store()
    champion, challenger = scorers(store)
    router = Router(champion, challenger)
    router.experiment = CANARY
    rec, bus = build(store, router)
    inside, outside = _users_in(CANARY)
    canary = rec.recommend(RecommendRequest(user_id=inside, n=5))
    held = rec.recommend(RecommendRequest(user_id=outside, n=5))
    assert (canary.model_version, canary.variant, canary.experiment) == (
        "2",
        CHALLENGER,
        CANARY.name,
    )
    assert (held.model_version, held.variant, held.experiment) == ("1", CHAMPION, CANARY.name)
    # the challenger's own ranking, not the champion's
    alone, _ = build(store, lambda _u: Route(challenger))
    assert [i.movie_id for i in canary.items] == [
        i.movie_id for i in alone.recommend(RecommendRequest(user_id=inside, n=5)).items
    ]
    events = [e for e in bus.events if isinstance(e, RecommendationsGenerated)]
    assert [(e.experiment, e.variant, e.model_version) for e in events] == [
        (CANARY.name, CHALLENGER, "2"),
        (CANARY.name, CHAMPION, "1"),
    ]


def test_no_experiment_answers_with_the_champion_and_says_so() -> None:
    store = make_store()
    champion, challenger = scorers(store)
    rec, bus = build(store, Router(champion, challenger))
    result = rec.recommend(RecommendRequest(user_id=3, n=5))
    assert (result.experiment, result.variant, result.model_version) == (None, CHAMPION, "1")
    event = bus.events[-1]
    assert isinstance(event, RecommendationsGenerated)
    assert (event.experiment, event.variant) == (None, CHAMPION)


def test_a_cached_challenger_answer_is_never_served_after_the_experiment_stops() -> None:
    store = make_store()
    champion, challenger = scorers(store)
    router = Router(champion, challenger)
    router.experiment = CANARY
    cache = FakeCache()
    rec, _ = build(store, router, cache=cache)
    inside, _ = _users_in(CANARY)
    first = rec.recommend(RecommendRequest(user_id=inside, n=5))
    again = rec.recommend(RecommendRequest(user_id=inside, n=5))
    assert (again.cached, again.model_version, again.variant) == (True, "2", CHALLENGER)
    router.experiment = None  # stopped: the next answer is the champion's
    after = rec.recommend(RecommendRequest(user_id=inside, n=5))
    assert (after.cached, after.model_version, after.variant, after.experiment) == (
        False,
        "1",
        CHAMPION,
        None,
    )
    assert [i.movie_id for i in after.items] != [i.movie_id for i in first.items]
    # restarted under another name, the same user in the share again: the challenger's
    # cached answer is that model's answer, served with the current experiment's name
    router.experiment = Experiment("canary-b", "canary", 1.0)
    back = rec.recommend(RecommendRequest(user_id=inside, n=5))
    assert (back.cached, back.model_version, back.variant, back.experiment) == (
        True,
        "2",
        CHALLENGER,
        "canary-b",
    )
    assert [i.movie_id for i in back.items] == [i.movie_id for i in first.items]
    for raw in cache.data[f"rec:{inside}"].values():  # the cache holds no routing
        assert b'"variant"' not in raw and b'"experiment"' not in raw


SHADOW_ALL = Experiment("shadow-a", "shadow", 1.0)


def _answer(result: RecommendationResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.to_json())
    data.pop("generated_at")
    return {**data, "experiment": result.experiment, "variant": result.variant}


@pytest.mark.parametrize("user_id", [1, 2, 3, 4])  # every tier
def test_shadow_never_changes_the_answer_and_records_the_challengers(user_id: int) -> None:
    store = make_store()
    champion, challenger = scorers(store)
    router = Router(champion, challenger)
    router.experiment = SHADOW_ALL
    plain, _ = build(store, router)
    shadow = SyncShadow()
    shadowed, bus = build(store, router, shadow)
    request = RecommendRequest(user_id=user_id, n=7)
    served = shadowed.recommend(request)
    assert _answer(served) == _answer(plain.recommend(request))
    assert (served.variant, served.experiment, served.model_version) == (CHAMPION, "shadow-a", "1")
    [recorded] = shadow.recorded
    published = [e for e in bus.events if isinstance(e, RecommendationsGenerated)]
    assert [e.variant for e in published] == [CHAMPION]  # the shadow is not published
    assert (recorded.variant, recorded.experiment, recorded.user_id.value) == (
        SHADOW,
        "shadow-a",
        user_id,
    )
    assert recorded.occurred_at == published[0].occurred_at  # one answer, two variants
    assert recorded.tier == served.classification
    if served.classification in ("casual", "power_user"):  # tiers the model serves
        assert recorded.model_version == "2"
        alone, _ = build(store, lambda _u: Route(challenger))
        expected = alone.recommend(request)
        assert [(i.movie_id, i.rank) for i in recorded.items] == [
            (i.movie_id, i.rank) for i in expected.items
        ]


def test_shadow_reuses_what_the_request_read_and_skips_cached_answers() -> None:
    store = make_store()
    champion, challenger = scorers(store)
    router = Router(champion, challenger)
    router.experiment = SHADOW_ALL
    shadow = SyncShadow()
    rec, _ = build(store, router, shadow)
    CountingUoW.opened = 0
    rec.recommend(RecommendRequest(user_id=4, n=5))
    assert CountingUoW.opened == 1  # the request's read only: the shadow job reads nothing
    rec.recommend(RecommendRequest(user_id=4, n=5))  # cached: neither built nor shadowed
    assert len(shadow.recorded) == 1
    rec.recommend(RecommendRequest(user_id=4, n=5, force_refresh=True))
    assert len(shadow.recorded) == 2
    assert CountingUoW.opened == 1  # the profile came from the cache


def test_a_shadow_that_cannot_be_handed_off_never_raises() -> None:
    class Broken:
        def submit(self, job: Callable[[], RecommendationsGenerated]) -> bool:
            raise RuntimeError("queue gone")

    store = make_store()
    champion, challenger = scorers(store)
    router = Router(champion, challenger)
    router.experiment = SHADOW_ALL
    rec, _ = build(store, router, Broken())
    plain, _ = build(store, router)
    request = RecommendRequest(user_id=3, n=5)
    assert _answer(rec.recommend(request)) == _answer(plain.recommend(request))


def test_only_the_users_in_the_shadow_share_are_scored() -> None:
    store = make_store()
    champion, challenger = scorers(store)
    router = Router(champion, challenger)
    router.experiment = Experiment("canary-a", "shadow", 0.5)
    shadow = SyncShadow()
    rec, _ = build(store, router, shadow)
    inside, outside = _users_in(CANARY)  # the same name: the same users
    rec.recommend(RecommendRequest(user_id=outside, n=5))
    assert shadow.recorded == []
    rec.recommend(RecommendRequest(user_id=inside, n=5))
    assert [e.user_id.value for e in shadow.recorded] == [inside]
