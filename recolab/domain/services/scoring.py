"""Candidate scoring and merging: popularity, content-based (genre profile), hybrid merge."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from recolab.domain.errors import InvalidValue
from recolab.domain.model import Movie, RatedMovies, Rating, Source
from recolab.domain.services.explanations import (
    UNEXPLAINED,
    Candidate,
    Reason,
    ReasonKind,
    content_anchors,
    content_reason,
)
from recolab.domain.services.index import CatalogueIndex, GenreIndex
from recolab.domain.values import MovieId

_NO_POSITIONS = np.zeros(0, dtype=np.int64)
# The least weight a rating gives its genres in a profile (a rating of 0.5 still counts).
PROFILE_MIN_WEIGHT = 0.05


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
        weight = max(rating.normalized_score(), PROFILE_MIN_WEIGHT)
        for genre in genres_of.get(rating.movie_id, ()):
            key = genre.lower()
            profile[key] = profile.get(key, 0.0) + weight
    return profile


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


# ---- array forms (the request path): tests/unit/domain/test_array_rules.py proves each
# equal to the reference form above.


def normalized(scores: np.ndarray) -> np.ndarray:
    """`normalize_scores` on an array: min-max to [0, 1]; equal scores all become 1."""
    if scores.size == 0:
        return np.zeros(0)
    low = float(scores.min())
    span = float(scores.max()) - low
    if span <= 0:
        return np.ones(scores.shape)
    return np.asarray((scores - low) / span)


def content_based_arrays(
    index: CatalogueIndex, rated: RatedMovies, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`content_based_scores` on arrays: (catalogue positions, scores), best first.

    The genre profile is summed per genre in the ratings' order (as `genre_profile` does),
    so scores are the reference's to the last bit.
    """
    positions = index.locate(rated.movie_ids)
    chosen = rated.positive()
    if not chosen.any():
        chosen = np.ones(len(rated), dtype=bool)
    weights = np.maximum(rated.normalized(), PROFILE_MIN_WEIGHT)
    used = chosen & (positions >= 0)
    cols, owner = index.genre_columns(positions[used])
    if cols.size == 0:
        return _NO_POSITIONS, np.zeros(0)
    profile = np.bincount(cols, weights=weights[used][owner], minlength=len(index.vocabulary))
    # The norm sums the genres in the order they first appear, like the profile dict's.
    _, first = np.unique(cols, return_index=True)
    norm = math.sqrt(sum(w * w for w in profile[cols[np.sort(first)]].tolist()))
    return index.content_scores(profile, norm, positions[positions >= 0], limit)


def hybrid_merge_arrays(
    lists: Sequence[tuple[np.ndarray, np.ndarray]],
    weights: Sequence[float],
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`hybrid_merge` on arrays: `lists` are (movie ids, scores) per source, `weights` theirs.

    Returns (movie ids, merged scores, the index of the list that contributed most to each:
    the first one on ties), best first, ties by id.
    """
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise InvalidValue(f"hybrid merge weights must be finite and >= 0, got {list(weights)}")
    total = sum(weights)
    if total <= 0:
        raise InvalidValue("hybrid merge needs a positive weight for at least one source")
    ids, parts, sources = [], [], []
    for k, ((movie_ids, scores), weight) in enumerate(zip(lists, weights, strict=True)):
        if len(scores) == 0:
            continue
        share = weight / total
        low = float(scores.min())
        span = float(scores.max()) - low
        parts.append(share * ((scores - low) / span) if span > 0 else np.full(len(scores), share))
        ids.append(np.asarray(movie_ids, dtype=np.int64))
        sources.append(np.full(len(scores), k, dtype=np.int64))
    if not ids:
        return _NO_POSITIONS, np.zeros(0), _NO_POSITIONS
    all_ids, all_parts, all_sources = (
        np.concatenate(ids),
        np.concatenate(parts),
        np.concatenate(sources),
    )
    keys, inverse = np.unique(all_ids, return_inverse=True)
    merged = np.minimum(1.0, np.bincount(inverse, weights=all_parts, minlength=len(keys)))
    # The first largest part of each movie names its source.
    by_part = np.lexsort((np.arange(len(all_parts)), -all_parts, inverse))
    firsts = by_part[np.r_[True, inverse[by_part][1:] != inverse[by_part][:-1]]]
    dominant = np.empty(len(keys), dtype=np.int64)
    dominant[inverse[firsts]] = all_sources[firsts]
    order = np.lexsort((keys, -merged))[:limit]
    return keys[order], merged[order], dominant[order]


def popular_arrays(
    index: CatalogueIndex, exclude: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """`popularity_ranking` (no genre filter) on arrays: (positions, popularity scores) of
    the `limit` most popular rated movies whose ids are not in `exclude`."""
    head = index.popular[: limit + len(exclude)]  # enough after the exclusions
    head = head[~np.isin(index.ids[head], exclude)][:limit]
    return head, index.popularity[head]
