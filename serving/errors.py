"""Every error the API gives is a JSON `ErrorBody` with the request id; this maps the
application's errors (and the framework's) to their status codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from recolab.application.access import AuthError, Forbidden, RateLimited
from recolab.application.errors import InvalidValue, NotFound
from recolab.bootstrap import current_request_id, database_errors
from serving.schemas import EXAMPLE_REQUEST_ID, ErrorBody

log = logging.getLogger("serving")

Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def error(
    status: int,
    message: str,
    *,
    detail: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON answer of an error, naming the current request."""
    body = ErrorBody(error=message, detail=detail, request_id=current_request_id())
    return JSONResponse(body.model_dump(exclude_none=True), status, headers=headers)


# Each error status the API gives: when (the OpenAPI page's description) and an answer it
# gives then, word for word (the message the code raising it writes).
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: (
        "Malformed JSON body or Content-Length header",
        {"error": "malformed JSON body: body.1: JSON decode error"},
    ),
    401: (
        "No bearer token, or one that is invalid or expired (see WWW-Authenticate)",
        {"error": "missing bearer token: send Authorization: Bearer <token>"},
    ),
    403: (
        "The token may not do this: another user's data, or an admin operation",
        {"error": "token for '7' may not access user 42"},
    ),
    404: ("No such user or movie", {"error": "user 42 not found"}),
    413: (
        "The body is over serving.yaml's max_request_bytes",
        {"error": "request body larger than 16384 bytes"},
    ),
    422: (
        "A field is invalid (detail names each)",
        {
            "error": "invalid request: body.colour: Extra inputs are not permitted",
            "detail": [
                {
                    "loc": "body.colour",
                    "msg": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                }
            ],
        },
    ),
    429: (
        "Too many requests from this client: retry after the Retry-After header's seconds",
        {"error": "rate limit of 600 requests per minute exceeded"},
    ),
    503: (
        "The database is unavailable (Retry-After: 1)",
        {"error": "database unavailable, retry later"},
    ),
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers of a route for the OpenAPI page, each with what it means and an example:
    its own `codes` and those every route can give (400 for malformed JSON or Content-Length,
    503 while the database is down)."""
    common = (400, 401, 413, 422, 429, 503)
    out: dict[int | str, dict[str, Any]] = {}
    for code in (*codes, *common):
        description, example = _ERRORS[code]
        example = {**example, "request_id": EXAMPLE_REQUEST_ID}
        out[code] = {
            "model": ErrorBody,
            "description": description,
            "content": {"application/json": {"example": example}},
        }
    return out


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": ".".join(str(p) for p in err.get("loc", ())),
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in jsonable_encoder(exc.errors())
    ]


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = _field_errors(exc)
    summary = "; ".join(f"{f['loc']}: {f['msg']}" for f in fields[:5])
    if any(f["type"] == "json_invalid" for f in fields):
        return error(400, f"malformed JSON body: {summary}", detail=fields)
    return error(422, f"invalid request: {summary}", detail=fields)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), headers=exc.headers)


async def _on_auth(_: Request, exc: Exception) -> JSONResponse:
    return error(401, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def _on_forbidden(_: Request, exc: Exception) -> JSONResponse:
    return error(403, str(exc))


async def _on_rate_limited(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    return error(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


async def _on_not_found(_: Request, exc: Exception) -> JSONResponse:
    return error(404, str(exc))


async def _on_invalid(_: Request, exc: Exception) -> JSONResponse:
    return error(422, str(exc))


def _on_database(is_transient: Callable[[BaseException], bool]) -> Handler:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            return error(503, "database unavailable, retry later", headers={"Retry-After": "1"})
        log.exception("database error", exc_info=exc)
        return error(500, "internal error")

    return handle


def add_handlers(app: FastAPI) -> None:
    """Map every known error to its answer."""
    database_error, is_transient = database_errors()
    handlers: dict[type[Exception], Handler] = {
        RequestValidationError: _on_validation,
        HTTPException: _on_http,
        AuthError: _on_auth,
        Forbidden: _on_forbidden,
        RateLimited: _on_rate_limited,
        NotFound: _on_not_found,
        InvalidValue: _on_invalid,
        database_error: _on_database(is_transient),
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
