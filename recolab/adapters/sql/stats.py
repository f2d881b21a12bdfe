"""Set-based user and movie statistics, recomputed from the ratings table in SQL.

Every figure is a recount (never an increment), so running it again is harmless, and
rows whose figures did not change are not rewritten.

* movies: ``rating_count``, ``rating_sum``, ``avg_rating``,
  ``popularity_score = log10(rating_count + 1) * avg_rating``; 0 when unrated.
* users: ``n_ratings``, ``rating_sum``, ``avg_rating``, ``last_activity`` (latest rating
  time), ``favorite_genres``: the 3 genres most frequent among the user's positive
  ratings (score >= 4.0), by count descending then genre name (binary order), joined
  with ``|``; ``''`` when there are none.

``avg_rating`` is ``rating_sum / n`` (what ``avg()`` returns, and what the incremental
rules keep). On PostgreSQL a recount of every row materialises its aggregates in
temporary tables first (``CREATE TABLE AS`` may use parallel workers; an UPDATE may not).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

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

POSITIVE_SCORE = 4.0
N_FAVORITE_GENRES = 3
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
    return [*setup, _update_changed(movies, s.c.id, figures), *teardown]


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
    favorites = (
        top.c.g1
        + func.coalesce(GENRE_SEPARATOR + top.c.g2, "")
        + func.coalesce(GENRE_SEPARATOR + top.c.g3, "")
    )
    n, total = func.coalesce(c.c.n, 0), func.coalesce(c.c.total, 0.0)
    everyone = select(
        users.c.id,
        n.label("n"),
        total.label("total"),
        _average(n, total).label("avg"),
        c.c.last_ts,
        func.coalesce(favorites, "").label("favorites"),
    ).select_from(
        users.outerjoin(c, c.c.user_id == users.c.id).outerjoin(top, top.c.user_id == users.c.id)
    )
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
    return [
        *count_setup,
        *top_setup,
        _update_changed(users, s.c.id, figures),
        *count_teardown,
        *top_teardown,
    ]


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
    """(user_id, g1, g2, g3): a user's top genres among positive ratings."""
    per_genre = (
        select(ratings.c.user_id, movie_genres.c.genre, func.count().label("n"))
        .join_from(ratings, movie_genres, movie_genres.c.movie_id == ratings.c.movie_id)
        .where(ratings.c.score >= POSITIVE_SCORE)
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
        for i in range(1, N_FAVORITE_GENRES + 1)
    ]
    return (
        select(ranked.c.user_id, *picks)
        .where(ranked.c.rn <= N_FAVORITE_GENRES)
        .group_by(ranked.c.user_id)
    )


def _update_changed(
    table: Table, source_id: ColumnElement[Any], figures: dict[str, Any]
) -> Executable:
    """UPDATE ``table`` from a subquery, writing only the rows whose figures differ."""
    differs = or_(*(table.c[name].is_distinct_from(value) for name, value in figures.items()))
    return update(table).where(table.c.id == source_id).where(differs).values(figures)
