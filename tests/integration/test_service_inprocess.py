"""The BentoML service in-process: every API and bad input, through BentoML's own ASGI app.

The service is built exactly as `bentoml serve` builds it (`RecoLab.to_asgi()`, whose
lifespan runs the service's `__init__`), over a temp SQLite database with a tiny dataset,
an empty MLflow registry (no champion) and settings from environment variables.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from recolab.adapters.runtime.security import (
    AuthError,
    RedisRateLimiter,
    TokenBucketLimiter,
    TokenVerifier,
    issue_token,
    local_token,
    serving_secret,
    verify,
)
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.config import DEFAULT_JWT_SECRET, ConfigError, Settings
from recolab.domain.values import MovieId, UserId
from tests.conftest import require_service

with warnings.catch_warnings():  # starlette asks for httpx2, which this stack does not have
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SECRET = "test-secret-0123456789-abcdefghijklmnop"
RATE_LIMIT = 60
AUTH_FAILURES = 30  # bad tokens per address per minute (a limit of its own)
MAX_BODY = 4096
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation"]
# user id -> number of ratings: one user per tier with ratings (cold start is registered)
TIERS = {1: 120, 2: 40, 3: 10, 4: 3}
ISSUE_FIELDS = {
    "user_id",
    "classification",
    "strategy_used",
    "model_version",
    "diversity_score",
    "cached",
    "generated_at",
    "items",
    "experiment",
    "variant",
}
ITEM_FIELDS = {"movie_id", "title", "genres", "year", "score", "rank", "source", "explanation"}


def _dataset() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = random.Random(7)
    n_movies = 150
    movies = pd.DataFrame(
        {
            "movie_id": list(range(1, n_movies + 1)),
            "title": [f"Film {i}" for i in range(1, n_movies + 1)],
            "year": pd.array([1950 + i % 70 for i in range(n_movies)], dtype="Int64"),
            "genres": [
                "|".join(sorted({GENRES[i % 8], GENRES[(i * 3 + 1) % 8]})) for i in range(n_movies)
            ],
        }
    )
    movies.loc[0, "title"] = "100% Love_Story"  # LIKE wildcards in a title
    counts = {**TIERS, **{u: rng.randint(5, 30) for u in range(5, 25)}}
    rows = []
    for user, n in counts.items():
        for movie in rng.sample(range(1, n_movies + 1), n):
            rows.append((user, movie, rng.choice([1.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0])))
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"])
    ratings["timestamp"] = [1_000_000_000 + i for i in range(len(ratings))]
    return ratings.astype({"user_id": "int64", "movie_id": "int64"}), movies


def make_workspace(root: Path, **serving: object) -> dict[str, str]:
    """A loaded SQLite database, an MLflow store and configs/serving.yaml with `serving`
    under `root`, as the environment variables that point the service at them."""
    db_url = f"sqlite:///{root / 'recolab.db'}"
    upgrade(db_url)
    engine = make_engine(db_url)
    ratings, movies = _dataset()
    load_dataset(engine, ratings, movies, dataset="tiny", source="test")
    engine.dispose()
    configs = root / "configs"
    configs.mkdir()
    (configs / "serving.yaml").write_text("".join(f"{k}: {v}\n" for k, v in serving.items()))
    return {
        "RECOLAB_ENV": "test",
        "RECOLAB_JWT_SECRET": SECRET,
        "RECOLAB_DATABASE_URL": db_url,
        "RECOLAB_DATA_DIR": str(root),
        "RECOLAB_CONFIG_DIR": str(configs),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_DO_NOT_TRACK": "true",
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A loaded database, an MLflow store and a config folder, as environment variables."""
    env = make_workspace(
        tmp_path_factory.mktemp("service"),
        rate_limit_per_minute=RATE_LIMIT,
        auth_failures_per_minute=AUTH_FAILURES,
        max_request_bytes=MAX_BODY,
        champion_poll_interval_s=3600,
        cache_ttl_s=600,
    )
    with pytest.MonkeyPatch.context() as mp:
        for key in ("RECOLAB_REDIS_URL", "RECOLAB_MODEL_NAME"):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


def _in_process_metrics() -> Any:
    """BentoML's metrics client without `bentoml serve`'s multiprocess folder.

    BentoML's own collectors go to a registry of this app's (a second app in one process
    would otherwise register them twice); /metrics shows them and the process's registry,
    where `recolab_*` metrics live.
    """
    import prometheus_client
    from bentoml._internal.server.metrics.prometheus import PrometheusClient

    class InProcess(PrometheusClient):
        def __init__(self) -> None:
            super().__init__(multiproc=False)
            self.own = prometheus_client.CollectorRegistry()

        @property
        def registry(self) -> prometheus_client.CollectorRegistry:
            return self.own

        def generate_latest(self) -> bytes:
            own = prometheus_client.generate_latest(self.own)
            return own + prometheus_client.generate_latest(prometheus_client.REGISTRY)

    return InProcess()


def _serve() -> Iterator[TestClient]:
    from bentoml._internal.configuration.containers import BentoMLContainer

    from serving.service import RecoLab, api

    previous = getattr(api.state, "runtime", None)
    with (
        BentoMLContainer.metrics_client.patch(_in_process_metrics()),
        TestClient(cast(Any, RecoLab).to_asgi(), raise_server_exceptions=False) as client,
    ):
        yield client
    api.state.runtime = previous


@pytest.fixture(scope="module")
def client(workspace: dict[str, str]) -> Iterator[TestClient]:
    yield from _serve()


def token(sub: str | int, role: str = "user", ttl: float = 86_400) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(sub, role, SECRET, ttl)}"}


ADMIN = token("ops", "admin")
OTHER_SECRET = issue_token(2, "user", "another-secret" * 3, 86_400)
EXPIRED = issue_token(2, "user", SECRET, 60, now=time.time() - 600)


def recommend(client: TestClient, user_id: int, **body: Any) -> dict[str, Any]:
    response = client.post("/recommend", json={"user_id": user_id, **body}, headers=token(user_id))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def rated(user_id: int) -> set[int]:
    ratings, _ = _dataset()
    return set(ratings.loc[ratings.user_id == user_id, "movie_id"])


# ---- recommend


@pytest.mark.parametrize(
    ("user_id", "tier", "strategy"),
    [
        (1, "power_user", "content_based"),  # collaborative needs a model: falls back
        (2, "active", "content_based"),
        (3, "casual", "content_based"),
        (4, "new", "content_based"),
    ],
)
def test_recommend_follows_the_tier(
    client: TestClient, user_id: int, tier: str, strategy: str
) -> None:
    response = client.post("/recommend", json={"user_id": user_id, "n": 7}, headers=token(user_id))
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == ISSUE_FIELDS
    assert (data["classification"], data["strategy_used"]) == (tier, strategy)
    assert data["model_version"] is None
    if tier != "new":  # the seed's strategy for this tier needs the model
        assert "no model" in response.headers["X-RecoLab-Fallback"]
    items = data["items"]
    assert len(items) == 7
    assert all(set(item) == ITEM_FIELDS for item in items)
    assert [item["rank"] for item in items] == list(range(1, 8))
    assert all(0.0 <= item["score"] <= 1.0 and item["explanation"] for item in items)
    assert not {item["movie_id"] for item in items} & rated(user_id)
    assert 0.0 <= data["diversity_score"] <= 1.0
    assert response.headers["X-Request-ID"]


def test_recommend_body_is_the_response_model_json(client: TestClient) -> None:
    # The route writes the body itself (one validation, one encoding): it must be exactly
    # what the documented response model gives, with its media type.
    from serving.schemas import RecommendResponse

    response = client.post("/recommend", json={"user_id": 2, "n": 5}, headers=token(2))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert RecommendResponse.model_validate(data).model_dump(mode="json") == data
    assert "X-RecoLab-Fallback" in response.headers and "X-Request-ID" in response.headers
    assert int(response.headers["content-length"]) == len(response.content)


def test_cold_start_user_gets_popular_movies(client: TestClient) -> None:
    registered = client.post("/users", headers=ADMIN)
    assert registered.status_code == 201, registered.text
    user = registered.json()
    assert user["classification"] == "cold_start"
    own = {"Authorization": f"Bearer {user['access_token']}"}
    response = client.post("/recommend", json={"user_id": user["user_id"], "n": 5}, headers=own)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["classification"], data["strategy_used"]) == ("cold_start", "popular")
    assert {i["source"] for i in data["items"]} == {"popular"}
    assert client.get(f"/users/{user['user_id']}", headers=own).json()["n_ratings"] == 0


def test_cache_hit_then_forced_refresh(client: TestClient) -> None:
    first = recommend(client, 3, n=4, strategy="popular", force_refresh=True)
    second = recommend(client, 3, n=4, strategy="popular")
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["items"] == first["items"]
    assert recommend(client, 3, n=4, strategy="popular", force_refresh=True)["cached"] is False


def test_rating_invalidates_the_cache_and_leaves_the_movie_out(client: TestClient) -> None:
    before = recommend(client, 3, n=5)
    assert recommend(client, 3, n=5)["cached"] is True
    top = before["items"][0]["movie_id"]
    response = client.post(
        "/ratings", json={"user_id": 3, "movie_id": top, "score": 4.5}, headers=token(3)
    )
    assert response.status_code == 201, response.text
    stored = response.json()
    assert (stored["movie_id"], stored["score"], stored["previous_score"]) == (top, 4.5, None)
    assert (stored["n_ratings"], stored["classification"]) == (TIERS[3] + 1, "casual")
    after = recommend(client, 3, n=5)
    assert after["cached"] is False
    assert top not in {item["movie_id"] for item in after["items"]}
    again = client.post(
        "/ratings", json={"user_id": 3, "movie_id": top, "score": 2}, headers=token(3)
    )
    assert again.status_code == 200, again.text  # replaced, not added
    assert (again.json()["previous_score"], again.json()["n_ratings"]) == (4.5, TIERS[3] + 1)


# ---- users, history, movies


def test_profile(client: TestClient) -> None:
    response = client.get("/users/2", headers=token(2))
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["user_id"], data["classification"], data["n_ratings"]) == (2, "active", 40)
    assert math.isclose(data["cf_weight"], 0.8) and math.isclose(data["cb_weight"], 0.2)
    assert data["n_positive"] + data["n_negative"] <= 40
    recent = data["recent_ratings"]
    assert len(recent) == 20 and all(r["title"].startswith(("Film", "100%")) for r in recent)
    assert {r["movie_id"] for r in recent} <= rated(2)


def test_history_lists_the_last_recommendations(client: TestClient) -> None:
    served = recommend(client, 2, n=6, strategy="content_based", force_refresh=True)
    response = client.get("/users/2/history", params={"limit": 6}, headers=token(2))
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["movie_id"] for i in items] == [i["movie_id"] for i in served["items"]]
    assert [i["rank"] for i in items] == list(range(1, 7))
    assert {i["strategy"] for i in items} == {"content_based"}
    assert client.get("/users/999999/history", headers=ADMIN).status_code == 404


def test_movie_by_id(client: TestClient) -> None:
    response = client.get("/movies/2", headers=ADMIN)
    assert response.status_code == 200, response.text
    movie = response.json()
    assert (movie["movie_id"], movie["title"], movie["year"]) == (2, "Film 2", 1951)
    assert movie["genres"] and movie["rating_count"] >= 0
    missing = client.get("/movies/99999", headers=ADMIN)
    assert missing.status_code == 404 and "99999" in missing.json()["error"]


def test_search_by_title_and_genre(client: TestClient) -> None:
    by_title = client.get("/movies", params={"title": "film 1"}, headers=ADMIN).json()["items"]
    assert by_title and all("film 1" in m["title"].lower() for m in by_title)
    percent = client.get("/movies", params={"title": "100%"}, headers=ADMIN).json()["items"]
    assert [m["movie_id"] for m in percent] == [1]  # % is literal, not a wildcard
    for pattern in ("1%", "film_"):  # LIKE wildcards would match many titles
        assert client.get("/movies", params={"title": pattern}, headers=ADMIN).json()["items"] == []
    horror = client.get("/movies", params={"genre": "horror", "limit": 50}, headers=ADMIN)
    items = horror.json()["items"]
    assert items and all("Horror" in m["genres"] for m in items)
    scores = [m["popularity_score"] for m in items]
    assert scores == sorted(scores, reverse=True)


def test_similar_by_genres_without_a_model(client: TestClient) -> None:
    response = client.get("/movies/5/similar", params={"k": 8}, headers=ADMIN)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["method"] == "genre_jaccard"
    target = set(client.get("/movies/5", headers=ADMIN).json()["genres"])
    items = data["items"]
    assert len(items) == 8 and 5 not in {m["movie_id"] for m in items}
    for item in items:
        genres = set(item["genres"])
        assert math.isclose(item["similarity"], len(genres & target) / len(genres | target))
    sims = [m["similarity"] for m in items]
    assert sims == sorted(sims, reverse=True) and sims[0] == 1.0
    assert client.get("/movies/99999/similar", headers=ADMIN).status_code == 404


# ---- operations


def test_liveness_readiness_and_status_without_a_champion(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 503
    status = client.get("/status")
    assert status.status_code == 503
    report = status.json()
    assert report["ready"] is False
    assert report["model"] == {
        "name": "recolab-neumf",
        "loaded": False,
        "version": None,
        "error": report["model"]["error"],
    }
    assert any("champion" in reason for reason in report["reasons"])
    assert report["database"] == {"ok": True, "backend": "sqlite", "error": None}
    assert report["cache"]["ok"] is True and report["cache"]["backend"] == "memory"


def test_metrics_expose_business_metrics(client: TestClient) -> None:
    recommend(client, 4, n=3, force_refresh=True)
    recommend(client, 4, n=3)
    text = client.get("/metrics").text
    assert 'recolab_recommendations_total{strategy="content_based",tier="new"}' in text
    assert 'recolab_recommendation_cache_total{result="hit"}' in text
    assert 'recolab_recommendation_cache_total{result="miss"}' in text
    assert 'recolab_recommendation_fallbacks_total{requested="auto",used="content_based"}' in text
    assert "recolab_model_loaded 0.0" in text
    assert "bentoml_service_request_total" in text  # BentoML's own are still there


def test_openapi_page_documents_the_api(client: TestClient) -> None:
    spec = client.get("/docs.json").json()
    paths = spec["paths"]
    for path in ("/recommend", "/ratings", "/users", "/users/{user_id}", "/status"):
        assert path in paths
    assert "/movies/{movie_id}/similar" in paths and "/users/{user_id}/history" in paths
    recommend_op = paths["/recommend"]["post"]
    assert {"401", "403", "404", "413", "422", "429"} <= set(recommend_op["responses"])
    assert "RecommendBody" in spec["components"]["schemas"]


def test_each_documented_error_says_when_it_happens_with_an_answer_the_service_gives(
    client: TestClient,
) -> None:
    documented = client.get("/docs.json").json()["paths"]["/recommend"]["post"]["responses"]
    errors = {code: v for code, v in documented.items() if code.startswith(("4", "5"))}
    assert {"400", "401", "403", "404", "413", "422", "429", "503"} <= set(errors)
    # each status its own description and example, not one generic answer for all
    assert len({e["description"] for e in errors.values()}) == len(errors)
    examples = {c: e["content"]["application/json"]["example"] for c, e in errors.items()}
    assert len({x["error"] for x in examples.values()}) == len(errors)
    # the examples are answers the service gives: the same words up to what varies
    real = {
        "400": _post(client, "/recommend", '{"user_id": 1,', sub="doc-400"),
        "401": client.post("/recommend", json={"user_id": 1}),
        "403": client.post("/recommend", json={"user_id": 42}, headers=token(7)),
        "404": _post(client, "/recommend", '{"user_id": 424242}', sub="doc-404"),
        "422": _post(client, "/recommend", '{"user_id": 1, "colour": "blue"}', sub="doc-422"),
    }
    for code, response in real.items():
        assert str(response.status_code) == code, response.text
        said, example = response.json()["error"], examples[code]["error"]
        assert re.sub(r"\d+", "N", said) == re.sub(r"\d+", "N", example), (code, said)
    assert examples["422"]["detail"][0]["msg"] in real["422"].json()["error"]


# ---- security


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing bearer token"),
        ({"Authorization": f"Bearer {OTHER_SECRET}"}, "invalid token"),
        ({"Authorization": f"Bearer {EXPIRED}"}, "token expired"),
    ],
)
def test_bad_credentials_are_401(client: TestClient, headers: dict[str, str], message: str) -> None:
    response = client.get("/users/2", headers=headers)
    assert response.status_code == 401
    assert message in response.json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _signed(**claims: Any) -> dict[str, str]:
    """A bearer header with a token signed with the service's secret, claims as given."""
    import jwt

    payload = json.dumps(claims).encode()
    return {"Authorization": f"Bearer {jwt.PyJWS().encode(payload, SECRET, algorithm='HS256')}"}


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": 10**400}, "exp must be in"),
        ({"exp": "99999999999"}, "exp must be a number"),
        ({"sub": ""}, "sub must be a non-empty"),
        ({"sub": 2}, "Subject must be a string"),
        ({"role": "root"}, "role must be one of"),
        ({"iss": "elsewhere"}, "Invalid issuer"),
    ],
)
def test_validly_signed_tokens_with_unexpected_claims_are_401(
    client: TestClient, claims: dict[str, Any], message: str
) -> None:
    now = int(time.time())
    good = {"sub": "2", "role": "user", "iat": now, "exp": now + 60, "iss": "recolab"}
    response = client.get("/users/2", headers=_signed(**{**good, **claims}))
    assert response.status_code == 401, response.text
    assert message in response.json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _forge_until_refused(client: TestClient, limit: int) -> list[int]:
    """Forged tokens from the client's address until a 429 (at most 3 x limit)."""
    forged = {"Authorization": f"Bearer {OTHER_SECRET}"}
    codes: list[int] = []
    while len(codes) < 3 * limit and 429 not in codes:
        codes.append(client.get("/movies/1", headers=forged).status_code)
    return codes


def _from_address(client: TestClient, monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Requests of `client` come from `host` (Starlette's test transport sets the peer)."""
    monkeypatch.setattr(client._transport, "client", (host, 40000))  # type: ignore[attr-defined]


def test_failed_authentications_are_limited_per_address(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _from_address(client, monkeypatch, "203.0.113.50")
    started = time.monotonic()
    codes = _forge_until_refused(client, AUTH_FAILURES)
    refilled = math.ceil((time.monotonic() - started) * AUTH_FAILURES / 60)
    assert codes[-1] == 429 and set(codes[:-1]) == {401}, codes
    assert AUTH_FAILURES <= len(codes) - 1 <= AUTH_FAILURES + refilled
    # refused whatever it sends now, a valid token included, with a time to come back
    refused = client.get("/movies/1", headers=ADMIN)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "too many failed authentications" in refused.json()["error"]
    # no token is no attempt: still told what is missing
    assert client.get("/movies/1").status_code == 401
    # another address is not affected
    _from_address(client, monkeypatch, "198.51.100.50")
    assert client.get("/movies/1", headers=ADMIN).status_code == 200
    assert client.get("/movies/1", headers={"Authorization": "Bearer x"}).status_code == 401


def test_users_reach_only_their_own_data_unless_admin(client: TestClient) -> None:
    assert client.get("/users/2", headers=token(3)).status_code == 403
    assert client.get("/users/2/history", headers=token(3)).status_code == 403
    forbidden = client.post("/recommend", json={"user_id": 2}, headers=token(3))
    assert forbidden.status_code == 403 and "user 2" in forbidden.json()["error"]
    rating = client.post(
        "/ratings", json={"user_id": 2, "movie_id": 1, "score": 3.0}, headers=token(3)
    )
    assert rating.status_code == 403
    assert client.post("/users", headers=token(3)).status_code == 403
    assert client.get("/users/2", headers=ADMIN).status_code == 200
    assert client.post("/recommend", json={"user_id": 2}, headers=ADMIN).status_code == 200


def test_rate_limit_is_429_with_retry_after(client: TestClient) -> None:
    probe = token("rate-limit-probe", "admin")
    codes: list[int] = []
    started = time.monotonic()
    while len(codes) < 3 * RATE_LIMIT and 429 not in codes:
        codes.append(client.get("/movies/1", headers=probe).status_code)
    refilled = math.ceil((time.monotonic() - started) * RATE_LIMIT / 60)  # the bucket refills
    assert codes[-1] == 429 and set(codes[:-1]) == {200}
    assert RATE_LIMIT <= len(codes) - 1 <= RATE_LIMIT + refilled
    limited = client.get("/movies/1", headers=probe)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert "rate limit" in limited.json()["error"]
    assert client.get("/movies/1", headers=token("someone-else", "admin")).status_code == 200


def test_oversize_bodies_are_413(client: TestClient) -> None:
    body = json.dumps({"user_id": 1, "n": 5, "strategy": "auto" + " " * MAX_BODY})
    response = client.post(
        "/recommend", content=body, headers={**token(1), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert str(MAX_BODY) in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"user_id": 1, "strategy": "'
        for _ in range(MAX_BODY // 512 + 1):
            yield b" " * 512
        yield b'"}'

    streamed = client.post(
        "/recommend", content=chunks(), headers={**token(1), "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413, streamed.text


# ---- every bad input is a 4xx with a message


def _post(client: TestClient, path: str, raw: str, sub: int | str = 1) -> Any:
    headers = {**token(sub, "admin"), "Content-Type": "application/json"}
    return client.post(path, content=raw, headers=headers)


@pytest.mark.parametrize(
    ("path", "raw", "status"),
    [
        ("/recommend", '{"user_id": 1,', 400),
        ("/recommend", "", 422),
        ("/recommend", "[1, 2]", 422),
        ("/recommend", '{"user_id": "1"}', 422),
        ("/recommend", '{"user_id": true}', 422),
        ("/recommend", '{"user_id": 1.5}', 422),
        ("/recommend", '{"user_id": -3}', 422),
        ("/recommend", '{"user_id": 99999999999999999999999}', 422),
        ("/recommend", '{"n": 5}', 422),
        ("/recommend", '{"user_id": 1, "n": 0}', 422),
        ("/recommend", '{"user_id": 1, "n": 101}', 422),
        ("/recommend", '{"user_id": 1, "n": "5"}', 422),
        ("/recommend", '{"user_id": 1, "strategy": "bogus"}', 422),
        ("/recommend", '{"user_id": 1, "diversity_lambda": 1.5}', 422),
        ("/recommend", '{"user_id": 1, "diversity_lambda": NaN}', 422),
        ("/recommend", '{"user_id": 1, "force_refresh": "yes"}', 422),
        ("/recommend", '{"user_id": 1, "colour": "blue"}', 422),
        ("/recommend", '{"user_id": 424242}', 404),
        ("/ratings", '{"user_id": 1, "movie_id": 2, "score": 4.3}', 422),
        ("/ratings", '{"user_id": 1, "movie_id": 2, "score": 0}', 422),
        ("/ratings", '{"user_id": 1, "movie_id": 2, "score": 5.5}', 422),
        ("/ratings", '{"user_id": 1, "movie_id": 2, "score": Infinity}', 422),
        ("/ratings", '{"user_id": 1, "movie_id": 2}', 422),
        ("/ratings", '{"user_id": 1, "movie_id": 424242, "score": 4.0}', 404),
        ("/ratings", '{"user_id": 424242, "movie_id": 2, "score": 4.0}', 404),
    ],
)
def test_bad_bodies_are_4xx_with_a_message(
    client: TestClient, path: str, raw: str, status: int
) -> None:
    response = _post(client, path, raw, sub=f"bad-input-{path}-{raw}")
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and body["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/movies/abc", {}),
        ("/movies/0", {}),
        (f"/movies/{2**70}", {}),
        ("/movies/1/similar", {"k": 0}),
        ("/movies/1/similar", {"k": 1000}),
        ("/movies", {"limit": 0}),
        ("/movies", {"title": ""}),
        ("/movies", {"title": "x" * 300}),
        ("/users/-1", {}),
        ("/users/1/history", {"limit": "lots"}),
    ],
)
def test_bad_paths_and_queries_are_422(
    client: TestClient, path: str, params: dict[str, Any]
) -> None:
    response = client.get(path, params=params, headers=token("bad-query", "admin"))
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("invalid request")


def test_wrong_method_and_unknown_user_are_4xx(client: TestClient) -> None:
    wrong = client.get("/recommend", headers=ADMIN)
    assert wrong.status_code == 405 and wrong.json()["error"]
    assert client.get("/users/424242", headers=ADMIN).status_code == 404


def test_failures_inside_are_json_with_the_request_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from serving.service import api

    queries = api.state.runtime.queries

    def database_down(_: int) -> None:
        raise OperationalError("SELECT", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(queries, "movie", database_down)
    down = client.get("/movies/1", headers=token("failures", "admin"))
    assert down.status_code == 503 and down.headers["Retry-After"] == "1"
    assert "database unavailable" in down.json()["error"]

    def bug(_: int) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(queries, "movie", bug)
    broken = client.get("/movies/1", headers={**token("failures", "admin"), "X-Request-ID": "r-1"})
    assert broken.status_code == 500
    assert broken.json() == {"error": "internal error", "request_id": "r-1"}
    assert broken.headers["X-Request-ID"] == "r-1"


# ---- security adapters on their own


def test_tokens_round_trip_and_expire() -> None:
    principal = verify(issue_token(7, "user", SECRET, 60), SECRET)
    assert (principal.subject, principal.role, principal.may_access(7)) == ("7", "user", True)
    assert not principal.may_access(8)
    assert verify(issue_token("ops", "admin", SECRET, 60), SECRET).may_access(8)
    with pytest.raises(AuthError, match="expired"):
        verify(issue_token(7, "user", SECRET, 10, now=time.time() - 60), SECRET)
    with pytest.raises(ValueError, match="role"):
        issue_token(7, "root", SECRET, 60)
    settings = Settings(env="test", jwt_secret=SecretStr(SECRET))
    assert verify(local_token("ops", "admin", 60, settings), SECRET).is_admin


def test_token_verifier_checks_a_token_once_and_still_refuses_it_after_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import recolab.adapters.runtime.security as security

    decoded: list[str] = []
    real_decode = security._decode

    def counting_decode(token: str, secret: str, leeway_s: float) -> Any:
        decoded.append(token)
        return real_decode(token, secret, leeway_s)

    token = issue_token(7, "user", SECRET, 30)
    expected = verify(token, SECRET)
    monkeypatch.setattr(security, "_decode", counting_decode)
    verifier = TokenVerifier(SECRET, leeway_s=0, size=2)
    assert verifier(token) == verifier(token) == expected
    assert decoded == [token]  # the signature was checked once
    with pytest.raises(AuthError, match="invalid token"):
        verifier(issue_token(7, "user", "another-secret-0123456789-abcdefghij", 30))
    with pytest.raises(AuthError, match="invalid token"):
        verifier(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))  # tampered
    others = [issue_token(n, "user", SECRET, 30) for n in (8, 9)]
    for other in others:
        verifier(other)
    assert len(verifier) == 2  # bounded: the oldest was forgotten
    verifier(token)
    assert decoded.count(token) == 2
    later = time.time() + 31
    monkeypatch.setattr(security.time, "time", lambda: later)
    with pytest.raises(AuthError, match="expired"):
        verifier(token)  # remembered, but past its expiry


def test_default_or_short_secret_refused_outside_dev() -> None:
    with pytest.raises(ConfigError, match="default"):
        serving_secret(Settings(env="prod", jwt_secret=SecretStr(DEFAULT_JWT_SECRET)))
    with pytest.raises(ConfigError, match="at least"):
        serving_secret(Settings(env="test", jwt_secret=SecretStr("short")))
    assert serving_secret(Settings(env="dev", jwt_secret=SecretStr(DEFAULT_JWT_SECRET)))
    assert serving_secret(Settings(env="prod", jwt_secret=SecretStr(SECRET))) == SECRET


def test_token_bucket_refills_over_time() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(3, window_s=60, clock=lambda: now[0])
    assert [limiter.hit("a").allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.hit("a").retry_after_s == 20  # one token every 20 s
    assert limiter.hit("b").allowed  # per client
    now[0] = 20.0
    assert limiter.hit("a").allowed and not limiter.hit("a").allowed


@pytest.mark.redis
def test_redis_limiter_is_shared_and_survives_an_outage(
    redis_url: str, redis_namespace: str
) -> None:
    import redis

    workers = [
        RedisRateLimiter(redis.Redis.from_url(redis_url), 5, namespace=redis_namespace)
        for _ in range(2)
    ]
    decisions = [workers[i % 2].hit("client") for i in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert 1 <= decisions[-1].retry_after_s <= 60
    down = RedisRateLimiter(redis.Redis(port=1, socket_connect_timeout=0.2), 2)
    assert [down.hit("c").allowed for _ in range(3)] == [True, True, False]


# ---- with a champion model


class FakeScorer:
    """A stand-in model (our own Scorer port): prefers low movie ids; embeddings by id."""

    def __init__(self, version: str) -> None:
        self.version = version

    def knows_user(self, user_id: UserId) -> bool:
        return user_id.value <= 30

    def _rank(self, k: int, exclude: Any) -> tuple[np.ndarray, np.ndarray]:
        blocked = set(np.asarray(exclude).tolist())
        ids = np.array([m for m in range(1, 151) if m not in blocked][:k], dtype=np.int64)
        return ids, 1.0 - ids / 200

    def top_k_ids(self, user_id: UserId, k: int, exclude: Any) -> tuple[np.ndarray, np.ndarray]:
        return self._rank(k, exclude)

    def fold_in_top_k_ids(self, rated: Any, k: int, exclude: Any) -> tuple[np.ndarray, np.ndarray]:
        return self._rank(k, exclude)

    def similar(self, movie_id: MovieId, k: int) -> list[tuple[MovieId, float]]:
        near = [m for m in range(movie_id.value + 1, movie_id.value + k + 1) if m <= 150]
        return [(MovieId(m), 1.0 - (m - movie_id.value) / 100) for m in near]


@pytest.fixture(scope="module")
def champion_client(workspace: dict[str, str]) -> Iterator[TestClient]:
    import recolab.adapters.mlflow.model_format as scorer_module

    name = "recolab-test-champion"
    registry = mlflow.MlflowClient(tracking_uri=workspace["MLFLOW_TRACKING_URI"])
    registry.create_registered_model(name)
    version = registry.create_model_version(name, source=str(Path(workspace["RECOLAB_DATA_DIR"])))
    registry.set_registered_model_alias(name, "champion", version.version)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECOLAB_MODEL_NAME", name)
        mp.setattr(scorer_module, "load_scorer", lambda _u, _t, v: FakeScorer(v))
        yield from _serve()


def test_champion_is_served_and_reported(champion_client: TestClient) -> None:
    client = champion_client
    assert client.get("/readyz").status_code == 200
    status = client.get("/status").json()
    assert status["ready"] is True and status["reasons"] == []
    assert status["model"]["version"] == "1" and status["model"]["loaded"] is True
    data = recommend(client, 1, n=5, force_refresh=True)
    assert (data["strategy_used"], data["model_version"]) == ("collaborative_with_diversity", "1")
    assert {i["source"] for i in data["items"]} == {"collaborative"}
    assert not {i["movie_id"] for i in data["items"]} & rated(1)
    similar = client.get("/movies/10/similar", params={"k": 3}, headers=ADMIN).json()
    assert similar["method"] == "embedding"
    assert [m["movie_id"] for m in similar["items"]] == [11, 12, 13]
    metrics = client.get("/metrics").text
    assert 'recolab_model_info{model="recolab-test-champion",version="1"} 1.0' in metrics
    assert "recolab_model_loaded 1.0" in metrics


# ---- with Redis as cache and rate limiter


@pytest.fixture(scope="module")
def redis_client(workspace: dict[str, str]) -> Iterator[TestClient]:
    import redis

    redis_url = require_service("RECOLAB_TEST_REDIS_URL")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECOLAB_REDIS_URL", redis_url)
        yield from _serve()
    server = redis.Redis.from_url(redis_url)
    for pattern in ("recolab:rec:3", "recolab:ratelimit:sub:3"):
        keys = list(server.scan_iter(match=pattern))
        if keys:
            server.delete(*keys)


@pytest.mark.redis
def test_failed_authentications_are_counted_in_redis(
    redis_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    host = "203.0.113.51"
    server = redis.Redis.from_url(require_service("RECOLAB_TEST_REDIS_URL"))
    key = f"recolab:ratelimit:authfail:{host}"
    server.delete(key)
    _from_address(redis_client, monkeypatch, host)
    codes = _forge_until_refused(redis_client, AUTH_FAILURES)
    assert codes == [401] * AUTH_FAILURES + [429]  # a fixed window: no refill within it
    assert int(server.get(key) or 0) == AUTH_FAILURES + 1  # shared by every worker
    refused = redis_client.get("/movies/1", headers=ADMIN)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    server.delete(key)


@pytest.mark.redis
def test_redis_backed_cache_and_invalidation(redis_client: TestClient) -> None:
    client = redis_client
    cache = client.get("/status").json()["cache"]
    assert cache == {"ok": True, "backend": "redis", "error": None}
    first = recommend(client, 3, n=5, strategy="popular", force_refresh=True)
    assert recommend(client, 3, n=5, strategy="popular")["cached"] is True
    top = first["items"][0]["movie_id"]
    rating = client.post(
        "/ratings", json={"user_id": 3, "movie_id": top, "score": 3.5}, headers=token(3)
    )
    assert rating.status_code in (200, 201), rating.text
    after = recommend(client, 3, n=5, strategy="popular")
    assert after["cached"] is False and top not in {i["movie_id"] for i in after["items"]}
