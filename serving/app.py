"""The HTTP API, a FastAPI app that the BentoML service mounts at `/`.

BentoML serves it with its own `/livez`, `/readyz`, `/metrics`, tracing, access logs and
OpenAPI page (`/docs.json` merges these routes). FastAPI gives the API real status codes:
every bad input is a 4xx with a JSON `ErrorBody`, never a 500. The routes
(`serving.routes`) call the `ServingRuntime` that the service attaches at start-up.
"""

from __future__ import annotations

from fastapi import FastAPI

from recolab.application.service import ServingRuntime
from serving.errors import add_handlers
from serving.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from serving.routes import router


def create_app() -> FastAPI:
    """The API app (no side effects: nothing connects until a runtime is attached)."""
    app = FastAPI(
        title="RecoLab",
        version="1",
        summary="Movie recommendations wrapped in RecoLab's domain rules",
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
