"""Engine construction for SQLite (embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 30_000
_PG_ALIASES = {"postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"}


def normalise_url(url: str | URL) -> URL:
    """Return ``url`` with PostgreSQL URLs pointed at the psycopg 3 driver.

    ``postgres://`` and ``postgresql://`` (which SQLAlchemy maps to psycopg2) become
    ``postgresql+psycopg://``; other URLs are returned unchanged.
    """
    parsed = make_url(url)
    if parsed.drivername in _PG_ALIASES:
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Create an engine with the settings this project relies on.

    SQLite: WAL journal, ``foreign_keys=ON``, a busy timeout, a ``log10`` SQL function,
    and real transactions (``BEGIN`` emitted by SQLAlchemy, so DDL and reads are
    transactional too). PostgreSQL: psycopg 3 and a pre-pinged pool.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, echo=echo)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    return create_engine(parsed, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10)


# Execution option: "IMMEDIATE" makes a SQLite transaction take the write lock at BEGIN.
SQLITE_BEGIN = "recolab_sqlite_begin"


def _begin_sqlite(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "")
    if mode not in ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"{SQLITE_BEGIN} must be DEFERRED, IMMEDIATE or EXCLUSIVE, got {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


def _configure_sqlite(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    assert isinstance(dbapi_connection, sqlite3.Connection)
    # Let SQLAlchemy's "begin" event own transactions instead of pysqlite's implicit ones.
    dbapi_connection.isolation_level = None
    dbapi_connection.create_function("log10", 1, _log10, deterministic=True)
    dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _switch_to_wal(dbapi_connection)
    for pragma in ("synchronous=NORMAL", "foreign_keys=ON"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _switch_to_wal(dbapi_connection: sqlite3.Connection) -> None:
    """`PRAGMA journal_mode=WAL`, retried while another connection holds the database.

    Switching a new database file to WAL needs an exclusive lock, and SQLite answers
    "database is locked" at once (its busy timeout does not apply) while another connection
    is in a transaction, e.g. when several processes open a fresh database together.
    Once the file is in WAL mode the pragma takes no lock.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _log10(value: float | None) -> float | None:
    # Not every SQLite build has the math functions; SQL semantics: NULL outside the domain.
    if value is None or value <= 0:
        return None
    return math.log10(value)


@contextmanager
def scratch_postgres_database(server_url: str | URL, prefix: str) -> Iterator[str]:
    """Create a uniquely named database on `server_url`'s server and yield its URL; it is
    dropped afterwards (for tests and benchmarks that need a fresh database)."""
    import psycopg
    from psycopg import sql

    # psycopg takes libpq URLs: drop any SQLAlchemy driver suffix.
    admin = make_url(server_url).set(drivername="postgresql")
    admin_dsn = admin.render_as_string(hide_password=False)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
