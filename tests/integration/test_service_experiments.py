"""Online experiments through the service in-process, over a real MLflow registry (a temp
SQLite store) and a real SQLite database: the experiment is started, changed and stopped in
the registry (`recolab.adapters.mlflow.experiments`) and the service follows it at its next
check, without a restart. The models are stand-ins (our Scorer port): version 2 ranks the
catalogue the other way round from version 1, so an answer says which model gave it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from recolab.adapters.mlflow.experiments import start_experiment, stop_experiment
from recolab.adapters.mlflow.tracking import mlflow_client
from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine
from recolab.domain.experiments import CHALLENGER, CHAMPION, Experiment, assign_variant
from tests.integration.test_service_inprocess import (
    FakeScorer,
    TestClient,
    _serve,
    make_workspace,
    token,
)

MODEL = "recolab-test-experiments"
USERS = range(1, 25)  # the dataset's users with ratings


class VersionedScorer(FakeScorer):
    """Version 1 prefers low movie ids, any other version high ones."""

    def _rank(self, k: int, exclude: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.version == "1":
            return super()._rank(k, exclude)
        blocked = set(np.asarray(exclude).tolist())
        ids = np.array([m for m in range(150, 0, -1) if m not in blocked][:k], dtype=np.int64)
        return ids, ids / 200


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = make_workspace(
        tmp_path_factory.mktemp("experiments"),
        champion_poll_interval_s=3600,  # the tests check when they choose
        rate_limit_per_minute=100_000,
    )
    with pytest.MonkeyPatch.context() as mp:
        for key in ("RECOLAB_REDIS_URL",):
            mp.delenv(key, raising=False)
        for key, value in {**env, "RECOLAB_MODEL_NAME": MODEL}.items():
            mp.setenv(key, value)
        yield env


@pytest.fixture(scope="module")
def registry(env: dict[str, str]) -> Any:
    client = mlflow_client(env["MLFLOW_TRACKING_URI"])
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=str(Path(env["RECOLAB_DATA_DIR"])))
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return client


@pytest.fixture(scope="module")
def client(env: dict[str, str], registry: Any) -> Iterator[TestClient]:
    import recolab.adapters.mlflow.model_format as scorer_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scorer_module, "load_scorer", lambda _u, _t, v: VersionedScorer(v))
        yield from _serve()


def runtime() -> Any:
    from serving.service import api

    return api.state.runtime


def follow(registry: Any, experiment: Experiment | None) -> None:
    """Set the experiment in the registry, then let the service check (its next poll)."""
    if experiment is None:
        stop_experiment(registry, MODEL)
    else:
        start_experiment(registry, MODEL, experiment)
    runtime().experiments.check()


def recommend(client: TestClient, user: int, **body: Any) -> tuple[dict[str, Any], str]:
    response = client.post(
        "/recommend", json={"user_id": user, "n": 5, **body}, headers=token(user)
    )
    assert response.status_code == 200, response.text
    return response.json(), response.headers["X-RecoLab-Variant"]


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def answers_of(client: TestClient, experiment: str, variant: str, version: str) -> float:
    labels = {"experiment": experiment, "variant": variant, "version": version}
    key = ("recolab_experiment_answers_total", frozenset(labels.items()))
    return metric_samples(client.get("/metrics").text).get(key, 0.0)


def history_rows(env: dict[str, str], user: int) -> list[Any]:
    runtime().recommender.shadow.settle(10)
    runtime().pending.settle(10)
    engine = make_engine(env["RECOLAB_DATABASE_URL"])
    h = s.recommendation_history.c
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(h.created_at, h.rank, h.model_version, h.experiment, h.variant, h.tier)
                .where(h.user_id == user)
                .order_by(h.created_at, h.variant, h.rank)
            ).all()
    finally:
        engine.dispose()


def test_a_canary_answers_its_share_with_the_challenger_and_says_so(
    client: TestClient, registry: Any, env: dict[str, str]
) -> None:
    canary = Experiment("v2-canary", "canary", 0.5)
    follow(registry, canary)
    before = answers_of(client, "v2-canary", "challenger", "2")
    seen = set()
    for user in USERS:
        data, header = recommend(client, user, force_refresh=True)
        variant = assign_variant(user, canary)
        assert (data["variant"], header, data["experiment"]) == (variant, variant, canary.name)
        assert data["model_version"] == ("2" if variant == CHALLENGER else "1")
        seen.add(variant)
        rows = history_rows(env, user)
        assert {(r.model_version, r.experiment, r.variant) for r in rows[-5:]} == {
            (data["model_version"], canary.name, variant)
        }
        assert rows[-1].tier == data["classification"]
    assert seen == {CHAMPION, CHALLENGER}
    status = client.get("/status").json()
    assert status["experiment"] == {
        "name": "v2-canary",
        "mode": "canary",
        "share": 0.5,
        "challenger_version": "2",
        "running": True,
        "error": None,
    }
    challengers = sum(assign_variant(u, canary) == CHALLENGER for u in USERS)
    assert answers_of(client, "v2-canary", "challenger", "2") == before + challengers


def test_stopping_returns_everyone_to_the_champion_at_the_next_check(
    client: TestClient, registry: Any
) -> None:
    canary = Experiment("v2-canary", "canary", 0.5)
    follow(registry, canary)
    inside = next(u for u in USERS if assign_variant(u, canary) == CHALLENGER)
    first, _ = recommend(client, inside)
    assert recommend(client, inside)[0]["cached"] is True  # the challenger's, cached
    assert first["model_version"] == "2"
    follow(registry, None)
    for user in USERS:
        data, header = recommend(client, user)  # cached answers included
        assert (data["variant"], header, data["experiment"], data["model_version"]) == (
            CHAMPION,
            CHAMPION,
            None,
            "1",
        )
    assert client.get("/status").json()["experiment"] is None


def test_shadow_answers_with_the_champion_and_records_the_challenger(
    client: TestClient, registry: Any, env: dict[str, str]
) -> None:
    follow(registry, None)
    user = 2
    plain, _ = recommend(client, user, force_refresh=True)
    follow(registry, Experiment("v2-shadow", "shadow", 1.0))
    shadowed, header = recommend(client, user, force_refresh=True)
    assert (shadowed["variant"], header, shadowed["experiment"]) == (
        CHAMPION,
        CHAMPION,
        "v2-shadow",
    )
    assert shadowed["items"] == plain["items"]  # the shadow changes nothing shown
    rows = [r for r in history_rows(env, user) if r.experiment == "v2-shadow"]
    served = [r for r in rows if r.variant == CHAMPION]
    shadow = [r for r in rows if r.variant == "shadow"]
    assert len(served) == len(shadow) == 5
    assert {r.model_version for r in served} == {"1"} and {r.model_version for r in shadow} == {"2"}
    assert {r.created_at for r in shadow} == {r.created_at for r in served}  # one answer
    shown = client.get(f"/users/{user}/history", params={"limit": 5}, headers=token(user)).json()
    assert {i["model_version"] for i in shown["items"]} == {"1"}
    status = client.get("/status").json()["experiment"]
    assert (status["mode"], status["share"], status["running"]) == ("shadow", 1.0, True)


def test_a_rating_of_a_movie_just_shown_is_an_online_hit(client: TestClient, registry: Any) -> None:
    follow(registry, Experiment("v2-hits", "canary", 1.0))
    user = 5
    data, _ = recommend(client, user, force_refresh=True)
    second = data["items"][1]["movie_id"]
    rated = client.post(
        "/ratings", json={"user_id": user, "movie_id": second, "score": 4.5}, headers=token(user)
    )
    assert rated.status_code == 201, rated.text
    samples = metric_samples(client.get("/metrics").text)
    labels = {"experiment": "v2-hits", "variant": "challenger", "version": "2"}
    tier = {"strategy": data["strategy_used"], "tier": data["classification"]}
    assert samples[("recolab_online_hits_total", frozenset({**labels, **tier}.items()))] == 1
    at = {
        k: samples.get(
            ("recolab_online_hits_at_rank_total", frozenset({**labels, "cutoff": k}.items()))
        )
        for k in ("1", "3", "10")
    }
    assert at == {"1": None, "3": 1, "10": 1}  # rank 2
    follow(registry, None)
