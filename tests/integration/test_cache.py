from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from recolab.adapters.runtime.cache import InMemoryCache, RedisCache, ResilientCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_in_memory_ttl_lru_and_group_drop() -> None:
    clock = Clock()
    cache = InMemoryCache(max_entries=3, clock=clock)
    cache.set("rec:1", "a", b"1", ttl_s=10)
    cache.set("rec:1", "b", b"2", ttl_s=10)
    cache.set("rec:11", "a", b"3", ttl_s=10)
    assert cache.get("rec:1", "a") == b"1"  # now most recently used
    cache.set("rec:2", "a", b"4", ttl_s=10)  # evicts the least recently used: rec:1 b
    assert cache.get("rec:1", "b") is None
    assert cache.drop("rec:1") == 1  # the evicted entry left its group too
    assert cache.get("rec:1", "a") is None
    assert cache.get("rec:11", "a") == b"3"  # another group, whatever its name's prefix
    clock.now = 10.0
    assert cache.get("rec:11", "a") is None
    assert cache.drop("rec:11") == 0  # expired entries leave their group
    cache.set("zero", "x", b"x", ttl_s=0)
    assert cache.get("zero", "x") is None
    assert cache.drop("never") == 0
    assert cache.ping()


def test_in_memory_is_thread_safe() -> None:
    cache = InMemoryCache(max_entries=50)

    def work(n: int) -> None:
        for i in range(500):
            cache.set(f"k:{n}", str(i), b"v", 60)
            cache.get(f"k:{n}", str(i // 2))
            if i % 100 == 0:
                cache.drop(f"k:{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache._data) <= 50
    assert sum(len(keys) for keys in cache._groups.values()) == len(cache._data)


@pytest.mark.redis
def test_redis_cache_round_trip_ttl_and_group_drop(redis_url: str, redis_namespace: str) -> None:
    clock = Clock()
    clock.now = 1_000_000.0
    cache = RedisCache.from_url(redis_url, namespace=redis_namespace)
    cache._clock = clock
    assert cache.ping()
    cache.set("rec:1", "x", b"hello", ttl_s=30)
    cache.set("rec:1", "y", b"world", ttl_s=30)
    cache.set("rec:10", "x", b"other", ttl_s=30)
    cache.set("rec:1*", "x", b"glob", ttl_s=30)  # a group name with a glob character
    assert cache.get("rec:1", "x") == b"hello"
    assert cache.drop("rec:1") == 2
    assert cache.get("rec:1", "y") is None
    assert cache.get("rec:10", "x") == b"other"
    assert cache.drop("rec:1*") == 1
    assert cache.get("rec:10", "x") == b"other"
    ttl = cache._client.ttl(redis_namespace + "rec:10")
    assert 0 < ttl <= 30
    clock.now += 30  # an entry past its own TTL is a miss even before its hash expires
    assert cache.get("rec:10", "x") is None
    cache.set("rec:10", "z", b"new", ttl_s=30)
    cache.clear()
    assert cache.get("rec:10", "z") is None


@pytest.mark.redis
def test_redis_drop_is_one_step_whatever_the_keyspace(redis_url: str, redis_namespace: str) -> None:
    cache = RedisCache.from_url(redis_url, namespace=redis_namespace)
    for user in range(2_000):
        cache.set(f"rec:{user}", "k", b"v", ttl_s=60)
    calls: list[str] = []
    scan = cache._client.scan_iter

    def counting_scan(*args: Any, **kwargs: Any) -> Any:
        calls.append("scan")
        return scan(*args, **kwargs)

    cache._client.scan_iter = counting_scan
    assert cache.drop("rec:7") == 1
    assert calls == [] and cache.get("rec:8", "k") == b"v"


class Exploding:
    def __init__(self) -> None:
        self.fail = True
        self.data: dict[tuple[str, str], bytes] = {}

    def get(self, group: str, key: str) -> bytes | None:
        if self.fail:
            raise ConnectionError("down")
        return self.data.get((group, key))

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        if self.fail:
            raise ConnectionError("down")
        self.data[(group, key)] = value

    def lookup(self, group: str, key: str) -> tuple[bytes | None, object | None]:
        return self.get(group, key), 0

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        return [self.get(group, key) for key in keys], 0

    def store(self, group: str, key: str, value: bytes, ttl_s: int, generation: object) -> bool:
        self.set(group, key, value, ttl_s)
        return True

    def drop(self, group: str) -> int:
        if self.fail:
            raise ConnectionError("down")
        return 0

    def ping(self) -> bool:
        if self.fail:
            raise ConnectionError("down")
        return True


def test_resilient_cache_degrades_and_recovers() -> None:
    inner = Exploding()
    cache = ResilientCache(inner, retry_after_s=60)
    assert cache.get("g", "a") is None and not cache.healthy
    cache.set("g", "a", b"1", 10)  # swallowed, and not even tried during the back-off
    assert cache.drop("g") == 0
    assert not cache.ping()
    inner.fail = False
    assert cache.ping() and cache.healthy  # ping always retries the backend
    cache.set("g", "a", b"1", 10)
    assert cache.get("g", "a") == b"1"


@pytest.mark.redis
def test_resilient_redis_when_server_is_unreachable() -> None:
    # A port nothing listens on: the real client fails fast and the wrapper degrades.
    cache = ResilientCache(RedisCache.from_url("redis://127.0.0.1:1/0"))
    assert cache.get("g", "x") is None
    assert not cache.healthy


def test_platform_cache_and_rate_limits_use_the_configured_namespace(
    redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    import redis

    from recolab.adapters.runtime.security import rate_limiter
    from recolab.bootstrap import bootstrap
    from recolab.config import Settings

    settings = Settings(data_dir=tmp_path, redis_url=redis_url, redis_namespace=redis_namespace)
    platform = bootstrap(settings, migrate=False)
    try:
        _, generation = platform.cache.lookup("rec:1", "x")
        assert platform.cache.store("rec:1", "x", b"v", 60, generation)
        assert rate_limiter(settings, per_minute=5).hit("client-a").allowed
    finally:
        platform.close()
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).scan_iter(redis_namespace + "*")}
    assert keys == {f"{redis_namespace}rec:1", f"{redis_namespace}ratelimit:client-a"}


# ---- generations: a store is refused when the group was dropped since its lookup


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> InMemoryCache | RedisCache:
    if request.param == "in-process":
        return InMemoryCache()
    url: str = request.getfixturevalue("redis_url")
    return RedisCache.from_url(url, namespace=request.getfixturevalue("redis_namespace"))


def test_store_is_a_compare_and_set_on_the_groups_generation(
    backend: InMemoryCache | RedisCache,
) -> None:
    value, generation = backend.lookup("rec:1", "k")
    assert value is None and generation is not None
    assert backend.store("rec:1", "k", b"v1", 60, generation)
    assert backend.lookup("rec:1", "k") == (b"v1", generation)  # a store moves nothing on
    assert backend.store("rec:1", "k2", b"w", 60, generation)  # nor does a second one

    _, before = backend.lookup("rec:1", "k")
    assert backend.drop("rec:1") == 2  # the entries only, not the generation
    assert not backend.store("rec:1", "k", b"stale", 60, before)
    value, after = backend.lookup("rec:1", "k")
    assert value is None and after != before
    assert backend.get("rec:1", "k") is None
    assert backend.store("rec:1", "k", b"fresh", 60, after)
    assert backend.get("rec:1", "k") == b"fresh"

    assert backend.drop("rec:2") == 0  # a group with no entries still moves on
    assert not backend.store("rec:2", "k", b"x", 60, generation)
    _, other = backend.lookup("rec:3", "k")  # other groups are untouched by those drops
    assert backend.store("rec:3", "k", b"y", 60, other)
    assert not backend.store("rec:4", "k", b"z", 0, backend.lookup("rec:4", "k")[1])


def test_lookup_many_reads_entries_in_order_with_the_same_generation(
    backend: InMemoryCache | RedisCache,
) -> None:
    _, generation = backend.lookup("rec:1", "a")
    assert backend.store("rec:1", "a", b"A", 60, generation)
    assert backend.store("rec:1", "c", b"C", 60, generation)
    assert backend.lookup_many("rec:1", ["c", "b", "a"]) == ([b"C", None, b"A"], generation)
    backend.drop("rec:1")
    values, after = backend.lookup_many("rec:1", ("a", "c"))
    assert values == [None, None] and after != generation
    assert not backend.store("rec:1", "a", b"stale", 60, generation)


def test_in_memory_generations_are_bounded_and_never_match_again() -> None:
    cache = InMemoryCache(max_generations=2)
    _, token = cache.lookup("a", "k")
    cache.drop("a")
    cache.drop("b")
    cache.drop("c")  # "a" is forgotten: it reads as the floor, which passed its drop
    assert len(cache._generations) == 2
    assert not cache.store("a", "k", b"stale", 60, token)
    _, fresh = cache.lookup("a", "k")
    assert cache.store("a", "k", b"v", 60, fresh)
    _, before_clear = cache.lookup("d", "k")
    cache.clear()
    assert not cache.store("d", "k", b"stale", 60, before_clear)


@pytest.mark.redis
def test_redis_lookup_is_one_command_and_generations_outlive_entries(
    redis_url: str, redis_namespace: str
) -> None:
    cache = RedisCache.from_url(redis_url, namespace=redis_namespace)
    cache.set("rec:1", "k", b"v", ttl_s=30)
    commands: list[object] = []
    execute = cache._client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        commands.append(args[0])
        return execute(*args, **kwargs)

    cache._client.execute_command = counting
    assert cache.lookup("rec:1", "k")[0] == b"v"
    assert commands == ["HMGET"]  # the cached path costs one round trip, as `get` did
    assert cache.lookup_many("rec:1", ["k", "profile"])[0] == [b"v", None]
    assert commands == ["HMGET", "HMGET"]  # an answer and a profile: one round trip too
    cache._client.execute_command = execute

    cache.drop("rec:1")
    name = redis_namespace + "rec:1"
    assert 30 < cache._client.ttl(name) <= 3600  # the generation lives past the entries
    _, generation = cache.lookup("rec:1", "k")
    assert cache.store("rec:1", "k", b"v", 10, generation)
    assert cache._client.ttl(name) > 30  # an entry extends a group's life, never shortens it


def test_resilient_cache_stores_nothing_across_an_outage() -> None:
    inner = Exploding()
    inner.fail = False
    cache = ResilientCache(inner, retry_after_s=0.0)
    value, token = cache.lookup("g", "a")
    assert value is None and token is not None
    inner.fail = True
    assert cache.lookup("g", "b") == (None, None)  # down: unknown, so nothing is stored
    assert cache.lookup_many("g", ["a", "b"]) == ([None, None], None)
    assert not cache.store("g", "a", b"1", 10, None)
    inner.fail = False
    # A drop missed during the outage may not have reached the backend's generation.
    assert not cache.store("g", "a", b"1", 10, token)
    _, after = cache.lookup("g", "a")
    assert cache.store("g", "a", b"1", 10, after)
    assert inner.data[("g", "a")] == b"1"
