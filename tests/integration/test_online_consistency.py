"""No answer after a rating's acknowledgement contains the movie just rated.

A recommendation reads the user's ratings, builds, then stores its answer in the cache. A
rating that commits and drops the user's cache between that read and that store must make
the store a no-op, or the stale answer (with the rated movie) is served from the cache until
the TTL. Proved deterministically on each cache backend with a hook that lands a rating right
after the recommender's read, and live over HTTP with racing requests.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Self

import pytest

from recolab.adapters.runtime.cache import InMemoryCache, RedisCache, ResilientCache
from recolab.application.handlers import message_bus
from recolab.application.profiles import PROFILE_KEY
from recolab.application.recommend import Recommender, RecommendRequest
from recolab.application.users import RateMovie, rate_movie
from recolab.domain import Rating, UserId
from recolab.domain.ports import Cache
from tests.integration.test_service_inprocess import _serve, make_workspace, token
from tests.unit.application.fakes import FakeCatalogue, FakeRatings, FakeUoW, Store
from tests.unit.application.test_use_cases import make_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

USER = 2  # a new user (3 ratings): content-based, no model needed


class HookedRatings(FakeRatings):
    """The user's ratings, read; then `after_read` runs (once), as a concurrent request would."""

    def __init__(self, store: Store, after_read: list[Callable[[], object]]) -> None:
        super().__init__(store)
        self.after_read = after_read

    def for_user(self, user_id: UserId, limit: int | None = None) -> list[Rating]:
        ratings = super().for_user(user_id, limit)
        while self.after_read:
            self.after_read.pop()()
        return ratings


class ReadingUoW(FakeUoW):
    """The recommender's read-only unit: it neither snapshots nor rolls back, so a rating
    committed by another unit while it is open stays committed."""

    def __init__(self, store: Store, after_read: list[Callable[[], object]]) -> None:
        super().__init__(store)
        self.ratings = HookedRatings(store, after_read)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class HookedCache:
    """`cache`, whose `lookup_many` runs `after_read` (once) when it returns the user's
    profile: then the answer is built from that profile instead of a database read."""

    def __init__(self, inner: Cache, after_read: list[Callable[[], object]]) -> None:
        self.inner = inner
        self.after_read = after_read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        values, generation = self.inner.lookup_many(group, keys)
        if PROFILE_KEY in keys and values[list(keys).index(PROFILE_KEY)] is not None:
            while self.after_read:
                self.after_read.pop()()
        return values, generation


@pytest.fixture(params=["in-process", "redis", "resilient-redis"])
def cache(request: pytest.FixtureRequest) -> Cache:
    if request.param == "in-process":
        return InMemoryCache()
    url: str = request.getfixturevalue("redis_url")
    redis = RedisCache.from_url(url, namespace=request.getfixturevalue("redis_namespace"))
    return redis if request.param == "redis" else ResilientCache(redis)


@pytest.mark.parametrize("force_refresh", [True, False])
def test_an_answer_built_before_a_rating_is_not_stored_after_it(
    cache: Cache, force_refresh: bool
) -> None:
    store = make_store()
    # the real table; the service's own collaborators are not part of this test
    bus = message_bus({"cache": cache, "metrics": None, "history": None, "last_served": None})
    after_read: list[Callable[[], object]] = []
    recommender = Recommender(
        uow_factory=lambda: ReadingUoW(store, after_read),
        catalogue=FakeCatalogue(store),
        scorer=lambda: None,
        cache=HookedCache(cache, after_read),  # type: ignore[arg-type]
        bus=bus,
        shortlist=50,
    )
    request = RecommendRequest(user_id=USER, n=5)
    first = recommender.recommend(request)
    top = first.items[0].movie_id
    if not force_refresh:  # the next request misses the cache (its answer and the user's
        cache.drop(f"rec:{USER}")  # profile) instead of bypassing it: it reads the database

    # The rating commits and drops the user's cache after the recommender read the ratings
    # (force_refresh: from the profile cached by the first request; else from the database).
    after_read.append(lambda: rate_movie(RateMovie(USER, top, 4.5), FakeUoW(store), bus))
    raced = recommender.recommend(RecommendRequest(user_id=USER, n=5, force_refresh=force_refresh))
    assert not after_read, "the hook ran"
    assert top in {i.movie_id for i in raced.items}  # built from the ratings read before

    after = recommender.recommend(request)
    served = [i.movie_id for i in after.items]
    assert top not in served, f"stale answer served (cached={after.cached}): {served}"
    assert not after.cached
    # The fresh answer is cached as usual: the guard refuses only stale stores.
    assert recommender.recommend(request).cached


# ---- live over HTTP: racing requests against the service in-process

ROUNDS = 30
RECOMMENDERS = 3
LIVE_USER = 3  # casual: content-based (no model loaded)


@pytest.fixture(params=["in-process", "redis"])
def live(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    env = make_workspace(
        tmp_path,
        rate_limit_per_minute=1_000_000,
        champion_poll_interval_s=3600,
        request_threads=8,
    )
    for key in ("RECOLAB_REDIS_URL", "RECOLAB_MODEL_NAME"):
        monkeypatch.delenv(key, raising=False)
    if request.param == "redis":
        env["RECOLAB_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["RECOLAB_REDIS_NAMESPACE"] = request.getfixturevalue("redis_namespace")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield from _serve()


def _post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers=token(LIVE_USER))
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()
    return data


def _together(calls: list[Callable[[], object]]) -> None:
    """Run `calls` in threads released at once; re-raise what any of them raised."""
    barrier = threading.Barrier(len(calls))
    failures: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures


def test_no_answer_after_a_rating_contains_the_rated_movie(live: TestClient) -> None:
    """Rounds of force_refresh recommends racing one rating of the top movie; then a
    plain recommend (the cache's answer, if any) must leave the rated movie out."""
    body = {"user_id": LIVE_USER, "n": 5}
    refresh = {**body, "force_refresh": True}
    stale: list[tuple[int, int]] = []
    for round_ in range(ROUNDS):
        top = _post(live, "/recommend", body)["items"][0]["movie_id"]
        rating = {"user_id": LIVE_USER, "movie_id": top, "score": 4.5}
        _together(
            [partial(_post, live, "/ratings", rating)]
            + [partial(_post, live, "/recommend", refresh)] * RECOMMENDERS
        )
        after = _post(live, "/recommend", body)
        if top in {item["movie_id"] for item in after["items"]}:
            stale.append((round_, top))
    assert not stale, f"the rated movie was served after its rating in {len(stale)} rounds"
