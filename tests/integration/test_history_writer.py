"""The recommendation history written behind the answer, against real SQLite and PostgreSQL.

Many answers become a few multi-row INSERTs; `settle` and `close` flush; a full buffer or
a database that is gone drops answers, counts them (`recolab_history_dropped_total`) and
logs once, and the caller never sees an exception or waits.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, event, func, select
from sqlalchemy.engine import make_url

from recolab.adapters.runtime.history import BackgroundHistory
from recolab.adapters.runtime.observability import serving_metrics
from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.adapters.sql.queries import HistoryItem, SqlQueries
from recolab.domain import UserId
from recolab.domain.events import RecommendationsGenerated
from tests.integration.test_repositories import MOVIES, RATINGS

HISTORY_LOGGER = "recolab.adapters.runtime.history"


def _prepare(url: str) -> Engine:
    upgrade(url)
    engine = make_engine(url)
    load_dataset(engine, RATINGS, MOVIES, dataset="tiny", source="test")
    return engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = _prepare(db_url)
    yield engine
    engine.dispose()


def answer(user_id: int = 1, n: int = 2) -> RecommendationsGenerated:
    items = [
        HistoryItem(movie_id=m, rank=m, score=1.0 / m, source="popular") for m in range(1, n + 1)
    ]
    return RecommendationsGenerated(
        user_id=UserId(user_id),
        tier="new",
        requested="auto",
        strategy="popular",
        items=items,
        diversity_score=0.5,
        model_version="3",
    )


def history_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(s.recommendation_history)).scalar_one()
        )


def count_history_inserts(engine: Engine) -> list[int]:
    """A list that grows by one per INSERT statement sent to recommendation_history."""
    seen: list[int] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RECOMMENDATION_HISTORY"):
            seen.append(1)

    event.listen(engine, "before_cursor_execute", before)
    return seen


class Drops:
    """Our own `dropped` callback: answers counted by reason."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()

    def __call__(self, reason: str, n: int) -> None:
        self.by_reason[reason] += n


def test_many_answers_become_a_few_inserts(engine: Engine) -> None:
    inserts = count_history_inserts(engine)
    history = BackgroundHistory(SqlQueries(engine))  # the service's defaults
    try:
        for i in range(300):
            history.record(answer(user_id=1 + i % 3))
        history.settle(timeout_s=10)
        assert history_rows(engine) == 600
        assert 1 <= len(inserts) <= 6, f"{len(inserts)} INSERTs for 300 answers"
    finally:
        history.close()


def test_settle_flushes_at_once_for_a_reader(engine: Engine) -> None:
    history = BackgroundHistory(SqlQueries(engine), interval_s=60, batch_size=10_000)
    try:
        history.record(answer())
        started = time.monotonic()
        history.settle(timeout_s=5)
        assert time.monotonic() - started < 2.0  # not the 60 s flush interval
        assert [h.movie_id for h in SqlQueries(engine).history(1, 10)] == [1, 2]
    finally:
        history.close()


def test_close_writes_what_is_still_queued(engine: Engine) -> None:
    inserts = count_history_inserts(engine)
    drops = Drops()
    history = BackgroundHistory(SqlQueries(engine), dropped=drops, interval_s=60)
    for _ in range(7):
        history.record(answer())
    assert history_rows(engine) == 0  # nothing due yet
    history.close()
    assert history_rows(engine) == 14 and len(inserts) == 1
    history.record(answer())  # after shutdown: counted, not raised
    assert drops.by_reason == {"closed": 1}


def test_a_full_buffer_drops_counts_and_never_blocks(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database holds its write lock (another writer): the writer waits, the buffer
    fills, answers past it are dropped and counted in the service's metric."""
    from prometheus_client import REGISTRY

    def dropped_total(reason: str) -> float:
        value = REGISTRY.get_sample_value("recolab_history_dropped_total", {"reason": reason})
        return value or 0.0

    engine = _prepare(sqlite_url)
    metrics = serving_metrics()
    before = dropped_total("full")
    locker = sqlite3.connect(make_url(sqlite_url).database or "", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # a writer that does not finish
    history = BackgroundHistory(
        SqlQueries(engine), dropped=metrics.history_not_recorded, max_pending=10, interval_s=0.01
    )
    try:
        with caplog.at_level(logging.WARNING, logger=HISTORY_LOGGER):
            slowest = 0.0
            for _ in range(15):
                started = time.perf_counter()
                history.record(answer())
                slowest = max(slowest, time.perf_counter() - started)
            assert slowest < 0.05  # never waits for the database
            assert dropped_total("full") - before == 5
            behind = [r for r in caplog.records if "behind" in r.getMessage()]
            assert len(behind) == 1 and behind[0].exc_info is None
        locker.execute("ROLLBACK")
        history.settle(timeout_s=30)
        assert history_rows(engine) == 20  # the 10 that fitted, 2 items each
        history.record(answer())
        history.settle(timeout_s=10)
        assert history_rows(engine) == 22 and dropped_total("full") - before == 5
    finally:
        locker.close()
        history.close()
        engine.dispose()


@pytest.mark.postgres
def test_a_database_that_is_gone_drops_counts_logs_once_and_recovers(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _prepare(postgres_url)
    url = make_url(postgres_url)
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    drops = Drops()
    history = BackgroundHistory(SqlQueries(engine), dropped=drops, interval_s=0.05)
    try:
        history.record(answer())
        history.settle(timeout_s=10)
        assert history_rows(engine) == 2
        with psycopg.connect(admin, autocommit=True) as conn:  # the database goes away
            conn.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(url.database))
            )
        with caplog.at_level(logging.WARNING, logger=HISTORY_LOGGER):
            for _ in range(4):
                for _ in range(5):
                    history.record(answer())  # raises nothing
                history.settle(timeout_s=20)
            assert drops.by_reason == {"error": 20}
            failures = [r for r in caplog.records if "could not record" in r.getMessage()]
            assert len(failures) == 1 and failures[0].exc_info is None

            with psycopg.connect(admin, autocommit=True) as conn:  # and comes back
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
            _prepare(postgres_url).dispose()
            history.record(answer())
            history.settle(timeout_s=20)
            assert history_rows(engine) == 2 and drops.by_reason == {"error": 20}
            assert any("again; 20 answers" in r.getMessage() for r in caplog.records)
    finally:
        history.close()
        engine.dispose()


def test_rows_carry_tier_fallback_experiment_and_variant(engine: Engine) -> None:
    plain = answer(user_id=1, n=2)  # no experiment: variant champion
    canary = replace(
        answer(user_id=2, n=3), tier="casual", experiment="v2-canary", variant="challenger"
    )
    fell_back = replace(
        answer(user_id=3, n=1), fallback="no model: content-based instead", experiment="v2-canary"
    )
    shadow = replace(canary, variant="shadow", model_version="4", tier="casual")
    SqlQueries(engine).record_answers([plain, canary, fell_back, shadow])
    h = s.recommendation_history.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                h.user_id, h.rank, h.tier, h.fallback, h.experiment, h.variant, h.model_version
            ).order_by(h.user_id, h.variant, h.rank)
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, 1, "new", False, None, "champion", "3"),
        (1, 2, "new", False, None, "champion", "3"),
        (2, 1, "casual", False, "v2-canary", "challenger", "3"),
        (2, 2, "casual", False, "v2-canary", "challenger", "3"),
        (2, 3, "casual", False, "v2-canary", "challenger", "3"),
        (2, 1, "casual", False, "v2-canary", "shadow", "4"),
        (2, 2, "casual", False, "v2-canary", "shadow", "4"),
        (2, 3, "casual", False, "v2-canary", "shadow", "4"),
        (3, 1, "new", True, "v2-canary", "champion", "3"),
    ]
    # a shadow's answer was never shown: the user's history lists the served one only
    shown = SqlQueries(engine).history(2, 10)
    assert [(e.movie_id, e.model_version) for e in shown] == [(1, "3"), (2, "3"), (3, "3")]
