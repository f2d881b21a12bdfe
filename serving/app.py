"""The HTTP API, a FastAPI app that the BentoML service mounts at `/`.

BentoML serves it with its own `/livez`, `/readyz`, `/metrics`, tracing, access logs and
OpenAPI page (`/docs.json` merges these routes; `serving.openapi` puts this app's title,
version, description, contact and route groups on it). FastAPI gives the API real status
codes: every bad input is a 4xx with a JSON `ErrorBody`, never a 500. The routes
(`serving.routes`) call the `ServingRuntime` that the service attaches at start-up.
"""

from __future__ import annotations

from importlib import metadata

from fastapi import FastAPI

from recolab.application.service import ServingRuntime
from serving.errors import add_handlers
from serving.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from serving.routes import router

DESCRIPTION = """\
Movie recommendations from the registered champion model (NeuMF, MLflow alias `champion`),
wrapped in RecoLab's domain rules: the user's tier picks the strategy (popular,
content-based, hybrid or collaborative), the answer is re-ranked for diversity and each
movie comes with an explanation.

Every route but the probes (`/livez`, `/readyz`) and `/metrics` needs
`Authorization: Bearer <token>`: a JWT from `recolab token <user id>` (`--role admin` for
an administrator) or the one `POST /users` returns. A user reads and writes only their own
data unless the token has the admin role. Every error is a JSON `ErrorBody` naming the
request (`X-Request-ID`)."""

# One group per tag on the OpenAPI page, in this order; BentoML's probes join `operations`.
TAGS = [
    {
        "name": "recommendations",
        "description": "Movies for a user by the strategy of the user's tier (or the one asked "
        "for), re-ranked for diversity and explained; cached until the user rates again.",
    },
    {
        "name": "ratings",
        "description": "A user's ratings: one moves the user's statistics and tier and drops "
        "their cached recommendations.",
    },
    {
        "name": "users",
        "description": "Registration (admin), profiles and the movies recommended so far.",
    },
    {"name": "movies", "description": "The catalogue: search, one movie, similar movies."},
    {
        "name": "operations",
        "description": "Readiness with reasons (`/status`), BentoML's probes (`/livez`, "
        "`/readyz`: 503 until a champion is loaded) and Prometheus metrics (`/metrics`).",
    },
]


def package_version() -> str:
    """RecoLab's version, as installed."""
    try:
        return metadata.version("recolab")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def _contact() -> dict[str, str]:
    """The project, with its home page when the package metadata names one."""
    contact = {"name": "RecoLab"}
    try:
        meta = metadata.metadata("recolab")
    except metadata.PackageNotFoundError:
        return contact
    urls = [u.split(",", 1)[-1].strip() for u in meta.get_all("Project-URL") or []]
    urls += meta.get_all("Home-page") or []
    return {**contact, "url": urls[0]} if urls else contact


def create_app() -> FastAPI:
    """The API app (no side effects: nothing connects until a runtime is attached)."""
    app = FastAPI(
        title="RecoLab API",
        version=package_version(),
        summary="Movie recommendations wrapped in RecoLab's domain rules",
        description=DESCRIPTION,
        contact=_contact(),
        openapi_tags=TAGS,
        docs_url=None,  # BentoML serves the page (and /docs.json) for the whole service
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(router)
    add_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(RequestContextMiddleware)  # outermost: ids on every answer
    return app


def attach(app: FastAPI, runtime: ServingRuntime) -> None:
    """Serve `runtime` from `app` (the service does this at start-up); its serving knobs
    (request threads, body size) take effect from the next request on."""
    app.state.runtime = runtime
