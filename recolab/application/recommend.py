"""Use case: recommend movies to a user, following the domain's strategy rules."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from recolab.application.profiles import PROFILE_KEY, decode_profile, encode_profile
from recolab.domain.errors import InvalidValue, UserNotFound
from recolab.domain.events import RecommendationsGenerated
from recolab.domain.experiments import CHAMPION, SHADOW
from recolab.domain.model import Movie, RatedMovies, Source, User, UserClassification
from recolab.domain.ports import Cache, Catalogue, EventPublisher, Scorer, UnitOfWork
from recolab.domain.services import (
    CatalogueIndex,
    Reason,
    ReasonKind,
    Strategy,
    closest_anchors,
    collaborative_anchor_rows,
    content_anchor_rows,
    content_based_arrays,
    diversity_score,
    explain,
    hybrid_merge_arrays,
    mmr_order,
    normalized,
    popular_arrays,
    select_strategy,
    strategy_weights,
)
from recolab.domain.services.strategy import HybridWeights
from recolab.domain.values import Timestamp, UserId

log = logging.getLogger(__name__)

AUTO = "auto"  # the strategy of the user's tier
# What a caller may ask for: the tier's choice or one strategy (diversity is the tier's own).
REQUESTABLE = (AUTO, *(s.value for s in Strategy if s is not Strategy.COLLABORATIVE_WITH_DIVERSITY))
TIERS = tuple(tier.value for tier in UserClassification)
SOURCES = tuple(source.value for source in Source)
MAX_N = 100
# Why a candidate is on the shortlist; its reason is worked out only if it is served (the
# shortlist is much longer than the answer).
_POPULAR, _COLLABORATIVE, _CONTENT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class RecommendRequest:
    user_id: int
    n: int = 10
    strategy: str = AUTO
    diversity_lambda: float | None = None
    force_refresh: bool = False

    def __post_init__(self) -> None:
        UserId(self.user_id)
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= MAX_N:
            raise InvalidValue(f"n must be an integer between 1 and {MAX_N}, got {self.n!r}")
        if self.strategy not in REQUESTABLE:
            allowed = ", ".join(REQUESTABLE)
            raise InvalidValue(f"strategy must be one of {allowed}, got {self.strategy!r}")
        lam = self.diversity_lambda
        if lam is not None and (isinstance(lam, bool) or not 0.0 <= lam <= 1.0):
            raise InvalidValue(f"diversity_lambda must be in [0, 1], got {lam!r}")


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    movie_id: int
    title: str
    genres: list[str]
    year: int | None
    score: float
    rank: int
    source: str
    explanation: str


@dataclass(frozen=True, slots=True)
class RecommendationResult:
    user_id: int
    classification: str
    strategy_used: str
    model_version: str | None
    diversity_score: float
    generated_at: str
    items: list[RecommendedItem]
    cached: bool = False
    fallback: str | None = None  # why the requested strategy could not be used as is
    # The online experiment the user is in (None: none runs) and the variant that answered.
    experiment: str | None = None
    variant: str = CHAMPION

    def to_json(self) -> bytes:
        """The answer for the cache: without `cached`, and without the experiment and
        variant, which are the user's routing when it is served (the cache key holds the
        model version, so the answer itself is that model's whatever the experiment)."""
        data = {k: getattr(self, k) for k in self.__slots__ if k not in _SERVED_AS}
        data["items"] = [{k: getattr(i, k) for k in i.__slots__} for i in self.items]
        return json.dumps(data).encode()

    @classmethod
    def from_json(
        cls, raw: bytes, experiment: str | None = None, variant: str = CHAMPION
    ) -> RecommendationResult:
        data: dict[str, Any] = json.loads(raw)
        items = [RecommendedItem(**item) for item in data.pop("items")]
        return cls(**data, items=items, cached=True, experiment=experiment, variant=variant)


_SERVED_AS = ("items", "cached", "experiment", "variant")


@dataclass(frozen=True, slots=True)
class Route:
    """Which model answers a user: their variant's scorer (None: no model), the variant and
    the experiment (None: none runs); in shadow mode, the challenger to score for them off
    the request path (`shadow`), while the champion answers."""

    scorer: Scorer | None
    variant: str = CHAMPION
    experiment: str | None = None
    shadow: Scorer | None = None


class ShadowJobs(Protocol):
    """Runs shadow scorings off the request path and records the answers they return;
    bounded: past the bound a job is dropped (False), never waited for."""

    def submit(self, job: Callable[[], RecommendationsGenerated]) -> bool: ...


def cache_group(user_id: int) -> str:
    """The cache group of a user's recommendations: a rating of theirs drops it and moves
    its generation on (anything cached from the user's ratings belongs in it)."""
    return f"rec:{user_id}"


@dataclass
class Recommender:
    """Builds recommendations: cache, strategy per tier, candidates, merge, MMR, explanations."""

    uow_factory: Callable[[], UnitOfWork]
    catalogue: Catalogue
    scorer: Callable[[], Scorer | None]
    cache: Cache
    bus: EventPublisher
    ttl_s: int = 600
    shortlist: int = 200
    default_lambda: float = 0.7
    # Per-tier hybrid weights from configs/serving.yaml; tiers left out keep the seed's.
    hybrid_weights: HybridWeights | None = None
    # Which model answers each user while an experiment runs (None: `scorer` for all).
    route: Callable[[int], Route] | None = None
    # Where shadow scorings go (None: none are made).
    shadow: ShadowJobs | None = None

    def recommend(self, request: RecommendRequest) -> RecommendationResult:
        """The user's recommendations, from the cache unless `force_refresh`; publishes
        `RecommendationsGenerated` either way (its handlers record what was served).

        The user's variant's model answers (a canary's challenger, else the champion); in
        shadow mode the challenger's answer to a freshly built one is scored off the request
        path and recorded, never shown."""
        route = self.route(request.user_id) if self.route is not None else Route(self.scorer())
        scorer = route.scorer
        version = scorer.version if scorer else None
        lam = self.default_lambda if request.diversity_lambda is None else request.diversity_lambda
        group = cache_group(request.user_id)
        # The version keys the answer: a challenger's answer is never read back by a user the
        # champion answers (groups are per user, and variants sticky), nor after the
        # experiment stops (the user's key is the champion's version again).
        key = f"{version}:{request.strategy}:{request.n}:{lam}"
        # The generation comes before the ratings are read: a rating whose drop lands
        # between that read and the store below makes the store a no-op (see `Cache`).
        # The user's profile (their row and rated movies) is in the same group: an uncached
        # answer reads the database only when no rating came since the profile was kept.
        (hit, profile), generation = self.cache.lookup_many(group, (key, PROFILE_KEY))
        read: tuple[User, RatedMovies] | None = None
        if hit is not None and not request.force_refresh:
            result = RecommendationResult.from_json(hit, route.experiment, route.variant)
        else:
            read = self._profile(request.user_id, profile, group, generation)
            result = self._build(request, *read, scorer, lam, route)
            if generation is not None:  # None: the cache is down, storing could go stale
                self.cache.store(group, key, result.to_json(), self.ttl_s, generation)
        event = _event(request, result)
        if route.shadow is not None and read is not None:
            self._shadow(request, *read, route.shadow, lam, event)
        self.bus.publish(event)
        return result

    def _shadow(
        self,
        request: RecommendRequest,
        user: User,
        rated: RatedMovies,
        challenger: Scorer,
        lam: float,
        served: RecommendationsGenerated,
    ) -> None:
        """Hand the challenger's answer to this request to the shadow jobs: built later, off
        the request path, from what this request read (no second database read), recorded
        as variant `shadow` at the served answer's time. Never raises, never waits."""
        if self.shadow is None:
            return

        route = Route(challenger, SHADOW, served.experiment)

        def job() -> RecommendationsGenerated:
            shadow = self._build(request, user, rated, challenger, lam, route, explain=False)
            return _event(request, shadow, at=served.occurred_at)

        try:
            self.shadow.submit(job)
        except Exception:  # the answer must not depend on its shadow
            log.warning("could not hand off a shadow scoring", exc_info=True)

    def _profile(
        self, user_id: int, cached: bytes | None, group: str, generation: object | None
    ) -> tuple[User, RatedMovies]:
        """The user and their ratings: from the cached profile, else from the database (and
        then kept, under the generation taken before the read)."""
        if cached is not None:
            try:
                return decode_profile(cached)
            except InvalidValue:  # another version's layout: read it again
                pass
        with self.uow_factory() as uow:
            user = uow.users.get(UserId(user_id))
            if user is None:
                raise UserNotFound(user_id)
            ratings = uow.ratings.rated_by(user.id)
        if generation is not None:
            self.cache.store(
                group, PROFILE_KEY, encode_profile(user, ratings), self.ttl_s, generation
            )
        return user, ratings

    def _build(
        self,
        request: RecommendRequest,
        user: User,
        rated: RatedMovies,
        scorer: Scorer | None,
        lam: float,
        route: Route | None = None,
        *,
        explain: bool = True,
    ) -> RecommendationResult:
        """The answer, on arrays: work in proportion to the shortlist, not the catalogue.
        `explain=False` leaves the explanations out (an answer nobody reads: shadow)."""
        index = self.catalogue.index()
        tier = user.classify()
        strategy = select_strategy(tier) if request.strategy == AUTO else Strategy(request.strategy)
        picks, used, fallback = self._candidates(strategy, user, rated, index, scorer, request.n)
        if used is Strategy.COLLABORATIVE_WITH_DIVERSITY and len(picks):
            _, first = np.unique(picks.positions, return_index=True)
            picks = picks.take(np.sort(first))  # distinct, in order
            pool = picks.positions

            def similarity(j: int) -> np.ndarray:
                return index.jaccard_to(pool, int(pool[j]))

            picks = picks.take(
                np.asarray(
                    mmr_order(picks.scores, similarity, lambda_=lam, k=request.n), dtype=np.int64
                )
            )
        # Already-rated movies are never served, whatever a source returned.
        rated_ids = np.sort(rated.movie_ids)
        head = picks.take(np.arange(min(len(picks), request.n)))
        if _any_in(index.ids[head.positions], rated_ids):  # never, with sources that exclude
            served = ~np.isin(index.ids[picks.positions], rated_ids)
            head = picks.take(np.flatnonzero(served)[: request.n])
        picks = head
        movies = [index.movies[p] for p in picks.positions.tolist()]
        reasons = _reasons(picks, movies, rated, index) if explain else [None] * len(movies)
        return RecommendationResult(
            user_id=request.user_id,
            classification=tier.value,
            strategy_used=used.value,
            model_version=scorer.version if scorer else None,
            diversity_score=round(diversity_score(movies), 6),
            generated_at=Timestamp.now().isoformat(),
            items=[
                _item(movie, score, picks.source, reason, rank)
                for rank, (movie, score, reason) in enumerate(
                    zip(movies, picks.scores.tolist(), reasons, strict=True), 1
                )
            ],
            fallback=fallback,
            experiment=route.experiment if route else None,
            variant=route.variant if route else CHAMPION,
        )

    def _candidates(
        self,
        strategy: Strategy,
        user: User,
        rated: RatedMovies,
        index: CatalogueIndex,
        scorer: Scorer | None,
        n: int,
    ) -> tuple[_Shortlist, Strategy, str | None]:
        if strategy is Strategy.POPULAR or not len(rated):
            reason = None if strategy is Strategy.POPULAR else "no ratings yet: popular instead"
            positions, popularity = popular_arrays(index, rated.movie_ids, n)
            return (
                _Shortlist.of(positions, normalized(popularity), Source.POPULAR, _POPULAR),
                Strategy.POPULAR,
                reason,
            )
        # Content-based alone needs only the n best (they exclude rated movies already); a
        # hybrid merge needs the whole shortlist.
        if strategy is Strategy.CONTENT_BASED:
            return self._content(index, rated, n), strategy, None
        cf = self._collaborative(user, rated, index, scorer)
        if cf is None:
            fallback = "no model: content-based instead"
            return self._content(index, rated, n), Strategy.CONTENT_BASED, fallback
        if strategy is Strategy.HYBRID:
            weights = strategy_weights(user.classify(), self.hybrid_weights)
            cf_w, cb_w = weights.collaborative, weights.content_based
            if cf_w + cb_w == 0 or user.classify() is UserClassification.POWER_USER:
                cf_w, cb_w = user.cf_weight(), user.cb_weight()
            cb = self._content(index, rated)
            ids, scores, dominant = hybrid_merge_arrays(
                [(index.ids[cf.positions], cf.scores), (index.ids[cb.positions], cb.scores)],
                [cf_w, cb_w],
                limit=n + len(rated),  # enough after the exclusions `_build` applies
            )
            via = np.where(dominant == 0, _COLLABORATIVE, _CONTENT)
            return _Shortlist(index.locate(ids), scores, Source.HYBRID, via), strategy, None
        return cf, strategy, None

    def _content(
        self, index: CatalogueIndex, rated: RatedMovies, limit: int | None = None
    ) -> _Shortlist:
        limit = self.shortlist if limit is None else min(limit, self.shortlist)
        positions, scores = content_based_arrays(index, rated, limit)
        return _Shortlist.of(positions, scores, Source.CONTENT_BASED, _CONTENT)

    def _collaborative(
        self, user: User, rated: RatedMovies, index: CatalogueIndex, scorer: Scorer | None
    ) -> _Shortlist | None:
        if scorer is None:
            return None
        known = scorer.knows_user(user.id)
        source = Source.COLLABORATIVE if known else Source.COLLABORATIVE_FOLD_IN
        if known:
            ids, scores = scorer.top_k_ids(user.id, self.shortlist, rated.movie_ids)
        else:
            ids, scores = scorer.fold_in_top_k_ids(rated, self.shortlist, rated.movie_ids)
        positions = index.locate(ids)
        in_catalogue = positions >= 0
        return _Shortlist.of(positions[in_catalogue], scores[in_catalogue], source, _COLLABORATIVE)


@dataclass(frozen=True, slots=True)
class _Shortlist:
    """Candidates as arrays: catalogue positions, scores, and why each is there."""

    positions: np.ndarray
    scores: np.ndarray
    source: Source
    via: np.ndarray  # _POPULAR, _COLLABORATIVE or _CONTENT: which reason explains it

    @classmethod
    def of(cls, positions: np.ndarray, scores: np.ndarray, source: Source, via: int) -> _Shortlist:
        return cls(positions, scores, source, np.full(len(positions), via, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, rows: np.ndarray) -> _Shortlist:
        return _Shortlist(self.positions[rows], self.scores[rows], self.source, self.via[rows])


def _any_in(ids: np.ndarray, sorted_ids: np.ndarray) -> bool:
    """Whether any of `ids` is in `sorted_ids` (ascending)."""
    if not len(ids) or not len(sorted_ids):
        return False
    at = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return bool((sorted_ids[at] == ids).any())


def _reasons(
    picks: _Shortlist, movies: list[Movie], rated: RatedMovies, index: CatalogueIndex
) -> list[Reason]:
    """The served picks' reasons: the rated movie closest in genres (Jaccard) to each pick
    among the user's anchors, as the domain's `content_reason` and `collaborative_reason`."""
    reasons = [
        Reason(ReasonKind.POPULAR_OVERALL, rating_count=movie.rating_count) for movie in movies
    ]
    for via, anchor_rows in (
        (_COLLABORATIVE, collaborative_anchor_rows),
        (_CONTENT, content_anchor_rows),
    ):
        rows = np.flatnonzero(picks.via == via)
        if not rows.size:
            continue
        anchors = anchor_rows(rated)
        anchor_positions = index.locate(rated.movie_ids[anchors])
        best = closest_anchors(index.jaccard(picks.positions[rows], anchor_positions))
        for row, found in zip(rows.tolist(), best.tolist(), strict=True):
            if found >= 0:
                reasons[row] = Reason(
                    ReasonKind.BECAUSE_YOU_RATED,
                    anchor_title=index.movies[int(anchor_positions[found])].title,
                    anchor_score=float(rated.scores[anchors[found]]),
                )
            elif via == _COLLABORATIVE:
                reasons[row] = Reason(ReasonKind.SIMILAR_USERS, predicted_rating=None)
            else:
                reasons[row] = Reason(ReasonKind.MATCHES_GENRES, genres=movies[row].genres)
    return reasons


def _event(
    request: RecommendRequest, result: RecommendationResult, at: Timestamp | None = None
) -> RecommendationsGenerated:
    """The event of an answer; a shadow's carries its served answer's time (`at`)."""
    return RecommendationsGenerated(
        user_id=UserId(result.user_id),
        tier=result.classification,
        requested=request.strategy,
        strategy=result.strategy_used,
        items=result.items,
        diversity_score=result.diversity_score,
        model_version=result.model_version,
        cached=result.cached,
        fallback=result.fallback,
        experiment=result.experiment,
        variant=result.variant,
        occurred_at=Timestamp.now() if at is None else at,
    )


def _item(
    movie: Movie, score: float, source: Source, reason: Reason | None, rank: int
) -> RecommendedItem:
    return RecommendedItem(
        movie_id=movie.id.value,
        title=movie.title,
        genres=list(movie.genres),
        year=movie.year,
        score=round(min(1.0, max(0.0, score)), 6),
        rank=rank,
        source=source.value,
        explanation="" if reason is None else explain(reason),
    )
