"""The service's OpenAPI document (`/docs.json`, the page at `/`) in RecoLab's words.

BentoML writes the document's head from a template: the service's name as title, "None" as
version, BentoML's contact and README, a "Service APIs" group for `@bentoml.api` methods
(this service has none: the group is empty) and schemas of its own that nothing refers to.
`DocumentedService`, the service class of `serving.service.RecoLab`, keeps BentoML's paths
and puts the mounted FastAPI app's metadata (`serving.app.create_app`) in place of the rest:
title, RecoLab's version, a description that names the champion model being served,
contact, one group per tag in the app's order (BentoML's probes join `operations`), and
only the schemas the routes use.

The spec is labelled OpenAPI 3.0 (BentoML's choice), where a schema's `examples` list is not
read: each route's examples, written once on its schemas (`serving.schemas`) and parameters
(`serving.routes`), are copied to where 3.0 tools read them (a parameter's or media type's
`example`), so the page shows them and schemathesis sends them.

The page at `/` is `docs_page`, mounted by the service ahead of BentoML's own page: the same
Swagger UI assets, with the app's title in the browser tab and on the page (BentoML's names
itself in the tab, hides the document's title and adds its GitHub corner).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from html import escape
from importlib import resources
from string import Template
from typing import Any, TypeVar

import attrs
import bentoml
from bentoml._internal.service.openapi.specification import (
    Contact,
    Info,
    OpenAPISpecification,
    Operation,
    PathItem,
    Tag,
)
from bentoml._internal.utils.cattr import bentoml_cattr
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

T = TypeVar("T")

OPERATIONS_TAG = "operations"  # where BentoML's probes and metrics are listed
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SCHEMA_REF = "#/components/schemas/"


@attrs.define
class DocumentedService(bentoml.Service[T]):  # type: ignore[misc]  # _bentoml_sdk is untyped
    """A BentoML service whose OpenAPI document is its FastAPI app's (see the module)."""

    @property
    def openapi_spec(self) -> OpenAPISpecification:
        spec = super().openapi_spec
        app = next((a for a, _path, _name in self.mount_apps if isinstance(a, FastAPI)), None)
        return spec if app is None else document(spec, app)


def docs_page(title: str) -> Starlette:
    """An app answering `GET /` with the Swagger UI page of `/docs.json` titled `title`
    (`serving/docs.html`; BentoML serves the assets under `/static_content/`)."""
    template = Template(resources.files("serving").joinpath("docs.html").read_text("utf-8"))
    page = template.substitute(title=escape(title))

    async def index(_request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return Starlette(routes=[Route("/", index, methods=["GET"])])


def describe(app: FastAPI) -> str:
    """The app's description and what it serves: RecoLab's version and the champion's."""
    runtime = getattr(app.state, "runtime", None)
    model = runtime.champion.status() if runtime is not None else None
    if model is None:
        serving = "no model yet: the service is starting"
    elif model.loaded:
        serving = f"model `{model.model_name}` version {model.version} (the MLflow `champion`)"
    else:
        serving = f"no `{model.model_name}` champion loaded yet (`GET /status` says why)"
    return f"{app.description}\n\n**Serving:** RecoLab {app.version}, {serving}."


def document(spec: OpenAPISpecification, app: FastAPI) -> OpenAPISpecification:
    """`spec` (BentoML's document of the service mounting `app`) in `app`'s words."""
    components: dict[str, Any] = _plain(spec.components) or {}
    schemas: dict[str, Any] = components.get("schemas", {})
    paths = {path: _path_item(item, schemas) for path, item in spec.paths.items()}
    used = list(dict.fromkeys(_tags(paths)))  # the groups with a route, no empty one
    tags = [Tag(**tag) for tag in app.openapi_tags or [] if tag["name"] in used]
    tags += [Tag(name=name) for name in used if name not in {t.name for t in tags}]
    if schemas:
        components["schemas"] = {name: schemas[name] for name in _referenced(paths, schemas)}
    contact = Contact(**app.contact) if app.contact else None
    info = Info(title=app.title, version=app.version, description=describe(app), contact=contact)
    return attrs.evolve(
        spec,
        info=info,
        paths=paths,
        tags=tags,
        components=components,  # type: ignore[arg-type]  # a dict, as BentoML's own
    )


def _plain(value: Any) -> Any:
    """`value` as plain dicts and lists (BentoML mixes its attrs classes with dicts)."""
    return bentoml_cattr.unstructure(value)


def _path_item(item: PathItem, schemas: Mapping[str, Any]) -> PathItem:
    """The path's operations with BentoML's tags on ours and their examples where 3.0 tools
    read them."""
    changes: dict[str, Any] = {}
    for method in METHODS:
        operation = getattr(item, method)
        if isinstance(operation, Operation):  # one of BentoML's probes
            changes[method] = attrs.evolve(operation, tags=[OPERATIONS_TAG])
        elif isinstance(operation, dict):  # a FastAPI route
            changes[method] = _with_examples(copy.deepcopy(operation), schemas)
    return attrs.evolve(item, **changes)


def _with_examples(operation: dict[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    for parameter in operation.get("parameters", []):
        found = parameter.get("schema", {}).get("examples")
        if found and "example" not in parameter and "examples" not in parameter:
            parameter["example"] = found[0]
    media = list(operation.get("requestBody", {}).get("content", {}).values())
    for status, response in operation.get("responses", {}).items():
        if str(status).startswith("2"):  # errors share one schema: no example fits them all
            media += response.get("content", {}).values()
    for entry in media:
        found = _schema(entry.get("schema", {}), schemas).get("examples")
        if found and "example" not in entry and "examples" not in entry:
            entry["example"] = found[0]
    return operation


def _schema(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> Mapping[str, Any]:
    """`schema`, or the component it refers to."""
    ref = schema.get("$ref", "")
    return schemas.get(ref.removeprefix(SCHEMA_REF), {}) if ref.startswith(SCHEMA_REF) else schema


def _operations(paths: Mapping[str, PathItem]) -> Iterator[Any]:
    for item in paths.values():
        for method in METHODS:
            operation = getattr(item, method)
            if operation is not None:
                yield operation


def _tags(paths: Mapping[str, PathItem]) -> Iterator[str]:
    for operation in _operations(paths):
        tags = operation.tags if isinstance(operation, Operation) else operation.get("tags")
        yield from (t if isinstance(t, str) else t.name for t in tags or [])


def _refs(node: Any) -> Iterator[str]:
    """Every schema `$ref` in `node`, a plain document part."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
            yield ref.removeprefix(SCHEMA_REF)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _referenced(paths: Mapping[str, PathItem], schemas: Mapping[str, Any]) -> list[str]:
    """The schemas the paths use, directly or through other schemas, in `schemas`' order."""
    seen: set[str] = set()
    todo = list(_refs(_plain(dict(paths))))
    while todo:
        name = todo.pop()
        if name not in seen and name in schemas:
            seen.add(name)
            todo.extend(_refs(schemas[name]))
    return [name for name in schemas if name in seen]
