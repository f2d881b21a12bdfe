"""The user's profile kept in their cache group: exact round trip, and the database read
only when no rating came since it was kept."""

from __future__ import annotations

import numpy as np
import pytest

from recolab.application.handlers import message_bus
from recolab.application.profiles import PROFILE_KEY, decode_profile, encode_profile
from recolab.application.recommend import RecommendRequest
from recolab.application.users import RateMovie, rate_movie
from recolab.domain import InvalidValue, Timestamp, User, UserId
from recolab.domain.model import RatedMovies

from .fakes import FakeRatings, FakeUoW, Store
from .test_use_cases import make_store, recommender, scorer_for


@pytest.mark.parametrize("n", [0, 1, 7, 2700])
def test_profile_round_trip_is_exact(n: int) -> None:
    rng = np.random.default_rng(n)
    rated = RatedMovies(
        rng.integers(1, 2**53, n, dtype=np.int64),
        rng.integers(1, 11, n).astype(np.float64) / 2,  # half stars, 0.5 to 5.0
        rng.integers(0, 2**40, n, dtype=np.int64),
    )
    user = User(
        UserId(2**53 - 1),
        created_at=Timestamp.from_unix(1.7e9 + 0.25),
        n_ratings=n,
        avg_rating=float(rated.scores.mean()) if n else 0.0,
        last_activity=None if n % 2 else Timestamp.from_unix(1.8e9),
        favorite_genres=["Drama", "Sci-Fi"],
    )
    back_user, back = decode_profile(encode_profile(user, rated))
    assert back_user.id == user.id and back_user.n_ratings == n
    assert back_user.avg_rating == user.avg_rating
    assert back_user.created_at == user.created_at and back_user.last_activity == user.last_activity
    assert back_user.favorite_genres == user.favorite_genres
    for name in ("movie_ids", "scores", "timestamps"):
        assert getattr(back, name).dtype == getattr(rated, name).dtype
        np.testing.assert_array_equal(getattr(back, name), getattr(rated, name))


@pytest.mark.parametrize(
    "raw", [b"", b"\x01", b"\x05\x00\x00\x00[1,2]", b"\x02\x00\x00\x00{}"], ids=repr
)
def test_anything_else_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidValue):
        decode_profile(raw)


def test_truncated_profile_is_refused() -> None:
    rated = RatedMovies(np.arange(1, 4), np.array([1.0, 2.5, 5.0]), np.arange(3))
    raw = encode_profile(User(UserId(1), n_ratings=3, avg_rating=2.833333), rated)
    with pytest.raises(InvalidValue, match="does not hold 3 ratings"):
        decode_profile(raw[:-1])


class CountingRatings(FakeRatings):
    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.reads = 0

    def rated_by(self, user_id: UserId) -> RatedMovies:
        self.reads += 1
        return super().rated_by(user_id)


def test_database_is_read_again_only_after_a_rating() -> None:
    store = make_store()
    ratings = CountingRatings(store)

    def uow() -> FakeUoW:
        unit = FakeUoW(store)
        unit.ratings = ratings
        return unit

    rec, _, cache = recommender(store, scorer_for(store))
    rec.uow_factory = uow
    refresh = RecommendRequest(user_id=3, n=10, force_refresh=True)
    first = rec.recommend(refresh)
    assert ratings.reads == 1 and cache.get("rec:3", PROFILE_KEY) is not None
    again = rec.recommend(refresh)  # uncached answer, from the kept profile
    assert ratings.reads == 1 and not again.cached
    assert [i.movie_id for i in again.items] == [i.movie_id for i in first.items]

    top = first.items[0].movie_id
    rate_movie(
        RateMovie(3, top, 4.5),
        FakeUoW(store),
        message_bus({"cache": cache, "metrics": None, "history": None, "last_served": None}),
    )
    assert cache.get("rec:3", PROFILE_KEY) is None  # the rating dropped it with the answers
    after = rec.recommend(refresh)
    assert ratings.reads == 2
    assert top not in {i.movie_id for i in after.items}


def test_a_profile_in_another_layout_is_read_from_the_database() -> None:
    store = make_store()
    rec, _, cache = recommender(store, scorer_for(store))
    cache.set("rec:3", PROFILE_KEY, b"\x02\x00\x00\x00{}", 600)  # another version's bytes
    result = rec.recommend(RecommendRequest(user_id=3, n=10))
    assert result.classification == "casual" and len(result.items) == 10
    assert decode_profile(cache.get("rec:3", PROFILE_KEY) or b"")[0].n_ratings == 10
