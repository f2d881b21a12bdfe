"""Run the Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from recolab.adapters.sql.engine import SQLITE_BEGIN, make_engine, normalise_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None, url: str | URL | None = None) -> Config:
    """Build an Alembic ``Config`` for RecoLab's migrations.

    Pass an open ``connection`` (used as is, so the caller owns the transaction) or a
    ``url`` (``env.py`` then makes its own engine with :func:`make_engine`).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = normalise_url(url).render_as_string(hide_password=False)
        # ConfigParser interpolation would read "%" in passwords as a placeholder.
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


# Any fixed number: the PostgreSQL advisory lock that serialises RecoLab's migrations.
_MIGRATION_LOCK = 0x5245434F  # "RECO"


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the latest).

    Safe to call from several processes at once (e.g. the workers of one service starting
    on a fresh database): each waits for the others' migrations to commit, then finds
    nothing left to do.
    """
    engine = make_engine(url)
    try:
        # SQLite: the write lock from BEGIN IMMEDIATE serialises migrating processes.
        with engine.connect() as connection:
            connection = connection.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with connection.begin():
                _lock_for_migrations(connection)
                command.upgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


def _lock_for_migrations(connection: Connection) -> None:
    """PostgreSQL: hold, until this transaction ends, a lock other migrations wait for."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")


def current_revision(url: str | URL) -> str | None:
    """Return the revision the database at ``url`` is at (``None`` when unmigrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
