"""The recommendation history, written off the request path by one background thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime
from typing import Protocol

from recolab.domain.events import RankedItem, RecommendationsGenerated

log = logging.getLogger(__name__)


class HistoryStore(Protocol):
    def record_recommendations(
        self,
        user_id: int,
        items: Sequence[RankedItem],
        *,
        strategy: str,
        model_version: str | None,
        at: datetime,
    ) -> None: ...


class BackgroundHistory:
    """Hands each answer's history write to one worker thread: the answer is not kept
    waiting for it. Best effort: a failed write is logged, and past `max_pending` queued
    writes (the database far behind) new ones are dropped with a warning."""

    def __init__(self, store: HistoryStore, *, max_pending: int = 10_000) -> None:
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recolab-history")
        self._slots = threading.BoundedSemaphore(max_pending)

    def record(self, event: RecommendationsGenerated) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("recommendation history is behind: an answer was not recorded")
            return
        try:
            self._pool.submit(self._write, event)
        except RuntimeError:  # shut down
            self._slots.release()

    def settle(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the writes handed off so far."""
        with suppress(Exception):  # late or shut down: the reader sees what is there
            self._pool.submit(lambda: None).result(timeout=timeout_s)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _write(self, event: RecommendationsGenerated) -> None:
        try:
            self._store.record_recommendations(
                event.user_id.value,
                event.items,
                strategy=event.strategy,
                model_version=event.model_version,
                at=event.occurred_at.value,
            )
        except Exception:  # the answer was already sent
            log.exception("could not record recommendation history")
        finally:
            self._slots.release()
