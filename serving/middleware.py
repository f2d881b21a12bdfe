"""The API's middlewares: request ids (and the worker's thread pool size), body size; and
one for the BentoML service around it, for paths that never reach the API."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import to_thread
from starlette.exceptions import HTTPException

from recolab.bootstrap import current_trace_ids, request_context, request_id_from
from serving.errors import error

log = logging.getLogger("serving")

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def _runtime(scope: MutableMapping[str, Any]) -> Any:
    """The runtime attached to the app (None while the service starts)."""
    return getattr(scope["app"].state, "runtime", None)


class RequestContextMiddleware:
    """Request id (from `X-Request-ID` or new) for logs and responses; the trace id in
    `X-Trace-ID`; an unexpected error becomes a JSON 500 that names the request.

    It also sizes the event loop's thread pool to the runtime's `request_threads`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._sized_for: object = None  # the runtime whose request_threads are in force

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = _runtime(scope)
        if runtime is not None and runtime is not self._sized_for:
            # Sync endpoints run on anyio's default thread pool (40 threads), which
            # belongs to the running event loop: sized here, on the loop, once per runtime.
            # Measured (1 worker, 32 concurrent uncached recommends): 40 threads 37 ms of
            # CPU per request, 4 threads 26 ms, as fewer threads contend for the GIL.
            to_thread.current_default_thread_limiter().total_tokens = runtime.request_threads
            self._sized_for = runtime
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1") or None
        started = False

        async def send_with_ids(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = [(b"x-request-id", rid.encode())]
                trace_id, _ = current_trace_ids()
                if trace_id:
                    extra.append((b"x-trace-id", trace_id.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        with request_context(request_id_from(incoming)) as rid:
            try:
                await self.app(scope, receive, send_with_ids)
            except Exception:
                log.exception("unhandled error")
                if started:
                    raise
                await error(500, "internal error")(scope, receive, send_with_ids)


class BodySizeLimitMiddleware:
    """413 for bodies over the runtime's `max_request_bytes`, by header or while streaming."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        runtime = _runtime(scope) if scope["type"] == "http" else None
        if runtime is None:  # not HTTP, or no runtime yet: the routes answer 503
            await self.app(scope, receive, send)
            return
        limit: int = runtime.max_request_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and not length.isdigit():
            await error(400, "invalid Content-Length header")(scope, receive, send)
            return
        if length is not None and int(length) > limit:
            await error(413, f"request body larger than {limit} bytes")(scope, receive, send)
            return
        seen = 0

        async def counted() -> MutableMapping[str, Any]:
            nonlocal seen
            message: MutableMapping[str, Any] = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"request body larger than {limit} bytes")
            return message

        await self.app(scope, counted, send)


class UnroutablePathMiddleware:
    """A JSON 404 for a path with a line break, for the whole BentoML service
    (`RecoLab.add_asgi_middleware`).

    BentoML mounts the API at `/` with a pattern that stops at a line break, so such a path
    (`/users/1%0A`) never reaches the API and got Starlette's plain-text 404: an answer the
    spec does not document (schemathesis ST105)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "\n" in scope.get("path", ""):
            await error(404, "not found: a path cannot hold a line break")(scope, receive, send)
            return
        await self.app(scope, receive, send)
