"""Set-based user and movie statistics, recomputed from the ratings table in SQL.

Every figure is a recount (never an increment), so running it again is harmless, and
rows whose figures did not change are not rewritten.

* movies: ``rating_count``, ``rating_sum``, ``avg_rating``,
  ``popularity_score = log10(rating_count + 1) * avg_rating``; 0 when unrated.
* users: ``n_ratings``, ``rating_sum``, ``avg_rating``, ``last_activity`` (latest rating
  time), ``favorite_genres``: the ``FAVORITE_GENRES_K`` (3) genres most frequent among
  the user's positive ratings (score >= ``POSITIVE_THRESHOLD``, 4.0), by count descending
  then genre name (binary order), joined with ``|``; ``''`` when there are none. These
  are the domain's rules (:func:`recolab.domain.model.favorite_genres`), in SQL and numpy.

``avg_rating`` is ``rating_sum / n`` (what ``avg()`` returns, and what the incremental
rules keep). On PostgreSQL a recount of every row materialises its aggregates in
temporary tables first (``CREATE TABLE AS`` may use parallel workers; an UPDATE may not).

A load whose ratings are the whole ratings table (a load into an empty one) need not
read them back: :func:`figures_from_arrays` computes the same figures in numpy from the
arrays the loader holds, and :func:`user_figures_statement` /
:func:`movie_figures_statement` write them with the same UPDATE as a recount.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Connection,
    CreateTableAs,
    Executable,
    FromClause,
    FunctionElement,
    Select,
    Table,
    any_,
    case,
    collate,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import DropTable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement

from recolab.adapters.sql.schema import Timestamp, movie_genres, movies, ratings, users
from recolab.domain.model import FAVORITE_GENRES_K
from recolab.domain.values import POSITIVE_THRESHOLD

GENRE_SEPARATOR = "|"

# Restricts a statement to some ids: called with the id column to filter on.
Scope = Callable[[ColumnElement[Any]], ColumnElement[bool]]


class EpochToTimestamp(FunctionElement[Any]):
    """Unix seconds to a timestamp, in each dialect's own way."""

    type = Timestamp
    name = "epoch_to_timestamp"
    inherit_cache = True


@compiles(EpochToTimestamp, "postgresql")
def _epoch_pg(element: EpochToTimestamp, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_timestamp({compiler.process(element.clauses, **kw)})"


@compiles(EpochToTimestamp, "sqlite")
def _epoch_sqlite(element: EpochToTimestamp, compiler: SQLCompiler, **kw: Any) -> str:
    # The text form SQLAlchemy's SQLite DateTime type reads back.
    return f"datetime({compiler.process(element.clauses, **kw)}, 'unixepoch')"


def recompute_statistics(
    conn: Connection,
    user_ids: Collection[int] | None = None,
    movie_ids: Collection[int] | None = None,
) -> None:
    """Recompute user and movie statistics from the ratings, in the caller's transaction.

    ``None`` recomputes every row of that table; a collection restricts the work to
    those ids (an empty one skips the table).
    """
    dialect = conn.dialect.name
    if user_ids is None or user_ids:
        scope = None if user_ids is None else id_scope(dialect, user_ids)
        for statement in user_statistics_statements(dialect, scope):
            conn.execute(statement)
    if movie_ids is None or movie_ids:
        scope = None if movie_ids is None else id_scope(dialect, movie_ids)
        for statement in movie_statistics_statements(dialect, scope):
            conn.execute(statement)


def id_scope(dialect: str, ids: Collection[int]) -> Scope:
    """A scope over literal ids, passed as one parameter whatever their number."""
    values = [int(i) for i in ids]
    if dialect == "postgresql":
        array = literal(values, ARRAY(BigInteger))
        return lambda column: column == any_(array)
    table = func.json_each(json.dumps(values)).table_valued("value")
    return lambda column: column.in_(select(table.c.value))


def movie_statistics_statements(dialect: str, scope: Scope | None) -> list[Executable]:
    """The statements that recount movie statistics, rated or not.

    One UPDATE; on PostgreSQL without a scope, the counts are first materialised in a
    temporary table (see :func:`user_statistics_statements`).
    """
    counts = select(
        ratings.c.movie_id,
        func.count().label("n"),
        func.sum(ratings.c.score).label("total"),
    ).group_by(ratings.c.movie_id)
    if scope is not None:
        counts = counts.where(scope(ratings.c.movie_id))
    c, setup, teardown = _figures_source(counts, "_movie_counts", dialect, scope)
    return [*setup, _update_movies(c, scope), *teardown]


def _update_movies(c: FromClause, scope: Scope | None) -> Executable:
    # Every movie in scope, rated or not, in one join: no anti-join for the planner to
    # misjudge, and movies whose last rating went away drop back to zero.
    n, total = func.coalesce(c.c.n, 0), func.coalesce(c.c.total, 0.0)
    everyone = select(
        movies.c.id, n.label("n"), total.label("total"), _average(n, total).label("avg")
    ).select_from(movies.outerjoin(c, c.c.movie_id == movies.c.id))
    if scope is not None:
        everyone = everyone.where(scope(movies.c.id))
    s = everyone.subquery("s")
    figures = {
        "rating_count": s.c.n,
        "rating_sum": s.c.total,
        "avg_rating": s.c.avg,
        "popularity_score": func.log10(s.c.n + 1) * s.c.avg,
    }
    return _update_changed(movies, s.c.id, figures)


def user_statistics_statements(dialect: str, scope: Scope | None) -> list[Executable]:
    """The statements that recount user statistics, with ratings or without.

    One UPDATE, whose aggregates the planner restricts to the ids in scope. On PostgreSQL
    without a scope (every user), the aggregates are first materialised in temporary
    tables with ``CREATE TABLE AS``, whose query may run on parallel workers (an UPDATE's
    never does).
    """
    counts = select(
        ratings.c.user_id,
        func.count().label("n"),
        func.sum(ratings.c.score).label("total"),
        func.max(ratings.c.timestamp).label("last_ts"),
    ).group_by(ratings.c.user_id)
    if scope is not None:
        counts = counts.where(scope(ratings.c.user_id))
    c, count_setup, count_teardown = _figures_source(counts, "_user_counts", dialect, scope)
    top, top_setup, top_teardown = _figures_source(
        _favorite_genres(dialect, scope), "_user_favorites", dialect, scope
    )
    favorites: ColumnElement[Any] = top.c.g1
    for i in range(2, FAVORITE_GENRES_K + 1):
        favorites = favorites + func.coalesce(GENRE_SEPARATOR + top.c[f"g{i}"], "")
    joined = users.outerjoin(c, c.c.user_id == users.c.id).outerjoin(
        top, top.c.user_id == users.c.id
    )
    return [
        *count_setup,
        *top_setup,
        _update_users(joined, c.c.n, c.c.total, c.c.last_ts, favorites, scope),
        *count_teardown,
        *top_teardown,
    ]


def user_figures_statement(figures: FromClause) -> Executable:
    """UPDATE every user from precomputed ``figures`` (user_id, n, total, last_ts, favorites).

    Users without a row there get the figures of a user without ratings.
    """
    joined = users.outerjoin(figures, figures.c.user_id == users.c.id)
    c = figures.c
    return _update_users(joined, c.n, c.total, c.last_ts, c.favorites, None)


def movie_figures_statement(figures: FromClause) -> Executable:
    """UPDATE every movie from precomputed ``figures`` (movie_id, n, total); absent: unrated."""
    return _update_movies(figures, None)


def _update_users(
    joined: FromClause,
    n_column: ColumnElement[Any],
    total_column: ColumnElement[Any],
    last_ts: ColumnElement[Any],
    favorites: ColumnElement[Any],
    scope: Scope | None,
) -> Executable:
    n, total = func.coalesce(n_column, 0), func.coalesce(total_column, 0.0)
    everyone = select(
        users.c.id,
        n.label("n"),
        total.label("total"),
        _average(n, total).label("avg"),
        last_ts.label("last_ts"),
        func.coalesce(favorites, "").label("favorites"),
    ).select_from(joined)
    if scope is not None:
        everyone = everyone.where(scope(users.c.id))
    s = everyone.subquery("s")
    figures = {
        "n_ratings": s.c.n,
        "rating_sum": s.c.total,
        "avg_rating": s.c.avg,
        "last_activity": EpochToTimestamp(s.c.last_ts),
        "favorite_genres": s.c.favorites,
    }
    return _update_changed(users, s.c.id, figures)


def _average(n: ColumnElement[Any], total: ColumnElement[Any]) -> ColumnElement[Any]:
    # sum / count is what avg() returns, without avg()'s extra per-row work; 0 when unrated.
    return case((n > 0, total / n), else_=0.0)


def _figures_source(
    query: Select[Any], name: str, dialect: str, scope: Scope | None
) -> tuple[FromClause, list[Executable], list[Executable]]:
    """``query`` as a subquery, or (PostgreSQL, every row) a temporary table built from it.

    Returns the FROM element, the statements that create it and those that drop it.
    """
    if scope is not None or dialect != "postgresql":
        return query.subquery(name.lstrip("_")), [], []
    create = CreateTableAs(query, name, temporary=True)
    return create.table, [create], [DropTable(create.table)]


def _favorite_genres(dialect: str, scope: Scope | None) -> Select[Any]:
    """(user_id, g1, ..., gk): a user's top k genres among positive ratings."""
    per_genre = (
        select(ratings.c.user_id, movie_genres.c.genre, func.count().label("n"))
        .join_from(ratings, movie_genres, movie_genres.c.movie_id == ratings.c.movie_id)
        .where(ratings.c.score >= POSITIVE_THRESHOLD)
        .group_by(ratings.c.user_id, movie_genres.c.genre)
    )
    if scope is not None:
        per_genre = per_genre.where(scope(ratings.c.user_id))
    g = per_genre.subquery("g")
    # Binary order, the same on both dialects whatever the database's locale.
    by_name = collate(g.c.genre, "C" if dialect == "postgresql" else "BINARY")
    rank = func.row_number().over(partition_by=g.c.user_id, order_by=(g.c.n.desc(), by_name))
    ranked = select(g.c.user_id, g.c.genre, rank.label("rn")).subquery("ranked")
    picks = [
        func.max(case((ranked.c.rn == i, ranked.c.genre))).label(f"g{i}")
        for i in range(1, FAVORITE_GENRES_K + 1)
    ]
    return (
        select(ranked.c.user_id, *picks)
        .where(ranked.c.rn <= FAVORITE_GENRES_K)
        .group_by(ranked.c.user_id)
    )


def _update_changed(
    table: Table, source_id: ColumnElement[Any], figures: dict[str, Any]
) -> Executable:
    """UPDATE ``table`` from a subquery, writing only the rows whose figures differ."""
    differs = or_(*(table.c[name].is_distinct_from(value) for name, value in figures.items()))
    return update(table).where(table.c.id == source_id).where(differs).values(figures)


@dataclass(frozen=True)
class Figures:
    """Statistics computed in memory: the rows :func:`user_figures_statement` and
    :func:`movie_figures_statement` read.

    ``users``: user_id, n, total, last_ts, favorites; ``movies``: movie_id, n, total.
    """

    users: pd.DataFrame
    movies: pd.DataFrame


def figures_from_arrays(
    user: np.ndarray,
    movie: np.ndarray,
    score: np.ndarray,
    timestamp: np.ndarray,
    genres: pd.DataFrame,
) -> Figures:
    """The statistics a recount would give if these were all the ratings, in numpy.

    ``user`` must be sorted (each user's ratings contiguous); ``genres`` holds the
    (movie_id, genre) rows of every rated movie. The definitions are those of the module
    docstring, ties included. Sums are taken in another order than the database's, which
    cannot matter for ratings (multiples of 0.5 add up exactly in float64).
    """
    n_rows = len(user)
    if n_rows and (user[1:] < user[:-1]).any():
        raise ValueError("figures_from_arrays: user ids must be sorted")
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if n_rows else np.zeros(0, int)
    user_ids = user[starts]
    user_n = np.diff(np.r_[starts, n_rows])
    user_total = np.add.reduceat(score, starts) if n_rows else np.zeros(0)
    user_last = np.maximum.reduceat(timestamp, starts) if n_rows else np.zeros(0, np.int64)
    favorites = _favorites_from_arrays(user, movie, score, starts, genres)
    movie_ids, movie_n, movie_total = _group_sums(movie, score)
    return Figures(
        users=pd.DataFrame(
            {
                "user_id": user_ids.astype(np.int64),
                "n": user_n.astype(np.int64),
                "total": user_total.astype(np.float64),
                "last_ts": user_last.astype(np.int64),
                "favorites": favorites,
            }
        ),
        movies=pd.DataFrame({"movie_id": movie_ids, "n": movie_n, "total": movie_total}),
    )


# Ids spanning at most this many values are counted with bincount (8 bytes per value).
_DENSE_SPAN = 1 << 24


def _group_sums(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(distinct keys ascending, rows per key, sum of values per key)."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    low = int(keys.min())
    if int(keys.max()) - low < _DENSE_SPAN:
        offsets = keys - low
        n = np.bincount(offsets)
        present = np.flatnonzero(n)
        total = np.bincount(offsets, weights=values)[present]
        return present.astype(np.int64) + low, n[present].astype(np.int64), total
    distinct, inverse = np.unique(keys, return_inverse=True)
    n = np.bincount(inverse)
    return distinct.astype(np.int64), n.astype(np.int64), np.bincount(inverse, weights=values)


def _favorites_from_arrays(
    user: np.ndarray,
    movie: np.ndarray,
    score: np.ndarray,
    starts: np.ndarray,
    genres: pd.DataFrame,
) -> np.ndarray:
    """Each user's favourite genres string, as :func:`_favorite_genres` ranks them."""
    n_users = len(starts)
    out = np.full(n_users, "", dtype=object)
    if n_users == 0 or genres.empty:
        return out
    # Python orders str by code point, as the database's binary collation orders UTF-8.
    names = np.array(sorted(set(genres["genre"].astype(str))), dtype=object)
    genre_movies = genres["movie_id"].to_numpy(np.int64)
    movie_ids = np.unique(genre_movies)
    movie_row = np.searchsorted(movie_ids, genre_movies)
    genre_code = np.searchsorted(names, genres["genre"].astype(str).to_numpy(object))
    positive = score >= POSITIVE_THRESHOLD
    per_user = np.diff(np.r_[starts, len(user)])
    user_index = np.repeat(np.arange(n_users, dtype=np.int32), per_user)[positive]
    liked = movie[positive]
    row = np.searchsorted(movie_ids, liked).clip(max=len(movie_ids) - 1)
    known = movie_ids[row] == liked  # a liked movie without genres counts for none
    user_index, row = user_index[known], row[known]
    counts = np.empty((n_users, len(names)), dtype=np.int64)
    # Each liked movie's genres as bits, 64 genres at a time: one gather per 64 genres,
    # then one cheap mask and bincount per genre.
    for first in range(0, len(names), 64):
        chunk = (genre_code >= first) & (genre_code < first + 64)
        bits = np.zeros(len(movie_ids), dtype=np.uint64)
        np.bitwise_or.at(
            bits,
            movie_row[chunk],
            np.left_shift(np.uint64(1), (genre_code[chunk] - first).astype(np.uint64)),
        )
        liked_bits = bits[row]
        for g in range(first, min(first + 64, len(names))):
            mask = (liked_bits & np.uint64(1 << (g - first))) != 0
            counts[:, g] = np.bincount(user_index[mask], minlength=n_users)
    # Count descending, then name (the column order): a stable sort on -count.
    order = np.argsort(-counts, axis=1, kind="stable")[:, :FAVORITE_GENRES_K]
    top = np.take_along_axis(counts, order, axis=1)
    # One string per distinct top list (there are few), not one join per user.
    picked = np.where(top > 0, order + 1, 0)
    key = np.zeros(n_users, dtype=np.int64)
    for column in picked.T:
        key = key * (len(names) + 1) + column
    distinct, inverse = np.unique(key, return_inverse=True)
    first_user = np.zeros(len(distinct), dtype=np.int64)
    first_user[inverse[::-1]] = np.arange(n_users)[::-1]
    text = [GENRE_SEPARATOR.join(names[c - 1] for c in picked[i] if c > 0) for i in first_user]
    return np.array(text, dtype=object)[inverse]
