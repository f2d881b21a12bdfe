"""The OpenAPI document the service publishes (`/docs.json`, the page at `/`) is RecoLab's.

The service is built as `bentoml serve` builds it (`RecoLab.to_asgi()`) over a workspace
with a registered champion. BentoML's template said "recolab" / version "None" / "BentoML
Team", listed an empty "Service APIs" group above the routes and showed no example: the
document now has RecoLab's title, version, description (naming the champion being served,
and following it when it moves), contact, one group per tag with no empty one, and an
example for every route's body, parameters and answer, each valid for its schema.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import metadata
from typing import Any
from urllib.parse import urljoin

import mlflow
import pytest

from serving import schemas as sc
from tests.integration.test_service_inprocess import FakeScorer, _serve
from tests.integration.test_service_resilience import MODEL, _register, _workspace

POLL_S = 0.1
BENTOML_PROBES = {"/livez", "/readyz", "/healthz", "/metrics"}
OUR_TAGS = ["recommendations", "ratings", "users", "movies", "operations"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, mlflow.MlflowClient]]:
    """The service following a champion (version 1 of 2), and the registry."""
    import recolab.adapters.mlflow.model_format as scorer_module

    root = tmp_path_factory.mktemp("openapi")
    env = _workspace(root, champion_poll_interval_s=POLL_S)
    registry = _register(env["MLFLOW_TRACKING_URI"], str(root), versions=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RECOLAB_REDIS_URL", raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(scorer_module, "load_scorer", lambda _u, _t, v: FakeScorer(v))
        for client in _serve():
            yield client, registry


@pytest.fixture(scope="module")
def spec(served: tuple[Any, mlflow.MlflowClient]) -> dict[str, Any]:
    response = served[0].get("/docs.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def component(spec: dict[str, Any], schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = schema["$ref"].removeprefix("#/components/schemas/")
    found: dict[str, Any] = spec["components"]["schemas"][name]
    return name, found


def test_the_head_is_recolabs_not_bentomls(spec: dict[str, Any]) -> None:
    info = spec["info"]
    assert info["title"] == "RecoLab API"
    assert info["version"] == metadata.version("recolab") != "None"
    assert info["contact"]["name"] == "RecoLab"
    assert "bentoml" not in json.dumps(info).lower()  # no template README, badges, contact
    assert "Authorization: Bearer" in info["description"]
    serving = f"**Serving:** RecoLab {info['version']}, model `{MODEL}` version 1"
    assert serving in info["description"]


def test_the_description_follows_the_champion(
    served: tuple[Any, mlflow.MlflowClient],
) -> None:
    client, registry = served
    registry.set_registered_model_alias(MODEL, "champion", "2")
    try:
        deadline = time.monotonic() + 30
        while client.get("/status").json()["model"]["version"] != "2":
            assert time.monotonic() < deadline, "the service did not swap to version 2"
            time.sleep(POLL_S)
        description = client.get("/docs.json").json()["info"]["description"]
        assert f"model `{MODEL}` version 2 (the MLflow `champion`)" in description
    finally:
        registry.set_registered_model_alias(MODEL, "champion", "1")


def test_every_route_is_in_a_group_and_no_group_is_empty(spec: dict[str, Any]) -> None:
    declared = [tag["name"] for tag in spec["tags"]]
    assert declared == OUR_TAGS  # the app's order; BentoML's two groups are gone
    assert all(tag.get("description") for tag in spec["tags"])
    used: dict[str, list[str]] = {}
    for path, method, operation in operations(spec):
        assert operation.get("tags"), f"{method.upper()} {path} has no tag"
        for tag in operation["tags"]:
            used.setdefault(tag, []).append(path)
    assert set(used) == set(declared)  # every tag declared, every group has a route
    assert BENTOML_PROBES | {"/status"} == set(used["operations"])


def test_every_route_has_examples_that_fit_its_schemas(spec: dict[str, Any]) -> None:
    """Where OpenAPI 3.0 tools (Swagger UI, schemathesis) read them: the media type's and the
    parameter's `example`; each one valid for the model that documents it."""
    checked: list[str] = []
    for path, method, operation in operations(spec):
        if path in BENTOML_PROBES:
            continue
        label = f"{method.upper()} {path}"
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" or parameter["name"] in ("title", "genre"):
                assert "example" in parameter, (label, parameter["name"])
        media = [*operation.get("requestBody", {}).get("content", {}).values()]
        media += [
            content
            for status, response in operation["responses"].items()
            if status.startswith("2")
            for content in response.get("content", {}).values()
        ]
        assert media, label
        for entry in media:
            assert "example" in entry, label
            name, schema = component(spec, entry["schema"])
            assert entry["example"] == schema["examples"][0]
            model = getattr(sc, name)
            model.model_validate_json(json.dumps(entry["example"]))  # raises if it rotted
            checked.append(name)
    assert {"RecommendBody", "RateBody", "StatusResponse", "SimilarResponse"} <= set(checked)


def test_only_the_schemas_the_routes_use(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for unused in ("TaskStatusResponse", "InvalidArgument", "NotFound", "InternalServerError"):
        assert unused not in schemas  # BentoML's, for @bentoml.api methods this service lacks
    text = json.dumps(spec)
    for name in schemas:
        assert f'"#/components/schemas/{name}"' in text, f"{name} is not used"
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_the_page_still_documents_the_api(spec: dict[str, Any]) -> None:
    """What the spec documented before stays: statuses and security per route."""
    recommend = spec["paths"]["/recommend"]["post"]
    assert {"200", "401", "403", "404", "413", "422", "429", "503"} <= set(recommend["responses"])
    assert recommend["security"] == [{"HTTPBearer": []}]
    assert spec["openapi"].startswith("3.0")


class _Page(HTMLParser):
    """A page's title, the stylesheets and scripts it loads and its inline CSS and JS."""

    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.styles: list[str] = []
        self.scripts: list[str] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "link" and found.get("rel") == "stylesheet":
            self.styles.append(found["href"] or "")
        elif tag == "script" and found.get("src"):
            self.scripts.append(found["src"] or "")
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title += data
        elif self._in in ("style", "script"):
            self.inline.append(data)


HIDDEN_TITLE = re.compile(r"\.title[^{}]*\{[^}]*visibility\s*:\s*hidden", re.IGNORECASE)


def test_the_page_at_root_shows_recolabs_title(
    served: tuple[Any, mlflow.MlflowClient], spec: dict[str, Any]
) -> None:
    """BentoML's page said "BentoML Prediction Service" in the tab, hid the spec's title
    (`.info .main .title { visibility: hidden }` in its index.css) and had BentoML's corner."""
    client = served[0]
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(response.text)
    assert page.title.strip() == spec["info"]["title"] == "RecoLab API"
    assert "github-corner" not in response.text and "bentoml" not in response.text.lower()
    css = list(page.inline)
    for url in page.styles + page.scripts:  # relative to `/`: BentoML's Swagger UI assets
        asset = client.get(urljoin("/", url))
        assert asset.status_code == 200, url
        if url.endswith(".css"):
            css.append(asset.text)
    assert page.styles and page.scripts
    assert not HIDDEN_TITLE.search("\n".join(css))
    assert re.search(r"""url:\s*["']\./docs\.json["']""", "\n".join(page.inline))
    for path in ("/docs.json", "/livez", "/metrics"):  # BentoML's routes still answer
        assert client.get(path).status_code == 200, path
