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

import hashlib
import io
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    Engine,
    Executable,
    Integer,
    MetaData,
    Table,
    Text,
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
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

from recolab.adapters.sql import schema
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.stats import (
    POSITIVE_SCORE,
    Figures,
    Scope,
    figures_from_arrays,
    movie_figures_statement,
    movie_statistics_statements,
    user_figures_statement,
    user_statistics_statements,
)

RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
MOVIE_COLUMNS = ("movie_id", "title", "year", "genres")
COPY_CHUNK_ROWS = 1_000_000
SQLITE_CHUNK_ROWS = 200_000
BULK_MIN_ROWS = 100_000
BULK_MIN_FRACTION = 0.25  # of the ratings table's rows

Progress = Callable[[str], None]

# The tables whose secondary indexes and foreign keys a bulk load rebuilds.
_BULK_TABLES = (schema.users, schema.movies, schema.movie_genres, schema.ratings)

# Staging tables: temporary, unindexed, dropped at commit (PostgreSQL) or by hand (SQLite).
_staging = MetaData()


def _temp_table(name: str, *columns: Column[Any]) -> Table:
    return Table(name, _staging, *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


_stage_ratings = _temp_table(
    "_stage_ratings",
    Column("user_id", BigInteger),
    Column("movie_id", BigInteger),
    Column("score", Double),
    Column("timestamp", BigInteger),
)
_stage_movies = _temp_table(
    "_stage_movies",
    Column("movie_id", BigInteger, primary_key=True),
    Column("title", Text),
    Column("year", Integer),
    Column("genres", Text),
)
_stage_genres = _temp_table(
    "_stage_genres",
    Column("movie_id", BigInteger, primary_key=True),
    Column("genre", Text, primary_key=True),
)
_changed_ratings = _temp_table(
    "_changed_ratings",
    Column("user_id", BigInteger),
    Column("movie_id", BigInteger),
    Column("score", Double),
    Column("timestamp", BigInteger),
    Column("fresh", Boolean),
)
_stage_users = _temp_table("_stage_users", Column("id", BigInteger, primary_key=True))
_scope_users = _temp_table("_scope_users", Column("id", BigInteger, primary_key=True))
_scope_movies = _temp_table("_scope_movies", Column("id", BigInteger, primary_key=True))
_genre_changed = _temp_table("_genre_changed", Column("id", BigInteger, primary_key=True))
_user_figures = _temp_table(
    "_user_figures",
    Column("user_id", BigInteger, primary_key=True),
    Column("n", BigInteger),
    Column("total", Double),
    Column("last_ts", BigInteger),
    Column("favorites", Text),
)
_movie_figures = _temp_table(
    "_movie_figures",
    Column("movie_id", BigInteger, primary_key=True),
    Column("n", BigInteger),
    Column("total", Double),
)


@dataclass(frozen=True)
class TableCounts:
    """What a load did to one table's rows."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


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


@dataclass(frozen=True)
class _Batch:
    """The frames as plain arrays (ratings sorted by user, movie), checked."""

    user: np.ndarray
    movie: np.ndarray
    score: np.ndarray
    timestamp: np.ndarray
    movies: pd.DataFrame
    genres: pd.DataFrame
    users: np.ndarray
    content_hash: str

    @property
    def rating_columns(self) -> tuple[np.ndarray, ...]:
        return (self.user, self.movie, self.score, self.timestamp)


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
        batch = _prepare(ratings, movies)
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="recolab-figures") as pool,
        engine.begin() as conn,
        _tuned(conn),
    ):
        direct = _is_empty(conn, schema.ratings)
        # A batch that will be the whole ratings table is counted in memory, not in SQL,
        # on another thread while the database copies it (numpy and the driver's socket
        # writes both release the GIL).
        figures = pool.submit(_figures, batch) if direct else None
        with _phase(phases, "stage"):
            notify("staging rows")
            _stage(conn, batch, with_ratings=not direct)
        with _phase(phases, "diff"):
            notify("comparing ratings with the database")
            rating_counts = _diff_ratings(conn, batch, direct=direct)
        bulk = _is_bulk(conn, rating_counts, direct=direct)
        rebuild = _nothing
        if bulk:
            with _phase(phases, "drop_indexes"):
                notify("dropping secondary indexes and foreign keys for a bulk load")
                rebuild = _drop_secondary(conn, with_ratings_key=direct)
        with _phase(phases, "movies"):
            notify("merging movies and genres")
            movie_counts = _merge_movies(conn)
        with _phase(phases, "users"):
            notify("creating users")
            user_counts = _merge_users(conn, len(batch.users))
        with _phase(phases, "ratings"):
            notify("merging ratings")
            _merge_ratings(conn, batch, direct=direct, bulk=bulk)
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
                _staging.drop_all(conn)
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
            _stage_ratings.create(conn)
            start = time.perf_counter()
            _copy_rows(conn, _stage_ratings, _rating_arrays(ratings))
            elapsed = time.perf_counter() - start
            conn.rollback()
    finally:
        engine.dispose()
    return elapsed


# --- preparation ---------------------------------------------------------------------


def _prepare(ratings: pd.DataFrame, movies: pd.DataFrame) -> _Batch:
    _require_columns(ratings, RATING_COLUMNS, "ratings")
    _require_columns(movies, MOVIE_COLUMNS, "movies")
    user, movie, score, timestamp = _sorted_by_pair(_rating_arrays(ratings))
    same_pair = (user[1:] == user[:-1]) & (movie[1:] == movie[:-1])
    if same_pair.any():
        raise ValueError(
            f"ratings: {int(same_pair.sum())} duplicate (user_id, movie_id) pairs, "
            f"e.g. user {user[1:][same_pair][0]} movie {movie[1:][same_pair][0]}"
        )
    movie_frame = pd.DataFrame(
        {
            "movie_id": movies["movie_id"].to_numpy(dtype=np.int64),
            "title": movies["title"].astype(str).to_numpy(),
            "year": movies["year"].astype("Int64").array,
            "genres": movies["genres"].astype(str).to_numpy(),
        }
    )
    movie_frame = movie_frame.sort_values("movie_id", kind="stable").reset_index(drop=True)
    movie_ids = movie_frame["movie_id"].to_numpy()
    if (movie_ids[1:] == movie_ids[:-1]).any():
        raise ValueError("movies: duplicate movie_id values")
    first_of_user = np.r_[True, user[1:] != user[:-1]] if len(user) else np.zeros(0, bool)
    return _Batch(
        user=user,
        movie=movie,
        score=score,
        timestamp=timestamp,
        movies=movie_frame,
        genres=_explode_genres(movie_frame),
        users=user[first_of_user],
        content_hash=_content_hash((user, movie, score, timestamp), movie_frame),
    )


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")


def _rating_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(frame["user_id"].to_numpy(dtype=np.int64)),
        np.ascontiguousarray(frame["movie_id"].to_numpy(dtype=np.int64)),
        np.ascontiguousarray(frame["rating"].to_numpy(dtype=np.float64)),
        np.ascontiguousarray(frame["timestamp"].to_numpy(dtype=np.int64)),
    )


def _sorted_by_pair(
    columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Order by (user_id, movie_id): index-friendly inserts, cheap duplicate check."""
    user, movie = columns[0], columns[1]
    ordered = (user[1:] > user[:-1]) | ((user[1:] == user[:-1]) & (movie[1:] >= movie[:-1]))
    if ordered.all():
        return columns
    order = np.lexsort((movie, user))
    return (user[order], movie[order], columns[2][order], columns[3][order])


def _explode_genres(movie_frame: pd.DataFrame) -> pd.DataFrame:
    split = movie_frame["genres"].astype(str).str.split("|")
    exploded = pd.DataFrame({"movie_id": movie_frame["movie_id"], "genre": split}).explode("genre")
    genre = exploded["genre"].astype(str).str.strip()
    out = pd.DataFrame({"movie_id": exploded["movie_id"].to_numpy(np.int64), "genre": genre})
    return out[out["genre"] != ""].drop_duplicates().reset_index(drop=True)


def _content_hash(columns: Sequence[np.ndarray], movie_frame: pd.DataFrame) -> str:
    """SHA-256 of the (sorted) rows: the same data in any row order hashes the same."""
    digest = hashlib.sha256()
    for column in columns:
        digest.update(column.astype(column.dtype.newbyteorder("<"), copy=False).data)
    digest.update(pd.util.hash_pandas_object(movie_frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


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


def _stage(conn: Connection, batch: _Batch, *, with_ratings: bool) -> None:
    _staging.create_all(conn)
    if with_ratings:
        _copy_rows(conn, _stage_ratings, batch.rating_columns)
    _copy_frame(conn, _stage_movies, batch.movies)
    _copy_frame(conn, _stage_genres, batch.genres)
    _copy_rows(conn, _stage_users, (batch.users,))
    if with_ratings:
        # Autovacuum never analyses temporary tables; the diff join needs estimates.
        _analyze(conn, [_stage_ratings])


def _copy_rows(
    conn: Connection, table: Table, columns: Sequence[np.ndarray], *, freeze: bool = False
) -> None:
    """Append 8-byte numeric columns (BIGINT / DOUBLE) to ``table`` as fast as possible.

    ``freeze`` (PostgreSQL; the table must have been truncated in this transaction)
    writes the rows already frozen and their pages all-visible.
    """
    names = ", ".join(c.name for c in table.columns)
    if conn.dialect.name == "postgresql":
        options = "FORMAT BINARY, FREEZE" if freeze else "FORMAT BINARY"
        _copy_binary(conn, f"COPY {table.name} ({names}) FROM STDIN ({options})", columns)
        return
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
    with _driver(conn, sql) as raw:
        for start in range(0, len(columns[0]), SQLITE_CHUNK_ROWS):
            chunk = [c[start : start + SQLITE_CHUNK_ROWS].tolist() for c in columns]
            raw.executemany(sql, zip(*chunk, strict=True))


def _copy_frame(conn: Connection, table: Table, frame: pd.DataFrame) -> None:
    """Append a DataFrame whose columns match ``table``'s, in order (any column types)."""
    names = ", ".join(c.name for c in table.columns)
    if conn.dialect.name == "postgresql":
        buffer = io.StringIO()
        frame.to_csv(buffer, header=False, index=False)
        # In CSV an unquoted empty field is NULL; text columns keep empty strings.
        texts = [c.name for c in table.columns if isinstance(c.type, Text)]
        options = f"FORMAT csv, FORCE_NOT_NULL ({', '.join(texts)})" if texts else "FORMAT csv"
        sql = f"COPY {table.name} ({names}) FROM STDIN ({options})"
        with _driver(conn, sql) as raw, raw.cursor() as cursor, cursor.copy(sql) as copy:
            copy.write(buffer.getvalue())
        return
    rows = zip(*(_python_values(frame[name]) for name in frame.columns), strict=True)
    marks = ", ".join("?" for _ in table.columns)
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
    with _driver(conn, sql) as raw:
        raw.executemany(sql, rows)


def _python_values(column: pd.Series) -> list[Any]:
    """Plain Python values (``None`` for missing) that sqlite3 can bind."""
    values = column.astype(object).tolist()
    return [None if v is None or v is pd.NA or v != v else v for v in values]


@contextmanager
def _driver(conn: Connection, statement: str) -> Iterator[Any]:
    """The DBAPI connection under ``conn``; its errors re-raised as SQLAlchemy's."""
    raw = conn.connection.driver_connection
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield raw
    except dbapi.Error as error:
        raise DBAPIError.instance(
            statement, None, error, dbapi.Error, dialect=conn.dialect
        ) from error


_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_PG_COPY_TRAILER = struct.pack("!h", -1)


def _copy_binary(conn: Connection, sql: str, columns: Sequence[np.ndarray]) -> None:
    with _driver(conn, sql) as raw, raw.cursor() as cursor, cursor.copy(sql) as copy:
        copy.write(_PG_COPY_HEADER)
        for block in _binary_blocks(columns):
            copy.write(block)
        copy.write(_PG_COPY_TRAILER)


def _binary_blocks(columns: Sequence[np.ndarray]) -> Iterator[memoryview]:
    # Per row: int16 field count, then per field an int32 length (8) and the value, all
    # big-endian. A packed structured array builds whole blocks without Python loops.
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, column in enumerate(columns):
        fields += [(f"len{i}", ">i4"), (f"val{i}", ">f8" if column.dtype.kind == "f" else ">i8")]
    row_type = np.dtype(fields)
    total = len(columns[0])
    for start in range(0, total, COPY_CHUNK_ROWS):
        stop = min(start + COPY_CHUNK_ROWS, total)
        block = np.empty(stop - start, dtype=row_type)
        block["n"] = len(columns)
        for i, column in enumerate(columns):
            block[f"len{i}"] = 8
            block[f"val{i}"] = column[start:stop]
        yield block.view(np.uint8).data


# --- bulk mode -----------------------------------------------------------------------


def _is_empty(conn: Connection, table: Table) -> bool:
    return not conn.execute(select(exists().select_from(table))).scalar_one()


def _is_bulk(conn: Connection, counts: TableCounts, *, direct: bool) -> bool:
    changed = counts.inserted + counts.updated
    if changed < BULK_MIN_ROWS:
        return False
    return direct or changed >= BULK_MIN_FRACTION * _count(conn, schema.ratings)


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


# --- merging -------------------------------------------------------------------------


def _insert(conn: Connection, table: Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _merge_movies(conn: Connection) -> TableCounts:
    staged, target = _stage_movies, schema.movies
    # Users who liked a movie whose genres change get their favourites recounted.
    conn.execute(
        _insert(conn, _genre_changed).from_select(
            ["id"],
            select(staged.c.movie_id)
            .join(target, target.c.id == staged.c.movie_id)
            .where(target.c.genres != staged.c.genres),
        )
    )
    stmt = _insert(conn, target).from_select(
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
    counts = _merge(conn, stmt, target, _count(conn, staged))
    _replace_genres(conn)
    return counts


def _replace_genres(conn: Connection) -> None:
    """Make each staged movie's genre rows equal the staged ones, touching only differences."""
    staged, target = _stage_genres, schema.movie_genres
    conn.execute(
        delete(target)
        .where(target.c.movie_id.in_(select(_stage_movies.c.movie_id)))
        .where(
            ~exists().where(
                and_(staged.c.movie_id == target.c.movie_id, staged.c.genre == target.c.genre)
            )
        )
    )
    conn.execute(
        _insert(conn, target)
        .from_select(["movie_id", "genre"], select(staged.c.movie_id, staged.c.genre).where(true()))
        .on_conflict_do_nothing()
    )


def _merge_users(conn: Connection, n_staged: int) -> TableCounts:
    stmt = (
        _insert(conn, schema.users)
        .from_select(["id"], select(_stage_users.c.id).where(true()))
        .on_conflict_do_nothing()
    )
    return _merge(conn, stmt, schema.users, n_staged)


def _diff_ratings(conn: Connection, batch: _Batch, *, direct: bool) -> TableCounts:
    """Keep the staged ratings that are new or differ: one set-based join, no per-row probes."""
    n = len(batch.user)
    if direct:
        return TableCounts(inserted=n)
    staged, target = _stage_ratings, schema.ratings
    same_pair = and_(target.c.user_id == staged.c.user_id, target.c.movie_id == staged.c.movie_id)
    missing = target.c.user_id.is_(None)
    conn.execute(
        insert(_changed_ratings).from_select(
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
        select(func.count(), func.count().filter(_changed_ratings.c.fresh))
    ).one()
    return TableCounts(inserted=fresh, updated=changed - fresh, unchanged=n - changed)


def _merge_ratings(conn: Connection, batch: _Batch, *, direct: bool, bulk: bool) -> None:
    target = schema.ratings
    if direct:
        # An empty table cannot conflict and the batch has no duplicates: append.
        freeze = bulk and _can_freeze(conn)
        if freeze:
            conn.execute(text(f"TRUNCATE {target.name}"))
        _copy_rows(conn, target, batch.rating_columns, freeze=freeze)
        return
    changed = _changed_ratings
    names = ["user_id", "movie_id", "score", "timestamp"]
    stmt = _insert(conn, target).from_select(
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
    return isolation == "read committed" and _is_empty(conn, schema.ratings)


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
        before = _count(conn, target)
        written = conn.execute(stmt).rowcount
        inserted = _count(conn, target) - before
    return TableCounts(inserted=inserted, updated=written - inserted, unchanged=n_staged - written)


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --- statistics and log --------------------------------------------------------------


def _figures(batch: _Batch) -> Figures | None:
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
    _copy_frame(conn, _user_figures, figures.users)
    movie_columns = figures.movies
    _copy_rows(conn, _movie_figures, tuple(movie_columns[c].to_numpy() for c in movie_columns))
    conn.execute(user_figures_statement(_user_figures))
    conn.execute(movie_figures_statement(_movie_figures))


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
    ratings, changed = schema.ratings, _changed_ratings
    for ids, query in (
        (_scope_users, select(changed.c.user_id).distinct().where(true())),
        (
            _scope_users,
            select(ratings.c.user_id)
            .distinct()
            .join(_genre_changed, _genre_changed.c.id == ratings.c.movie_id)
            .where(ratings.c.score >= POSITIVE_SCORE),
        ),
        (_scope_movies, select(changed.c.movie_id).distinct().where(true())),
    ):
        conn.execute(_insert(conn, ids).from_select(["id"], query).on_conflict_do_nothing())
    _recount(conn, _scope_users, schema.users, partial(user_statistics_statements, dialect))
    _recount(conn, _scope_movies, schema.movies, partial(movie_statistics_statements, dialect))


def _recount(
    conn: Connection,
    ids: Table,
    target: Table,
    statements: Callable[[Scope | None], list[Executable]],
) -> None:
    """Run the statistics statements over the ids in ``ids`` (all rows when they cover it)."""
    n_ids = _count(conn, ids)
    if n_ids == 0:
        return
    scope = None if n_ids >= _count(conn, target) else _in_table(ids)
    for statement in statements(scope):
        conn.execute(statement)


def _in_table(ids: Table) -> Scope:
    return lambda column: column.in_(select(ids.c.id))


def _log(conn: Connection, batch: _Batch, *, dataset: str, source: str) -> None:
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
