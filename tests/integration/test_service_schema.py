"""Property tests of the HTTP API against its own OpenAPI spec (schemathesis).

The service is built as `bentoml serve` builds it (`RecoLab.to_asgi()`), with a champion
model loaded, and served over real HTTP on a free local port. Two kinds of runs:

- `schemathesis run --checks all` (the CLI: examples, coverage, fuzzing and stateful
  phases, every check, BentoML's probes and RecoLab's routes) must report nothing;
- per operation, valid and invalid requests generated here (hypothesis), each answer
  checked with every check that judges one answer on its own: no 5xx, documented status,
  content type, headers and schema, invalid input refused and valid input accepted.

Examples are bounded so the whole file takes well under two minutes; raise
`RECOLAB_SCHEMA_EXAMPLES` for a deeper run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.parameters import ParameterLocation

from tests.integration.test_service_inprocess import _in_process_metrics, token
from tests.integration.test_service_resilience import FakeScorer, _register, _workspace

MAX_EXAMPLES = int(os.environ.get("RECOLAB_SCHEMA_EXAMPLES", "25"))  # raise for a deeper run
ADMIN = token("schema-fuzzer", "admin")
# BentoML's Prometheus text is not ours to check (the OpenAPI page is not in the spec).
SKIPPED = ["/metrics"]
# Checks that send requests of their own (without credentials, after a DELETE, as another
# identity): the CLI runs them; per answer, they have nothing to judge.
FOLLOW_UPS = {"use_after_free", "ensure_resource_availability", "ignored_auth"}
FOLLOW_UPS |= {"object_level_authorization"}
load_all_checks()
ANSWER_CHECKS = [check for check in CHECKS.get_all() if check.__name__ not in FOLLOW_UPS]


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service on 127.0.0.1 (uvicorn in a thread of this process, so the test's stand-in
    model is the one served); its base URL."""
    import uvicorn
    from bentoml._internal.configuration.containers import BentoMLContainer

    import recolab.adapters.mlflow.model_format as scorer_module
    from serving.service import RecoLab, api

    root = tmp_path_factory.mktemp("schema")
    env = _workspace(root, champion_poll_interval_s=3600)
    _register(env["MLFLOW_TRACKING_URI"], str(root), versions=1)
    previous = getattr(api.state, "runtime", None)
    with (
        pytest.MonkeyPatch.context() as mp,
        BentoMLContainer.metrics_client.patch(_in_process_metrics()),
        socket.socket() as sock,
    ):
        for key in ("RECOLAB_REDIS_URL",):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(scorer_module, "load_scorer", lambda _u, _t, v: FakeScorer(v))
        sock.bind(("127.0.0.1", 0))
        app = cast(Any, RecoLab).to_asgi()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            api.state.runtime = previous


@pytest.fixture(scope="module")
def client(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def api_schema(client: Any) -> Any:
    spec = client.get("/docs.json").json()
    return schemathesis.openapi.from_dict(spec).exclude(path=SKIPPED)


def _credentials(case: Any) -> dict[str, str] | None:
    """The admin token, unless the case's headers are the invalid part (its own are sent)."""
    negated = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    return None if negated else ADMIN


def _send(client: httpx.Client, case: Any) -> Any:
    """Send a generated case to the live service."""
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url), headers=_credentials(case))
    kwargs.pop("cookies", None)
    request: dict[str, Any] = {
        "method": kwargs.pop("method"),
        "url": kwargs.pop("url"),
        "headers": kwargs.pop("headers", None),
        "params": kwargs.pop("params", None),
    }
    if "json" in kwargs:
        request["json"] = kwargs.pop("json")
    data = kwargs.pop("data", None)
    if isinstance(data, str | bytes):
        request["content"] = data
    elif data is not None:
        request["data"] = data
    return client.request(**request)


# Every operation of the spec, listed so that a new route is noticed (the first test).
OPERATIONS = [
    "POST /recommend",
    "POST /ratings",
    "POST /users",
    "GET /users/{user_id}",
    "GET /users/{user_id}/history",
    "GET /movies",
    "GET /movies/{movie_id}",
    "GET /movies/{movie_id}/similar",
    "GET /status",
    "GET /livez",
    "GET /readyz",
    "GET /healthz",
]
# Operations that take input get invalid input too; the rest have nothing to get wrong.
NEGATIVE = [label for label in OPERATIONS if "{" in label or label.startswith(("POST", "GET /m"))]


def test_every_operation_is_covered(api_schema: Any) -> None:
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)


def test_schemathesis_run_with_every_check_reports_nothing(live_url: str, tmp_path: Path) -> None:
    """What the issue ran: `schemathesis run --checks all` against the live service."""
    cli = Path(sys.executable).with_name("schemathesis")
    command = [str(cli), "run", f"{live_url}/docs.json", "--checks", "all"]
    command += ["-H", f"Authorization: {ADMIN['Authorization']}"]
    command += ["--exclude-path", *SKIPPED, "--max-examples", str(MAX_EXAMPLES)]
    command += ["--seed", "14", "--generation-deterministic", "--no-color", "--workers", "1"]
    run = subprocess.run(  # in tmp_path: the CLI keeps its replay files in its folder
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert "No issues found" in report, report[-3000:]
    assert "Tested: 12" in report, report[-3000:]  # every operation but /metrics


def test_a_path_with_a_line_break_gets_a_json_404(client: httpx.Client) -> None:
    """BentoML's mount never hands such a path to the API: the service answers it itself,
    as documented (it was Starlette's plain-text 404, schemathesis ST105)."""
    for path in ("/users/1%0A", "/movies/%0A/similar", "/nowhere%0A"):
        response = client.get(path, headers=ADMIN)
        assert response.status_code == 404, (path, response.text)
        assert response.headers["content-type"] == "application/json", path
        assert "line break" in response.json()["error"]


@pytest.mark.parametrize(
    ("label", "mode"),
    [(label, GenerationMode.POSITIVE) for label in OPERATIONS]
    + [(label, GenerationMode.NEGATIVE) for label in NEGATIVE],
    ids=str,
)
def test_no_server_errors_and_answers_match_the_schema(
    api_schema: Any, client: Any, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = _send(client, case)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )
        case.validate_response(response, checks=ANSWER_CHECKS, headers=_credentials(case))

    check()
