"""Temporary staging tables and the fastest way to fill them.

PostgreSQL gets binary ``COPY`` built with numpy (no Python object per row); SQLite gets
``executemany`` in chunks. The tables are temporary and unindexed: dropped at commit on
PostgreSQL, with ``staging_metadata.drop_all`` by the loader on SQLite.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.exc import DBAPIError

COPY_CHUNK_ROWS = 1_000_000
SQLITE_CHUNK_ROWS = 200_000

# Staging tables: temporary, unindexed, dropped at commit (PostgreSQL) or by hand (SQLite).
staging_metadata = MetaData()


def _temp_table(name: str, *columns: Column[Any]) -> Table:
    return Table(
        name, staging_metadata, *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP"
    )


stage_ratings = _temp_table(
    "_stage_ratings",
    Column("user_id", BigInteger),
    Column("movie_id", BigInteger),
    Column("score", Double),
    Column("timestamp", BigInteger),
)
stage_movies = _temp_table(
    "_stage_movies",
    Column("movie_id", BigInteger, primary_key=True),
    Column("title", Text),
    Column("year", Integer),
    Column("genres", Text),
)
stage_genres = _temp_table(
    "_stage_genres",
    Column("movie_id", BigInteger, primary_key=True),
    Column("genre", Text, primary_key=True),
)
changed_ratings = _temp_table(
    "_changed_ratings",
    Column("user_id", BigInteger),
    Column("movie_id", BigInteger),
    Column("score", Double),
    Column("timestamp", BigInteger),
    Column("fresh", Boolean),
)
stage_users = _temp_table("_stage_users", Column("id", BigInteger, primary_key=True))
scope_users = _temp_table("_scope_users", Column("id", BigInteger, primary_key=True))
scope_movies = _temp_table("_scope_movies", Column("id", BigInteger, primary_key=True))
genre_changed = _temp_table("_genre_changed", Column("id", BigInteger, primary_key=True))
user_figures = _temp_table(
    "_user_figures",
    Column("user_id", BigInteger, primary_key=True),
    Column("n", BigInteger),
    Column("total", Double),
    Column("last_ts", BigInteger),
    Column("favorites", Text),
)
movie_figures = _temp_table(
    "_movie_figures",
    Column("movie_id", BigInteger, primary_key=True),
    Column("n", BigInteger),
    Column("total", Double),
)


def copy_rows(
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
    with driver_connection(conn, sql) as raw:
        for start in range(0, len(columns[0]), SQLITE_CHUNK_ROWS):
            chunk = [c[start : start + SQLITE_CHUNK_ROWS].tolist() for c in columns]
            raw.executemany(sql, zip(*chunk, strict=True))


def copy_frame(conn: Connection, table: Table, frame: pd.DataFrame) -> None:
    """Append a DataFrame whose columns match ``table``'s, in order (any column types)."""
    names = ", ".join(c.name for c in table.columns)
    if conn.dialect.name == "postgresql":
        buffer = io.StringIO()
        frame.to_csv(buffer, header=False, index=False)
        # In CSV an unquoted empty field is NULL; text columns keep empty strings.
        texts = [c.name for c in table.columns if isinstance(c.type, Text)]
        options = f"FORMAT csv, FORCE_NOT_NULL ({', '.join(texts)})" if texts else "FORMAT csv"
        sql = f"COPY {table.name} ({names}) FROM STDIN ({options})"
        with driver_connection(conn, sql) as raw, raw.cursor() as cursor, cursor.copy(sql) as copy:
            copy.write(buffer.getvalue())
        return
    rows = zip(*(_python_values(frame[name]) for name in frame.columns), strict=True)
    marks = ", ".join("?" for _ in table.columns)
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
    with driver_connection(conn, sql) as raw:
        raw.executemany(sql, rows)


def _python_values(column: pd.Series) -> list[Any]:
    """Plain Python values (``None`` for missing) that sqlite3 can bind."""
    values = column.astype(object).tolist()
    return [None if v is None or v is pd.NA or v != v else v for v in values]


@contextmanager
def driver_connection(conn: Connection, statement: str) -> Iterator[Any]:
    """The DBAPI connection under ``conn``; its errors re-raised as SQLAlchemy's."""
    raw = conn.connection.driver_connection
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield raw
    except dbapi.Error as error:
        raise DBAPIError.instance(
            statement, None, error, dbapi.Error, dialect=conn.dialect
        ) from error


# PostgreSQL's binary COPY format: a signature, int32 flags and int32 header-extension
# length; rows; an int16 -1.
PG_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_PG_COPY_HEADER = PG_COPY_SIGNATURE + struct.pack("!ii", 0, 0)
PG_COPY_TRAILER = struct.pack("!h", -1)


def pg_binary_row(columns: Sequence[tuple[str, bool]]) -> np.dtype:
    """One binary COPY row of 8-byte fields, as a packed numpy record: an int16 field count
    (`fields`), then per (name, is_float) column an int32 length (`{name}_len`, 8) and the
    big-endian value (`name`: float8 or int8)."""
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for name, is_float in columns:
        fields += [(f"{name}_len", ">i4"), (name, ">f8" if is_float else ">i8")]
    return np.dtype(fields)


def _copy_binary(conn: Connection, sql: str, columns: Sequence[np.ndarray]) -> None:
    with driver_connection(conn, sql) as raw, raw.cursor() as cursor, cursor.copy(sql) as copy:
        copy.write(_PG_COPY_HEADER)
        for block in _binary_blocks(columns):
            copy.write(block)
        copy.write(PG_COPY_TRAILER)


def _binary_blocks(columns: Sequence[np.ndarray]) -> Iterator[memoryview]:
    # A packed structured array builds whole blocks without Python loops.
    row_type = pg_binary_row([(f"val{i}", c.dtype.kind == "f") for i, c in enumerate(columns)])
    total = len(columns[0])
    for start in range(0, total, COPY_CHUNK_ROWS):
        stop = min(start + COPY_CHUNK_ROWS, total)
        block = np.empty(stop - start, dtype=row_type)
        block["fields"] = len(columns)
        for i, column in enumerate(columns):
            block[f"val{i}_len"] = 8
            block[f"val{i}"] = column[start:stop]
        yield block.view(np.uint8).data
