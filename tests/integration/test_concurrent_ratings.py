"""Concurrent ratings: 64 writers at once lose nothing and fail nothing, on both databases.

A SQLite transaction that reads first and then writes fails at once with "database is
locked" in WAL mode when another writer committed meanwhile (the busy timeout does not
apply to that upgrade), so write units of work begin as writers (BEGIN IMMEDIATE) and
wait their turn. On PostgreSQL, many re-ratings of the same rows queue on row locks and
must never deadlock. Afterwards the incremented statistics equal a recount from the ratings.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.adapters.sql.repositories import SqlAlchemyUnitOfWork
from recolab.adapters.sql.stats import recompute_statistics
from recolab.application.users import RateMovie, rate_movie
from recolab.domain import EventBus
from recolab.domain.values import RATING_VALUES
from tests.integration.statistics_data import differences, stored_statistics
from tests.integration.test_service_inprocess import _dataset, _serve, make_workspace, token

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

WRITERS = 64
USERS = range(1, 9)
N_MOVIES = 12
GENRES = ["Action", "Comedy", "Drama", "Romance"]


def _data() -> tuple[pd.DataFrame, pd.DataFrame]:
    movies = pd.DataFrame(
        {
            "movie_id": range(1, N_MOVIES + 1),
            "title": [f"Movie {m}" for m in range(1, N_MOVIES + 1)],
            "year": pd.array([1990 + m for m in range(N_MOVIES)], dtype="Int64"),
            "genres": [f"{GENRES[m % 4]}|{GENRES[(m + 1) % 4]}" for m in range(N_MOVIES)],
        }
    )
    # Every user already rated movies 1-3: some writers below re-rate those rows.
    ratings = pd.DataFrame(
        [(u, m, 3.0, 1_000_000_000 + u * 10 + m) for u in USERS for m in (1, 2, 3)],
        columns=["user_id", "movie_id", "rating", "timestamp"],
    )
    return ratings, movies


def _work(seed: int) -> list[tuple[int, int, float]]:
    """Each writer's ratings: few users and movies, so writers collide on rows."""
    rng = random.Random(seed)
    return [(rng.choice(USERS), rng.randint(1, 6), rng.choice(RATING_VALUES)) for _ in range(3)]


def _assert_statistics_equal_a_recount(engine: Engine) -> None:
    incremented = stored_statistics(engine)
    with engine.begin() as conn:
        recompute_statistics(conn)
    recounted = stored_statistics(engine)
    assert not differences(incremented[0], recounted[0])
    assert not differences(incremented[1], recounted[1])


def _race(work: Callable[[int], None], n: int = WRITERS) -> list[BaseException]:
    """Run `work(i)` in `n` threads released together; the exceptions they raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # collected: the test reports every failure
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    return errors


@pytest.fixture
def loaded(db_url: str) -> Iterator[Engine]:
    upgrade(db_url)
    engine = make_engine(db_url)
    load_dataset(engine, *_data(), dataset="concurrency", source="test")
    yield engine
    engine.dispose()


def test_64_concurrent_writers_fail_nothing_and_statistics_equal_a_recount(
    loaded: Engine,
) -> None:
    bus = EventBus()
    done: list[tuple[int, int]] = []

    def write(i: int) -> None:
        for user, movie, score in _work(i):
            rate_movie(RateMovie(user, movie, score), SqlAlchemyUnitOfWork(loaded), bus)
            done.append((user, movie))

    errors = _race(write)
    assert not errors, f"{len(errors)} of {WRITERS} writers failed, e.g. {errors[0]!r}"
    assert len(done) == WRITERS * 3
    with loaded.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(s.ratings)).scalar_one()
    initial = {(u, m) for u in USERS for m in (1, 2, 3)}
    assert stored == len(initial | set(done))  # every rating stored once
    _assert_statistics_equal_a_recount(loaded)


def test_write_units_begin_as_writers_and_reads_stay_deferred(sqlite_url: str) -> None:
    """A second writer waits for the first instead of failing at its first write."""
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with SqlAlchemyUnitOfWork(engine) as writer:
            # The write lock is held from BEGIN: another connection cannot write now.
            other = engine.raw_connection()
            try:
                sqlite = other.driver_connection
                assert sqlite is not None
                sqlite.execute("PRAGMA busy_timeout=0")
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    sqlite.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
            # A read-only unit does not take the write lock, so it reads alongside.
            with SqlAlchemyUnitOfWork(engine, read_only=True) as reader:
                assert reader.ratings.for_user(writer.users.next_id()) == []
    finally:
        engine.dispose()


# ---- over HTTP: the service in-process, 64 concurrent POST /ratings


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def http_client(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The service in-process over the test data set, on SQLite or on PostgreSQL."""
    env = make_workspace(
        tmp_path,
        rate_limit_per_minute=1_000_000,
        champion_poll_interval_s=3600,
        request_threads=WRITERS,
    )
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        upgrade(url)
        engine = make_engine(url)
        load_dataset(engine, *_dataset(), dataset="tiny", source="test")
        engine.dispose()
        env["RECOLAB_DATABASE_URL"] = url
    for key in ("RECOLAB_REDIS_URL", "RECOLAB_MODEL_NAME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield from _serve()


def test_64_concurrent_rating_requests_get_no_server_error(http_client: TestClient) -> None:
    statuses: list[int] = []

    def post(i: int) -> None:
        # Users 5-24 of the service's data set, so several writers share a user.
        user, movie, score = 5 + i % 20, 1 + (i * 7) % 150, RATING_VALUES[i % len(RATING_VALUES)]
        response = http_client.post(
            "/ratings",
            json={"user_id": user, "movie_id": movie, "score": score},
            headers=token(user),
        )
        statuses.append(response.status_code)

    errors = _race(post)
    assert errors == []
    failed = [code for code in statuses if code >= 500]
    assert len(statuses) == WRITERS
    assert not failed, f"{len(failed)} of {WRITERS} ratings answered 5xx: {failed[:5]}"
    assert set(statuses) <= {200, 201}
