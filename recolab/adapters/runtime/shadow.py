"""Shadow scorings: a challenger's answers, computed off the request path and recorded.

In shadow mode the champion answers everyone; for the users in the experiment's share the
recommender hands over a job (the challenger's answer to the same request, built from what
the request already read) and returns. One daemon thread per worker runs the jobs in order
and records what they return (the history, variant `shadow`: never cached, never shown).

The queue is bounded (`experiments.shadow_max_pending`): past the bound a job is dropped and
counted (`recolab_shadow_dropped_total{reason="full"}`), never waited for; a job that fails
is dropped and counted (reason `error`, logged once per episode), never raised.

Shadow work must not cost the answers much: the thread scores at most `max_busy` of the
time (after a job that took t seconds it pauses t * (1 / max_busy - 1)), so on a saturated
worker the champion's throughput loses at most about that share, whatever the experiment's
share of users; shadow jobs past that rate queue up, then drop (and are counted). The
thread also runs at a lower OS priority (Linux: a nice value per thread), so that on a busy
core the request threads come first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from recolab.domain.events import RecommendationsGenerated

log = logging.getLogger(__name__)

FULL, ERROR, CLOSED = "full", "error", "closed"
Job = Callable[[], RecommendationsGenerated]


class ShadowScoring:
    """A bounded queue of shadow jobs and the one thread that runs them."""

    def __init__(
        self,
        record: Callable[[RecommendationsGenerated], None],
        *,
        max_pending: int = 256,
        dropped: Callable[[str], None] | None = None,
        max_busy: float = 0.1,
        nice: int = 10,
    ) -> None:
        if max_pending < 1 or not 0.0 < max_busy <= 1.0:
            raise ValueError("max_pending must be >= 1 and max_busy in (0, 1]")
        self._rest = 1.0 / max_busy - 1.0  # pause per second of scoring
        self._record = record
        self._dropped = dropped or (lambda _reason: None)
        self._max_pending = max_pending
        self._nice = nice
        self._lock = threading.Condition(threading.Lock())
        self._jobs: deque[Job] = deque()
        self._running = 0  # a job taken by the thread and not finished (0 or 1)
        self._closing = False
        self._failing = False  # the last job failed (the episode was logged)
        self._thread = threading.Thread(target=self._run, name="recolab-shadow", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue `job`; False (and counted) when the queue is full or closed. Never waits."""
        with self._lock:
            if self._closing:
                reason = CLOSED
            elif len(self._jobs) + self._running >= self._max_pending:
                reason = FULL
            else:
                self._jobs.append(job)
                self._lock.notify_all()
                return True
        self._count(reason)
        return False

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self._lock:
            return len(self._jobs) + self._running

    def settle(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until every job handed over so far ran; True if so."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._jobs or self._running:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Run what is queued (at most `timeout_s`), then stop; later jobs are refused."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("shadow scorings: the last jobs did not finish at shutdown")

    def _run(self) -> None:
        _lower_priority(self._nice)
        while True:
            with self._lock:
                while not self._jobs and not self._closing:
                    self._lock.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._running = 1
            failure: str | None = None
            started = time.perf_counter()
            try:
                self._record(job())
            except Exception as exc:  # a shadow never fails anything but itself
                first = str(exc).splitlines()[0] if str(exc) else ""
                failure = f"{type(exc).__name__}: {first}"
            pause = (time.perf_counter() - started) * self._rest
            with self._lock:
                self._running = 0
                self._lock.notify_all()
            if failure is not None:
                if not self._failing:
                    log.warning("shadow scoring failed (%s); dropping failed ones", failure)
                self._count(ERROR)
            elif self._failing:
                log.warning("shadow scorings recorded again")
            self._failing = failure is not None
            with self._lock:  # the answers' share of the time; closing drains at full speed
                self._lock.wait_for(lambda: self._closing, timeout=pause)

    def _count(self, reason: str) -> None:
        try:
            self._dropped(reason)
        except Exception:  # a metric must never fail an answer
            log.debug("could not count a dropped shadow scoring", exc_info=True)


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority by `nice` (Linux schedules threads one by one;
    elsewhere, or without the right, nothing changes)."""
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):
        log.debug("could not lower the shadow thread's priority", exc_info=True)
