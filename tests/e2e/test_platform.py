"""The whole platform, live: the `pipeline` flow on the demo data against PostgreSQL, Redis
and an MLflow tracking server registers a champion; `bentoml serve` recommends from it by
user tier; a rating invalidates the cache; a better retrain is served without a restart and
a worse one stays a challenger.

The tests run in file order and share one platform (module fixtures): each step builds on
the previous one, as a person would use RecoLab.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import mlflow
import psycopg
import pytest
import redis

from recolab.adapters.runtime.security import issue_token
from tests.e2e.conftest import (
    CHAMPION_POLL_INTERVAL_S,
    SECRET,
    LiveService,
    MlflowServer,
    Stack,
    start_service,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

MODEL = "recolab-neumf"
# A small demo with every tier in it (200 users: ~20 power users, ~80 casual).
DEMO = ["pipeline.demo.n_users=200", "pipeline.demo.n_movies=300", "pipeline.demo.n_ratings=8000"]
# Promotion needs a candidate that beats popularity, and then the champion on the same test
# rows. Batches of 128 make an epoch of this demo's ~6,000 training ratings ~47 steps instead
# of 3, so a few epochs learn its planted taste (protocol B nDCG@10 here, measured offline:
# popularity 0.136; 1 epoch 0.118, 3 epochs 0.219, 6 epochs 0.254). No refit on all
# ratings: a champion refitted on the whole snapshot has seen every test row of a retrain on
# that snapshot, so none would be left to compare the two on (recolab.ml.rescoring).
FAST = ["batch_size=128", "refit=false"]
FIRST = [*FAST, "max_epochs=3"]  # trained: beats popularity, so it becomes the champion
BETTER = [*FAST, "max_epochs=6"]
WORSE = [*FAST, "max_epochs=1", "seed=7"]  # barely trained: beats neither
SWAP_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def pipeline_run(mlflow_server: MlflowServer, prefect_api: None, stack: Stack) -> dict[str, Any]:
    """The `pipeline` flow, as `recolab pipeline` runs it, on the live stack."""
    from flows.pipeline import pipeline

    result: dict[str, Any] = pipeline(dataset="demo", overrides=[*DEMO, *FIRST])
    return result


@pytest.fixture(scope="module")
def service(stack: Stack, pipeline_run: dict[str, Any]) -> Iterator[LiveService]:
    yield from start_service(stack)


@pytest.fixture(scope="module")
def users(stack: Stack, pipeline_run: dict[str, Any]) -> dict[str, int]:
    """A power user (> 100 ratings) and a casual one (6-20), from the database."""
    with psycopg.connect(stack.database_url) as conn:
        power = conn.execute(
            "SELECT id FROM users WHERE n_ratings > 100 ORDER BY n_ratings DESC, id LIMIT 1"
        ).fetchone()
        casual = conn.execute(  # room to rate one more and stay casual
            "SELECT id FROM users WHERE n_ratings BETWEEN 8 AND 15 ORDER BY id LIMIT 1"
        ).fetchone()
    assert power and casual, "the demo data should have power and casual users"
    chosen = {"power_user": int(power[0]), "casual": int(casual[0])}
    cache = redis.Redis.from_url(stack.redis_url)
    for user in chosen.values():  # nothing left over from an interrupted earlier run
        cache.delete(f"recolab:rec:{user}")
    return chosen


ADMIN = "e2e-admin"
_TOUCHED: set[int] = set()  # users this module called the service for


@pytest.fixture(scope="module", autouse=True)
def _clean_redis(e2e_redis_url: str) -> Iterator[None]:
    """Remove the cache and rate-limit keys of the users this module touched."""
    yield
    client = redis.Redis.from_url(e2e_redis_url)
    for subject in {*map(str, _TOUCHED), ADMIN}:
        for pattern in (f"recolab:rec:{subject}", f"recolab:ratelimit:sub:{subject}"):
            keys = list(client.scan_iter(match=pattern))
            if keys:
                client.delete(*keys)


def _auth(user_id: int) -> dict[str, str]:
    _TOUCHED.add(user_id)
    return {"Authorization": f"Bearer {issue_token(user_id, 'user', SECRET, 600)}"}


def _recommend(
    service: LiveService, user_id: int, headers: dict[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    response = httpx.post(
        f"{service.url}/recommend",
        json={"user_id": user_id, "n": 10, **body},
        headers=headers or _auth(user_id),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _cache_keys(cache: redis.Redis, user_id: int) -> list[bytes]:
    """The user's cached answers: the fields of their group's hash (but its generation)."""
    return [k for k in cache.hkeys(f"recolab:rec:{user_id}") if not k.startswith(b"\x00")]


def _rated(stack: Stack, user_id: int) -> set[int]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("SELECT movie_id FROM ratings WHERE user_id = %s", (user_id,))
        return {int(row[0]) for row in rows}


def _client(stack: Stack) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)


def _champion(stack: Stack) -> str:
    return str(_client(stack).get_model_version_by_alias(MODEL, "champion").version)


def _served_version(service: LiveService) -> str | None:
    version: str | None = httpx.get(f"{service.url}/status", timeout=10).json()["model"]["version"]
    return version


def _retrain(stack: Stack, snapshot: str, overrides: list[str]) -> dict[str, Any]:
    from flows.train import train

    result: dict[str, Any] = train(dataset="demo", snapshot_id=snapshot, overrides=overrides)
    return result


def test_pipeline_registers_a_champion_on_the_live_stack(
    stack: Stack, pipeline_run: dict[str, Any]
) -> None:
    assert pipeline_run["ingest"]["load"]["ratings_inserted"] == 8000, pipeline_run["ingest"]
    trained = pipeline_run["train"]
    assert trained["promoted"] and trained["version"] == "1", trained
    # a trained model, clearly ahead of "most rated first" on the demo
    metrics = trained["metrics"]
    assert metrics["ndcg@10"] > 1.2 * metrics["baseline_popularity_ndcg@10"], metrics
    assert trained["snapshot"] == pipeline_run["snapshot"]
    assert trained["run_url"].startswith(stack.tracking_uri)
    assert _champion(stack) == "1"
    # the model went through the server's artifact proxy into its destination
    assert any(p.name == "checkpoint.pt" for p in stack.artifacts.rglob("*")), stack.artifacts
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT count(*), sum(n_ratings) FROM users").fetchone()
    assert row == (200, 8000)


def test_each_tier_gets_its_strategy(
    stack: Stack, service: LiveService, users: dict[str, int]
) -> None:
    status = httpx.get(f"{service.url}/status", timeout=10).json()
    assert status["ready"], status
    assert status["model"]["version"] == "1"
    assert status["database"]["backend"] == "postgresql"
    assert status["cache"] == {"ok": True, "backend": "redis", "error": None}

    power = _recommend(service, users["power_user"], force_refresh=True)
    assert power["classification"] == "power_user"
    assert power["strategy_used"] == "collaborative_with_diversity"
    assert power["model_version"] == "1" and len(power["items"]) == 10
    assert not {i["movie_id"] for i in power["items"]} & _rated(stack, users["power_user"])

    casual = _recommend(service, users["casual"], force_refresh=True)
    assert casual["classification"] == "casual"
    assert casual["strategy_used"] == "hybrid", casual
    assert {i["source"] for i in casual["items"]} <= {"collaborative", "content_based", "hybrid"}
    assert not {i["movie_id"] for i in casual["items"]} & _rated(stack, users["casual"])

    # an operator's token from the CLI registers a new user, who gets a token of their own
    admin = subprocess.run(
        [sys.executable, "-m", "recolab.cli", "token", ADMIN, "--role", "admin"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    registered = httpx.post(
        f"{service.url}/users", headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    assert registered.status_code == 201, registered.text
    new_user = registered.json()
    _TOUCHED.add(new_user["user_id"])
    assert new_user["classification"] == "cold_start"
    cold = _recommend(
        service,
        new_user["user_id"],
        headers={"Authorization": f"Bearer {new_user['access_token']}"},
    )
    assert cold["classification"] == "cold_start"
    assert cold["strategy_used"] == "popular" and len(cold["items"]) == 10
    assert {i["source"] for i in cold["items"]} == {"popular"}


def test_a_rating_invalidates_the_cache(
    stack: Stack, service: LiveService, users: dict[str, int]
) -> None:
    user = users["casual"]
    first = _recommend(service, user, force_refresh=True)
    again = _recommend(service, user)
    assert again["cached"] is True and again["items"] == first["items"]
    cache = redis.Redis.from_url(stack.redis_url)
    assert _cache_keys(cache, user), "recommendations are cached in Redis"
    top = first["items"][0]["movie_id"]

    rated = httpx.post(
        f"{service.url}/ratings",
        json={"user_id": user, "movie_id": top, "score": 4.5},
        headers=_auth(user),
        timeout=30,
    )
    assert rated.status_code == 201, rated.text
    assert rated.json()["classification"] == "casual"
    assert _cache_keys(cache, user) == []

    after = _recommend(service, user)
    assert after["cached"] is False
    assert after["strategy_used"] == "hybrid"
    assert top not in {i["movie_id"] for i in after["items"]}
    assert top in _rated(stack, user)


def test_a_better_retrain_is_served_without_a_restart(
    stack: Stack, service: LiveService, pipeline_run: dict[str, Any], users: dict[str, int]
) -> None:
    pid = service.process.pid
    first = pipeline_run["train"]
    better = _retrain(stack, pipeline_run["snapshot"], BETTER)
    assert better["promoted"], better["reason"]
    assert better["version"] == "2" and better["previous_champion"] == "1"
    assert better["metrics"]["ndcg@10"] > first["metrics"]["ndcg@10"]
    assert _champion(stack) == "2"

    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while _served_version(service) != "2":
        assert service.alive(), service.log.read_text()[-4000:]
        assert time.monotonic() < deadline, f"service still on {_served_version(service)}"
        time.sleep(CHAMPION_POLL_INTERVAL_S / 2)
    assert service.alive() and service.process.pid == pid
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    power = _recommend(service, users["power_user"])
    assert power["model_version"] == "2" and power["cached"] is False
    assert power["strategy_used"] == "collaborative_with_diversity"


def test_a_worse_retrain_stays_a_challenger(
    stack: Stack, service: LiveService, pipeline_run: dict[str, Any]
) -> None:
    worse = _retrain(stack, pipeline_run["snapshot"], WORSE)
    assert not worse["promoted"], worse["reason"]
    assert worse["version"] == "3" and worse["previous_champion"] == "2"
    assert "does not beat" in worse["reason"]
    assert _champion(stack) == "2"
    tags = _client(stack).get_model_version(MODEL, "3").tags
    assert "does not beat" in tags["challenger"]

    time.sleep(3 * CHAMPION_POLL_INTERVAL_S)  # a few polls: the service stays where it was
    assert service.alive()
    assert _served_version(service) == "2"


def _wait_for_experiment(service: LiveService, expected: dict[str, Any] | None) -> None:
    """Until /status shows the experiment `expected` describes (None: none)."""
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while True:
        shown = httpx.get(f"{service.url}/status", timeout=10).json()["experiment"]
        if expected is None and shown is None:
            return
        if shown is not None and expected is not None and expected.items() <= shown.items():
            return
        assert service.alive(), service.log.read_text()[-4000:]
        assert time.monotonic() < deadline, f"/status shows experiment {shown}"
        time.sleep(CHAMPION_POLL_INTERVAL_S / 2)


def test_an_experiment_is_started_changed_and_stopped_without_a_restart(
    stack: Stack, service: LiveService, users: dict[str, int]
) -> None:
    from recolab.adapters.mlflow.experiments import start_experiment, stop_experiment
    from recolab.domain.experiments import Experiment

    pid, user, client = service.process.pid, users["power_user"], _client(stack)
    start_experiment(client, MODEL, Experiment("live-canary", "canary", 1.0), version="3")
    _wait_for_experiment(
        service, {"name": "live-canary", "challenger_version": "3", "running": True}
    )
    response = httpx.post(
        f"{service.url}/recommend", json={"user_id": user, "n": 10}, headers=_auth(user), timeout=30
    )
    assert response.status_code == 200, response.text
    canary = response.json()
    assert (canary["model_version"], canary["variant"], canary["experiment"]) == (
        "3",
        "challenger",
        "live-canary",
    )
    assert response.headers["X-RecoLab-Variant"] == "challenger"

    start_experiment(client, MODEL, Experiment("live-shadow", "shadow", 1.0))
    _wait_for_experiment(service, {"name": "live-shadow", "mode": "shadow", "running": True})
    shadowed = _recommend(service, user, force_refresh=True)
    assert (shadowed["model_version"], shadowed["variant"]) == ("2", "champion")
    deadline = time.monotonic() + 30  # the shadow is scored and written behind the answer
    while True:
        with psycopg.connect(stack.database_url) as conn:
            rows = conn.execute(
                "SELECT variant, model_version, count(*) FROM recommendation_history"
                " WHERE user_id = %s AND experiment = 'live-shadow' GROUP BY 1, 2 ORDER BY 1",
                (user,),
            ).fetchall()
        if len(rows) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows == [("champion", "2", 10), ("shadow", "3", 10)]

    stop_experiment(client, MODEL, drop_challenger=True)
    _wait_for_experiment(service, None)
    back = _recommend(service, user)
    assert (back["model_version"], back["variant"], back["experiment"]) == ("2", "champion", None)
    assert service.alive() and service.process.pid == pid
