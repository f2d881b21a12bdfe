"""Candidate scoring and merging: popularity, content-based (genre profile), hybrid merge."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from recolab.domain.errors import InvalidValue
from recolab.domain.model import Movie, Rating, Source
from recolab.domain.services.explanations import (
    UNEXPLAINED,
    Candidate,
    Reason,
    ReasonKind,
    content_anchors,
    content_reason,
)
from recolab.domain.values import MovieId


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
