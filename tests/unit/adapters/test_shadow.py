"""ShadowScoring: jobs run off the caller's thread and are recorded; past the bound they are
dropped and counted; a failing job is counted, never raised; closing refuses later ones."""

from __future__ import annotations

import threading
import time
from collections import Counter

from recolab.adapters.runtime.shadow import ShadowScoring
from recolab.domain import RecommendationsGenerated, UserId


def event(user_id: int) -> RecommendationsGenerated:
    return RecommendationsGenerated(
        user_id=UserId(user_id),
        tier="casual",
        requested="auto",
        strategy="hybrid",
        items=[],
        diversity_score=0.0,
        variant="shadow",
    )


class Sink:
    def __init__(self) -> None:
        self.recorded: list[RecommendationsGenerated] = []
        self.threads: set[str] = set()
        self.dropped: Counter[str] = Counter()

    def record(self, e: RecommendationsGenerated) -> None:
        self.threads.add(threading.current_thread().name)
        self.recorded.append(e)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


def test_jobs_run_off_the_callers_thread_in_order_and_are_recorded() -> None:
    sink = Sink()
    shadow = ShadowScoring(sink.record, max_pending=100, dropped=sink.drop)
    try:
        assert all(shadow.submit(lambda u=u: event(u)) for u in range(1, 21))
        assert shadow.settle(timeout_s=5)
        assert [e.user_id.value for e in sink.recorded] == list(range(1, 21))
        assert sink.threads == {"recolab-shadow"} and not sink.dropped
        assert shadow.pending == 0
    finally:
        shadow.close()


def test_past_the_bound_jobs_are_dropped_and_counted_without_waiting() -> None:
    sink = Sink()
    gate = threading.Event()

    def slow() -> RecommendationsGenerated:
        gate.wait(5)
        return event(1)

    shadow = ShadowScoring(sink.record, max_pending=3, dropped=sink.drop)
    try:
        accepted = [shadow.submit(slow) for _ in range(3)]
        started = time.monotonic()
        refused = [shadow.submit(slow) for _ in range(5)]
        assert time.monotonic() - started < 0.5  # never waits for room
        assert accepted == [True] * 3 and refused == [False] * 5
        assert sink.dropped == {"full": 5}
        gate.set()
        assert shadow.settle(timeout_s=5)
        assert len(sink.recorded) == 3
        assert shadow.submit(lambda: event(2))  # room again
    finally:
        gate.set()
        shadow.close()


def test_a_failing_job_or_record_is_counted_and_the_next_ones_still_run() -> None:
    sink = Sink()
    calls = []

    def record(e: RecommendationsGenerated) -> None:
        if e.user_id.value == 2:
            raise RuntimeError("database gone")
        sink.record(e)

    def broken() -> RecommendationsGenerated:
        calls.append(1)
        raise ValueError("model failed")

    shadow = ShadowScoring(record, dropped=sink.drop)
    try:
        assert shadow.submit(broken)  # its failure is not the caller's
        assert shadow.submit(lambda: event(2))
        assert shadow.submit(lambda: event(3))
        assert shadow.settle(timeout_s=5)
        assert calls == [1] and [e.user_id.value for e in sink.recorded] == [3]
        assert sink.dropped == {"error": 2}
    finally:
        shadow.close()


def test_close_runs_what_is_queued_then_refuses() -> None:
    sink = Sink()
    shadow = ShadowScoring(sink.record, dropped=sink.drop)
    for u in range(1, 6):
        shadow.submit(lambda u=u: event(u))
    shadow.close(timeout_s=5)
    assert len(sink.recorded) == 5
    assert shadow.submit(lambda: event(9)) is False
    assert sink.dropped == {"closed": 1}


def test_a_failing_drop_counter_never_reaches_the_caller() -> None:
    def drop(_reason: str) -> None:
        raise RuntimeError("metrics broken")

    gate = threading.Event()
    shadow = ShadowScoring(lambda _e: None, max_pending=1, dropped=drop)
    try:
        shadow.submit(lambda: (gate.wait(5), event(1))[1])
        assert shadow.submit(lambda: event(2)) is False
    finally:
        gate.set()
        shadow.close()


def test_the_thread_scores_at_most_its_share_of_the_time() -> None:
    sink = Sink()

    def job() -> RecommendationsGenerated:
        time.sleep(0.02)  # a 20 ms scoring
        return event(1)

    shadow = ShadowScoring(sink.record, dropped=sink.drop, max_busy=0.25)
    try:
        started = time.monotonic()
        for _ in range(5):
            shadow.submit(job)
        while len(sink.recorded) < 5:
            assert time.monotonic() - started < 10
            time.sleep(0.005)
        # 5 jobs of 20 ms and, between them, pauses of 3 x 20 ms: busy at most a quarter
        assert time.monotonic() - started >= 5 * 0.02 + 4 * 0.06
    finally:
        shadow.close()
    closing = ShadowScoring(sink.record, max_busy=0.01)  # closing drains without pausing
    for _ in range(3):
        closing.submit(job)
    started = time.monotonic()
    closing.close(timeout_s=10)
    assert time.monotonic() - started < 2.0  # not 3 x 20 ms x 99
