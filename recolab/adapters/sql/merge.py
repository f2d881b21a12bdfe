"""Merging staged rows into the real tables: set-based upserts that count what they did.

A staged row that equals the stored one is not written (``ON CONFLICT DO UPDATE ... WHERE
<changed>``), so loading the same data again writes nothing; the ratings are first diffed
against the table in one join, so that no per-row conflict probe is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite

from recolab.adapters.sql import schema
from recolab.adapters.sql.load_batch import LoadBatch
from recolab.adapters.sql.staging import (
    changed_ratings,
    copy_rows,
    genre_changed,
    stage_genres,
    stage_movies,
    stage_ratings,
    stage_users,
)


@dataclass(frozen=True)
class TableCounts:
    """What a load did to one table's rows."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def is_empty(conn: Connection, table: Table) -> bool:
    return not conn.execute(select(exists().select_from(table))).scalar_one()


def dialect_insert(conn: Connection, table: Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def merge_movies(conn: Connection) -> TableCounts:
    staged, target = stage_movies, schema.movies
    # Users who liked a movie whose genres change get their favourites recounted.
    conn.execute(
        dialect_insert(conn, genre_changed).from_select(
            ["id"],
            select(staged.c.movie_id)
            .join(target, target.c.id == staged.c.movie_id)
            .where(target.c.genres != staged.c.genres),
        )
    )
    stmt = dialect_insert(conn, target).from_select(
        ["id", "title", "year", "genres"],
        # The WHERE keeps SQLite from reading ON CONFLICT as a join constraint.
        select(staged.c.movie_id, staged.c.title, staged.c.year, staged.c.genres).where(true()),
    )
    changed = ("title", "year", "genres")
    stmt = stmt.on_conflict_do_update(
        index_elements=[target.c.id],
        set_={name: stmt.excluded[name] for name in changed},
        where=or_(*(target.c[name].is_distinct_from(stmt.excluded[name]) for name in changed)),
    )
    counts = _merge(conn, stmt, target, count_rows(conn, staged))
    _replace_genres(conn)
    return counts


def _replace_genres(conn: Connection) -> None:
    """Make each staged movie's genre rows equal the staged ones, touching only differences."""
    staged, target = stage_genres, schema.movie_genres
    conn.execute(
        delete(target)
        .where(target.c.movie_id.in_(select(stage_movies.c.movie_id)))
        .where(
            ~exists().where(
                and_(staged.c.movie_id == target.c.movie_id, staged.c.genre == target.c.genre)
            )
        )
    )
    conn.execute(
        dialect_insert(conn, target)
        .from_select(["movie_id", "genre"], select(staged.c.movie_id, staged.c.genre).where(true()))
        .on_conflict_do_nothing()
    )


def merge_users(conn: Connection, n_staged: int) -> TableCounts:
    stmt = (
        dialect_insert(conn, schema.users)
        .from_select(["id"], select(stage_users.c.id).where(true()))
        .on_conflict_do_nothing()
    )
    return _merge(conn, stmt, schema.users, n_staged)


def diff_ratings(conn: Connection, batch: LoadBatch, *, direct: bool) -> TableCounts:
    """Keep the staged ratings that are new or differ: one set-based join, no per-row probes."""
    n = len(batch.user)
    if direct:
        return TableCounts(inserted=n)
    staged, target = stage_ratings, schema.ratings
    same_pair = and_(target.c.user_id == staged.c.user_id, target.c.movie_id == staged.c.movie_id)
    missing = target.c.user_id.is_(None)
    conn.execute(
        insert(changed_ratings).from_select(
            ["user_id", "movie_id", "score", "timestamp", "fresh"],
            select(*staged.c, missing)
            .select_from(staged.outerjoin(target, same_pair))
            .where(
                or_(
                    missing,
                    target.c.score != staged.c.score,
                    target.c.timestamp != staged.c.timestamp,
                )
            ),
        )
    )
    changed, fresh = conn.execute(
        select(func.count(), func.count().filter(changed_ratings.c.fresh))
    ).one()
    return TableCounts(inserted=fresh, updated=changed - fresh, unchanged=n - changed)


def merge_ratings(conn: Connection, batch: LoadBatch, *, direct: bool, bulk: bool) -> None:
    target = schema.ratings
    if direct:
        # An empty table cannot conflict and the batch has no duplicates: append.
        freeze = bulk and _can_freeze(conn)
        if freeze:
            conn.execute(text(f"TRUNCATE {target.name}"))
        copy_rows(conn, target, batch.rating_columns, freeze=freeze)
        return
    changed = changed_ratings
    names = ["user_id", "movie_id", "score", "timestamp"]
    stmt = dialect_insert(conn, target).from_select(
        names, select(*(changed.c[n] for n in names)).where(true())
    )
    # Still an upsert: a concurrent writer may have added a row since the diff.
    stmt = stmt.on_conflict_do_update(
        index_elements=[target.c.user_id, target.c.movie_id],
        set_={"score": stmt.excluded.score, "timestamp": stmt.excluded.timestamp},
        where=or_(
            target.c.score != stmt.excluded.score,
            target.c.timestamp != stmt.excluded.timestamp,
        ),
    )
    conn.execute(stmt)


def _can_freeze(conn: Connection) -> bool:
    """Whether the empty ratings table may be truncated and filled with ``COPY ... FREEZE``.

    Frozen rows on all-visible pages spare every later scan its per-row visibility checks
    (and the first readers after commit a rewrite of each page to set hint bits). It needs
    the table truncated in this transaction, which the exclusive lock taken when dropping
    its indexes makes safe once it is seen to be still empty, and READ COMMITTED (FREEZE
    refuses a transaction holding a snapshot). Like any TRUNCATE, it is not MVCC-safe:
    transactions that started before the commit see the new rows at once.
    """
    if conn.dialect.name != "postgresql":
        return False
    isolation = conn.exec_driver_sql("SHOW transaction_isolation").scalar_one()
    return isolation == "read committed" and is_empty(conn, schema.ratings)


def _merge(conn: Connection, stmt: Any, target: Table, n_staged: int) -> TableCounts:
    """Run an upsert and split the staged rows into inserted, updated and unchanged."""
    if conn.dialect.name == "postgresql":
        # xmax is 0 on a freshly inserted row version and set on an updated one.
        merged = stmt.returning(literal_column("xmax = 0", Boolean).label("fresh")).cte("merged")
        fresh = literal_column("merged.fresh", Boolean)
        inserted, written = conn.execute(
            select(func.count().filter(fresh), func.count()).select_from(merged)
        ).one()
    else:
        before = count_rows(conn, target)
        written = conn.execute(stmt).rowcount
        inserted = count_rows(conn, target) - before
    return TableCounts(inserted=inserted, updated=written - inserted, unchanged=n_staged - written)


def count_rows(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
