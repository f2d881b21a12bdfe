"""Value objects: validation at the boundaries, conversions, ordering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

import pytest

from recolab.domain import (
    DomainError,
    InvalidValue,
    MovieId,
    RatingScore,
    Timestamp,
    UserId,
)
from recolab.domain.values import (
    MAX_RATING,
    MIN_RATING,
    NEGATIVE_THRESHOLD,
    POSITIVE_THRESHOLD,
    RATING_SPAN,
    RATING_STEP,
    RATING_VALUES,
)

VALID_STARS = [x / 2 for x in range(1, 11)]


@pytest.mark.parametrize("value", VALID_STARS)
def test_rating_score_accepts_every_half_star(value: float) -> None:
    assert RatingScore(value).value == value


@pytest.mark.parametrize(
    ("given", "expected"), [(4, 4.0), (1, 1.0), (5, 5.0), (Fraction(7, 2), 3.5)]
)
def test_rating_score_converts_ints_and_other_reals_to_float(
    given: object, expected: float
) -> None:
    score = RatingScore(given)  # type: ignore[arg-type]
    assert score.value == expected
    assert type(score.value) is float


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
        "4.0",
        None,
        0,
        0.0,
        0.25,
        0.49,
        5.5,
        5.01,
        4.3,
        4.25,
        -1,
        -0.5,
    ],
)
def test_rating_score_rejects_invalid_values(value: object) -> None:
    with pytest.raises(InvalidValue):
        RatingScore(value)  # type: ignore[arg-type]


def test_invalid_value_is_a_domain_error_and_a_value_error() -> None:
    with pytest.raises(DomainError):
        RatingScore(6)
    with pytest.raises(ValueError, match=r"between 0\.5 and 5\.0"):
        RatingScore(6)
    with pytest.raises(ValueError, match=r"steps of 0\.5"):
        RatingScore(4.3)
    with pytest.raises(ValueError, match="finite"):
        RatingScore(float("nan"))


@pytest.mark.parametrize(
    ("value", "positive", "negative"),
    [
        (0.5, False, True),
        (2.5, False, True),
        (3.0, False, False),
        (3.5, False, False),
        (4.0, True, False),
        (5.0, True, False),
    ],
)
def test_rating_score_positive_and_negative_thresholds(
    value: float, positive: bool, negative: bool
) -> None:
    score = RatingScore(value)
    assert score.is_positive() is positive
    assert score.is_negative() is negative


@pytest.mark.parametrize(
    ("value", "normalized"), [(0.5, 0.0), (5.0, 1.0), (1.0, 1 / 9), (3.0, 5 / 9)]
)
def test_normalize_maps_the_star_range_onto_unit_interval(value: float, normalized: float) -> None:
    assert RatingScore(value).normalize() == pytest.approx(normalized)


@pytest.mark.parametrize(
    ("normalized", "stars"), [(0.0, 0.5), (1.0, 5.0), (0.5, 2.75), (0.9, 4.55)]
)
def test_denormalize_is_not_rounded_to_half_stars(normalized: float, stars: float) -> None:
    assert RatingScore.denormalize(normalized) == pytest.approx(stars)


@pytest.mark.parametrize("value", VALID_STARS)
def test_denormalize_inverts_normalize(value: float) -> None:
    assert RatingScore.denormalize(RatingScore(value).normalize()) == pytest.approx(value)


def test_rating_score_is_ordered_frozen_and_float_convertible() -> None:
    assert RatingScore(3.5) < RatingScore(4) == RatingScore(4.0)
    assert float(RatingScore(2)) == 2.0
    with pytest.raises(AttributeError):
        RatingScore(3).value = 4.0  # type: ignore[misc]


@pytest.mark.parametrize("kind", [UserId, MovieId])
@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, 1.0, "3", None])
def test_ids_reject_non_positive_or_non_int(kind: type[UserId | MovieId], value: object) -> None:
    with pytest.raises(InvalidValue, match=kind.__name__):
        kind(value)  # type: ignore[arg-type]


def test_ids_str_int_equality_and_ordering() -> None:
    assert int(UserId(7)) == 7
    assert str(UserId(7)) == "User#7"
    assert int(MovieId(1)) == 1
    assert str(MovieId(42)) == "Movie#42"
    assert UserId(3) == UserId(3)
    assert UserId(2) < UserId(10)
    assert {MovieId(5), MovieId(5)} == {MovieId(5)}
    different_kind: object = MovieId(3)
    assert UserId(3) != different_kind


def test_the_rating_scale_is_defined_once_and_consistently() -> None:
    assert tuple(VALID_STARS) == RATING_VALUES
    assert (MIN_RATING, MAX_RATING, RATING_SPAN) == (0.5, 5.0, 4.5)
    assert all(RatingScore(v).value == v for v in RATING_VALUES)
    assert [RatingScore(v).is_positive() for v in RATING_VALUES] == [
        v >= POSITIVE_THRESHOLD for v in RATING_VALUES
    ]
    assert RatingScore(POSITIVE_THRESHOLD).is_positive()
    assert RatingScore(NEGATIVE_THRESHOLD).is_negative()
    assert not RatingScore(NEGATIVE_THRESHOLD + RATING_STEP).is_negative()


def test_timestamp_naive_datetime_is_taken_as_utc() -> None:
    stamp = Timestamp(datetime(2024, 1, 2, 3, 4, 5))
    assert stamp.value.tzinfo is UTC
    assert stamp == Timestamp(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert stamp.isoformat() == "2024-01-02T03:04:05+00:00"


def test_timestamp_keeps_an_aware_timezone_and_compares_by_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    stamp = Timestamp(datetime(2024, 1, 2, 5, 0, tzinfo=plus_two))
    assert stamp.value.tzinfo is plus_two
    assert stamp == Timestamp(datetime(2024, 1, 2, 3, 0, tzinfo=UTC))


@pytest.mark.parametrize("seconds", [0, 1, 964_982_703, 1_700_000_000, -86_400])
def test_timestamp_unix_round_trip(seconds: int) -> None:
    stamp = Timestamp.from_unix(seconds)
    assert stamp.to_unix() == seconds
    assert stamp.value == datetime.fromtimestamp(seconds, UTC)


def test_timestamp_from_unix_of_a_float_truncates_to_whole_seconds() -> None:
    assert Timestamp.from_unix(10.75).to_unix() == 10


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), True, "1", None, 1e20, -1e20])
def test_timestamp_from_unix_rejects_invalid_or_out_of_range(seconds: object) -> None:
    with pytest.raises(InvalidValue):
        Timestamp.from_unix(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["2024-01-01", 1_700_000_000, None, datetime(2024, 1, 1).date()])
def test_timestamp_rejects_non_datetimes(value: object) -> None:
    with pytest.raises(InvalidValue, match="datetime"):
        Timestamp(value)  # type: ignore[arg-type]


def test_timestamp_ordering_and_arithmetic() -> None:
    base = Timestamp.from_unix(1_000_000)
    later = base + timedelta(days=1)
    earlier = base - timedelta(hours=1)
    assert isinstance(later, Timestamp)
    assert isinstance(earlier, Timestamp)
    assert later.to_unix() - base.to_unix() == 86_400
    assert base.to_unix() - earlier.to_unix() == 3_600
    assert earlier < base < later
    assert sorted([later, earlier, base]) == [earlier, base, later]
    assert later - timedelta(days=1) == base


def test_timestamp_now_is_aware_and_current() -> None:
    before = datetime.now(UTC)
    stamp = Timestamp.now()
    after = datetime.now(UTC)
    assert stamp.value.tzinfo is not None
    assert before <= stamp.value <= after
