"""Hand-written fakes of RecoLab's own ports (never of libraries)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

import numpy as np

from recolab.domain import Movie, MovieId, Rating, RatingScore, User, UserId
from recolab.domain.errors import MovieNotFound, UserNotFound
from recolab.domain.events import DomainEvent
from recolab.domain.model import RatedMovies
from recolab.domain.services import CatalogueIndex


@dataclass
class Store:
    users: dict[UserId, User] = field(default_factory=dict)
    movies: dict[MovieId, Movie] = field(default_factory=dict)
    ratings: dict[tuple[UserId, MovieId], Rating] = field(default_factory=dict)


class FakeUsers:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: UserId) -> User | None:
        user = self.store.users.get(user_id)
        return None if user is None else replace(user, favorite_genres=list(user.favorite_genres))

    def add(self, user: User) -> None:
        self.store.users[user.id] = user

    def next_id(self) -> UserId:
        return UserId(max((u.value for u in self.store.users), default=0) + 1)

    def record_rating(
        self, user_id: UserId, score: RatingScore, previous: RatingScore | None
    ) -> User:
        user = self.store.users[user_id]
        user.record_rating(score, previous=previous)
        return user


class FakeMovies:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, movie_id: MovieId) -> Movie | None:
        return self.store.movies.get(movie_id)

    def get_many(self, movie_ids: Sequence[MovieId]) -> dict[MovieId, Movie]:
        return {m: self.store.movies[m] for m in movie_ids if m in self.store.movies}

    def popular(self, limit: int, genres: Sequence[str] = ()) -> list[Movie]:
        ranked = sorted(self.store.movies.values(), key=lambda m: -m.popularity_score())
        return ranked[:limit]

    def search(self, title: str | None, genre: str | None, limit: int) -> list[Movie]:
        return [m for m in self.store.movies.values() if not title or title in m.title][:limit]

    def record_rating(
        self, movie_id: MovieId, score: RatingScore, previous: RatingScore | None
    ) -> Movie:
        movie = self.store.movies[movie_id]
        movie.add_rating(score, previous=previous)
        return movie


class FakeRatings:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: UserId, movie_id: MovieId) -> Rating | None:
        return self.store.ratings.get((user_id, movie_id))

    def upsert(self, rating: Rating) -> RatingScore | None:
        if rating.user_id not in self.store.users:
            raise UserNotFound(rating.user_id.value)
        if rating.movie_id not in self.store.movies:
            raise MovieNotFound(rating.movie_id.value)
        old = self.store.ratings.get((rating.user_id, rating.movie_id))
        self.store.ratings[(rating.user_id, rating.movie_id)] = rating
        return old.score if old else None

    def for_user(self, user_id: UserId, limit: int | None = None) -> list[Rating]:
        mine = [r for (u, _), r in self.store.ratings.items() if u == user_id]
        mine.sort(key=lambda r: r.timestamp, reverse=True)
        return mine[:limit] if limit is not None else mine

    def rated_by(self, user_id: UserId) -> RatedMovies:
        # Through for_user, so a test that hooks the read of a user's ratings hooks both.
        mine = sorted(
            self.for_user(user_id), key=lambda r: (-r.timestamp.to_unix(), r.movie_id.value)
        )
        return RatedMovies.from_ratings(mine)


class FakeUoW:
    """Commits by keeping the store; rolls back by restoring a snapshot taken on enter."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.users = FakeUsers(store)
        self.movies = FakeMovies(store)
        self.ratings = FakeRatings(store)
        self.commits = 0

    def __enter__(self) -> Self:
        self._snapshot = (
            {k: replace(v) for k, v in self.store.users.items()},
            {k: replace(v) for k, v in self.store.movies.items()},
            dict(self.store.ratings),
        )
        self._committed = False
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.rollback()

    def commit(self) -> None:
        self._committed = True
        self.commits += 1

    def rollback(self) -> None:
        users, movies, ratings = self._snapshot
        self.store.users.clear()
        self.store.users.update(users)
        self.store.movies.clear()
        self.store.movies.update(movies)
        self.store.ratings.clear()
        self.store.ratings.update(ratings)


class FakeCache:
    """Entries by group, and a generation per group that `drop` moves on (no TTL)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, bytes]] = {}
        self.generations: dict[str, int] = {}

    def get(self, group: str, key: str) -> bytes | None:
        return self.data.get(group, {}).get(key)

    def lookup(self, group: str, key: str) -> tuple[bytes | None, object | None]:
        return self.get(group, key), self.generations.get(group, 0)

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        return [self.get(group, key) for key in keys], self.generations.get(group, 0)

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        self.data.setdefault(group, {})[key] = value

    def store(self, group: str, key: str, value: bytes, ttl_s: int, generation: object) -> bool:
        if self.generations.get(group, 0) != generation:
            return False
        self.set(group, key, value, ttl_s)
        return True

    def drop(self, group: str) -> int:
        self.generations[group] = self.generations.get(group, 0) + 1
        return len(self.data.pop(group, {}))

    def ping(self) -> bool:
        return True


class FakeCatalogue:
    def __init__(self, store: Store) -> None:
        self.store = store

    def movies(self) -> Sequence[Movie]:
        return list(self.store.movies.values())

    def by_popularity(self) -> Sequence[Movie]:
        return sorted(self.store.movies.values(), key=lambda m: (-m.popularity_score(), m.id.value))

    def get(self, movie_id: MovieId) -> Movie | None:
        return self.store.movies.get(movie_id)

    def index(self) -> CatalogueIndex:
        """Rebuilt whenever the store's movies or their statistics changed."""
        state = [(m.id.value, m.rating_count, m.avg_rating) for m in self.store.movies.values()]
        if getattr(self, "_state", None) != state:
            self._state, self._index = state, CatalogueIndex(self.store.movies.values())
        return self._index


class FakeScorer:
    """Scores from a fixed table: known users get their row; fold-in averages rated movies' rows."""

    def __init__(self, version: str, table: dict[int, dict[int, float]]) -> None:
        self.version = version
        self.table = table
        self.fold_ins = 0

    def knows_user(self, user_id: UserId) -> bool:
        return user_id.value in self.table

    def top_k_ids(
        self, user_id: UserId, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return _ranked(self.table[user_id.value], k, exclude)

    def fold_in_top_k_ids(
        self, rated: RatedMovies, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        self.fold_ins += 1
        return _ranked(next(iter(self.table.values())), k, exclude)


def _ranked(row: dict[int, float], k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blocked = set(np.asarray(exclude).tolist())
    ranked = sorted(((m, s) for m, s in row.items() if m not in blocked), key=lambda p: -p[1])
    ranked = ranked[:k]
    return (
        np.array([m for m, _ in ranked], dtype=np.int64),
        np.array([s for _, s in ranked], dtype=np.float64),
    )


class RecordingBus:
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def publish(self, event: DomainEvent) -> None:
        self.events.append(event)
