"""Domain services: strategy choice, candidate scoring and merging, diversity, MMR, explanations.

Everything here is pure: inputs in, values out. Candidates carry a `Reason`, so explanations
name what actually put a movie on the list.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from recolab.domain.errors import InvalidValue
from recolab.domain.model import Movie, Rating, Source, UserClassification, jaccard
from recolab.domain.values import MovieId

FAVORITE_GENRES_K = 3
DEFAULT_MMR_LAMBDA = 0.7
MAX_ANCHORS = 50  # rated movies considered when explaining a content-based pick


class Strategy(StrEnum):
    POPULAR = "popular"
    CONTENT_BASED = "content_based"
    COLLABORATIVE = "collaborative"
    HYBRID = "hybrid"
    COLLABORATIVE_WITH_DIVERSITY = "collaborative_with_diversity"


@dataclass(frozen=True, slots=True)
class StrategyWeights:
    """Weights of the hybrid merge; `diversity` is 1 - MMR lambda for power users."""

    collaborative: float = 0.0
    content_based: float = 0.0
    diversity: float = 0.0


_STRATEGY_BY_TIER = {
    UserClassification.COLD_START: Strategy.POPULAR,
    UserClassification.NEW: Strategy.CONTENT_BASED,
    UserClassification.CASUAL: Strategy.HYBRID,
    UserClassification.ACTIVE: Strategy.HYBRID,
    UserClassification.POWER_USER: Strategy.COLLABORATIVE_WITH_DIVERSITY,
}

_WEIGHTS_BY_TIER = {
    UserClassification.CASUAL: StrategyWeights(collaborative=0.6, content_based=0.4),
    UserClassification.ACTIVE: StrategyWeights(collaborative=0.8, content_based=0.2),
    UserClassification.POWER_USER: StrategyWeights(collaborative=0.7, diversity=0.3),
}


def select_strategy(classification: UserClassification) -> Strategy:
    """cold_start -> popular, new -> content-based, casual/active -> hybrid, power -> CF + MMR."""
    return _STRATEGY_BY_TIER[classification]


def strategy_weights(classification: UserClassification) -> StrategyWeights:
    return _WEIGHTS_BY_TIER.get(classification, StrategyWeights(content_based=1.0))


class ReasonKind(StrEnum):
    POPULAR_IN_GENRE = "popular_in_genre"
    POPULAR_OVERALL = "popular_overall"
    BECAUSE_YOU_RATED = "because_you_rated"
    MATCHES_GENRES = "matches_genres"
    SIMILAR_USERS = "similar_users"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a movie is a candidate; `explain` turns it into text."""

    kind: ReasonKind
    genre: str | None = None
    genres: tuple[str, ...] = ()
    anchor_title: str | None = None
    anchor_score: float | None = None
    rating_count: int | None = None
    predicted_rating: float | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    movie_id: MovieId
    score: float
    source: Source
    reason: Reason


def explain(reason: Reason) -> str:
    """A short sentence that names the real reason for a recommendation."""
    match reason.kind:
        case ReasonKind.BECAUSE_YOU_RATED if reason.anchor_title:
            if reason.anchor_score is None:
                return f"Because you rated {reason.anchor_title}"
            return f"Because you rated {reason.anchor_title} {reason.anchor_score:.1f}"
        case ReasonKind.POPULAR_IN_GENRE if reason.genre:
            return f"Popular in {reason.genre}"
        case ReasonKind.MATCHES_GENRES if reason.genres:
            return f"Matches your favourite genres: {', '.join(reason.genres)}"
        case ReasonKind.SIMILAR_USERS if reason.predicted_rating is not None:
            return (
                "Viewers with tastes like yours rate it highly "
                f"(predicted {reason.predicted_rating:.1f} stars)"
            )
        case ReasonKind.POPULAR_OVERALL if reason.rating_count is not None:
            return f"Popular with {reason.rating_count} ratings"
    return f"Recommended ({reason.kind.value.replace('_', ' ')})"


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


def _score_range(candidates: Sequence[Candidate]) -> tuple[float, float]:
    """(lowest score, highest minus lowest) of a non-empty list: min-max scaling's terms."""
    low = min(c.score for c in candidates)
    return low, max(c.score for c in candidates) - low


def normalize_scores(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Min-max scale scores to [0, 1]; equal scores all become 1."""
    if not candidates:
        return []
    low, span = _score_range(candidates)
    # Built directly: dataclasses.replace costs several times more, on every shortlist.
    if span <= 0:
        return [Candidate(c.movie_id, 1.0, c.source, c.reason) for c in candidates]
    return [Candidate(c.movie_id, (c.score - low) / span, c.source, c.reason) for c in candidates]


def hybrid_merge(
    lists: Mapping[Source, Sequence[Candidate]],
    weights: Mapping[Source, float],
    limit: int | None = None,
) -> list[Candidate]:
    """Weighted sum of per-source scores, each list normalised first; best first (the best
    `limit` only, when given).

    A movie keeps the reason of the source that contributed most to its score.
    """
    used = [weights.get(source, 0.0) for source in lists]
    # A negative (or NaN) weight would push merged scores outside [0, 1].
    if any(not math.isfinite(w) or w < 0 for w in used):
        raise InvalidValue(f"hybrid merge weights must be finite and >= 0, got {dict(weights)}")
    total = sum(used)
    if total <= 0:
        raise InvalidValue("hybrid merge needs a positive weight for at least one source")
    # Keyed by the plain id (hashing MovieId runs Python code) and normalised inline (as
    # `normalize_scores` does) without building a Candidate per input: this runs on every
    # hybrid recommendation, over two full shortlists.
    scores: dict[int, float] = {}
    best: dict[int, tuple[float, Candidate]] = {}
    for source, candidates in lists.items():
        if not candidates:
            continue
        weight = weights.get(source, 0.0) / total
        low, span = _score_range(candidates)
        for cand in candidates:
            part = weight * ((cand.score - low) / span if span > 0 else 1.0)
            key = cand.movie_id.value
            seen = best.get(key)
            if seen is None:
                scores[key] = part
                best[key] = (part, cand)
            else:
                scores[key] += part
                if part > seen[0]:
                    best[key] = (part, cand)
    order = sorted(scores.items(), key=lambda kv: (-min(1.0, kv[1]), kv[0]))
    return [
        Candidate(best[key][1].movie_id, min(1.0, score), Source.HYBRID, best[key][1].reason)
        for key, score in (order if limit is None else order[:limit])
    ]


def popularity_ranking(
    movies: Iterable[Movie],
    *,
    exclude: set[MovieId] | frozenset[MovieId] = frozenset(),
    genres: Sequence[str] = (),
    limit: int | None = None,
) -> list[Candidate]:
    """Movies by popularity score; with `genres`, only those having one of them."""
    wanted = [g.lower() for g in genres]
    out: list[Candidate] = []
    for movie in movies:
        if movie.id in exclude or movie.rating_count == 0:
            continue
        genre = next((g for g in movie.genres if g.lower() in wanted), None)
        if wanted and genre is None:
            continue
        reason = (
            Reason(ReasonKind.POPULAR_IN_GENRE, genre=genre)
            if genre
            else Reason(ReasonKind.POPULAR_OVERALL, rating_count=movie.rating_count)
        )
        out.append(Candidate(movie.id, movie.popularity_score(), Source.POPULAR, reason))
    out.sort(key=lambda c: (-c.score, c.movie_id.value))
    return out[:limit] if limit is not None else out


def genre_profile(
    ratings: Iterable[Rating], genres_of: Mapping[MovieId, Sequence[str]]
) -> dict[str, float]:
    """Genre weights from a user's positive ratings (all ratings when none is positive).

    Each rating contributes its normalised score to each of its movie's genres.
    """
    rated = list(ratings)
    chosen = [r for r in rated if r.is_positive()] or rated
    profile: dict[str, float] = {}
    for rating in chosen:
        weight = max(rating.normalized_score(), 0.05)
        for genre in genres_of.get(rating.movie_id, ()):
            key = genre.lower()
            profile[key] = profile.get(key, 0.0) + weight
    return profile


class GenreIndex:
    """A catalogue's genres and popularity as arrays, for content-based scoring in one pass.

    Build it once per catalogue; genre names are compared lower-cased. Popularity is taken
    when the index is built, like the catalogue it comes from.
    """

    def __init__(self, movies: Iterable[Movie]) -> None:
        self.movies: tuple[Movie, ...] = tuple(movies)
        self.positions: dict[MovieId, int] = {m.id: i for i, m in enumerate(self.movies)}
        self.vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        lengths = np.zeros(len(self.movies))
        for i, movie in enumerate(self.movies):
            lengths[i] = len(movie.genres)
            for genre in movie.genres:
                rows.append(i)
                cols.append(self.vocabulary.setdefault(genre.lower(), len(self.vocabulary)))
        self.counts = np.zeros((len(self.movies), len(self.vocabulary)))
        np.add.at(
            self.counts, (np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)), 1
        )
        with np.errstate(divide="ignore"):
            self.inv_sqrt_length = np.where(lengths > 0, 1.0 / np.sqrt(lengths), 0.0)
        self.popularity_term = np.array(
            [0.05 * min(1.0, m.popularity_score() / 15.0) for m in self.movies], dtype=np.float64
        )
        self.ids = np.array([m.id.value for m in self.movies], dtype=np.int64)

    def scores(
        self, profile: Mapping[str, float], exclude: Iterable[MovieId], limit: int | None
    ) -> list[tuple[float, Movie]]:
        """(score, movie) of the movies sharing a genre with ``profile``, best first."""
        if limit is not None and limit <= 0:
            return []
        weights = np.zeros(len(self.vocabulary))
        for genre, weight in profile.items():
            if (column := self.vocabulary.get(genre)) is not None:
                weights[column] = weight
        norm = math.sqrt(sum(w * w for w in profile.values()))
        dot = self.counts @ weights
        skip = [p for m in exclude if (p := self.positions.get(m)) is not None]
        dot[np.asarray(skip, dtype=np.intp)] = 0.0
        keep = np.flatnonzero(dot > 0)
        score = np.minimum(1.0, dot[keep] * self.inv_sqrt_length[keep] / norm) * 0.95
        score += self.popularity_term[keep]
        if limit is not None and len(keep) > limit:
            # Only scores at least the limit-th best can make the cut (ties included).
            cutoff = -np.partition(-score, limit - 1)[limit - 1]
            kept = score >= cutoff
            keep, score = keep[kept], score[kept]
        order = np.lexsort((self.ids[keep], -score))[:limit]
        return [(float(score[i]), self.movies[keep[i]]) for i in order]


def content_based_scores(
    ratings: Sequence[Rating],
    movies: Iterable[Movie] | GenreIndex,
    *,
    titles: Mapping[MovieId, str],
    genres_of: Mapping[MovieId, Sequence[str]],
    limit: int | None = None,
    explain: bool = True,
) -> list[Candidate]:
    """Score unrated movies by cosine between their genres and the user's genre profile.

    Popularity breaks near-ties; the reason names the user's best rated movie sharing the
    most genres with the candidate. Pass the catalogue's ``GenreIndex`` to score it in one
    vectorised pass (built on the fly from plain movies). With ``explain=False`` every
    candidate carries ``UNEXPLAINED`` (the identical object): explain the ones that are
    served later with ``content_anchors`` and ``content_reason``.
    """
    profile = genre_profile(ratings, genres_of)
    if not profile:
        return []
    index = movies if isinstance(movies, GenreIndex) else GenreIndex(movies)
    scored = index.scores(profile, (r.movie_id for r in ratings), limit)
    if not explain:
        return [Candidate(m.id, score, Source.CONTENT_BASED, UNEXPLAINED) for score, m in scored]
    anchors = content_anchors(ratings, genres_of)
    # Explanations only for what is returned: the catalogue can be large.
    return [
        Candidate(movie.id, score, Source.CONTENT_BASED, content_reason(movie, anchors, titles))
        for score, movie in scored
    ]


# The reason of a content-based candidate not explained yet (compared by identity).
UNEXPLAINED = Reason(ReasonKind.MATCHES_GENRES)

Anchor = tuple[Rating, frozenset[str]]


def content_anchors(
    ratings: Sequence[Rating], genres_of: Mapping[MovieId, Sequence[str]]
) -> list[Anchor]:
    """The ratings that may explain a content-based pick, with their lower-cased genres."""
    positives = [r for r in ratings if r.is_positive()]
    # The best and most recent ratings explain picks; a bounded number keeps this cheap.
    best = sorted(
        positives or ratings,
        key=lambda r: (-r.score.value, -r.timestamp.to_unix(), r.movie_id.value),
    )[:MAX_ANCHORS]
    return [(r, frozenset(g.lower() for g in genres_of.get(r.movie_id, ()))) for r in best]


def content_reason(
    movie: Movie, anchors: Sequence[Anchor], titles: Mapping[MovieId, str]
) -> Reason:
    """Name the anchor whose genres are closest (Jaccard) to the pick's; first one wins ties."""
    mine = {g.lower() for g in movie.genres}
    best: tuple[float, Rating] | None = None
    for rating, theirs in anchors:
        sim = jaccard(mine, theirs)
        if sim > 0 and (best is None or sim > best[0]):
            best = (sim, rating)
    if best is not None and best[1].movie_id in titles:
        rating = best[1]
        return Reason(
            ReasonKind.BECAUSE_YOU_RATED,
            anchor_title=titles[rating.movie_id],
            anchor_score=rating.score.value,
        )
    return Reason(ReasonKind.MATCHES_GENRES, genres=movie.genres)


def _shannon_evenness(items: Sequence[str]) -> float:
    counts = Counter(items)
    if len(counts) < 2:
        return 0.0
    total = sum(counts.values())
    entropy = -sum((c / total) * math.log(c / total) for c in counts.values())
    return entropy / math.log(len(counts))


def _spread(values: Sequence[float]) -> float:
    """Population std scaled by its maximum for values in [0, max]: 2 * std / max."""
    if len(values) < 2:
        return 0.0
    top = max(values)
    if top <= 0:
        return 0.0
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return min(1.0, 2 * std / top)


def diversity_score(movies: Sequence[Movie], *, year_span: int = 50) -> float:
    """0.5 genre evenness (Shannon) + 0.3 popularity spread + 0.2 year range; in [0, 1]."""
    if not movies:
        return 0.0
    genres = [g.lower() for m in movies for g in m.genres]
    popularity = [m.popularity_score() for m in movies]
    years = [m.year for m in movies if m.year is not None]
    year_range = min(1.0, (max(years) - min(years)) / year_span) if len(years) > 1 else 0.0
    score = 0.5 * _shannon_evenness(genres) + 0.3 * _spread(popularity) + 0.2 * year_range
    return min(1.0, max(0.0, score))


Similarity = Callable[[MovieId, MovieId], float]


def mmr_rerank(
    candidates: Sequence[Candidate],
    similarity: Similarity,
    *,
    lambda_: float = DEFAULT_MMR_LAMBDA,
    k: int | None = None,
) -> list[Candidate]:
    """Maximal Marginal Relevance: greedily pick argmax lambda*rel - (1-lambda)*max sim to picked.

    Relevance is the candidates' normalised score; ties keep input order, so lambda=1 returns
    the input order. Returns up to k distinct candidates from the input.
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise InvalidValue(f"MMR lambda must be in [0, 1], got {lambda_!r}")
    seen: set[MovieId] = set()
    pool: list[Candidate] = []
    for cand in candidates:
        if cand.movie_id not in seen:
            seen.add(cand.movie_id)
            pool.append(cand)
    relevance = [c.score for c in normalize_scores(pool)]
    limit = len(pool) if k is None else min(k, len(pool))
    matrix = getattr(similarity, "matrix", None)
    if matrix is not None:  # a similarity that can fill the whole pool's matrix at once
        order = _mmr_order(relevance, matrix([c.movie_id for c in pool]), lambda_, limit)
        return [pool[i] for i in order]
    remaining = list(range(len(pool)))
    max_sim = [0.0] * len(pool)
    chosen: list[int] = []
    while remaining and len(chosen) < limit:
        best = max(
            remaining,
            key=lambda i: (lambda_ * relevance[i] - (1 - lambda_) * max_sim[i], -i),
        )
        chosen.append(best)
        remaining.remove(best)
        for i in remaining:
            max_sim[i] = max(max_sim[i], similarity(pool[i].movie_id, pool[best].movie_id))
    return [pool[i] for i in chosen]


def _mmr_order(
    relevance: Sequence[float], similarity: np.ndarray, lambda_: float, limit: int
) -> list[int]:
    """The greedy MMR picks over a full similarity matrix: the same choices, ties included."""
    rel = np.asarray(relevance, dtype=np.float64)
    max_sim = np.zeros(len(rel))
    taken = np.zeros(len(rel), dtype=bool)
    chosen: list[int] = []
    for _ in range(limit):
        gain = lambda_ * rel - (1 - lambda_) * max_sim
        gain[taken] = -np.inf
        best = int(np.argmax(gain))  # the first of equal gains: input order breaks ties
        chosen.append(best)
        taken[best] = True
        np.maximum(max_sim, similarity[:, best], out=max_sim)
    return chosen


class GenreSimilarity:
    """Item similarity from genre Jaccard (case-insensitive), for MMR when no embedding
    similarity is at hand. Each movie's genre set is built once (with a bit mask over the
    genres seen so far); ``matrix`` fills a whole pool's similarities in one pass of
    integer bit counts, which ``mmr_rerank`` uses."""

    def __init__(self, genres_of: Mapping[MovieId, Sequence[str]]) -> None:
        self._genres_of = genres_of
        self._sets: dict[MovieId, frozenset[str]] = {}
        self._masks: dict[MovieId, int] = {}
        self._bits: dict[str, int] = {}  # genre -> bit; only grows, so masks stay valid
        self._lock = threading.Lock()  # one instance may serve concurrent requests

    def genres(self, movie_id: MovieId) -> frozenset[str]:
        """The movie's lower-cased genres (built once per movie)."""
        found = self._sets.get(movie_id)
        if found is None:
            found = frozenset(g.lower() for g in self._genres_of.get(movie_id, ()))
            self._sets[movie_id] = found
        return found

    def _mask(self, movie_id: MovieId) -> int:
        found = self._masks.get(movie_id)
        if found is None:
            with self._lock:  # two new genres must not get the same bit
                found = 0
                for genre in self.genres(movie_id):
                    found |= 1 << self._bits.setdefault(genre, len(self._bits))
                self._masks[movie_id] = found
        return found

    def __call__(self, a: MovieId, b: MovieId) -> float:
        return jaccard(self.genres(a), self.genres(b))

    def matrix(self, movie_ids: Sequence[MovieId]) -> np.ndarray:
        masks = [self._mask(m) for m in movie_ids]
        n_words = max(1, (max(masks, default=0).bit_length() + 63) // 64)
        words = np.array(
            [[(mask >> (64 * w)) & 0xFFFFFFFFFFFFFFFF for w in range(n_words)] for mask in masks],
            dtype=np.uint64,
        ).reshape(len(masks), n_words)
        shared = np.zeros((len(masks), len(masks)), dtype=np.int64)
        for w in range(n_words):
            column = words[:, w]
            shared += np.bitwise_count(column[:, None] & column[None, :])
        sizes = np.bitwise_count(words).sum(axis=1, dtype=np.int64)
        union = sizes[:, None] + sizes[None, :] - shared
        out: np.ndarray = np.divide(
            shared, union, out=np.zeros(shared.shape), where=union > 0, dtype=np.float64
        )
        return out


def genre_similarity(genres_of: Mapping[MovieId, Sequence[str]]) -> GenreSimilarity:
    """Item similarity from genre Jaccard, for MMR when no embedding similarity is at hand."""
    return GenreSimilarity(genres_of)
