"""What the monitor reads from and records in the database, on real SQLite and PostgreSQL:
the ratings after a snapshot, the recent answers' shares, and retrain requests recorded once
per champion version and snapshot, even by runs racing each other."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert

from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.adapters.sql.monitor import SqlMonitorData
from recolab.domain.services.drift import RetrainRequest
from tests.integration.test_repositories import MOVIES, RATINGS

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    upgrade(db_url)
    engine = make_engine(db_url)
    load_dataset(engine, RATINGS, MOVIES, dataset="tiny", source="test")
    yield engine
    engine.dispose()


def test_ratings_after_a_time_are_those_stored_later(engine: Engine) -> None:
    data = SqlMonitorData(engine)
    # RATINGS are stamped 1e9 + 0..5: after 1e9 + 3 come (2, 3, 4.5) and (3, 5, 1.0)
    recent = data.ratings_after(1_000_000_003)
    columns = (recent.user_ids.tolist(), recent.movie_ids.tolist(), recent.scores.tolist())
    rows = sorted(zip(*columns, strict=True))
    assert rows == [(2, 3, 4.5), (3, 5, 1.0)]
    assert len(data.ratings_after(2_000_000_000)) == 0
    assert len(data.ratings_after(0)) == len(RATINGS)


def history(
    user_id: int,
    at: datetime,
    *,
    items: int = 2,
    tier: str | None = "active",
    fallback: bool | list[bool] = False,
    variant: str | None = None,
) -> list[dict[str, object]]:
    flags = fallback if isinstance(fallback, list) else [fallback] * items
    return [
        {
            "user_id": user_id,
            "movie_id": rank,
            "rank": rank,
            "score": 1.0 / rank,
            "strategy": "hybrid",
            "source": "collaborative",
            "model_version": "1",
            "created_at": at,
            "tier": tier,
            "fallback": flags[rank - 1],
            "variant": variant,
        }
        for rank in range(1, items + 1)
    ]


def test_recent_answers_are_counted_once_each_without_shadow_scorings(engine: Engine) -> None:
    t0, t1, t2 = NOW - timedelta(hours=30), NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    rows = [
        *history(3, t0, tier="cold_start", fallback=True),  # before the window
        *history(1, t1),  # answer 1
        *history(2, t1, tier="cold_start", fallback=[False, True]),  # answer 2: fell back
        *history(1, t2, tier="new", fallback=True, variant="champion"),  # answer 3
        *history(1, t2, tier="new", fallback=True, variant="shadow"),  # never shown
        *history(3, t2, items=3, tier="cold_start", variant="challenger"),  # answer 4
        *history(2, t2, tier=None),  # answer 5: from before tiers were recorded
    ]
    with engine.begin() as conn:
        conn.execute(insert(s.recommendation_history), rows)
    counts = SqlMonitorData(engine).answer_counts(NOW - timedelta(hours=24))
    assert (counts.answers, counts.fallbacks, counts.cold_start) == (5, 2, 2)
    empty = SqlMonitorData(engine).answer_counts(NOW)
    assert (empty.answers, empty.fallbacks, empty.cold_start) == (0, 0, 0)


EVERY = 10_000  # monitor.new_ratings: another request once this many more ratings came


def request(
    version: str = "1", snapshot: str = "snap-a", run: str = "run-1", new_ratings: int = 500
) -> RetrainRequest:
    return RetrainRequest(
        model_version=version,
        snapshot_id=snapshot,
        reason="rating PSI 0.310 > 0.200 (on 500 ratings)",
        new_ratings=new_ratings,
        requested_at=NOW,
        flow_run_id=run,
    )


def test_a_request_is_recorded_once_per_champion_and_snapshot(engine: Engine) -> None:
    data = SqlMonitorData(engine)
    assert data.last_request("1", "snap-a") is None
    first = data.record_request(request(), EVERY)
    assert first is not None and first.id is not None
    assert first.requested_at == NOW and first.reason.startswith("rating PSI")
    assert data.last_request("1", "snap-a") == first
    assert data.record_request(request(run="run-2"), EVERY) is None
    assert [r.flow_run_id for r in data.requests()] == ["run-1"]
    # another champion version, or the same version on another snapshot: a request of its own
    second = data.record_request(request("2"), EVERY)
    third = data.record_request(request("1", "snap-b"), EVERY)
    assert second is not None and third is not None
    assert len({first.id, second.id, third.id}) == 3
    assert data.last_request("2", "snap-a") == second
    # a withdrawn request (its trigger failed) no longer stands in the way
    data.withdraw_request(first.id)
    assert data.last_request("1", "snap-a") is None
    again = data.record_request(request(run="run-3"), EVERY)
    assert again is not None and again.flow_run_id == "run-3"
    stored = data.requests()
    assert [(r.model_version, r.snapshot_id) for r in stored] == [
        ("2", "snap-a"),
        ("1", "snap-b"),
        ("1", "snap-a"),
    ]
    # the same champion still serving (the retrain was not promoted) and the data kept
    # growing: one more request once another EVERY ratings came, not before
    assert data.record_request(request(run="run-4", new_ratings=500 + EVERY - 1), EVERY) is None
    later = data.record_request(request(run="run-5", new_ratings=500 + EVERY), EVERY)
    assert later is not None and data.last_request("1", "snap-a") == later
    assert all(r.requested_at is not None and r.requested_at.tzinfo is not None for r in stored)


def test_runs_racing_to_record_the_same_request_record_it_once(engine: Engine) -> None:
    data = SqlMonitorData(engine)

    # Widen the race: every run pauses between finding no request and inserting its own.
    @event.listens_for(engine, "before_cursor_execute")
    def slow_insert(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("INSERT INTO RETRAIN_REQUESTS"):
            time.sleep(0.2)

    n = 6
    barrier = threading.Barrier(n)
    results: list[RetrainRequest | None] = []
    errors: list[BaseException] = []

    def record(i: int) -> None:
        try:
            barrier.wait()
            results.append(data.record_request(request(run=f"run-{i}"), EVERY))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r is not None for r in results) == 1
    assert len(data.requests()) == 1
