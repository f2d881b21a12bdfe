"""Fast, idempotent bulk loading of a normalised MovieLens dataset (SQLite and PostgreSQL).

The whole dataset goes in one transaction:

1. stage: rows go into temporary tables (PostgreSQL: binary ``COPY`` built with numpy;
   SQLite: ``executemany``);
2. diff: one set-based join keeps the staged ratings that are new or differ, so loading
   the same data again writes nothing and per-row conflict probes are avoided;
3. merge: ``INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE <changed>`` per table
   (ratings into an empty table are copied straight in instead);
4. statistics of the users and movies whose ratings (or liked genres) changed are
   recounted in SQL (:mod:`recolab.adapters.sql.stats`); the load is logged.

The input is made ready in :mod:`~recolab.adapters.sql.load_batch`, staged with
:mod:`~recolab.adapters.sql.staging` and merged with :mod:`~recolab.adapters.sql.merge`;
this module holds the transaction, bulk mode and the statistics step.

Bulk mode: when at least ``BULK_MIN_ROWS`` ratings are new or changed, and at least
``BULK_MIN_FRACTION`` of the table's rows, the secondary indexes of the loaded tables
(and, on PostgreSQL, their foreign keys) are dropped first and rebuilt before commit:
one sort per index and one anti-join per foreign key instead of per-row maintenance and
trigger calls. A failure rolls the DDL back with the data. The price is an exclusive
lock on those tables until commit. A bulk load into an empty ratings table on PostgreSQL
truncates it and copies with ``FREEZE``: every later scan (statistics, index builds,
foreign-key checks, the first readers after commit) skips per-row visibility work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Executable, Table, insert, select, true
from sqlalchemy.engine import URL
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

from recolab.adapters.sql import schema
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.load_batch import LoadBatch, prepare_batch, rating_arrays
from recolab.adapters.sql.merge import (
    TableCounts,
    count_rows,
    dialect_insert,
    diff_ratings,
    is_empty,
    merge_movies,
    merge_ratings,
    merge_users,
)
from recolab.adapters.sql.staging import (
    changed_ratings,
    copy_frame,
    copy_rows,
    genre_changed,
    movie_figures,
    scope_movies,
    scope_users,
    stage_genres,
    stage_movies,
    stage_ratings,
    stage_users,
    staging_metadata,
    user_figures,
)
from recolab.adapters.sql.stats import (
    Figures,
    Scope,
    figures_from_arrays,
    movie_figures_statement,
    movie_statistics_statements,
    user_figures_statement,
    user_statistics_statements,
)
from recolab.domain.values import POSITIVE_THRESHOLD

__all__ = [
    "BULK_MIN_FRACTION",
    "BULK_MIN_ROWS",
    "LoadResult",
    "TableCounts",
    "copy_floor",
    "load_dataset",
]

BULK_MIN_ROWS = 100_000
BULK_MIN_FRACTION = 0.25  # of the ratings table's rows

Progress = Callable[[str], None]

# The tables whose secondary indexes and foreign keys a bulk load rebuilds.
_BULK_TABLES = (schema.users, schema.movies, schema.movie_genres, schema.ratings)


@dataclass(frozen=True)
class LoadResult:
    """Outcome of :func:`load_dataset`: row counts per table and seconds per phase."""

    dataset: str
    content_hash: str
    movies: TableCounts
    users: TableCounts
    ratings: TableCounts
    bulk: bool = False
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.phases.values())

    @property
    def changed(self) -> bool:
        counts = (self.movies, self.users, self.ratings)
        return any(c.inserted or c.updated for c in counts)


def load_dataset(
    engine: Engine,
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    *,
    dataset: str,
    source: str,
    progress: Progress | None = None,
) -> LoadResult:
    """Load ``ratings`` and ``movies`` (the normalised schema) in one transaction.

    Movies are upserted (title, year, genres) and their ``movie_genres`` replaced; a user
    row is created for every user id seen; ratings are inserted, or updated when the
    score or timestamp changed. Statistics of the touched users and movies are then
    recounted and the load is logged in ``datasets_loaded``. Any error (including one
    raised by ``progress``, which is called at the start of each phase) rolls back
    everything. Loading the same data twice changes nothing the second time.
    """
    notify = progress or _ignore
    phases: dict[str, float] = {}
    with _phase(phases, "prepare"):
        notify(f"preparing {len(ratings)} ratings and {len(movies)} movies")
        batch = prepare_batch(ratings, movies)
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="recolab-figures") as pool,
        engine.begin() as conn,
        _tuned(conn),
    ):
        direct = is_empty(conn, schema.ratings)
        # A batch that will be the whole ratings table is counted in memory, not in SQL,
        # on another thread while the database copies it (numpy and the driver's socket
        # writes both release the GIL).
        figures = pool.submit(_figures, batch) if direct else None
        with _phase(phases, "stage"):
            notify("staging rows")
            _stage(conn, batch, with_ratings=not direct)
        with _phase(phases, "diff"):
            notify("comparing ratings with the database")
            rating_counts = diff_ratings(conn, batch, direct=direct)
        bulk = _is_bulk(conn, rating_counts, direct=direct)
        rebuild = _nothing
        if bulk:
            with _phase(phases, "drop_indexes"):
                notify("dropping secondary indexes and foreign keys for a bulk load")
                rebuild = _drop_secondary(conn, with_ratings_key=direct)
        with _phase(phases, "movies"):
            notify("merging movies and genres")
            movie_counts = merge_movies(conn)
        with _phase(phases, "users"):
            notify("creating users")
            user_counts = merge_users(conn, len(batch.users))
        with _phase(phases, "ratings"):
            notify("merging ratings")
            merge_ratings(conn, batch, direct=direct, bulk=bulk)
        with _phase(phases, "statistics"):
            notify("recomputing statistics")
            if bulk and conn.dialect.name == "postgresql":
                # Fresh planner statistics for the aggregates over the reloaded tables.
                _analyze(conn, _BULK_TABLES)
            counted = None if figures is None else figures.result()
            if counted is not None:
                _write_figures(conn, counted)
            else:
                _recompute_touched(conn, everything=direct)
        if bulk:
            with _phase(phases, "rebuild_indexes"):
                notify("rebuilding secondary indexes and foreign keys")
                rebuild()
        with _phase(phases, "log"):
            notify("logging the load")
            _log(conn, batch, dataset=dataset, source=source)
            if conn.dialect.name != "postgresql":
                staging_metadata.drop_all(conn)
    return LoadResult(
        dataset=dataset,
        content_hash=batch.content_hash,
        movies=movie_counts,
        users=user_counts,
        ratings=rating_counts,
        bulk=bulk,
        phases=phases,
    )


def copy_floor(url: str | URL, ratings: pd.DataFrame) -> float:
    """Seconds to move ``ratings`` into an empty, unindexed temporary table.

    The same path :func:`load_dataset` uses to move rows (binary ``COPY`` on PostgreSQL,
    ``executemany`` on SQLite), timed from the DataFrame, without checks, merging,
    statistics or commit: the floor a full load can be compared against. Nothing is kept.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.begin()
            stage_ratings.create(conn)
            start = time.perf_counter()
            copy_rows(conn, stage_ratings, rating_arrays(ratings))
            elapsed = time.perf_counter() - start
            conn.rollback()
    finally:
        engine.dispose()
    return elapsed


# --- staging -------------------------------------------------------------------------


@contextmanager
def _tuned(conn: Connection) -> Iterator[None]:
    """Memory for big sorts, hashes and index builds, for this load only."""
    if conn.dialect.name == "postgresql":
        # SET LOCAL ends with the transaction, however it ends.
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
        yield
        return
    # The SQLite page cache belongs to the pooled connection: give it back afterwards.
    default = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql("PRAGMA cache_size = -262144")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(default)}")


def _stage(conn: Connection, batch: LoadBatch, *, with_ratings: bool) -> None:
    staging_metadata.create_all(conn)
    if with_ratings:
        copy_rows(conn, stage_ratings, batch.rating_columns)
    copy_frame(conn, stage_movies, batch.movies)
    copy_frame(conn, stage_genres, batch.genres)
    copy_rows(conn, stage_users, (batch.users,))
    if with_ratings:
        # Autovacuum never analyses temporary tables; the diff join needs estimates.
        _analyze(conn, [stage_ratings])


# --- bulk mode -----------------------------------------------------------------------


def _is_bulk(conn: Connection, counts: TableCounts, *, direct: bool) -> bool:
    changed = counts.inserted + counts.updated
    if changed < BULK_MIN_ROWS:
        return False
    return direct or changed >= BULK_MIN_FRACTION * count_rows(conn, schema.ratings)


def _drop_secondary(conn: Connection, *, with_ratings_key: bool) -> Callable[[], None]:
    """Drop secondary indexes (and foreign keys on PostgreSQL); return what rebuilds them.

    ``with_ratings_key`` also drops the ratings primary key on PostgreSQL, for a copy
    into an empty table that needs no conflict arbiter (SQLite clusters on it).
    """
    indexes = [index for table in _BULK_TABLES for index in table.indexes]
    # SQLite cannot drop a foreign key; its checks are cheap in-process lookups anyway.
    foreign_keys = [fk for t in _BULK_TABLES for fk in t.foreign_key_constraints]
    keys = [schema.ratings.primary_key] if with_ratings_key else []
    if conn.dialect.name != "postgresql":
        foreign_keys, keys = [], []
    for constraint in (*foreign_keys, *keys):
        conn.execute(DropConstraint(constraint))
    for index in indexes:
        conn.execute(DropIndex(index))

    def rebuild() -> None:
        for key in keys:
            conn.execute(AddConstraint(key))
        for index in indexes:
            conn.execute(CreateIndex(index))
        for fk in foreign_keys:
            conn.execute(AddConstraint(fk))

    return rebuild


def _analyze(conn: Connection, tables: Sequence[Table]) -> None:
    for table in tables:
        conn.exec_driver_sql(f"ANALYZE {table.name}")


# --- statistics and log --------------------------------------------------------------


def _figures(batch: LoadBatch) -> Figures | None:
    """The batch's statistics counted in memory, or None when a rated movie is not in the
    batch (its genres are then only in the database: SQL must recount)."""
    figures = figures_from_arrays(
        batch.user, batch.movie, batch.score, batch.timestamp, batch.genres
    )
    rated = figures.movies["movie_id"].to_numpy()  # distinct, from the counts themselves
    carried = np.isin(rated, batch.movies["movie_id"].to_numpy(), assume_unique=True)
    return figures if bool(carried.all()) else None


def _write_figures(conn: Connection, figures: Figures) -> None:
    """Write the statistics of a load into an empty ratings table, counted in memory."""
    copy_frame(conn, user_figures, figures.users)
    movie_columns = figures.movies
    copy_rows(conn, movie_figures, tuple(movie_columns[c].to_numpy() for c in movie_columns))
    conn.execute(user_figures_statement(user_figures))
    conn.execute(movie_figures_statement(movie_figures))


def _recompute_touched(conn: Connection, *, everything: bool) -> None:
    """Recount the users and movies whose ratings (or liked genres) changed."""
    dialect = conn.dialect.name
    if everything:
        for statement in (
            *user_statistics_statements(dialect, None),
            *movie_statistics_statements(dialect, None),
        ):
            conn.execute(statement)
        return
    ratings, changed = schema.ratings, changed_ratings
    for ids, query in (
        (scope_users, select(changed.c.user_id).distinct().where(true())),
        (
            scope_users,
            select(ratings.c.user_id)
            .distinct()
            .join(genre_changed, genre_changed.c.id == ratings.c.movie_id)
            .where(ratings.c.score >= POSITIVE_THRESHOLD),
        ),
        (scope_movies, select(changed.c.movie_id).distinct().where(true())),
    ):
        conn.execute(dialect_insert(conn, ids).from_select(["id"], query).on_conflict_do_nothing())
    _recount(conn, scope_users, schema.users, partial(user_statistics_statements, dialect))
    _recount(conn, scope_movies, schema.movies, partial(movie_statistics_statements, dialect))


def _recount(
    conn: Connection,
    ids: Table,
    target: Table,
    statements: Callable[[Scope | None], list[Executable]],
) -> None:
    """Run the statistics statements over the ids in ``ids`` (all rows when they cover it)."""
    n_ids = count_rows(conn, ids)
    if n_ids == 0:
        return
    scope = None if n_ids >= count_rows(conn, target) else _in_table(ids)
    for statement in statements(scope):
        conn.execute(statement)


def _in_table(ids: Table) -> Scope:
    return lambda column: column.in_(select(ids.c.id))


def _log(conn: Connection, batch: LoadBatch, *, dataset: str, source: str) -> None:
    conn.execute(
        insert(schema.datasets_loaded).values(
            dataset=dataset,
            source=source,
            n_ratings=len(batch.user),
            n_movies=len(batch.movies),
            n_users=len(batch.users),
            content_hash=batch.content_hash,
        )
    )


@contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


def _ignore(_message: str) -> None:
    return None


def _nothing() -> None:
    return None
