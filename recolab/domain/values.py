"""Value objects: immutable, validated on construction, compared by value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from numbers import Real

from recolab.domain.errors import InvalidValue

# The one home of the rating scale's rules; SQL, the ingest checks and the model's
# targets import these.
MIN_RATING = 0.5
MAX_RATING = 5.0
RATING_STEP = 0.5
# Normalised score: (score - MIN_RATING) / RATING_SPAN, in [0, 1] (the model's target).
RATING_SPAN = MAX_RATING - MIN_RATING
# Every valid score, ascending: 0.5, 1.0, ..., 5.0.
RATING_VALUES: tuple[float, ...] = tuple(
    MIN_RATING + RATING_STEP * k for k in range(round(RATING_SPAN / RATING_STEP) + 1)
)
POSITIVE_THRESHOLD = 4.0  # a rating >= this is positive ("liked")
NEGATIVE_THRESHOLD = 2.5  # a rating <= this is negative


def _positive_int(kind: str, value: object) -> int:
    # bool is an int subclass: True must not become user 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"{kind} must be a positive integer, got {value!r}")
    if value <= 0:
        raise InvalidValue(f"{kind} must be a positive integer, got {value}")
    return value


def _finite_real(kind: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidValue(f"{kind} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidValue(f"{kind} must be finite, got {value!r}")
    return number


@dataclass(frozen=True, slots=True, order=True)
class UserId:
    value: int

    def __post_init__(self) -> None:
        _positive_int("UserId", self.value)

    def __hash__(self) -> int:
        # Kept by @dataclass (an explicit __hash__ wins): the generated one hashes a new
        # tuple, and ids are hashed thousands of times per recommendation.
        return hash(self.value)

    def __int__(self) -> int:
        return self.value

    def __str__(self) -> str:
        return f"User#{self.value}"


@dataclass(frozen=True, slots=True, order=True)
class MovieId:
    value: int

    def __post_init__(self) -> None:
        _positive_int("MovieId", self.value)

    def __hash__(self) -> int:
        # Kept by @dataclass (an explicit __hash__ wins): the generated one hashes a new
        # tuple, and ids are hashed thousands of times per recommendation.
        return hash(self.value)

    def __int__(self) -> int:
        return self.value

    def __str__(self) -> str:
        return f"Movie#{self.value}"


@lru_cache(maxsize=1 << 18)
def shared_movie_id(value: int) -> MovieId:
    """The one `MovieId` of `value` that adapters hand out (validated once).

    Equal either way; but a dict or set finds an identical key without calling the
    dataclass `__eq__`, and the catalogue, the model and the ratings all meet in such
    lookups on every recommendation.
    """
    return MovieId(value)


@dataclass(frozen=True, slots=True, order=True)
class RatingScore:
    """A star rating: 0.5 to 5.0 in steps of 0.5."""

    value: float

    def __post_init__(self) -> None:
        number = _finite_real("RatingScore", self.value)
        if not MIN_RATING <= number <= MAX_RATING:
            raise InvalidValue(f"RatingScore must be between 0.5 and 5.0, got {self.value!r}")
        if (number / RATING_STEP) % 1 != 0:
            raise InvalidValue(f"RatingScore must be in steps of 0.5, got {self.value!r}")
        object.__setattr__(self, "value", number)

    def __float__(self) -> float:
        return self.value

    def is_positive(self) -> bool:
        return self.value >= POSITIVE_THRESHOLD

    def is_negative(self) -> bool:
        return self.value <= NEGATIVE_THRESHOLD

    def normalize(self) -> float:
        """Map [0.5, 5.0] onto [0, 1]."""
        return (self.value - MIN_RATING) / RATING_SPAN

    @staticmethod
    def denormalize(normalized: float) -> float:
        """Inverse of `normalize`, for model outputs in [0, 1] (not rounded to half stars)."""
        return MIN_RATING + normalized * RATING_SPAN


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """A point in time, always timezone-aware (naive datetimes are taken as UTC)."""

    value: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.value, datetime):
            raise InvalidValue(f"Timestamp must be a datetime, got {self.value!r}")
        if self.value.tzinfo is None:
            object.__setattr__(self, "value", self.value.replace(tzinfo=UTC))

    @classmethod
    def now(cls) -> Timestamp:
        return cls(datetime.now(UTC))

    @classmethod
    def from_unix(cls, seconds: float) -> Timestamp:
        number = _finite_real("Timestamp", seconds)
        try:
            return cls(datetime.fromtimestamp(number, UTC))
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidValue(f"Timestamp out of range: {seconds!r}") from exc

    def to_unix(self) -> int:
        return int(self.value.timestamp())

    def __add__(self, delta: timedelta) -> Timestamp:
        return Timestamp(self.value + delta)

    def __sub__(self, delta: timedelta) -> Timestamp:
        return Timestamp(self.value - delta)

    def isoformat(self) -> str:
        return self.value.isoformat()
