"""The service under change and failure, in-process through BentoML's own ASGI app.

- the `champion` alias moves while client threads hammer /recommend: no request fails and
  the answers switch to the new model version (the service polls the registry);
- a Redis of the test's own is stopped mid-test: recommendations still answer (uncached),
  /status reports the cache down, and everything comes back when Redis does, including
  the invalidations that a rating during the outage could not make.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch

from recolab.adapters.runtime.cache import InMemoryCache, ResilientCache
from tests.integration.test_service_inprocess import FakeScorer, _serve, make_workspace, token

POLL_S = 0.1
MODEL = "recolab-resilience-test"


def _workspace(root: Path, **serving: object) -> dict[str, str]:
    knobs = {"rate_limit_per_minute": 1_000_000, "cache_ttl_s": 600, **serving}
    return {**make_workspace(root, **knobs), "RECOLAB_MODEL_NAME": MODEL}


def _register(tracking_uri: str, source: str, versions: int) -> mlflow.MlflowClient:
    registry = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    registry.create_registered_model(MODEL)
    for _ in range(versions):
        registry.create_model_version(MODEL, source=source)
    registry.set_registered_model_alias(MODEL, "champion", "1")
    return registry


class SlowLoadingScorer(FakeScorer):
    """Loading takes a while, as a real model's download does: traffic goes on meanwhile."""

    def __init__(self, version: str) -> None:
        time.sleep(0.3)
        super().__init__(version)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start the service over a workspace; `served(env)` yields a client (one per test)."""
    import recolab.adapters.mlflow.model_format as scorer_module

    monkeypatch.setattr(scorer_module, "load_scorer", lambda _u, _t, v: SlowLoadingScorer(v))

    @contextmanager
    def start(env: dict[str, str]) -> Iterator[Any]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield from _serve()

    return start


# ---- hot swap


def test_moving_the_champion_during_traffic_loses_no_request(tmp_path: Path, served: Any) -> None:
    env = _workspace(tmp_path, champion_poll_interval_s=POLL_S)
    registry = _register(env["MLFLOW_TRACKING_URI"], str(tmp_path), versions=2)
    answers: dict[int, list[tuple[int, str | None]]] = {}
    stop = threading.Event()
    swapped_at: list[float] = []
    errors: list[BaseException] = []

    with served(env) as client:
        assert client.get("/status").json()["model"]["version"] == "1"
        # The service sized torch's pool at start-up. OpenMP keeps a thread count per thread:
        # a thread that used torch before keeps its own, new (request) threads get the new one.
        seen_threads: list[int] = []
        probe = threading.Thread(target=lambda: seen_threads.append(torch.get_num_threads()))
        probe.start()
        probe.join()
        assert seen_threads == [1]

        def hammer(user_id: int) -> None:
            seen = answers.setdefault(user_id, [])
            headers = token(user_id)
            body = {"user_id": user_id, "n": 5, "force_refresh": user_id % 2 == 0}
            try:
                while not stop.is_set():
                    response = client.post("/recommend", json=body, headers=headers)
                    version = response.json().get("model_version") if response.is_success else None
                    seen.append((response.status_code, version))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=hammer, args=(user,)) for user in (1, 2, 3, 4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            registry.set_registered_model_alias(MODEL, "champion", "2")
            swapped_at.append(time.monotonic())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # every client has seen the new model
                if all(any(v == "2" for _, v in seen) for seen in answers.values()):
                    break
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        status = client.get("/status").json()

    assert not errors, errors
    assert status["model"]["version"] == "2" and status["ready"] is True
    assert set(answers) == {1, 2, 3, 4}
    for user_id, seen in answers.items():
        codes = {code for code, _ in seen}
        assert codes == {200}, f"user {user_id}: {sorted(codes)}"
        versions = [v for _, v in seen]
        assert versions[0] == "1" and versions[-1] == "2", f"user {user_id}: {versions}"
        first_new = versions.index("2")
        assert set(versions[first_new:]) == {"2"}, f"user {user_id} went back to v1"
    total = sum(len(seen) for seen in answers.values())
    assert total >= 20, f"only {total} requests during the test"


# ---- Redis outage


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OwnRedis:
    """A redis-server of this test's own on a free port (never the shared one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _wait_for(check: Any, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _recommend(client: Any, user_id: int, **body: Any) -> tuple[int, dict[str, Any]]:
    response = client.post("/recommend", json={"user_id": user_id, **body}, headers=token(user_id))
    return response.status_code, response.json()


@pytest.mark.redis
def test_redis_stopped_mid_test_degrades_and_recovers(
    tmp_path: Path, served: Any, own_redis: OwnRedis
) -> None:
    env = _workspace(tmp_path, champion_poll_interval_s=3600)
    _register(env["MLFLOW_TRACKING_URI"], str(tmp_path), versions=1)
    env["RECOLAB_REDIS_URL"] = own_redis.url
    with served(env) as client:
        status = client.get("/status").json()
        assert status["cache"] == {"ok": True, "backend": "redis", "error": None}
        code, first = _recommend(client, 3, n=5)
        assert code == 200 and first["cached"] is False
        assert _recommend(client, 3, n=5)[1]["cached"] is True
        top = first["items"][0]["movie_id"]

        own_redis.stop()
        started = time.monotonic()
        for _ in range(5):
            code, during = _recommend(client, 3, n=5)
            assert code == 200, during
            assert during["cached"] is False and during["items"]
        assert time.monotonic() - started < 10  # a dead cache costs no long timeouts
        down = client.get("/status")
        report = down.json()
        assert report["cache"]["ok"] is False and report["cache"]["backend"] == "redis"
        assert "uncached" in report["cache"]["error"]
        assert report["ready"] is True and down.status_code == 200  # degraded, still serving
        assert client.get("/readyz").status_code == 200
        # A rating during the outage: stored, but its cache invalidation cannot reach Redis.
        rating = client.post(
            "/ratings", json={"user_id": 3, "movie_id": top, "score": 4.0}, headers=token(3)
        )
        assert rating.status_code == 201, rating.text
        assert client.get("/movies/1", headers=token("ops", "admin")).status_code == 200

        own_redis.start()  # same port, empty
        assert _wait_for(lambda: client.get("/status").json()["cache"]["ok"])
        code, after = _recommend(client, 3, n=5)
        assert code == 200 and after["cached"] is False
        assert top not in {item["movie_id"] for item in after["items"]}
        assert _recommend(client, 3, n=5)[1]["cached"] is True  # caching again


@pytest.mark.redis
def test_a_rating_during_a_frozen_redis_still_invalidates_afterwards(
    tmp_path: Path, served: Any, own_redis: OwnRedis
) -> None:
    """Redis hangs (SIGSTOP) and comes back with its data: the entry cached before the
    outage must not be served after it, since a rating during the outage made it stale."""
    env = _workspace(tmp_path, champion_poll_interval_s=3600)
    _register(env["MLFLOW_TRACKING_URI"], str(tmp_path), versions=1)
    env["RECOLAB_REDIS_URL"] = own_redis.url
    assert own_redis.process is not None
    with served(env) as client:
        code, first = _recommend(client, 3, n=5)
        assert code == 200 and _recommend(client, 3, n=5)[1]["cached"] is True
        top = first["items"][0]["movie_id"]
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            code, during = _recommend(client, 3, n=5)  # times out on the cache, then answers
            assert code == 200 and during["cached"] is False
            rating = client.post(
                "/ratings", json={"user_id": 3, "movie_id": top, "score": 4.0}, headers=token(3)
            )
            assert rating.status_code == 201, rating.text
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        assert _wait_for(lambda: client.get("/status").json()["cache"]["ok"])
        code, after = _recommend(client, 3, n=5)
        assert code == 200 and after["cached"] is False, after
        assert top not in {item["movie_id"] for item in after["items"]}


class FlakyCache(InMemoryCache):
    """An in-memory backend that can be switched off, to test the wrapper alone."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("down")

    def get(self, group: str, key: str) -> bytes | None:
        self._check()
        return super().get(group, key)

    def set(self, group: str, key: str, value: bytes, ttl_s: int) -> None:
        self._check()
        super().set(group, key, value, ttl_s)

    def lookup(self, group: str, key: str) -> tuple[bytes | None, object | None]:
        self._check()
        return super().lookup(group, key)

    def lookup_many(
        self, group: str, keys: Sequence[str]
    ) -> tuple[list[bytes | None], object | None]:
        self._check()
        return super().lookup_many(group, keys)

    def store(self, group: str, key: str, value: bytes, ttl_s: int, generation: object) -> bool:
        self._check()
        return super().store(group, key, value, ttl_s, generation)

    def drop(self, group: str) -> int:
        self._check()
        return super().drop(group)

    def clear(self) -> None:
        self._check()
        super().clear()

    def ping(self) -> bool:
        self._check()
        return True


def test_invalidations_missed_during_an_outage_are_replayed() -> None:
    inner = FlakyCache()
    cache = ResilientCache(inner, retry_after_s=0.0)
    cache.set("rec:3", "a", b"stale", 600)
    cache.set("rec:4", "a", b"kept", 600)
    inner.down = True
    assert cache.drop("rec:3") == 0 and cache.healthy is False
    assert cache.get("rec:3", "a") is None and cache.pending_invalidations == 1
    inner.down = False  # the backend survived the outage with the stale entry
    assert cache.get("rec:3", "a") is None  # replayed before the first call that reaches it
    assert cache.get("rec:4", "a") == b"kept" and cache.pending_invalidations == 0


def test_too_many_missed_invalidations_drop_the_whole_namespace() -> None:
    inner = FlakyCache()
    cache = ResilientCache(inner, retry_after_s=0.0, max_pending=2)
    for user in (1, 2, 3, 4):
        cache.set(f"rec:{user}", "a", b"x", 600)
    inner.down = True
    for user in (1, 2, 3):
        cache.drop(f"rec:{user}")
    inner.down = False
    assert cache.ping() and cache.pending_invalidations == 0
    # Past max_pending the wrapper forgot which groups: every group is cleared.
    assert [cache.get(f"rec:{user}", "a") for user in (1, 2, 3, 4)] == [None] * 4
