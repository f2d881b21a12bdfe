"""Caches implementing the domain's `Cache` port: in-process TTL (default) and Redis.

Entries live in groups (the recommender uses one per user) so that a rating drops all of
that user's entries in one step, however many entries the cache holds: Redis keeps a
group as one hash and drops it with one UNLINK, where matching keys by prefix meant a
SCAN over the whole keyspace on every rating.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_EXPIRY = struct.Struct(">q")  # milliseconds since the epoch, before each Redis value


class InMemoryCache:
    """A thread-safe TTL cache with LRU eviction, for one process."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self._data: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._groups: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock

    def get(self, group: str, key: str) -> bytes | None:
        with self._lock:
            entry = self._data.get((group, key))
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                self._forget((group, key))
                return None
            self._data.move_to_end((group, key))
            return value

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            self._data[(group, key)] = (self._clock() + ttl_s, value)
            self._data.move_to_end((group, key))
            self._groups.setdefault(group, set()).add(key)
            while len(self._data) > self._max:
                self._forget(next(iter(self._data)))

    def drop(self, group: str) -> int:
        with self._lock:
            keys = self._groups.pop(group, set())
            for key in keys:
                self._data.pop((group, key), None)
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._groups.clear()

    def ping(self) -> bool:
        return True

    def _forget(self, entry: tuple[str, str]) -> None:
        del self._data[entry]
        keys = self._groups.get(entry[0])
        if keys is not None:
            keys.discard(entry[1])
            if not keys:
                del self._groups[entry[0]]


class RedisCache:
    """Redis-backed cache: one hash per group, each value prefixed with its expiry.

    Keys are namespaced so several apps can share a server. The hash expires with its
    newest entry; older entries past their own TTL read as misses until then.
    """

    def __init__(
        self, client: Any, namespace: str = "recolab:", clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._ns = namespace
        self._clock = clock

    @classmethod
    def from_url(cls, url: str, namespace: str = "recolab:") -> RedisCache:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        return cls(client, namespace)

    def get(self, group: str, key: str) -> bytes | None:
        stored = self._client.hget(self._ns + group, key)
        if stored is None or len(stored) < _EXPIRY.size:
            return None
        (expires_ms,) = _EXPIRY.unpack_from(stored)
        if expires_ms <= self._clock() * 1000:
            return None
        return bytes(stored[_EXPIRY.size :])

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0:
            return
        expires_ms = int(self._clock() * 1000) + ttl_s * 1000
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(self._ns + group, key, _EXPIRY.pack(expires_ms) + value)
        pipe.pexpire(self._ns + group, ttl_s * 1000)
        pipe.execute()

    def drop(self, group: str) -> int:
        pipe = self._client.pipeline(transaction=True)
        pipe.hlen(self._ns + group)
        pipe.unlink(self._ns + group)
        entries, _ = pipe.execute()
        return int(entries)

    def clear(self) -> None:
        """Drop every group of this namespace (SCAN, not KEYS: never blocks the server)."""
        batch: list[bytes] = []
        for name in self._client.scan_iter(match=_escape(self._ns) + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                self._client.unlink(*batch)
                batch.clear()
        if batch:
            self._client.unlink(*batch)

    def ping(self) -> bool:
        return bool(self._client.ping())


def _escape(pattern: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in pattern)


_EVERYTHING = object()  # a pending invalidation of every group


class ResilientCache:
    """Wraps a remote cache so that its failures degrade to 'no cache' instead of errors.

    `healthy` tells readiness whether the last call to the backend worked. A group drop
    that fails while the backend is down is remembered and replayed before the next call
    that reaches it, so entries cached before an outage are not served after it when a
    rating during the outage made them stale. Past `max_pending` remembered groups, the
    whole namespace is cleared on recovery instead.
    """

    def __init__(self, inner: Any, retry_after_s: float = 5.0, max_pending: int = 10_000) -> None:
        self._inner = inner
        self._retry_after = retry_after_s
        self._down_until = 0.0
        self._pending: set[Any] = set()
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

    def _remember(self, group: str) -> None:
        with self._lock:
            self._pending.add(group)
            if len(self._pending) > self._max_pending:
                self._pending = {_EVERYTHING}  # too many to track: clear all on recovery

    def _replay(self) -> None:
        """Apply the invalidations missed during an outage (raises if the backend fails)."""
        if not self._pending:
            return
        with self._lock:
            pending = list(self._pending)
        for group in pending:
            if group is _EVERYTHING:
                self._inner.clear()
            else:
                self._inner.drop(group)
            with self._lock:
                self._pending.discard(group)
        log.info("cache back: replayed %d missed invalidations", len(pending))

    def get(self, group: str, key: str) -> bytes | None:
        value: bytes | None = self._call(None, "get", group, key)
        return value

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        self._call(None, "set", group, key, value, ttl_s)

    def drop(self, group: str) -> int:
        failed = object()
        dropped = self._call(failed, "drop", group)
        if dropped is failed:
            self._remember(group)
            return 0
        return int(dropped)

    def ping(self) -> bool:
        self._down_until = 0.0
        return bool(self._call(False, "ping"))

    @property
    def pending_invalidations(self) -> int:
        return len(self._pending)
