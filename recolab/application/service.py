"""The recommendation service's use cases behind one object, for the HTTP layer.

`ServingRuntime` holds what the routes call, built once per worker by
`recolab.bootstrap.bootstrap_serving`; each method is one use case (recommend, rate,
register, profile, history, movies, status) over the collaborators it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from recolab.application.access import (
    FailedAuthentications,
    Principal,
    RateLimiter,
    TokenVerifier,
    authenticate,
)
from recolab.application.recommend import RecommendationResult, Recommender, RecommendRequest
from recolab.application.users import (
    RateMovie,
    RatingOutcome,
    UserProfile,
    get_profile,
    rate_movie,
    register_user,
)
from recolab.domain.errors import MovieNotFound
from recolab.domain.model import User
from recolab.domain.ports import Cache, EventPublisher, Scorer, UnitOfWork

USER_TOKEN_TTL_S = 30 * 24 * 3600
RECENT_RATINGS = 20


class ReadModel(Protocol):
    """The read side the API answers from as it is (views, not entities)."""

    def ping(self) -> None: ...
    def movie(self, movie_id: int) -> Any: ...
    def search(self, title: str | None, genre: str | None, limit: int) -> Sequence[Any]: ...
    def similar(self, movie_id: int, k: int, embedding: Any = None) -> Any: ...
    def titles(self, movie_ids: Sequence[int]) -> dict[int, str]: ...
    def rating_breakdown(self, user_id: int) -> Any: ...
    def history(self, user_id: int, limit: int) -> Sequence[Any]: ...


class ModelState(Protocol):
    @property
    def model_name(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def loaded(self) -> bool: ...
    @property
    def error(self) -> str | None: ...


class Champion(Protocol):
    """The model being served, swapped when the registry's champion moves."""

    def current(self) -> Scorer | None: ...
    def status(self) -> ModelState: ...


@dataclass(frozen=True, slots=True)
class ExperimentStatus:
    """The experiment set in the registry as this worker runs it: `running` when its
    challenger is loaded (else everyone gets the champion, and `error` says why)."""

    name: str
    mode: str
    share: float
    challenger_version: str | None
    running: bool
    error: str | None = None


class Experiments(Protocol):
    """The online experiment this worker follows (None: none is set)."""

    def experiment(self) -> ExperimentStatus | None: ...


class PendingWrites(Protocol):
    def settle(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the writes handed off so far."""
        ...


@dataclass(frozen=True, slots=True)
class Component:
    ok: bool
    backend: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Readiness:
    reasons: list[str]
    model: ModelState
    database: Component
    cache: Component
    experiment: ExperimentStatus | None = None

    @property
    def ready(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class ProfileView:
    profile: UserProfile
    titles: dict[int, str]
    breakdown: Any  # positive, negative


@dataclass(frozen=True, slots=True)
class Registered:
    user: User
    token: str
    expires_in: int


@dataclass
class ServingRuntime:
    """What the routes use: the use cases over this worker's collaborators."""

    recommender: Recommender
    uow: Callable[[], UnitOfWork]
    bus: EventPublisher
    queries: ReadModel
    champion: Champion
    cache: Cache
    verify: TokenVerifier
    limiter: RateLimiter
    issue_token: Callable[[str | int, str, float], str]  # (sub, role, ttl_s)
    pending: PendingWrites
    is_conflict: Callable[[BaseException], bool]
    database_backend: str
    cache_backend: str
    max_request_bytes: int
    request_threads: int
    close: Callable[[], None]
    # Units of work for reads only (profile, history): on SQLite they never wait behind
    # writers, which begin as writers. None: `uow`.
    reader: Callable[[], UnitOfWork] | None = None
    # Failed authentications per client address; by default on `limiter`, in a bucket of
    # their own per address (so at `rate_limit_per_minute`).
    auth_failures: FailedAuthentications | None = None
    # The online experiment (canary or shadow) the recommender routes by, for `status`.
    experiments: Experiments | None = None

    def __post_init__(self) -> None:
        if self.auth_failures is None:
            self.auth_failures = FailedAuthentications(self.limiter)

    def authenticate(self, token: str | None, client: str | None = None) -> Principal:
        """The caller, from a bearer token; one request counted against its rate limit.

        A token that fails counts against `client` (the request's address); past the
        limit that address gets `RateLimited` (429) for a while, whatever it sends."""
        return authenticate(
            token, self.verify, self.limiter, client=client, failures=self.auth_failures
        )

    def recommend(self, request: RecommendRequest) -> RecommendationResult:
        return self.recommender.recommend(request)

    def rate(self, command: RateMovie) -> RatingOutcome:
        return rate_movie(command, self.uow(), self.bus)

    def register(self, attempts: int = 3) -> Registered:
        """A new user (a cold start) and a token for them."""
        for attempt in range(1, attempts + 1):
            try:
                user = register_user(self.uow(), self.bus)
                break
            except Exception as exc:  # a concurrent registration took the same id: retry
                if attempt == attempts or not self.is_conflict(exc):
                    raise
        token = self.issue_token(user.id.value, "user", USER_TOKEN_TTL_S)
        return Registered(user, token, USER_TOKEN_TTL_S)

    def profile(self, user_id: int) -> ProfileView:
        found = get_profile(user_id, (self.reader or self.uow)(), recent=RECENT_RATINGS)
        titles = self.queries.titles([r.movie_id.value for r in found.recent_ratings])
        return ProfileView(found, titles, self.queries.rating_breakdown(user_id))

    def history(self, user_id: int, limit: int) -> Sequence[Any]:
        """The movies recommended to a user, newest answer first (404 for an unknown user)."""
        get_profile(user_id, (self.reader or self.uow)(), recent=0)
        self.pending.settle(timeout_s=1.0)  # this worker's answers so far are in it
        return self.queries.history(user_id, limit)

    def search(self, title: str | None, genre: str | None, limit: int) -> Sequence[Any]:
        return self.queries.search(title, genre, limit)

    def movie(self, movie_id: int) -> Any:
        found = self.queries.movie(movie_id)
        if found is None:
            raise MovieNotFound(movie_id)
        return found

    def similar(self, movie_id: int, k: int) -> Any:
        """Movies like this one: by the model's item embeddings, else by shared genres."""
        self.movie(movie_id)
        embedding = getattr(self.champion.current(), "similar", None)
        return self.queries.similar(movie_id, k, embedding)

    def status(self) -> Readiness:
        """Readiness with reasons: database reachable and a champion model loaded; and the
        experiment, if one is set (a challenger that did not load is no reason: the
        champion answers everyone meanwhile)."""
        champion = self.champion.status()
        reasons: list[str] = []
        db_error = _probe(self.queries.ping)
        if db_error:
            reasons.append(f"database unavailable: {db_error}")
        if not champion.loaded:
            reasons.append(champion.error or "no champion model loaded yet")
        cache_ok = _answers(self.cache.ping)
        return Readiness(
            reasons=reasons,
            model=champion,
            database=Component(db_error is None, self.database_backend, db_error),
            cache=Component(
                cache_ok,
                self.cache_backend,
                None if cache_ok else "cache unavailable: answering uncached",
            ),
            experiment=_experiment(self.experiments),
        )


def _probe(check: Callable[[], object]) -> str | None:
    """None when `check` runs, else a one-line reason (no URLs or secrets: first line only)."""
    try:
        check()
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return f"{type(exc).__name__}: {first}"
    return None


def _experiment(source: Experiments | None) -> ExperimentStatus | None:
    try:
        return None if source is None else source.experiment()
    except Exception:  # a status page must answer
        return None


def _answers(ping: Callable[[], bool]) -> bool:
    try:
        return bool(ping())
    except Exception:
        return False
