"""Database fixtures: a SQLite file per test and a fresh PostgreSQL database per test.

PostgreSQL comes from ``RECOLAB_TEST_POSTGRES_URL`` (a server URL such as
``postgresql://postgres@127.0.0.1:5432/test``); each test gets its own database, created
on that server and dropped afterwards. Without the variable the PostgreSQL cases skip,
except under ``CI=true``, where they fail: CI must run them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fresh_postgres_database, require_service

POSTGRES_ENV = "RECOLAB_TEST_POSTGRES_URL"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'recolab.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = require_service(POSTGRES_ENV)
    with fresh_postgres_database(server, "recolab_test") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A URL to an empty database, once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server for a module's flows (`usefixtures("prefect_server")`)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
