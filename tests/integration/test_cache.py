from __future__ import annotations

import threading
from pathlib import Path

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
    cache._client.scan_iter = lambda *a, **k: calls.append("scan") or scan(*a, **k)
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
        platform.cache.set("rec:1", "x", b"v", ttl_s=60)
        assert rate_limiter(settings, per_minute=5).hit("client-a").allowed
    finally:
        platform.close()
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).scan_iter(redis_namespace + "*")}
    assert keys == {f"{redis_namespace}rec:1", f"{redis_namespace}ratelimit:client-a"}
