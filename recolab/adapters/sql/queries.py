"""Read-side queries for the HTTP API (SQLAlchemy Core), plus the recommendation history.

These return plain views, not domain entities: the API reads them as they are. Similar
movies come from the model's item embeddings when the caller passes a `similar` function
(the scorer's), and otherwise from genre overlap (Jaccard, case-insensitive) in SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, Float, Row, case, cast, func, insert, literal, select, text

from recolab.adapters.sql import schema as s
from recolab.domain.errors import InvalidValue
from recolab.domain.events import RankedItem, RecommendationsGenerated
from recolab.domain.experiments import SHADOW
from recolab.domain.values import NEGATIVE_THRESHOLD, POSITIVE_THRESHOLD, MovieId

SimilarFn = Callable[[MovieId, int], Sequence[tuple[MovieId, float]]]


@dataclass(frozen=True, slots=True)
class MovieView:
    movie_id: int
    title: str
    year: int | None
    genres: list[str]
    rating_count: int
    avg_rating: float
    popularity_score: float


@dataclass(frozen=True, slots=True)
class SimilarMovie:
    movie: MovieView
    similarity: float


@dataclass(frozen=True, slots=True)
class SimilarMovies:
    method: Literal["embedding", "genre_jaccard"]
    items: list[SimilarMovie]


@dataclass(frozen=True, slots=True)
class HistoryItem:
    movie_id: int
    rank: int
    score: float
    source: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    movie_id: int
    title: str
    rank: int
    score: float
    strategy: str
    source: str
    model_version: str | None
    recommended_at: datetime


@dataclass(frozen=True, slots=True)
class RatingBreakdown:
    positive: int  # score >= 4.0
    negative: int  # score <= 2.5


def _aware(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite returns text through some expressions
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _movie(row: Row[Any]) -> MovieView:
    return MovieView(
        movie_id=int(row.id),
        title=row.title,
        year=None if row.year is None else int(row.year),
        genres=[g for g in row.genres.split("|") if g],
        rating_count=int(row.rating_count),
        avg_rating=float(row.avg_rating),
        popularity_score=float(row.popularity_score),
    )


# SQLite's LIKE stops reading its pattern at a NUL (which then matches every title) and
# PostgreSQL refuses NUL in text: no control character reaches either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _contains(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with LIKE's wildcards escaped."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# PostgreSQL: one prebuilt statement takes a response's items as arrays. An executemany
# sends a statement per item, and a multi-row VALUES is a new statement to compile each time.
_PG_HISTORY = text(
    "INSERT INTO recommendation_history"
    " (user_id, movie_id, rank, score, strategy, source, model_version, created_at,"
    " tier, fallback, experiment, variant)"
    " SELECT u, m, r, sc, st, src, mv, at, ti, fb, ex, va"
    " FROM unnest(CAST(:user_ids AS bigint[]), CAST(:movie_ids AS bigint[]),"
    " CAST(:ranks AS integer[]), CAST(:scores AS double precision[]),"
    " CAST(:strategies AS text[]), CAST(:sources AS text[]), CAST(:model_versions AS text[]),"
    " CAST(:created_ats AS timestamptz[]), CAST(:tiers AS text[]),"
    " CAST(:fallbacks AS boolean[]), CAST(:experiments AS text[]),"
    " CAST(:variants AS text[])) AS t(u, m, r, sc, st, src, mv, at, ti, fb, ex, va)"
    # A log of what was served, written after the answer: a crash may lose its last few
    # hundred ms, which is no reason to wait for a WAL flush per batch. SET LOCAL in
    # this statement, as a one-row join, saves a round trip.
    " CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
)


class SqlQueries:
    """The API's reads, and the one write it owns: what was recommended to whom."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(select(literal(1))).scalar_one()

    def movie(self, movie_id: int) -> MovieView | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(s.movies).where(s.movies.c.id == movie_id)).first()
        return None if row is None else _movie(row)

    def movies(self, movie_ids: Sequence[int]) -> dict[int, MovieView]:
        if not movie_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(s.movies).where(s.movies.c.id.in_(list(movie_ids))))
            return {int(r.id): _movie(r) for r in rows}

    def search(self, title: str | None, genre: str | None, limit: int) -> list[MovieView]:
        """Movies whose title contains `title` and that have `genre` (both case-insensitive),
        most popular first. A control character in either is an `InvalidValue`."""
        for name, value in (("title", title), ("genre", genre)):
            if value and _CONTROL.search(value):
                raise InvalidValue(f"{name} must not contain control characters")
        m, g = s.movies.c, s.movie_genres.c
        query = select(s.movies)
        if title:
            query = query.where(func.lower(m.title).like(_contains(title), escape="\\"))
        if genre:
            wanted = select(g.movie_id).where(func.lower(g.genre) == genre.strip().lower())
            query = query.where(m.id.in_(wanted))
        query = query.order_by(m.popularity_score.desc(), m.id).limit(limit)
        with self.engine.connect() as conn:
            return [_movie(r) for r in conn.execute(query)]

    def similar(self, movie_id: int, k: int, embedding: SimilarFn | None = None) -> SimilarMovies:
        """The `k` movies most like `movie_id`: by embeddings when given, else by genres."""
        if embedding is not None:
            pairs = [(int(m), float(v)) for m, v in embedding(MovieId(movie_id), k)]
            found = self.movies([m for m, _ in pairs])
            items = [SimilarMovie(found[m], v) for m, v in pairs if m in found and m != movie_id]
            if items:
                return SimilarMovies("embedding", items[:k])
        return SimilarMovies("genre_jaccard", self.similar_by_genre(movie_id, k))

    def similar_by_genre(self, movie_id: int, k: int) -> list[SimilarMovie]:
        """Jaccard similarity of genre sets, ties broken by popularity."""
        g = s.movie_genres.c
        genre = func.lower(g.genre)
        target = select(genre).where(g.movie_id == movie_id)
        n_target = select(func.count()).select_from(s.movie_genres).where(g.movie_id == movie_id)
        shared = (
            select(g.movie_id, func.count().label("shared"))
            .where(genre.in_(target), g.movie_id != movie_id)
            .group_by(g.movie_id)
            .subquery()
        )
        sizes = (
            select(g.movie_id, func.count().label("size"))
            .where(g.movie_id.in_(select(shared.c.movie_id)))
            .group_by(g.movie_id)
            .subquery()
        )
        union = sizes.c.size + n_target.scalar_subquery() - shared.c.shared
        jaccard = cast(shared.c.shared, Float) / case((union > 0, union), else_=1)
        m = s.movies.c
        query = (
            select(s.movies, jaccard.label("similarity"))
            .join(shared, shared.c.movie_id == m.id)
            .join(sizes, sizes.c.movie_id == m.id)
            .order_by(jaccard.desc(), m.popularity_score.desc(), m.id)
            .limit(k)
        )
        with self.engine.connect() as conn:
            return [SimilarMovie(_movie(r), float(r.similarity)) for r in conn.execute(query)]

    def rating_breakdown(self, user_id: int) -> RatingBreakdown:
        r = s.ratings.c
        query = select(
            func.coalesce(func.sum(case((r.score >= POSITIVE_THRESHOLD, 1), else_=0)), 0),
            func.coalesce(func.sum(case((r.score <= NEGATIVE_THRESHOLD, 1), else_=0)), 0),
        ).where(r.user_id == user_id)
        with self.engine.connect() as conn:
            positive, negative = conn.execute(query).one()
        return RatingBreakdown(int(positive), int(negative))

    def titles(self, movie_ids: Sequence[int]) -> dict[int, str]:
        if not movie_ids:
            return {}
        m = s.movies.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(m.id, m.title).where(m.id.in_(list(movie_ids))))
            return {int(i): t for i, t in rows}

    def record_answers(self, answers: Sequence[RecommendationsGenerated]) -> None:
        """Append many responses' items to the history: one statement, one transaction
        (the service's history writer flushes its batches here). Each row says the answer's
        tier, whether it fell back, and its experiment and variant."""
        self._insert_history([(a, item) for a in answers for item in a.items])

    def _insert_history(self, rows: list[tuple[RecommendationsGenerated, RankedItem]]) -> None:
        if not rows:
            return
        with self.engine.begin() as conn:
            if conn.dialect.name != "postgresql":
                conn.execute(
                    insert(s.recommendation_history),
                    [
                        {
                            "user_id": a.user_id.value,
                            "movie_id": item.movie_id,
                            "rank": item.rank,
                            "score": item.score,
                            "strategy": a.strategy,
                            "source": item.source,
                            "model_version": a.model_version,
                            "created_at": a.occurred_at.value,
                            "tier": a.tier,
                            "fallback": a.fallback is not None,
                            "experiment": a.experiment,
                            "variant": a.variant,
                        }
                        for a, item in rows
                    ],
                )
                return
            # Column arrays, one unnest: a single statement whatever the batch's size.
            conn.execute(
                _PG_HISTORY,
                {
                    "user_ids": [a.user_id.value for a, _ in rows],
                    "movie_ids": [item.movie_id for _, item in rows],
                    "ranks": [item.rank for _, item in rows],
                    "scores": [item.score for _, item in rows],
                    "strategies": [a.strategy for a, _ in rows],
                    "sources": [item.source for _, item in rows],
                    "model_versions": [a.model_version for a, _ in rows],
                    "created_ats": [a.occurred_at.value for a, _ in rows],
                    "tiers": [a.tier for a, _ in rows],
                    "fallbacks": [a.fallback is not None for a, _ in rows],
                    "experiments": [a.experiment for a, _ in rows],
                    "variants": [a.variant for a, _ in rows],
                },
            )

    def history(self, user_id: int, limit: int) -> list[HistoryEntry]:
        """The user's most recent recommended items, newest response first, in rank order
        (answers they were shown: a shadow's answer was not)."""
        h, m = s.recommendation_history.c, s.movies.c
        query = (
            select(s.recommendation_history, m.title)
            .join(s.movies, m.id == h.movie_id)
            .where(h.user_id == user_id, func.coalesce(h.variant, "") != SHADOW)
            .order_by(h.created_at.desc(), h.rank, h.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            HistoryEntry(
                movie_id=int(r.movie_id),
                title=r.title,
                rank=int(r.rank),
                score=float(r.score),
                strategy=r.strategy,
                source=r.source,
                model_version=r.model_version,
                recommended_at=_aware(r.created_at),
            )
            for r in rows
        ]
