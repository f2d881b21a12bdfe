"""The recommendation history through database outages, over a store of our own port
(`HistoryStore`) that fails as SQLAlchemy does when the database is down, or stalls.

An outage drops the answers' history and counts it (`recolab_history_dropped_total`, the
service's metric), with ONE warning line per outage, no traceback, nothing logged at ERROR
and nothing raised to the caller; when a write succeeds again, one line says so and how
many answers were lost, whichever way they were dropped (write failed, or buffer full while
the database stalled). tests/integration/test_history_writer.py does the same against a
real PostgreSQL database that is dropped and created again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy.exc import OperationalError

from recolab.adapters.runtime.history import BackgroundHistory
from recolab.adapters.runtime.observability import serving_metrics
from recolab.domain import UserId
from recolab.domain.events import RecommendationsGenerated

LOGGER = "recolab.adapters.runtime.history"
OUTAGE, RECOVERED = "could not record", "recording recommendation history again"


class FlakyStore:
    """Writes answers in memory, unless `down` (fails like a lost connection) or
    `stalled` (the write waits, as on a database that does not answer)."""

    def __init__(self) -> None:
        self.down = False
        self.running = threading.Event()
        self.running.set()
        self.written: list[RecommendationsGenerated] = []

    def record_answers(self, answers: Sequence[RecommendationsGenerated]) -> None:
        self.running.wait(timeout=30)
        if self.down:
            raise OperationalError(
                "INSERT INTO recommendation_history ...",
                {},
                ConnectionRefusedError('connection to server at "127.0.0.1", port 5432 failed'),
            )
        self.written.extend(answers)


def answer(user_id: int = 1) -> RecommendationsGenerated:
    return RecommendationsGenerated(
        user_id=UserId(user_id),
        tier="new",
        requested="auto",
        strategy="popular",
        items=[],
        diversity_score=0.5,
        model_version="3",
    )


def dropped_total(reason: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("recolab_history_dropped_total", {"reason": reason})
    return value or 0.0


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
def history(store: FlakyStore) -> Iterator[BackgroundHistory]:
    metrics = serving_metrics()  # the service's counter, as bootstrap wires it
    history = BackgroundHistory(
        store, dropped=metrics.history_not_recorded, max_pending=5, interval_s=0.01
    )
    yield history
    store.running.set()
    history.close()


def serve(history: BackgroundHistory, answers: int) -> float:
    """Hand `answers` to the history as the service does, then let it settle; the slowest
    hand-off (an answer never waits for the database)."""
    slowest = 0.0
    for _ in range(answers):
        started = time.perf_counter()
        history.record(answer())  # never raises
        slowest = max(slowest, time.perf_counter() - started)
        history.settle(timeout_s=5)
    return slowest


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def test_each_outage_is_counted_and_logged_once_then_its_end(
    history: BackgroundHistory, store: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    before = dropped_total("error")
    with caplog.at_level(logging.DEBUG):  # every logger, every level
        assert serve(history, 2) < 0.05
        for outage, lost in enumerate((7, 3), start=1):
            store.down = True
            assert serve(history, lost) < 0.05
            assert len(messages(caplog, OUTAGE)) == outage  # one per outage, not per answer
            assert len(messages(caplog, RECOVERED)) == outage - 1
            store.down = False
            serve(history, 1)
            assert (
                messages(caplog, RECOVERED)[-1]
                .getMessage()
                .endswith(f"again; {lost} answers were not recorded")
            )
    assert dropped_total("error") - before == 10
    assert len(store.written) == 4  # 2 before, 1 after each outage
    failure = messages(caplog, OUTAGE)[0]
    assert failure.levelno == logging.WARNING and failure.exc_info is None
    assert "OperationalError" in failure.getMessage() and "\n" not in failure.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all(r.exc_info is None for r in caplog.records)


def test_a_stalled_database_then_a_failing_one_counts_every_lost_answer_once_over(
    history: BackgroundHistory, store: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The database stops answering (connects hang): the buffer fills and answers past it
    are dropped; then it fails the writes it held. The end of it names all of them."""
    full_before, error_before = dropped_total("full"), dropped_total("error")
    with caplog.at_level(logging.DEBUG):
        store.running.clear()
        store.down = True
        slowest = 0.0
        for _ in range(8):  # 5 held (the buffer), 3 dropped: none waits
            started = time.perf_counter()
            history.record(answer())
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 0.05
        assert dropped_total("full") - full_before == 3
        assert len(messages(caplog, "behind")) == 1
        store.running.set()  # the held writes fail now
        history.settle(timeout_s=5)
        assert dropped_total("error") - error_before == 5
        assert len(messages(caplog, OUTAGE)) == 1 and not messages(caplog, RECOVERED)
        store.down = False
        serve(history, 1)
    recovered = messages(caplog, RECOVERED)
    assert len(recovered) == 1
    assert recovered[0].getMessage().endswith("again; 8 answers were not recorded")
    assert len(store.written) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_full_buffer_alone_also_says_when_it_caught_up(
    history: BackgroundHistory, store: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store.running.clear()  # slow, not down
        for _ in range(7):
            history.record(answer())
        store.running.set()
        history.settle(timeout_s=5)
    assert len(messages(caplog, "behind")) == 1 and not messages(caplog, OUTAGE)
    assert [r.getMessage() for r in messages(caplog, RECOVERED)] == [
        "recording recommendation history again; 2 answers were not recorded"
    ]
    assert len(store.written) == 5
