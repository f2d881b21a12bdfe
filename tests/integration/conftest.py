"""Database fixtures: a SQLite file per test and a fresh PostgreSQL database per test.

PostgreSQL comes from ``RECOLAB_TEST_POSTGRES_URL`` (a server URL such as
``postgresql://postgres@127.0.0.1:5432/test``); each test gets its own database, created
on that server and dropped afterwards. Without the variable the PostgreSQL cases skip,
except under ``CI=true``, where they fail: CI must run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

POSTGRES_ENV = "RECOLAB_TEST_POSTGRES_URL"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'recolab.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        message = f"{POSTGRES_ENV} is not set"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}: PostgreSQL tests must run in CI")
        pytest.skip(message)
    # psycopg takes libpq URLs: drop any SQLAlchemy driver suffix.
    admin = make_url(server).set(drivername="postgresql")
    name = f"recolab_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A URL to an empty database, once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url
