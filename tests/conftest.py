"""Shared test set-up: no telemetry, no network, no stray state in the repository's data/."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def require_service(env_var: str) -> str:
    """URL of a real service for integration tests: skip locally when unset, fail in CI."""
    url = os.environ.get(env_var)
    if url:
        return url
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{env_var} must be set in CI: these tests must run there")
    pytest.skip(f"{env_var} is not set")


def require_shared_movielens(release: str = "ml-latest-small") -> Path:
    """A MovieLens release in the shared folder (RECOLAB_SHARED_DIR, by default ../shared
    beside the repository): skip locally when it is absent, fail in CI."""
    from recolab.config import Settings

    path = Settings().shared_movielens(release)
    if path.is_dir():
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{path} is missing: CI needs the shared folder (RECOLAB_SHARED_DIR)")
    pytest.skip(f"{path} is absent (set RECOLAB_SHARED_DIR to the shared folder)")


def fresh_postgres_database(server_url: str, prefix: str) -> AbstractContextManager[str]:
    """Create a uniquely named database on `server_url`'s server; its URL; dropped afterwards."""
    from recolab.adapters.sql.engine import scratch_postgres_database

    return scratch_postgres_database(server_url, prefix)


@pytest.fixture
def redis_url() -> str:
    return require_service("RECOLAB_TEST_REDIS_URL")


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A unique key namespace, deleted afterwards."""
    import redis

    namespace = f"recolab-test-{uuid.uuid4().hex[:8]}:"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=namespace + "*"))
    if keys:
        client.delete(*keys)
