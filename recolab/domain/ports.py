"""Ports: what the domain and application need from the outside world, as Protocols."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

import numpy as np

from recolab.domain.events import DomainEvent, RecommendationsGenerated
from recolab.domain.model import Movie, RatedMovies, Rating, User
from recolab.domain.services.index import CatalogueIndex
from recolab.domain.values import MovieId, RatingScore, UserId


class UserRepository(Protocol):
    def get(self, user_id: UserId) -> User | None: ...
    def add(self, user: User) -> None: ...
    def next_id(self) -> UserId: ...
    def record_rating(
        self, user_id: UserId, score: RatingScore, previous: RatingScore | None
    ) -> User:
        """Apply a rating to the user's statistics atomically (no lost updates) and return them."""
        ...


class MovieRepository(Protocol):
    """The write side of movies: reads go through the catalogue or read-only queries."""

    def record_rating(
        self, movie_id: MovieId, score: RatingScore, previous: RatingScore | None
    ) -> Movie:
        """Apply a rating to the movie's statistics atomically and return them."""
        ...


class RatingRepository(Protocol):
    def upsert(self, rating: Rating) -> RatingScore | None:
        """Store the rating; return the previous score when it replaced one.

        Raises UserNotFound or MovieNotFound (and writes nothing) when either is unknown.
        """
        ...

    def for_user(self, user_id: UserId, limit: int | None = None) -> list[Rating]: ...
    def rated_by(self, user_id: UserId) -> RatedMovies:
        """All the user's ratings as arrays, most recent first (ties by movie id): the
        recommendation path's read, without an object per rating."""
        ...


class UnitOfWork(Protocol):
    """One transaction over the repositories: commit or everything is rolled back."""

    @property
    def users(self) -> UserRepository: ...
    @property
    def movies(self) -> MovieRepository: ...
    @property
    def ratings(self) -> RatingRepository: ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


class Cache(Protocol):
    """Bytes by (group, key) with a TTL; `drop` removes a whole group (e.g. one user's).

    Each group has a generation that `drop` moves on. A writer takes the generation (with
    `lookup`) before reading what its value is built from, and `store`s with it: the store
    is refused when a drop came in between, so a value built from data read before an
    invalidation never outlives it (a TTL alone would serve it until it expires).
    """

    def get(self, group: str, key: str) -> bytes | None: ...
    def lookup(self, group: str, key: str) -> tuple[bytes | None, object | None]:
        """The entry (None on a miss) and the group's generation, in one round trip.

        The generation is an opaque token for `store`; None when it cannot be known (the
        backend is down): then nothing may be stored.
        """
        ...

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        """`lookup` of several entries of one group (in `keys`' order), still one round trip."""
        ...

    def store(self, group: str, key: str, value: bytes, ttl_s: int, generation: object) -> bool:
        """Store the entry only if the group's generation is still `generation` (from
        `lookup`); True when stored."""
        ...

    def drop(self, group: str) -> int:
        """Remove the group's entries and move its generation on; how many entries it held."""
        ...

    def ping(self) -> bool: ...


class Catalogue(Protocol):
    """The movies a recommender may return, kept in memory by the serving side."""

    def movies(self) -> Sequence[Movie]: ...
    def by_popularity(self) -> Sequence[Movie]:
        """All movies, most popular first (precomputed: the popular strategy reads a prefix)."""
        ...

    def get(self, movie_id: MovieId) -> Movie | None: ...
    def index(self) -> CatalogueIndex:
        """The movies as arrays, built once per catalogue version (the same object until
        the catalogue changes)."""
        ...


class Scorer(Protocol):
    """A trained model's serving view: predicted relevance in [0, 1], best first, as arrays
    (movie ids, relevance); `exclude` holds movie ids never to return."""

    version: str

    def knows_user(self, user_id: UserId) -> bool: ...
    def top_k_ids(
        self, user_id: UserId, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def fold_in_top_k_ids(
        self, rated: RatedMovies, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank for a user the model never saw, from the movies they rated."""
        ...


class EventPublisher(Protocol):
    def publish(self, event: DomainEvent) -> None: ...


class RecommendationHistory(Protocol):
    """Where served recommendations are kept (the API's `GET /users/{id}/history`)."""

    def record(self, event: RecommendationsGenerated) -> None:
        """Keep the event's items; may return before they are stored (best effort)."""
        ...


class ServiceMetrics(Protocol):
    """Business metrics of the recommendation service."""

    def recommendation(
        self, *, strategy: str, tier: str, cached: bool, requested: str, fallback: bool
    ) -> None: ...
    def rating(self, *, replaced: bool) -> None: ...
    def registration(self) -> None: ...
