"""Why a movie is recommended: candidates carry a `Reason`, and `explain` names it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from recolab.domain.model import Movie, RatedMovies, Rating, Source, jaccard
from recolab.domain.values import MovieId

MAX_ANCHORS = 50  # rated movies considered when explaining a content-based pick
# Best-rated movies considered when explaining a collaborative pick.
MAX_COLLABORATIVE_ANCHORS = 20


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


def collaborative_reason(
    genres: frozenset[str],
    anchors: Sequence[Anchor],
    titles: Mapping[MovieId, str],
) -> Reason:
    """Why a collaborative pick with (lower-cased) `genres`: the anchor (a best-rated movie)
    whose genres are closest (Jaccard, first one wins ties), else similar users' taste."""
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


def collaborative_anchors(
    ratings: Sequence[Rating], genres_of: Mapping[MovieId, Sequence[str]]
) -> list[Anchor]:
    """The best (then most recent) positive ratings, that may explain a collaborative pick."""
    best = sorted(
        (r for r in ratings if r.is_positive()),
        key=lambda r: (-r.score.value, -r.timestamp.to_unix()),
    )[:MAX_COLLABORATIVE_ANCHORS]
    return [(r, frozenset(g.lower() for g in genres_of.get(r.movie_id, ()))) for r in best]


# ---- array forms (the request path): tests/unit/domain/test_array_rules.py proves each
# equal to the reference form above.


def content_anchor_rows(rated: RatedMovies) -> np.ndarray:
    """`content_anchors` on arrays: the indices into `rated` of the anchors, in order."""
    positive = rated.positive()
    rows = np.flatnonzero(positive) if positive.any() else np.arange(len(rated))
    order = np.lexsort((rated.movie_ids[rows], -rated.timestamps[rows], -rated.scores[rows]))
    return rows[order[:MAX_ANCHORS]]


def collaborative_anchor_rows(rated: RatedMovies) -> np.ndarray:
    """`collaborative_anchors` on arrays: the indices into `rated` of the anchors, in order
    (a stable sort: equal ratings keep the order read, as the reference's)."""
    rows = np.flatnonzero(rated.positive())
    order = np.lexsort((-rated.timestamps[rows], -rated.scores[rows]))
    return rows[order[:MAX_COLLABORATIVE_ANCHORS]]


def closest_anchors(similarity: np.ndarray) -> np.ndarray:
    """For each row of `similarity` (picks x anchors, Jaccard), the first anchor of highest
    similarity above 0, or -1: the choice `content_reason` and `collaborative_reason` make."""
    if similarity.shape[1] == 0:
        return np.full(similarity.shape[0], -1, dtype=np.int64)
    best = np.argmax(similarity, axis=1)
    found = similarity[np.arange(similarity.shape[0]), best] > 0
    return np.where(found, best, -1).astype(np.int64)
