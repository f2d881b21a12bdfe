"""Use case: recommend movies to a user, following the domain's strategy rules."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from recolab.domain.errors import InvalidValue, UserNotFound
from recolab.domain.events import RecommendationsGenerated
from recolab.domain.model import Movie, Rating, Source, User, UserClassification, jaccard
from recolab.domain.ports import Cache, Catalogue, EventPublisher, Scorer, UnitOfWork
from recolab.domain.services import (
    UNEXPLAINED,
    Candidate,
    GenreIndex,
    GenreSimilarity,
    Reason,
    ReasonKind,
    Strategy,
    content_anchors,
    content_based_scores,
    content_reason,
    diversity_score,
    explain,
    genre_similarity,
    hybrid_merge,
    mmr_rerank,
    normalize_scores,
    popularity_ranking,
    select_strategy,
    strategy_weights,
)
from recolab.domain.values import MovieId, Timestamp, UserId

AUTO = "auto"  # the strategy of the user's tier
# What a caller may ask for: the tier's choice or one strategy (diversity is the tier's own).
REQUESTABLE = (AUTO, *(s.value for s in Strategy if s is not Strategy.COLLABORATIVE_WITH_DIVERSITY))
TIERS = tuple(tier.value for tier in UserClassification)
SOURCES = tuple(source.value for source in Source)
MAX_N = 100
ANCHORS = 20  # best-rated movies considered when explaining a collaborative pick
# A collaborative pick's reason is worked out only if the pick is served: the model's
# shortlist is much longer than the answer, and explaining every candidate was most of
# the cost of a recommendation. Compared by identity, never by value.
_EXPLAIN_LATER = Reason(ReasonKind.SIMILAR_USERS)


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

    def to_json(self) -> bytes:
        data = {k: getattr(self, k) for k in self.__slots__ if k not in ("items", "cached")}
        data["items"] = [{k: getattr(i, k) for k in i.__slots__} for i in self.items]
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RecommendationResult:
        data: dict[str, Any] = json.loads(raw)
        items = [RecommendedItem(**item) for item in data.pop("items")]
        return cls(**data, items=items, cached=True)


def cache_group(user_id: int) -> str:
    """The cache group of a user's recommendations: a rating of theirs drops it."""
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
    _genres: tuple[Sequence[Movie], GenreIndex, GenreSimilarity] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def recommend(self, request: RecommendRequest) -> RecommendationResult:
        """The user's recommendations, from the cache unless `force_refresh`; publishes
        `RecommendationsGenerated` either way (its handlers record what was served)."""
        scorer = self.scorer()
        version = scorer.version if scorer else None
        lam = self.default_lambda if request.diversity_lambda is None else request.diversity_lambda
        group = cache_group(request.user_id)
        key = f"{version}:{request.strategy}:{request.n}:{lam}"
        if not request.force_refresh and (hit := self.cache.get(group, key)) is not None:
            result = RecommendationResult.from_json(hit)
        else:
            with self.uow_factory() as uow:
                user = uow.users.get(UserId(request.user_id))
                if user is None:
                    raise UserNotFound(request.user_id)
                ratings = uow.ratings.for_user(user.id)
            result = self._build(request, user, ratings, scorer, lam)
            self.cache.set(group, key, result.to_json(), self.ttl_s)
        self.bus.publish(
            RecommendationsGenerated(
                user_id=UserId(result.user_id),
                tier=result.classification,
                requested=request.strategy,
                strategy=result.strategy_used,
                items=result.items,
                diversity_score=result.diversity_score,
                model_version=result.model_version,
                cached=result.cached,
                fallback=result.fallback,
            )
        )
        return result

    def _build(
        self,
        request: RecommendRequest,
        user: User,
        ratings: list[Rating],
        scorer: Scorer | None,
        lam: float,
    ) -> RecommendationResult:
        tier = user.classify()
        strategy = select_strategy(tier) if request.strategy == AUTO else Strategy(request.strategy)
        rated = {r.movie_id for r in ratings}
        picks, used, fallback = self._candidates(strategy, user, ratings, rated, scorer, request.n)
        if used is Strategy.COLLABORATIVE_WITH_DIVERSITY:
            picks = mmr_rerank(picks, self._genre_tools()[2], lambda_=lam, k=request.n)
        chosen = self._explain(
            [
                (c, m)
                for c in picks
                if c.movie_id not in rated and (m := self.catalogue.get(c.movie_id)) is not None
            ][: request.n],
            ratings,
        )
        movies = [m for _, m in chosen]
        return RecommendationResult(
            user_id=request.user_id,
            classification=tier.value,
            strategy_used=used.value,
            model_version=scorer.version if scorer else None,
            diversity_score=round(diversity_score(movies), 6),
            generated_at=Timestamp.now().isoformat(),
            items=[_item(c, m, rank) for rank, (c, m) in enumerate(chosen, 1)],
            fallback=fallback,
        )

    def _candidates(
        self,
        strategy: Strategy,
        user: User,
        ratings: list[Rating],
        rated: set[MovieId],
        scorer: Scorer | None,
        n: int,
    ) -> tuple[list[Candidate], Strategy, str | None]:
        if strategy is Strategy.POPULAR or not ratings:
            reason = None if strategy is Strategy.POPULAR else "no ratings yet: popular instead"
            return self._popular(rated, n), Strategy.POPULAR, reason
        # Content-based alone needs only the n best (they exclude rated movies already); a
        # hybrid merge needs the whole shortlist.
        if strategy is Strategy.CONTENT_BASED:
            return self._content(ratings, n), strategy, None
        cf = self._collaborative(user, ratings, rated, scorer)
        if cf is None:
            fallback = "no model: content-based instead"
            return self._content(ratings, n), Strategy.CONTENT_BASED, fallback
        if strategy is Strategy.HYBRID:
            weights = strategy_weights(user.classify())
            cf_w, cb_w = weights.collaborative, weights.content_based
            if cf_w + cb_w == 0 or user.classify() is UserClassification.POWER_USER:
                cf_w, cb_w = user.cf_weight(), user.cb_weight()
            merged = hybrid_merge(
                {
                    Source.COLLABORATIVE: cf,
                    Source.CONTENT_BASED: self._content(ratings, explain=False),
                },
                {Source.COLLABORATIVE: cf_w, Source.CONTENT_BASED: cb_w},
                limit=n + len(rated),  # enough after the exclusions `_build` applies
            )
            return merged, strategy, None
        return cf, strategy, None

    def _popular(self, rated: set[MovieId], n: int) -> list[Candidate]:
        head = self.catalogue.by_popularity()[: n + len(rated)]  # enough after exclusions
        return normalize_scores(popularity_ranking(head, exclude=rated, limit=n))

    def _content(
        self, ratings: Sequence[Rating], limit: int | None = None, *, explain: bool = True
    ) -> list[Candidate]:
        titles, genres = self._lookups(r.movie_id for r in ratings)
        return content_based_scores(
            ratings,
            self._genre_index(),
            titles=titles,
            genres_of=genres,
            limit=self.shortlist if limit is None else min(limit, self.shortlist),
            explain=explain,
        )

    def _genre_index(self) -> GenreIndex:
        return self._genre_tools()[1]

    def _genre_tools(self) -> tuple[Sequence[Movie], GenreIndex, GenreSimilarity]:
        """The catalogue's genre index and genre similarity (whose per-movie genre sets
        and masks then last across requests), rebuilt when the catalogue hands out new
        movies."""
        movies = self.catalogue.movies()
        built = self._genres
        if built is None or built[0] is not movies:
            similarity = genre_similarity({m.id: m.genres for m in movies})
            built = (movies, GenreIndex(movies), similarity)
            self._genres = built  # a race only builds it twice
        return built

    def _collaborative(
        self, user: User, ratings: list[Rating], rated: set[MovieId], scorer: Scorer | None
    ) -> list[Candidate] | None:
        if scorer is None:
            return None
        if scorer.knows_user(user.id):
            pairs, source = scorer.top_k(user.id, self.shortlist, rated), Source.COLLABORATIVE
        else:
            pairs = scorer.fold_in_top_k(ratings, self.shortlist, rated)
            source = Source.COLLABORATIVE_FOLD_IN
        return [
            Candidate(movie_id, score, source, _EXPLAIN_LATER)
            for movie_id, score in pairs
            if self.catalogue.get(movie_id) is not None
        ]

    def _explain(
        self, chosen: list[tuple[Candidate, Movie]], ratings: Sequence[Rating]
    ) -> list[tuple[Candidate, Movie]]:
        """Give the served picks whose reasons were deferred (collaborative, content) them."""
        chosen = self._explain_content(chosen, ratings)
        if not any(c.reason is _EXPLAIN_LATER for c, _ in chosen):
            return chosen
        anchors = sorted(
            (r for r in ratings if r.is_positive()),
            key=lambda r: (-r.score.value, -r.timestamp.to_unix()),
        )[:ANCHORS]
        titles, _ = self._lookups(r.movie_id for r in anchors)
        similarity = self._genre_tools()[2]
        with_genres = [(r, similarity.genres(r.movie_id)) for r in anchors]
        return [
            (
                replace(c, reason=_cf_reason(similarity.genres(m.id), with_genres, titles))
                if c.reason is _EXPLAIN_LATER
                else c,
                m,
            )
            for c, m in chosen
        ]

    def _explain_content(
        self, chosen: list[tuple[Candidate, Movie]], ratings: Sequence[Rating]
    ) -> list[tuple[Candidate, Movie]]:
        if not any(c.reason is UNEXPLAINED for c, _ in chosen):
            return chosen
        titles, genres = self._lookups(r.movie_id for r in ratings)
        anchors = content_anchors(ratings, genres)
        return [
            (replace(c, reason=content_reason(m, anchors, titles)), m)
            if c.reason is UNEXPLAINED
            else (c, m)
            for c, m in chosen
        ]

    def _lookups(
        self, movie_ids: Iterable[MovieId]
    ) -> tuple[dict[MovieId, str], dict[MovieId, tuple[str, ...]]]:
        titles: dict[MovieId, str] = {}
        genres: dict[MovieId, tuple[str, ...]] = {}
        for movie_id in movie_ids:
            movie = self.catalogue.get(movie_id)
            if movie is not None:
                titles[movie_id], genres[movie_id] = movie.title, movie.genres
        return titles, genres


def _cf_reason(
    genres: frozenset[str],
    anchors: Sequence[tuple[Rating, frozenset[str]]],
    titles: dict[MovieId, str],
) -> Reason:
    """The anchor (a best-rated movie, with its genres) whose genres are most like `genres`."""
    best: tuple[float, Rating] | None = None
    for rating, anchor_genres in anchors:
        sim = jaccard(genres, anchor_genres)
        if sim > 0 and (best is None or sim > best[0]):
            best = (sim, rating)
    if best is not None:
        return Reason(
            ReasonKind.BECAUSE_YOU_RATED,
            anchor_title=titles[best[1].movie_id],
            anchor_score=best[1].score.value,
        )
    return Reason(ReasonKind.SIMILAR_USERS, predicted_rating=None)


def _item(candidate: Candidate, movie: Movie, rank: int) -> RecommendedItem:
    return RecommendedItem(
        movie_id=movie.id.value,
        title=movie.title,
        genres=list(movie.genres),
        year=movie.year,
        score=round(min(1.0, max(0.0, candidate.score)), 6),
        rank=rank,
        source=candidate.source.value,
        explanation=explain(candidate.reason),
    )
