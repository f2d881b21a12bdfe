"""Per-worker torch threads: set at service start-up from RECOLAB_TORCH_THREADS (default 1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from recolab.adapters.runtime.threads import TORCH_THREADS_ENV
from recolab.bootstrap import configure_torch_threads
from recolab.config import ConfigError


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_one_thread_by_default() -> None:
    assert configure_torch_threads({}) == 1 == torch.get_num_threads()


def test_configurable_and_zero_keeps_torch_default() -> None:
    assert configure_torch_threads({TORCH_THREADS_ENV: "2"}) == 2
    assert configure_torch_threads({TORCH_THREADS_ENV: "0"}) == 2  # left as it was


@pytest.mark.parametrize("raw", ["-1", "many", "1.5"])
def test_bad_values_are_refused_with_the_variable_name(raw: str) -> None:
    with pytest.raises(ConfigError, match=TORCH_THREADS_ENV):
        configure_torch_threads({TORCH_THREADS_ENV: raw})


def test_not_set_at_import_of_recolab() -> None:
    import subprocess
    import sys

    code = (
        "import torch; n = torch.get_num_threads(); import recolab.bootstrap, serving.app; "
        "assert torch.get_num_threads() == n, (n, torch.get_num_threads()); print(n)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_request_threads_size_the_event_loops_thread_pool_on_the_first_request() -> None:
    import anyio
    from anyio import to_thread

    from serving.middleware import RequestContextMiddleware

    seen: list[int] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(int(to_thread.current_default_thread_limiter().total_tokens))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def noop(message: Any) -> None:
        return None

    class State:
        runtime = SimpleNamespace(request_threads=3)

    app_ = SimpleNamespace(state=State())

    async def two_requests() -> None:
        before = int(to_thread.current_default_thread_limiter().total_tokens)
        app = RequestContextMiddleware(inner)
        for _ in range(2):
            await app({"type": "http", "headers": [], "app": app_}, noop, noop)
        seen.insert(0, before)

    anyio.run(two_requests)
    assert seen == [40, 3, 3]


def _threads_after_a_request(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Start the service in-process over `env`, send one request, read the pool size."""
    from anyio import to_thread

    from tests.integration.test_service_inprocess import _serve, token

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RECOLAB_REDIS_URL", raising=False)
    for client in _serve():
        assert client.get("/users/1", headers=token(1)).status_code == 200
        return int(
            client.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)
        )
    raise AssertionError("the service did not start")


def test_request_threads_come_from_serving_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_service_inprocess import make_workspace

    env = make_workspace(tmp_path, request_threads=7)
    assert _threads_after_a_request(env, monkeypatch) == 7


def test_request_threads_come_from_an_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_service_inprocess import make_workspace

    env = make_workspace(tmp_path, request_threads=7)
    env["RECOLAB_OVERRIDES"] = json.dumps(["serving.request_threads=5"])
    assert _threads_after_a_request(env, monkeypatch) == 5
