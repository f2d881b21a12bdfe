"""The recommendation history, written behind the answer by one writer thread in batches.

An answer hands its event to a bounded buffer and returns; the writer flushes the buffer
with one multi-row INSERT every `interval_s` or as soon as `batch_size` answers wait,
whichever comes first, and once more at `close`. The history is a log of what was served,
not a record anyone waits for: when the buffer is full (the database far behind) or a
write fails (the database down), those answers are dropped, counted through `dropped`
(the `recolab_history_dropped_total` metric in the service) and logged once per episode
(one WARNING line, no traceback), never raised to the caller and never making an answer
wait. The first write that succeeds after an episode logs that history is recorded again
and how many answers it lost, whichever way they were dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from recolab.domain.events import RecommendationsGenerated

log = logging.getLogger(__name__)

# Why answers were not recorded (the metric's `reason` label).
FULL, ERROR, CLOSED = "full", "error", "closed"


class HistoryStore(Protocol):
    def record_answers(self, answers: Sequence[RecommendationsGenerated]) -> None:
        """Store every answer's items in one statement and one transaction."""
        ...


DropCounter = Callable[[str, int], None]


class BackgroundHistory:
    """Served recommendations, recorded off the request path in batches (best effort).

    `max_pending` bounds the answers handed off and not yet written (queued or in the
    write under way); past it, `record` drops. `settle` lets a reader see its own writes.
    """

    def __init__(
        self,
        store: HistoryStore,
        *,
        dropped: DropCounter | None = None,
        max_pending: int = 10_000,
        batch_size: int = 500,
        interval_s: float = 0.25,
    ) -> None:
        if max_pending < 1 or batch_size < 1 or interval_s <= 0:
            raise ValueError("max_pending and batch_size must be >= 1, interval_s > 0")
        self._store = store
        self._dropped = dropped or (lambda _reason, _n: None)
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._lock = threading.Condition(threading.Lock())
        self._queue: list[RecommendationsGenerated] = []
        self._oldest_at = 0.0  # monotonic time the oldest queued answer arrived
        self._in_flight = 0  # answers taken by the writer, not yet written or dropped
        self._handed = 0  # answers accepted so far (a sequence number for `settle`)
        self._done = 0  # of those, how many were written or dropped
        self._urgent = False  # a reader or `close` waits: flush now
        self._closing = False
        self._full_episode = False  # a "buffer full" warning was logged and not yet cleared
        self._failing = False  # the last write failed (an outage was logged)
        self._lost = 0  # answers dropped (full or error) since the last write that succeeded
        self._thread = threading.Thread(target=self._run, name="recolab-history", daemon=True)
        self._thread.start()

    def record(self, event: RecommendationsGenerated) -> None:
        """Queue the answer's history; returns at once, whatever the database does."""
        warn = False
        with self._lock:
            if self._closing:
                reason = CLOSED
            elif len(self._queue) + self._in_flight >= self._max_pending:
                reason = FULL
                warn, self._full_episode = not self._full_episode, True
                self._lost += 1
            else:
                if not self._queue:
                    self._oldest_at = time.monotonic()
                self._queue.append(event)
                self._handed += 1
                if len(self._queue) in (1, self._batch_size):  # the writer's deadline starts
                    self._lock.notify_all()
                return
        if reason == FULL and warn:
            log.warning(
                "recommendation history is behind (%d answers waiting): answers are not "
                "recorded until it catches up",
                self._max_pending,
            )
        self._count_dropped(reason, 1)

    def settle(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until the answers handed off so far are written or
        dropped: a reader then sees its own answers."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            target = self._handed
            self._urgent = True
            self._lock.notify_all()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return  # late: the reader sees what is there
                self._lock.wait(left)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the writer (at most `timeout_s`); idempotent."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("recommendation history: the last writes did not finish at shutdown")

    @property
    def pending(self) -> int:
        """Answers handed off and not yet written or dropped."""
        with self._lock:
            return len(self._queue) + self._in_flight

    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._next_batch()
                if batch is None:
                    return
                self._in_flight = len(batch)
            failure = self._write(batch)
            failed = failure is not None
            with self._lock:
                outage_starts = failed and not self._failing
                recovered = not failed and (self._failing or self._full_episode)
                lost = self._lost + len(batch) if failed else self._lost
                self._failing, self._lost = failed, lost if failed else 0
                if not failed:
                    self._full_episode = False
            if outage_starts:
                log.warning(
                    "could not record recommendation history (%s); dropping it until the "
                    "database answers again",
                    failure,
                )
            elif recovered:
                log.warning(
                    "recording recommendation history again; %d answers were not recorded", lost
                )
            if failed:
                self._count_dropped(ERROR, len(batch))
            with self._lock:  # counted and logged before `settle` sees these answers done
                self._in_flight = 0
                self._done += len(batch)
                self._lock.notify_all()

    def _next_batch(self) -> list[RecommendationsGenerated] | None:
        """Wait (holding the lock) until a flush is due; its answers, or None to stop."""
        while True:
            if self._queue:
                due = self._oldest_at + self._interval_s
                if (
                    self._closing
                    or self._urgent
                    or len(self._queue) >= self._batch_size
                    or time.monotonic() >= due
                ):
                    batch = self._queue[: self._batch_size]
                    del self._queue[: self._batch_size]
                    self._oldest_at = time.monotonic()  # the rest waited long enough
                    if not self._queue:
                        self._urgent = False
                    return batch
                self._lock.wait(max(0.0, due - time.monotonic()))
            else:
                self._urgent = False
                if self._closing:
                    return None
                self._lock.wait()

    def _write(self, batch: list[RecommendationsGenerated]) -> str | None:
        """Write `batch`; None, or why it failed in one line (no traceback: the answers
        were already sent, and an outage fails every batch the same way)."""
        try:
            self._store.record_answers(batch)
        except Exception as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            return f"{type(exc).__name__}: {first_line}"
        return None

    def _count_dropped(self, reason: str, n: int) -> None:
        try:
            self._dropped(reason, n)
        except Exception:  # a metric must never fail an answer
            log.debug("could not count dropped history", exc_info=True)
