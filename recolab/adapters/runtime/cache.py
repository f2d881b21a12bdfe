"""Caches implementing the domain's `Cache` port: in-process TTL (default) and Redis.

Entries live in groups (the recommender uses one per user) so that a rating drops all of
that user's entries in one step, however many entries the cache holds: Redis keeps a
group as one hash and drops it with one UNLINK, where matching keys by prefix meant a
SCAN over the whole keyspace on every rating.

Each group also has a generation, moved on by every drop: `lookup` returns it with the
entry, and `store` writes only while it is unchanged (compare-and-set), so an answer built
from ratings read before a rating's drop is never stored after that drop.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

_EXPIRY = struct.Struct(">q")  # milliseconds since the epoch, before each Redis value


class InMemoryCache:
    """A thread-safe TTL cache with LRU eviction, for one process.

    Generations are counted per group under the same lock as the entries. The generations
    of the `max_generations` most recently dropped groups are kept; every other group reads
    as `_floor`, the newest generation forgotten, so a token taken before a forgotten drop
    can never match again.
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        max_generations: int | None = None,
    ):
        self._data: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._groups: dict[str, set[str]] = {}
        self._generations: OrderedDict[str, int] = OrderedDict()
        self._counter = 0  # generations come from one counter: never reused
        self._floor = 0
        self._max_generations = max_entries if max_generations is None else max_generations
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock

    def get(self, group: str, key: str) -> bytes | None:
        with self._lock:
            return self._get(group, key)

    def lookup(self, group: str, key: str) -> tuple[bytes | None, object | None]:
        with self._lock:
            return self._get(group, key), self._generations.get(group, self._floor)

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        with self._lock:
            values = [self._get(group, key) for key in keys]
            return values, self._generations.get(group, self._floor)

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        """Store unconditionally (tests and warm-ups; writers racing drops use `store`)."""
        with self._lock:
            self._set(group, key, value, ttl_s)

    def store(self, group: str, key: str, value: bytes, ttl_s: int, generation: object) -> bool:
        with self._lock:
            if self._generations.get(group, self._floor) != generation:
                return False
            return self._set(group, key, value, ttl_s)

    def drop(self, group: str) -> int:
        with self._lock:
            keys = self._groups.pop(group, set())
            for key in keys:
                self._data.pop((group, key), None)
            self._counter += 1
            self._generations[group] = self._counter
            self._generations.move_to_end(group)
            while len(self._generations) > self._max_generations:
                # Oldest first, so the floor only rises.
                self._floor = self._generations.popitem(last=False)[1]
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._groups.clear()
            self._generations.clear()
            self._counter += 1
            self._floor = self._counter  # every token taken before no longer matches

    def ping(self) -> bool:
        return True

    def _get(self, group: str, key: str) -> bytes | None:
        entry = self._data.get((group, key))
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            self._forget((group, key))
            return None
        self._data.move_to_end((group, key))
        return value

    def _set(self, group: str, key: str, value: bytes, ttl_s: int) -> bool:
        if ttl_s <= 0:
            return False
        self._data[(group, key)] = (self._clock() + ttl_s, value)
        self._data.move_to_end((group, key))
        self._groups.setdefault(group, set()).add(key)
        while len(self._data) > self._max:
            self._forget(next(iter(self._data)))
        return True

    def _forget(self, entry: tuple[str, str]) -> None:
        del self._data[entry]
        keys = self._groups.get(entry[0])
        if keys is not None:
            keys.discard(entry[1])
            if not keys:
                del self._groups[entry[0]]


# A group's generation is a field of its hash (one key per group: the entry and the
# generation come back in one HMGET, and scripts touch one key). Entry keys never start
# with NUL.
_GENERATION = b"\x00generation"
GENERATION_TTL_S = 3600  # how long a dropped group remembers its generation

# Drop the entries, keep the generation moved on by one. KEYS[1] group; ARGV generation
# field, its TTL in ms.
_DROP = """
local n = redis.call('HLEN', KEYS[1])
local g = redis.call('HGET', KEYS[1], ARGV[1])
if g then n = n - 1 end
redis.call('UNLINK', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], tostring((tonumber(g) or 0) + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
"""
# Store an entry if the generation is still ARGV[2] (or always, when ARGV[5] is '0'); the
# hash's expiry is only ever extended, so an entry never shortens a generation's life.
# ARGV: generation field, expected generation, key, value, check, TTL in ms.
_STORE = """
if ARGV[5] == '1' and (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
local ttl = tonumber(ARGV[6])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


class RedisCache:
    """Redis-backed cache: one hash per group, each value prefixed with its expiry.

    Keys are namespaced so several apps can share a server. The hash holds the group's
    generation too and lives as long as its newest entry or `generation_ttl_s` after its
    last drop, whichever is later; entries past their own TTL read as misses until then.
    A generation forgotten with its hash restarts, so a `store` must come less than
    `generation_ttl_s` after its `lookup` (a recommendation takes milliseconds).
    """

    def __init__(
        self,
        client: Any,
        namespace: str = "recolab:",
        clock: Callable[[], float] = time.time,
        generation_ttl_s: int = GENERATION_TTL_S,
    ) -> None:
        self._client = client
        self._ns = namespace
        self._clock = clock
        self._generation_ttl_ms = generation_ttl_s * 1000
        self._drop = client.register_script(_DROP)  # EVALSHA: the script is sent once
        self._store = client.register_script(_STORE)

    @classmethod
    def from_url(cls, url: str, namespace: str = "recolab:") -> RedisCache:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        return cls(client, namespace)

    def get(self, group: str, key: str) -> bytes | None:
        return self._unpack(self._client.hget(self._ns + group, key))

    def lookup(self, group: str, key: str) -> tuple[bytes | None, object | None]:
        stored, generation = self._client.hmget(self._ns + group, [key, _GENERATION])
        return self._unpack(stored), bytes(generation or b"")

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        *stored, generation = self._client.hmget(self._ns + group, [*keys, _GENERATION])
        return [self._unpack(value) for value in stored], bytes(generation or b"")

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        """Store unconditionally (tests and warm-ups; writers racing drops use `store`)."""
        self._write(group, key, value, ttl_s, None)

    def store(self, group: str, key: str, value: bytes, ttl_s: int, generation: object) -> bool:
        if not isinstance(generation, bytes):
            return False
        return self._write(group, key, value, ttl_s, generation)

    def drop(self, group: str) -> int:
        return int(self._drop(keys=[self._ns + group], args=[_GENERATION, self._generation_ttl_ms]))

    def _write(
        self, group: str, key: str, value: bytes, ttl_s: int, generation: bytes | None
    ) -> bool:
        if ttl_s <= 0:
            return False
        expires_ms = int(self._clock() * 1000) + ttl_s * 1000
        args = [
            _GENERATION,
            generation or b"",
            key,
            _EXPIRY.pack(expires_ms) + value,
            "0" if generation is None else "1",
            ttl_s * 1000,
        ]
        return bool(self._store(keys=[self._ns + group], args=args))

    def _unpack(self, stored: bytes | None) -> bytes | None:
        if stored is None or len(stored) < _EXPIRY.size:
            return None
        (expires_ms,) = _EXPIRY.unpack_from(stored)
        if expires_ms <= self._clock() * 1000:
            return None
        return bytes(stored[_EXPIRY.size :])

    def clear(self) -> None:
        """Drop every group of this namespace (SCAN, not KEYS: never blocks the server).

        Generations go too: a `store` in flight may match a restarted one, so clear only
        when none is (ResilientCache clears after an outage, which voids its tokens)."""
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

    Generations (see `Cache`) are unknown while the backend is down, so nothing is stored
    then; and a generation taken before a failure is refused after it, because the drops
    missed meanwhile (or the clear that replaces them) may not have moved it on.
    """

    def __init__(self, inner: Any, retry_after_s: float = 5.0, max_pending: int = 10_000) -> None:
        self._inner = inner
        self._retry_after = retry_after_s
        self._down_until = 0.0
        self._pending: set[Any] = set()
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._failures = 0  # part of every generation token handed out
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
            self._failures += 1
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

    def lookup(self, group: str, key: str) -> tuple[bytes | None, object | None]:
        failures = self._failures
        value, generation = self._call((None, None), "lookup", group, key)
        if generation is None:
            return value, None
        return value, (failures, generation)

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        failures = self._failures
        missed: list[bytes | None] = [None] * len(keys)
        values, generation = self._call((missed, None), "lookup_many", group, keys)
        if generation is None:
            return values, None
        return values, (failures, generation)

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        self._call(None, "set", group, key, value, ttl_s)

    def store(self, group: str, key: str, value: bytes, ttl_s: int, generation: object) -> bool:
        if not isinstance(generation, tuple) or generation[0] != self._failures:
            return False
        return bool(self._call(False, "store", group, key, value, ttl_s, generation[1]))

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
