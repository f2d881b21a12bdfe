"""Entities: User, Movie and Rating, with their invariants and behaviour, and the rules of
user tiers and favourite genres."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

import numpy as np

from recolab.domain.errors import InvalidValue
from recolab.domain.values import (
    MAX_RATING,
    MIN_RATING,
    POSITIVE_THRESHOLD,
    RATING_SPAN,
    MovieId,
    RatingScore,
    Timestamp,
    UserId,
)

UNKNOWN_GENRE = "Unknown"
# n_ratings at which collaborative filtering gets full weight.
CF_FULL_WEIGHT_AT = 50
# How many genres a user's favourites hold (the most frequent among positive ratings).
FAVORITE_GENRES_K = 3
_EPS = 1e-9


class UserClassification(StrEnum):
    """User tier by number of ratings: decides the recommendation strategy."""

    COLD_START = "cold_start"  # 0
    NEW = "new"  # 1-5
    CASUAL = "casual"  # 6-20
    ACTIVE = "active"  # 21-100
    POWER_USER = "power_user"  # > 100

    @classmethod
    def from_count(cls, n_ratings: int) -> UserClassification:
        if n_ratings < 0:
            raise InvalidValue(f"n_ratings cannot be negative, got {n_ratings}")
        for tier, upper in _TIER_BOUNDS:
            if n_ratings <= upper:
                return tier
        return cls.POWER_USER


# The largest n_ratings of each tier but the last (power_user: above the last bound), in
# tier order. The one definition of the tiers: evaluation and SQL reports derive from it.
TIER_UPPER_BOUNDS: tuple[int, ...] = (0, 5, 20, 100)
_TIER_BOUNDS = tuple(zip(UserClassification, TIER_UPPER_BOUNDS, strict=False))


def _check_mean(kind: str, mean: float, count: int) -> float:
    if math.isnan(mean) or mean < -_EPS or mean > MAX_RATING + _EPS:
        raise InvalidValue(f"{kind} must be between 0 and 5, got {mean!r}")
    if count == 0 and abs(mean) > _EPS:
        raise InvalidValue(f"{kind} must be 0 when there are no ratings, got {mean!r}")
    # Incremental means drift by an ulp or so; keep the invariant exact.
    return min(max(mean, 0.0), MAX_RATING)


def _updated_mean(
    mean: float, count: int, score: RatingScore, previous: RatingScore | None
) -> tuple[float, int]:
    """Incremental mean after adding `score`, or replacing `previous` by it (a re-rating)."""
    if previous is None:
        return (mean * count + score.value) / (count + 1), count + 1
    if count == 0:
        raise InvalidValue("cannot replace a rating when there are none")
    return (mean * count - previous.value + score.value) / count, count


def normalize_genres(genres: Iterable[str]) -> tuple[str, ...]:
    """Strip, drop empties and duplicates (case-insensitive), keep order; none -> Unknown."""
    seen: set[str] = set()
    out: list[str] = []
    for genre in genres:
        name = genre.strip()
        if name and name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return tuple(out) or (UNKNOWN_GENRE,)


def genre_jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Jaccard similarity of two genre lists, case-insensitive."""
    return jaccard({g.lower() for g in a}, {g.lower() for g in b})


def jaccard(a: AbstractSet[str], b: AbstractSet[str]) -> float:
    """Jaccard similarity of two sets already normalised (e.g. lower-cased genres)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def favorite_genres(
    ratings: Iterable[Rating],
    genres_of: Mapping[MovieId, Sequence[str]],
    k: int = FAVORITE_GENRES_K,
) -> list[str]:
    """Top-k genres among positive ratings, by count then name (the rule SQL statistics follow)."""
    counts: Counter[str] = Counter()
    for rating in ratings:
        if rating.is_positive():
            counts.update(genres_of.get(rating.movie_id, ()))
    return top_genres(counts, k)


def top_genres(counts: Mapping[str, int], k: int = FAVORITE_GENRES_K) -> list[str]:
    """The k genres with the highest positive-rating counts, ties by name (code points)."""
    return [g for g, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k] if n > 0]


@dataclass(eq=False, slots=True)
class User:
    """Aggregate root: a user and the statistics of their ratings."""

    id: UserId
    created_at: Timestamp = field(default_factory=Timestamp.now)
    n_ratings: int = 0
    avg_rating: float = 0.0
    last_activity: Timestamp | None = None
    favorite_genres: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_ratings < 0:
            raise InvalidValue(f"n_ratings cannot be negative, got {self.n_ratings}")
        self.avg_rating = _check_mean("avg_rating", self.avg_rating, self.n_ratings)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, User) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def classify(self) -> UserClassification:
        return UserClassification.from_count(self.n_ratings)

    def record_rating(
        self,
        score: RatingScore,
        *,
        previous: RatingScore | None = None,
        at: Timestamp | None = None,
    ) -> None:
        """Update the running mean; `previous` is the old score when the user re-rates a movie."""
        mean, self.n_ratings = _updated_mean(self.avg_rating, self.n_ratings, score, previous)
        self.avg_rating = _check_mean("avg_rating", mean, self.n_ratings)
        self.last_activity = at or Timestamp.now()

    def cf_weight(self) -> float:
        """Trust in collaborative filtering grows with history: min(1, n/50)."""
        return min(1.0, self.n_ratings / CF_FULL_WEIGHT_AT)

    def cb_weight(self) -> float:
        return 1.0 - self.cf_weight()


@dataclass(eq=False, slots=True)
class Movie:
    """Aggregate root: a movie, its genres and rating statistics."""

    id: MovieId
    title: str
    genres: tuple[str, ...] = ()
    year: int | None = None
    rating_count: int = 0
    avg_rating: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.title, str) or not self.title.strip():
            raise InvalidValue("title cannot be empty")
        self.genres = normalize_genres(self.genres)
        if self.rating_count < 0:
            raise InvalidValue(f"rating_count cannot be negative, got {self.rating_count}")
        self.avg_rating = _check_mean("avg_rating", self.avg_rating, self.rating_count)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Movie) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def is_popular(self, threshold: int = 100) -> bool:
        return self.rating_count >= threshold

    def is_well_rated(self, threshold: float = POSITIVE_THRESHOLD) -> bool:
        return self.avg_rating >= threshold

    def add_rating(self, score: RatingScore, *, previous: RatingScore | None = None) -> None:
        mean, self.rating_count = _updated_mean(self.avg_rating, self.rating_count, score, previous)
        self.avg_rating = _check_mean("avg_rating", mean, self.rating_count)

    def popularity_score(self) -> float:
        """log10(rating_count + 1) * avg_rating: many ratings and well rated."""
        return math.log10(self.rating_count + 1) * self.avg_rating

    def has_genre(self, genre: str) -> bool:
        return genre.lower() in {g.lower() for g in self.genres}

    def genre_similarity(self, other_genres: Iterable[str]) -> float:
        return genre_jaccard(self.genres, other_genres)


@dataclass(frozen=True, slots=True)
class Rating:
    """A user's rating of a movie; (user_id, movie_id) identifies it."""

    user_id: UserId
    movie_id: MovieId
    score: RatingScore
    timestamp: Timestamp = field(default_factory=Timestamp.now)

    def is_positive(self) -> bool:
        return self.score.is_positive()

    def is_negative(self) -> bool:
        return self.score.is_negative()

    def is_recent(self, days: int = 30, *, now: Timestamp | None = None) -> bool:
        cutoff = (now or Timestamp.now()) - timedelta(days=days)
        return self.timestamp >= cutoff

    def normalized_score(self) -> float:
        return self.score.normalize()

    def to_interaction_tuple(self) -> tuple[int, int, float]:
        return int(self.user_id), int(self.movie_id), float(self.score)


class Source(StrEnum):
    """Where a recommended item came from."""

    POPULAR = "popular"
    CONTENT_BASED = "content_based"
    COLLABORATIVE = "collaborative"
    # collaborative for a user the model never saw, from their ratings' item embeddings
    COLLABORATIVE_FOLD_IN = "collaborative_fold_in"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True, eq=False)
class RatedMovies:
    """One user's ratings as arrays, in the order read (most recent first): the request
    path's form of a list of `Rating`s, with the same rules (`positive`, `normalized`)."""

    movie_ids: np.ndarray  # int64
    scores: np.ndarray  # float64, valid `RatingScore` values
    timestamps: np.ndarray  # int64, Unix seconds

    @classmethod
    def from_ratings(cls, ratings: Iterable[Rating]) -> RatedMovies:
        rows = [(r.movie_id.value, r.score.value, r.timestamp.to_unix()) for r in ratings]
        return cls(
            np.array([m for m, _, _ in rows], dtype=np.int64),
            np.array([s for _, s, _ in rows], dtype=np.float64),
            np.array([t for _, _, t in rows], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.movie_ids)

    def positive(self) -> np.ndarray:
        """`Rating.is_positive` of each rating."""
        return np.asarray(self.scores >= POSITIVE_THRESHOLD)

    def normalized(self) -> np.ndarray:
        """`Rating.normalized_score` of each rating."""
        return np.asarray((self.scores - MIN_RATING) / RATING_SPAN)

    def to_ratings(self, user_id: UserId) -> list[Rating]:
        """The same ratings as `Rating` objects (for callers without an array form)."""
        return [
            Rating(user_id, MovieId(m), RatingScore(s), Timestamp.from_unix(t))
            for m, s, t in zip(
                self.movie_ids.tolist(), self.scores.tolist(), self.timestamps.tolist(), strict=True
            )
        ]
