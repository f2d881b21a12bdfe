"""Entities: classification, running statistics, invariants, genre rules."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from recolab.domain import (
    InvalidValue,
    Movie,
    MovieId,
    MovieNotFound,
    NotFound,
    Rating,
    RatingScore,
    Timestamp,
    User,
    UserClassification,
    UserId,
    UserNotFound,
    genre_jaccard,
)
from recolab.domain.model import TIER_UPPER_BOUNDS

NOW = Timestamp.from_unix(1_700_000_000)


def _user(n: int = 0, avg: float = 0.0) -> User:
    return User(UserId(1), created_at=NOW, n_ratings=n, avg_rating=avg)


def _movie(
    genres: tuple[str, ...] = ("Drama",), count: int = 0, avg: float = 0.0, year: int | None = None
) -> Movie:
    return Movie(MovieId(1), "Heat", genres, year=year, rating_count=count, avg_rating=avg)


@pytest.mark.parametrize(
    ("n", "tier"),
    [
        (0, UserClassification.COLD_START),
        (1, UserClassification.NEW),
        (5, UserClassification.NEW),
        (6, UserClassification.CASUAL),
        (20, UserClassification.CASUAL),
        (21, UserClassification.ACTIVE),
        (100, UserClassification.ACTIVE),
        (101, UserClassification.POWER_USER),
        (10_000, UserClassification.POWER_USER),
    ],
)
def test_classification_boundaries(n: int, tier: UserClassification) -> None:
    assert UserClassification.from_count(n) is tier
    assert _user(n, 3.0 if n else 0.0).classify() is tier


def test_classification_rejects_negative_counts() -> None:
    with pytest.raises(InvalidValue, match="negative"):
        UserClassification.from_count(-1)


def test_classification_values_are_the_wire_names() -> None:
    assert [c.value for c in UserClassification] == [
        "cold_start",
        "new",
        "casual",
        "active",
        "power_user",
    ]


@pytest.mark.parametrize(
    ("n", "cf"), [(0, 0.0), (1, 0.02), (25, 0.5), (50, 1.0), (51, 1.0), (200, 1.0)]
)
def test_cf_and_cb_weights(n: int, cf: float) -> None:
    user = _user(n, 3.0 if n else 0.0)
    assert user.cf_weight() == pytest.approx(cf)
    assert user.cb_weight() == pytest.approx(1.0 - cf)
    assert user.cf_weight() + user.cb_weight() == pytest.approx(1.0)


def test_record_rating_keeps_an_incremental_mean() -> None:
    user = _user()
    for i, stars in enumerate([4.0, 2.0, 5.0, 0.5], start=1):
        user.record_rating(RatingScore(stars), at=NOW)
        assert user.n_ratings == i
    assert user.avg_rating == pytest.approx((4.0 + 2.0 + 5.0 + 0.5) / 4)


def test_re_rating_replaces_the_previous_score_and_keeps_the_count() -> None:
    user = _user()
    user.record_rating(RatingScore(4.0), at=NOW)
    user.record_rating(RatingScore(2.0), at=NOW)
    user.record_rating(RatingScore(1.0), previous=RatingScore(4.0), at=NOW)
    assert user.n_ratings == 2
    assert user.avg_rating == pytest.approx(1.5)


def test_re_rating_without_any_rating_is_rejected() -> None:
    user = _user()
    with pytest.raises(InvalidValue, match="replace"):
        user.record_rating(RatingScore(3.0), previous=RatingScore(4.0))
    assert user.n_ratings == 0
    assert user.last_activity is None


def test_re_rating_that_would_leave_the_valid_range_is_rejected() -> None:
    # `previous` was never part of the mean: the result would be negative.
    user = _user(1, 1.0)
    with pytest.raises(InvalidValue, match="between 0 and 5"):
        user.record_rating(RatingScore(0.5), previous=RatingScore(5.0))
    assert user.avg_rating == 1.0


def test_record_rating_sets_last_activity() -> None:
    user = _user()
    assert user.last_activity is None
    user.record_rating(RatingScore(3.0), at=NOW)
    assert user.last_activity == NOW
    before = Timestamp.now()
    user.record_rating(RatingScore(3.0))
    assert user.last_activity is not None
    assert user.last_activity >= before


@pytest.mark.parametrize(
    ("n", "avg"),
    [(-1, 0.0), (3, -0.5), (3, 5.5), (3, math.nan), (3, math.inf), (0, 3.0), (0, 0.01)],
)
def test_user_invariants(n: int, avg: float) -> None:
    with pytest.raises(InvalidValue):
        User(UserId(1), n_ratings=n, avg_rating=avg)


@pytest.mark.parametrize(("n", "avg"), [(0, 0.0), (1, 0.5), (3, 5.0), (2, 5.0 + 1e-12)])
def test_user_accepts_valid_statistics_and_clamps_ulp_drift(n: int, avg: float) -> None:
    user = User(UserId(1), n_ratings=n, avg_rating=avg)
    assert 0.0 <= user.avg_rating <= 5.0
    assert user.avg_rating == pytest.approx(avg)


def test_user_defaults_and_identity() -> None:
    user = User(UserId(9))
    assert user.n_ratings == 0
    assert user.avg_rating == 0.0
    assert user.favorite_genres == []
    assert user.last_activity is None
    assert user.classify() is UserClassification.COLD_START
    same = User(UserId(9), n_ratings=4, avg_rating=3.0)
    assert user == same
    assert hash(user) == hash(same)
    assert user != User(UserId(10))
    assert user != UserId(9)
    assert len({user, same}) == 1


@pytest.mark.parametrize("title", ["", "   ", "\t\n"])
def test_movie_rejects_blank_titles(title: str) -> None:
    with pytest.raises(InvalidValue, match="title"):
        Movie(MovieId(1), title)


def test_movie_rejects_non_string_title() -> None:
    with pytest.raises(InvalidValue, match="title"):
        Movie(MovieId(1), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("count", "avg"), [(-1, 0.0), (0, 4.0), (10, 5.5), (10, -1.0), (10, math.nan)]
)
def test_movie_statistics_invariants(count: int, avg: float) -> None:
    with pytest.raises(InvalidValue):
        Movie(MovieId(1), "Heat", ("Crime",), rating_count=count, avg_rating=avg)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((), ("Unknown",)),
        (("", "  "), ("Unknown",)),
        ((" Action ", "Drama"), ("Action", "Drama")),
        (("Drama", "drama", "DRAMA", "Crime"), ("Drama", "Crime")),
        (["Sci-Fi", "Action", "sci-fi"], ("Sci-Fi", "Action")),
    ],
)
def test_movie_genres_are_normalised(given: tuple[str, ...], expected: tuple[str, ...]) -> None:
    movie = Movie(MovieId(1), "Heat", given)
    assert movie.genres == expected
    assert isinstance(movie.genres, tuple)


def test_movie_add_rating_and_re_rating() -> None:
    movie = _movie()
    movie.add_rating(RatingScore(5.0))
    movie.add_rating(RatingScore(3.0))
    assert movie.rating_count == 2
    assert movie.avg_rating == pytest.approx(4.0)
    movie.add_rating(RatingScore(1.0), previous=RatingScore(5.0))
    assert movie.rating_count == 2
    assert movie.avg_rating == pytest.approx(2.0)
    with pytest.raises(InvalidValue):
        _movie().add_rating(RatingScore(1.0), previous=RatingScore(5.0))


@pytest.mark.parametrize(
    ("count", "avg", "expected"),
    [(0, 0.0, 0.0), (9, 3.0, 3.0), (99, 4.0, 8.0), (999, 5.0, 15.0), (1, 2.0, 2 * math.log10(2))],
)
def test_popularity_score(count: int, avg: float, expected: float) -> None:
    assert _movie(count=count, avg=avg).popularity_score() == pytest.approx(expected)


@pytest.mark.parametrize(("count", "popular"), [(99, False), (100, True), (101, True)])
def test_is_popular_default_threshold(count: int, popular: bool) -> None:
    assert _movie(count=count, avg=3.0).is_popular() is popular


def test_is_popular_custom_threshold() -> None:
    assert _movie(count=10, avg=3.0).is_popular(threshold=10)
    assert not _movie(count=9, avg=3.0).is_popular(threshold=10)


@pytest.mark.parametrize(
    ("avg", "well", "well_at_4_5"), [(3.99, False, False), (4.0, True, False), (4.5, True, True)]
)
def test_is_well_rated(avg: float, well: bool, well_at_4_5: bool) -> None:
    assert _movie(count=3, avg=avg).is_well_rated() is well
    assert _movie(count=3, avg=avg).is_well_rated(threshold=4.5) is well_at_4_5


def test_has_genre_is_case_insensitive() -> None:
    movie = _movie(("Action", "Sci-Fi"))
    assert movie.has_genre("action")
    assert movie.has_genre("SCI-FI")
    assert not movie.has_genre("Drama")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (("Action",), ("Drama",), 0.0),
        (("Action", "Drama"), ("drama", "ACTION"), 1.0),
        (("Action", "Drama"), ("Drama", "Crime"), 1 / 3),
        (("Action", "Drama", "Crime"), ("crime",), 1 / 3),
        ((), (), 0.0),
        (("Action",), (), 0.0),
    ],
)
def test_genre_jaccard(a: tuple[str, ...], b: tuple[str, ...], expected: float) -> None:
    assert genre_jaccard(a, b) == pytest.approx(expected)
    assert genre_jaccard(b, a) == pytest.approx(expected)


def test_movie_genre_similarity_uses_jaccard() -> None:
    movie = _movie(("Action", "Drama"))
    assert movie.genre_similarity(["drama", "crime"]) == pytest.approx(1 / 3)
    assert movie.genre_similarity([]) == 0.0
    assert movie.genre_similarity(("DRAMA", "action")) == 1.0


def test_movie_identity_by_id() -> None:
    a = Movie(MovieId(3), "Heat", ("Crime",))
    b = Movie(MovieId(3), "Heat (director's cut)", ("Action",), year=1995)
    assert a == b
    assert hash(a) == hash(b)
    assert a != Movie(MovieId(4), "Heat", ("Crime",))
    assert a != MovieId(3)


def _rating(stars: float, at: Timestamp = NOW) -> Rating:
    return Rating(UserId(2), MovieId(3), RatingScore(stars), at)


@pytest.mark.parametrize(
    ("stars", "positive", "negative"),
    [(5.0, True, False), (4.0, True, False), (3.5, False, False), (3.0, False, False),
     (2.5, False, True), (0.5, False, True)],
)  # fmt: skip
def test_rating_positive_negative(stars: float, positive: bool, negative: bool) -> None:
    rating = _rating(stars)
    assert rating.is_positive() is positive
    assert rating.is_negative() is negative


@pytest.mark.parametrize(("days_ago", "recent"), [(0, True), (29, True), (30, True), (31, False)])
def test_rating_is_recent_with_injected_now(days_ago: int, recent: bool) -> None:
    rating = _rating(4.0, NOW - timedelta(days=days_ago))
    assert rating.is_recent(now=NOW) is recent


def test_rating_is_recent_custom_window_and_default_now() -> None:
    rating = _rating(4.0, NOW - timedelta(days=8))
    assert rating.is_recent(7, now=NOW) is False
    assert rating.is_recent(8, now=NOW) is True
    assert Rating(UserId(1), MovieId(1), RatingScore(3.0)).is_recent()
    assert not _rating(3.0, Timestamp.now() - timedelta(days=31)).is_recent()


def test_rating_normalized_score_and_interaction_tuple() -> None:
    rating = Rating(UserId(2), MovieId(3), RatingScore(5), NOW)
    assert rating.normalized_score() == 1.0
    assert _rating(0.5).normalized_score() == 0.0
    assert rating.to_interaction_tuple() == (2, 3, 5.0)
    user, movie, score = rating.to_interaction_tuple()
    assert (type(user), type(movie), type(score)) == (int, int, float)


def test_rating_is_immutable() -> None:
    with pytest.raises(AttributeError):
        _rating(4.0).score = RatingScore(1.0)  # type: ignore[misc]


def test_not_found_errors_carry_the_id() -> None:
    user_error = UserNotFound(UserId(5))
    movie_error = MovieNotFound(MovieId(6))
    assert isinstance(user_error, NotFound)
    assert isinstance(movie_error, LookupError)
    assert user_error.user_id == UserId(5)
    assert movie_error.movie_id == MovieId(6)
    assert str(user_error) == "user User#5 not found"
    assert str(movie_error) == "movie Movie#6 not found"


def test_tier_upper_bounds_define_the_classification() -> None:
    tiers = list(UserClassification)
    assert len(TIER_UPPER_BOUNDS) == len(tiers) - 1
    assert list(TIER_UPPER_BOUNDS) == sorted(set(TIER_UPPER_BOUNDS))
    for tier, upper in zip(tiers, TIER_UPPER_BOUNDS, strict=False):
        assert UserClassification.from_count(upper) is tier
        assert UserClassification.from_count(upper + 1) is tiers[tiers.index(tier) + 1]
