"""Diversity: the diversity score of a list and the MMR re-ranking that raises it."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from recolab.domain.errors import InvalidValue
from recolab.domain.model import Movie, jaccard
from recolab.domain.services.explanations import Candidate
from recolab.domain.services.scoring import normalize_scores, normalized
from recolab.domain.services.strategy import DEFAULT_MMR_LAMBDA
from recolab.domain.values import MovieId


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


def mmr_order(
    scores: np.ndarray,
    similarity: np.ndarray | Callable[[int], np.ndarray],
    *,
    lambda_: float = DEFAULT_MMR_LAMBDA,
    k: int,
) -> list[int]:
    """`mmr_rerank` on arrays: the indices MMR picks from distinct candidates with `scores`
    (relevance: their min-max normalised scores). `similarity` is their pairwise matrix, or
    a function giving its column for one candidate (only the picks' columns are needed)."""
    if not 0.0 <= lambda_ <= 1.0:
        raise InvalidValue(f"MMR lambda must be in [0, 1], got {lambda_!r}")
    return _mmr_order(normalized(scores), similarity, lambda_, min(k, len(scores)))


def _mmr_order(
    relevance: Sequence[float] | np.ndarray,
    similarity: np.ndarray | Callable[[int], np.ndarray],
    lambda_: float,
    limit: int,
) -> list[int]:
    """The greedy MMR picks over a full similarity matrix: the same choices, ties included."""
    column = similarity if callable(similarity) else lambda j: similarity[:, j]
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
        np.maximum(max_sim, column(best), out=max_sim)
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
