"""A live `bentoml serve` on a free port, called over HTTP: start, recommend, rate, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from recolab.adapters.runtime.security import issue_token
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.config import PROJECT_ROOT
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.e2e

SECRET = "e2e-secret-0123456789-abcdefghijklmnopqr"
STARTUP_TIMEOUT_S = 180  # bentoml, mlflow and torch imports on two busy cores
GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _load(db_url: str) -> None:
    movies = pd.DataFrame(
        {
            "movie_id": list(range(1, 41)),
            "title": [f"Movie {i}" for i in range(1, 41)],
            "year": pd.array([1980 + i for i in range(40)], dtype="Int64"),
            "genres": [f"{GENRES[i % 5]}|{GENRES[(i + 2) % 5]}" for i in range(40)],
        }
    )
    rows = [(u, m, float(1 + (u * m) % 5)) for u in range(1, 6) for m in range(u, 40, u + 1)]
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"])
    ratings["timestamp"] = [1_100_000_000 + i for i in range(len(ratings))]
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        load_dataset(engine, ratings, movies, dataset="e2e", source="test")
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("live")
    db_url = f"sqlite:///{root / 'recolab.db'}"
    _load(db_url)
    port = _free_port()
    env = {
        **os.environ,
        "RECOLAB_ENV": "test",
        "RECOLAB_JWT_SECRET": SECRET,
        "RECOLAB_DATABASE_URL": db_url,
        "RECOLAB_DATA_DIR": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    env.pop("RECOLAB_REDIS_URL", None)
    log = root / "serve.log"
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:RecoLab"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(PROJECT_ROOT)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # /status answers once the service's __init__ ran (BentoML's /livez answers earlier).
        wait_for(f"{url}/status", process, log, STARTUP_TIMEOUT_S, ok=(200, 503))
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the group this test started: server and workers
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode is not None


def _auth(user_id: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(user_id, 'user', SECRET, 600)}"}


def _recommend(url: str, user_id: int) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/recommend", json={"user_id": user_id, "n": 5}, headers=_auth(user_id), timeout=10
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_live_recommend_rate_recommend(server: str) -> None:
    assert httpx.get(f"{server}/livez", timeout=5).status_code == 200
    status = httpx.get(f"{server}/status", timeout=5).json()
    assert status["database"]["ok"] is True
    if not status["ready"]:  # no champion registered in this store: readiness says why
        assert httpx.get(f"{server}/readyz", timeout=5).status_code == 503
        assert any("champion" in reason for reason in status["reasons"])

    first = _recommend(server, 2)
    assert first["user_id"] == 2 and len(first["items"]) == 5
    top = first["items"][0]["movie_id"]
    assert _recommend(server, 2)["cached"] is True

    rated = httpx.post(
        f"{server}/ratings",
        json={"user_id": 2, "movie_id": top, "score": 5.0},
        headers=_auth(2),
        timeout=10,
    )
    assert rated.status_code == 201, rated.text
    after = _recommend(server, 2)
    assert after["cached"] is False
    assert top not in {item["movie_id"] for item in after["items"]}

    unauthorised = httpx.post(f"{server}/recommend", json={"user_id": 2}, timeout=10)
    assert unauthorised.status_code == 401 and unauthorised.json()["error"]
    metrics = httpx.get(f"{server}/metrics", timeout=10).text
    assert "recolab_recommendations_total" in metrics  # through the multiprocess registry
    assert "recolab_recommendation_cache_total" in metrics
