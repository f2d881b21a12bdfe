"""The served policy, offline: the live `Recommender` over in-memory data.

Evaluation (`recolab.ml.evaluation.policy`) feeds it a protocol's training split: the users
and their ratings, the catalogue with statistics from that split only, and the model trained
on it; no cache (every answer is computed) and no event bus. What it returns for a user is
what `/recommend` returns with the same data, model and serving knobs: it is the same code,
asked for the tier's strategy ("policy") or for one strategy alone ("model", "popularity",
"content_based").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import numpy as np

from recolab.application.recommend import AUTO, Recommender, RecommendRequest
from recolab.domain.errors import InvalidValue
from recolab.domain.events import DomainEvent
from recolab.domain.model import Movie, RatedMovies, Rating, User
from recolab.domain.ports import Scorer
from recolab.domain.services.catalogue import CatalogueSnapshot
from recolab.domain.services.strategy import HybridWeights, Strategy
from recolab.domain.values import MovieId, RatingScore, UserId

# What each compared system asks the Recommender for.
SYSTEMS: Mapping[str, str] = {
    "policy": AUTO,  # the tier's strategy, weights and re-ranking: what /recommend serves
    "model": Strategy.COLLABORATIVE.value,  # the model's top-k alone
    "popularity": Strategy.POPULAR.value,
    "content_based": Strategy.CONTENT_BASED.value,
}
_NO_IDS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class PolicyKnobs:
    """The serving knobs the policy runs with (configs/serving.yaml)."""

    mmr_lambda: float = 0.7
    shortlist: int = 200
    hybrid_weights: HybridWeights | None = None


class TrainingView(Protocol):
    """What the service would hold after ingesting a training split: users (their
    statistics) by id, each user's ratings (most recent first) and the catalogue
    (`recolab.ml.evaluation.policy.SplitProfiles` builds one from a split)."""

    @property
    def users(self) -> Mapping[int, User]: ...
    @property
    def ratings(self) -> Mapping[int, RatedMovies]: ...
    @property
    def movies(self) -> Sequence[Movie]: ...


class _ReadOnly:
    """Offline data never changes: a write is a bug in the caller."""

    def _refuse(self, *_: object) -> None:
        raise InvalidValue("the offline policy evaluation is read-only")


class _Users(_ReadOnly):
    def __init__(self, users: Mapping[int, User]) -> None:
        self._users = users

    def get(self, user_id: UserId) -> User | None:
        return self._users.get(user_id.value)

    def add(self, user: User) -> None:
        self._refuse(user)

    def next_id(self) -> UserId:
        raise InvalidValue("the offline policy evaluation is read-only")

    def record_rating(
        self, user_id: UserId, score: RatingScore, previous: RatingScore | None
    ) -> User:
        raise InvalidValue("the offline policy evaluation is read-only")


class _Movies(_ReadOnly):
    def record_rating(
        self, movie_id: MovieId, score: RatingScore, previous: RatingScore | None
    ) -> Movie:
        raise InvalidValue("the offline policy evaluation is read-only")


class _Ratings(_ReadOnly):
    def __init__(self, ratings: Mapping[int, RatedMovies]) -> None:
        self._ratings = ratings
        self._none = RatedMovies(_NO_IDS, np.empty(0), _NO_IDS)

    def upsert(self, rating: Rating) -> RatingScore | None:
        raise InvalidValue("the offline policy evaluation is read-only")

    def for_user(self, user_id: UserId, limit: int | None = None) -> list[Rating]:
        return self.rated_by(user_id).to_ratings(user_id)[:limit]

    def rated_by(self, user_id: UserId) -> RatedMovies:
        return self._ratings.get(user_id.value, self._none)


@dataclass
class InMemoryUnitOfWork:
    """A read-only unit of work over a `TrainingView`."""

    view: TrainingView
    users: _Users = field(init=False)
    movies: _Movies = field(init=False)
    ratings: _Ratings = field(init=False)

    def __post_init__(self) -> None:
        self.users = _Users(self.view.users)
        self.movies = _Movies()
        self.ratings = _Ratings(self.view.ratings)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def commit(self) -> None:
        return None

    def rollback(self) -> None:
        return None


class NoCache:
    """Nothing is cached: every answer is computed (`None` generation: nothing stored)."""

    def get(self, group: str, key: str) -> bytes | None:
        return None

    def lookup(self, group: str, key: str) -> tuple[bytes | None, object | None]:
        return None, None

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        return [None] * len(keys), None

    def store(self, group: str, key: str, value: bytes, ttl_s: int, generation: object) -> bool:
        return False

    def drop(self, group: str) -> int:
        return 0

    def ping(self) -> bool:
        return True


class NoBus:
    """Served answers are not recorded offline."""

    def publish(self, event: DomainEvent) -> None:
        return None


def offline_recommender(
    view: TrainingView, scorer: Scorer | None, knobs: PolicyKnobs
) -> Recommender:
    """The service's `Recommender` over `view`, with `scorer` as the loaded model."""
    return Recommender(
        uow_factory=lambda: InMemoryUnitOfWork(view),
        catalogue=CatalogueSnapshot(view.movies),
        scorer=lambda: scorer,
        cache=NoCache(),
        bus=NoBus(),
        ttl_s=0,
        shortlist=knobs.shortlist,
        default_lambda=knobs.mmr_lambda,
        hybrid_weights=knobs.hybrid_weights,
    )


def served_ids(
    recommender: Recommender, user_ids: Sequence[int], k: int, strategy: str
) -> np.ndarray:
    """[users, k] movie ids each user is served with `strategy` (-1 past a short list)."""
    out = np.full((len(user_ids), k), -1, dtype=np.int64)
    for row, user in enumerate(user_ids):
        result = recommender.recommend(RecommendRequest(int(user), n=k, strategy=strategy))
        ids = [item.movie_id for item in result.items]
        out[row, : len(ids)] = ids
    return out


ListMaker = Callable[[Sequence[int], int], np.ndarray]


def offline_systems(
    view: TrainingView, scorer: Scorer | None, knobs: PolicyKnobs
) -> dict[str, ListMaker]:
    """For each of `SYSTEMS`, a function (user ids, k) -> [users, k] served movie ids."""
    recommender = offline_recommender(view, scorer, knobs)

    def maker(strategy: str) -> ListMaker:
        return lambda users, k: served_ids(recommender, users, k, strategy)

    return {name: maker(strategy) for name, strategy in SYSTEMS.items()}


def configured_systems(
    mmr_lambda: float, shortlist: int, hybrid_weights: HybridWeights | None
) -> Callable[[TrainingView, Scorer | None], dict[str, ListMaker]]:
    """`offline_systems` with the serving knobs fixed: (view, scorer) -> systems."""
    knobs = PolicyKnobs(mmr_lambda, shortlist, hybrid_weights)
    return lambda view, scorer: offline_systems(view, scorer, knobs)
