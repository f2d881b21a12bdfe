"""Caches implementing the domain's `Cache` port: in-process TTL (default) and Redis."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class InMemoryCache:
    """A thread-safe TTL cache with LRU eviction, for one process."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            self._data[key] = (self._clock() + ttl_s, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            keys = [k for k in self._data if k.startswith(prefix)]
            for key in keys:
                del self._data[key]
            return len(keys)

    def ping(self) -> bool:
        return True


class RedisCache:
    """Redis-backed cache; keys are namespaced so several apps can share a server."""

    def __init__(self, client: Any, namespace: str = "recolab:") -> None:
        self._client = client
        self._ns = namespace

    @classmethod
    def from_url(cls, url: str, namespace: str = "recolab:") -> RedisCache:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        return cls(client, namespace)

    def get(self, key: str) -> bytes | None:
        value = self._client.get(self._ns + key)
        return value if value is None else bytes(value)

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s > 0:
            self._client.set(self._ns + key, value, ex=ttl_s)

    def delete_prefix(self, prefix: str) -> int:
        # SCAN, not KEYS: never blocks the server on a large keyspace.
        deleted = 0
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=_escape(self._ns + prefix) + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(self._client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(self._client.unlink(*batch))
        return deleted

    def ping(self) -> bool:
        return bool(self._client.ping())


def _escape(pattern: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in pattern)


class ResilientCache:
    """Wraps a remote cache so that its failures degrade to 'no cache' instead of errors.

    `healthy` tells readiness whether the last call to the backend worked. An invalidation
    (`delete_prefix`) that fails while the backend is down is remembered and replayed
    before the next call that reaches it, so entries cached before an outage are not served
    after it when a rating during the outage made them stale. Past `max_pending` remembered
    prefixes, the whole namespace is dropped on recovery instead.
    """

    def __init__(self, inner: Any, retry_after_s: float = 5.0, max_pending: int = 10_000) -> None:
        self._inner = inner
        self._retry_after = retry_after_s
        self._down_until = 0.0
        self._pending: set[str] = set()
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self.healthy = True

    def _call(self, default: Any, method: str, *args: Any) -> Any:
        if time.monotonic() < self._down_until:
            return default
        try:
            self._replay()
            result = getattr(self._inner, method)(*args)
        except Exception as exc:  # any backend failure means uncached
            if self.healthy:
                log.warning("cache unavailable, serving uncached: %s", exc)
            self.healthy = False
            self._down_until = time.monotonic() + self._retry_after
            return default
        self.healthy = True
        return result

    def _remember(self, prefix: str) -> None:
        with self._lock:
            self._pending.add(prefix)
            if len(self._pending) > self._max_pending:
                self._pending = {""}  # too many to track: drop everything on recovery

    def _replay(self) -> None:
        """Apply the invalidations missed during an outage (raises if the backend fails)."""
        if not self._pending:
            return
        with self._lock:
            pending = sorted(self._pending)
        for prefix in pending:
            self._inner.delete_prefix(prefix)
            with self._lock:
                self._pending.discard(prefix)
        log.info("cache back: replayed %d missed invalidations", len(pending))

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self._call(None, "get", key)
        return value

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._call(None, "set", key, value, ttl_s)

    def delete_prefix(self, prefix: str) -> int:
        failed = object()
        deleted = self._call(failed, "delete_prefix", prefix)
        if deleted is failed:
            self._remember(prefix)
            return 0
        return int(deleted)

    def ping(self) -> bool:
        self._down_until = 0.0
        return bool(self._call(False, "ping"))

    @property
    def pending_invalidations(self) -> int:
        return len(self._pending)
