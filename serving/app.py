"""The HTTP API, a FastAPI app that the BentoML service mounts at `/`.

BentoML serves it with its own `/livez`, `/readyz`, `/metrics`, tracing, access logs and
OpenAPI page (`/docs.json` merges these routes). FastAPI gives the API real status codes:
every bad input is a 4xx with a JSON `ErrorBody`, never a 500. Routes stay thin: parse,
authorise, call the application, map the result. `ServingRuntime` holds what they use;
the service puts it on `app.state.runtime` at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.exceptions import HTTPException

from recolab.adapters.runtime.observability import (
    ServingMetrics,
    current_request_id,
    current_trace_ids,
    request_context,
    request_id_from,
    serving_metrics,
)
from recolab.adapters.runtime.security import (
    AuthError,
    Forbidden,
    Principal,
    RateLimited,
    RateLimiter,
    TokenVerifier,
    enforce,
    issue_token,
    rate_limiter,
    serving_secret,
)
from recolab.adapters.sql.queries import HistoryItem as HistoryRow
from recolab.adapters.sql.queries import SqlQueries
from recolab.application.recommend import RecommendationResult, Recommender, RecommendRequest
from recolab.application.users import RateMovie, get_profile, rate_movie, register_user
from recolab.bootstrap import Platform, is_transient
from recolab.config import ServingConfig
from recolab.domain.errors import InvalidValue, MovieNotFound, NotFound
from recolab.domain.model import User
from recolab.domain.values import Timestamp
from serving import schemas as sc

log = logging.getLogger("serving")

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
USER_TOKEN_TTL_S = 30 * 24 * 3600
RECENT_RATINGS = 20


@dataclass
class ServingRuntime:
    """What the routes use, built once per worker from the platform."""

    platform: Platform
    config: ServingConfig
    recommender: Recommender
    queries: SqlQueries
    limiter: RateLimiter
    metrics: ServingMetrics
    secret: str
    verify: TokenVerifier

    @classmethod
    def start(cls, platform: Platform) -> ServingRuntime:
        """Wire the serving side and start following the champion model."""
        secret = serving_secret(platform.settings)  # refuse a default secret before connecting
        config, champion, metrics = platform.serving_config, platform.champion, serving_metrics()
        runtime = cls(
            platform=platform,
            config=config,
            recommender=platform.recommender(champion.current),
            queries=SqlQueries(platform.engine),
            limiter=rate_limiter(platform.settings, config.rate_limit_per_minute),
            metrics=metrics,
            secret=secret,
            verify=TokenVerifier(secret),
        )
        champion.on_swap.append(lambda scorer: metrics.model(champion.model_name, scorer.version))
        champion.start()
        champion.on_swap.append(lambda _: platform.catalogue.refresh())  # movies added since
        metrics.model(champion.model_name, champion.status().version)
        return runtime

    def close(self) -> None:
        self.platform.champion.stop()
        self.platform.close()

    def status(self) -> sc.StatusResponse:
        """Readiness with reasons: database reachable and a champion model loaded."""
        champion = self.platform.champion.status()
        reasons: list[str] = []
        db_error = _probe(self.queries.ping)
        if db_error:
            reasons.append(f"database unavailable: {db_error}")
        if not champion.loaded:
            reasons.append(champion.error or "no champion model loaded yet")
        cache_ok = _answers(self.platform.cache.ping)
        return sc.StatusResponse(
            ready=not reasons,
            reasons=reasons,
            model=sc.ModelStatus(
                name=champion.model_name,
                loaded=champion.loaded,
                version=champion.version,
                error=champion.error,
            ),
            database=sc.ComponentStatus(
                ok=db_error is None, backend=self.platform.engine.dialect.name, error=db_error
            ),
            cache=sc.ComponentStatus(
                ok=cache_ok,
                backend="redis" if self.platform.settings.redis_url else "memory",
                error=None if cache_ok else "cache unavailable: answering uncached",
            ),
        )

    def observe(self, request: RecommendRequest, result: RecommendationResult) -> None:
        self.metrics.recommendation(
            strategy=result.strategy_used,
            tier=result.classification,
            cached=result.cached,
            requested=request.strategy,
            fallback=result.fallback is not None,
        )
        log.info(
            "recommendations served",
            extra={
                "user_id": result.user_id,
                "tier": result.classification,
                "requested": request.strategy,
                "strategy": result.strategy_used,
                "fallback": result.fallback,
                "cached": result.cached,
                "model_version": result.model_version,
                "n": len(result.items),
            },
        )

    def record_history(self, result: RecommendationResult) -> None:
        rows = [HistoryRow(i.movie_id, i.rank, i.score, i.source) for i in result.items]
        try:
            self.queries.record_recommendations(
                result.user_id,
                rows,
                strategy=result.strategy_used,
                model_version=result.model_version,
                at=Timestamp.now().value,
            )
        except SQLAlchemyError:  # history is best effort: the answer was already sent
            log.exception("could not record recommendation history")

    def register(self, attempts: int = 3) -> User:
        for _ in range(attempts - 1):
            try:
                return register_user(self.platform.uow(), self.platform.bus)
            except IntegrityError:  # a concurrent registration took the same id: retry
                continue
        return register_user(self.platform.uow(), self.platform.bus)


def _probe(check: Callable[[], object]) -> str | None:
    """None when `check` runs, else a one-line reason (no URLs or secrets: first line only)."""
    try:
        check()
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return f"{type(exc).__name__}: {first}"
    return None


def _answers(ping: Callable[[], bool]) -> bool:
    try:
        return bool(ping())
    except Exception:
        return False


# ---- dependencies


async def get_runtime(request: Request) -> ServingRuntime:
    runtime: ServingRuntime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(503, "service is starting")
    return runtime


Runtime = Annotated[ServingRuntime, Depends(get_runtime)]
bearer = HTTPBearer(
    auto_error=False, description="A JWT (HS256) from `recolab token` or `POST /users`"
)


def authenticate(
    rt: Runtime, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller, from the bearer token; one request counted against its rate limit."""
    if credentials is None:
        raise AuthError("missing bearer token: send Authorization: Bearer <token>")
    principal = rt.verify(credentials.credentials)
    enforce(rt.limiter, f"sub:{principal.subject}")
    return principal


Caller = Annotated[Principal, Depends(authenticate)]
UserIdPath = Annotated[int, Path(ge=1, le=sc.MAX_ID, description="a user id")]
MovieIdPath = Annotated[int, Path(ge=1, le=sc.MAX_ID, description="a movie id")]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers of a route: its own `codes` and those every route can give (400 for
    malformed JSON or Content-Length, 503 while the database is unreachable)."""
    common = (400, 401, 413, 422, 429, 503)
    return {code: {"model": sc.ErrorBody} for code in (*codes, *common)}


# ---- routes

router = APIRouter()


@router.post(
    "/recommend",
    response_model=sc.RecommendResponse,
    tags=["recommendations"],
    responses=_errors(403, 404),
)
def recommend(
    body: sc.RecommendBody,
    caller: Caller,
    rt: Runtime,
    response: Response,
    background: BackgroundTasks,
) -> Any:
    """Recommend movies to a user; the strategy follows the user's tier unless given.

    Header `X-RecoLab-Fallback` says why the requested strategy was replaced, if it was
    (no ratings yet, no model loaded yet, ...)."""
    caller.require_access(body.user_id)
    request = RecommendRequest(**body.model_dump())
    result = rt.recommender.recommend(request)
    rt.observe(request, result)
    if not result.cached:
        background.add_task(rt.record_history, result)
    if result.fallback:
        response.headers["X-RecoLab-Fallback"] = result.fallback
    return sc.RecommendResponse.model_validate(result, from_attributes=True)


@router.post(
    "/ratings",
    response_model=sc.RatingResponse,
    status_code=201,
    tags=["ratings"],
    responses={
        200: {"model": sc.RatingResponse, "description": "replaced an earlier rating"},
        **_errors(403, 404),
    },
)
def rate(body: sc.RateBody, caller: Caller, rt: Runtime, response: Response) -> Any:
    """Store a rating (or replace the user's earlier one); the user's cached
    recommendations are invalidated, so the movie is not recommended again."""
    caller.require_access(body.user_id)
    outcome = rate_movie(
        RateMovie(body.user_id, body.movie_id, body.score), rt.platform.uow(), rt.platform.bus
    )
    rt.metrics.rating(replaced=outcome.previous_score is not None)
    if outcome.previous_score is not None:
        response.status_code = 200
    user = outcome.user
    return sc.RatingResponse(
        user_id=body.user_id,
        movie_id=body.movie_id,
        score=outcome.rating.score.value,
        previous_score=outcome.previous_score.value if outcome.previous_score else None,
        rated_at=outcome.rating.timestamp.value,
        classification=outcome.classification.value,
        n_ratings=user.n_ratings,
        avg_rating=user.avg_rating,
    )


@router.post(
    "/users",
    response_model=sc.RegisteredUser,
    status_code=201,
    tags=["users"],
    responses=_errors(403),
)
def register(caller: Caller, rt: Runtime) -> Any:
    """Register a new user (a cold start) and issue a token for them. Admin only."""
    caller.require_admin()
    user = rt.register()
    return sc.RegisteredUser(
        user_id=user.id.value,
        classification=user.classify().value,
        created_at=user.created_at.value,
        access_token=issue_token(user.id.value, "user", rt.secret, USER_TOKEN_TTL_S),
        expires_in=USER_TOKEN_TTL_S,
    )


@router.get(
    "/users/{user_id}",
    response_model=sc.ProfileResponse,
    tags=["users"],
    responses=_errors(403, 404),
)
def profile(user_id: UserIdPath, caller: Caller, rt: Runtime) -> Any:
    """A user's tier, statistics, favourite genres, recent ratings and strategy weights."""
    caller.require_access(user_id)
    found = get_profile(user_id, rt.platform.uow(), recent=RECENT_RATINGS)
    titles = rt.queries.titles([r.movie_id.value for r in found.recent_ratings])
    breakdown = rt.queries.rating_breakdown(user_id)
    user = found.user
    return sc.ProfileResponse(
        user_id=user_id,
        classification=found.classification.value,
        n_ratings=user.n_ratings,
        avg_rating=user.avg_rating,
        n_positive=breakdown.positive,
        n_negative=breakdown.negative,
        favorite_genres=user.favorite_genres,
        cf_weight=found.cf_weight,
        cb_weight=found.cb_weight,
        created_at=user.created_at.value,
        last_activity=user.last_activity.value if user.last_activity else None,
        recent_ratings=[
            sc.RatedMovie(
                movie_id=r.movie_id.value,
                title=titles.get(r.movie_id.value),
                score=r.score.value,
                rated_at=r.timestamp.value,
            )
            for r in found.recent_ratings
        ],
    )


@router.get(
    "/users/{user_id}/history",
    response_model=sc.HistoryResponse,
    tags=["users"],
    responses=_errors(403, 404),
)
def history(
    user_id: UserIdPath,
    caller: Caller,
    rt: Runtime,
    limit: Annotated[int, Query(ge=1, le=500, description="items, newest first")] = 50,
) -> Any:
    """The movies recommended to a user, newest response first."""
    caller.require_access(user_id)
    get_profile(user_id, rt.platform.uow(), recent=0)  # 404 for an unknown user
    items = rt.queries.history(user_id, limit)
    return sc.HistoryResponse(
        user_id=user_id,
        items=[sc.HistoryItem.model_validate(i, from_attributes=True) for i in items],
    )


@router.get("/movies", response_model=sc.MovieList, tags=["movies"], responses=_errors())
def search_movies(
    caller: Caller,
    rt: Runtime,
    title: Annotated[
        str | None, Query(min_length=1, max_length=200, description="part of the title")
    ] = None,
    genre: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """Search movies by title and genre (case-insensitive), most popular first."""
    found = rt.queries.search(title, genre, limit)
    return sc.MovieList(items=[sc.MovieOut.model_validate(m, from_attributes=True) for m in found])


@router.get(
    "/movies/{movie_id}", response_model=sc.MovieOut, tags=["movies"], responses=_errors(404)
)
def movie(movie_id: MovieIdPath, caller: Caller, rt: Runtime) -> Any:
    """One movie with its rating statistics."""
    found = rt.queries.movie(movie_id)
    if found is None:
        raise MovieNotFound(movie_id)
    return sc.MovieOut.model_validate(found, from_attributes=True)


@router.get(
    "/movies/{movie_id}/similar",
    response_model=sc.SimilarResponse,
    tags=["movies"],
    responses=_errors(404),
)
def similar(
    movie_id: MovieIdPath,
    caller: Caller,
    rt: Runtime,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Any:
    """Movies like this one: by the model's item embeddings, else by shared genres."""
    if rt.queries.movie(movie_id) is None:
        raise MovieNotFound(movie_id)
    scorer = rt.platform.champion.current()
    found = rt.queries.similar(movie_id, k, getattr(scorer, "similar", None))
    items = [
        sc.SimilarMovie(
            **sc.MovieOut.model_validate(s.movie, from_attributes=True).model_dump(),
            similarity=s.similarity,
        )
        for s in found.items
    ]
    return sc.SimilarResponse(movie_id=movie_id, method=found.method, items=items)


@router.get(
    "/status",
    response_model=sc.StatusResponse,
    tags=["operations"],
    responses={503: {"model": sc.StatusResponse, "description": "not ready, with reasons"}},
)
def status(rt: Runtime, response: Response) -> Any:
    """Readiness with reasons (database, cache, model and its version); 503 when not ready.
    BentoML's `/readyz` answers the same question for probes, without the details."""
    report = rt.status()
    if not report.ready:
        response.status_code = 503
    return report


# ---- errors


def _error(
    status: int,
    message: str,
    *,
    detail: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = sc.ErrorBody(error=message, detail=detail, request_id=current_request_id())
    return JSONResponse(body.model_dump(exclude_none=True), status, headers=headers)


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
        return _error(400, f"malformed JSON body: {summary}", detail=fields)
    return _error(422, f"invalid request: {summary}", detail=fields)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), headers=exc.headers)


async def _on_auth(_: Request, exc: Exception) -> JSONResponse:
    return _error(401, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def _on_forbidden(_: Request, exc: Exception) -> JSONResponse:
    return _error(403, str(exc))


async def _on_rate_limited(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    return _error(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


async def _on_not_found(_: Request, exc: Exception) -> JSONResponse:
    return _error(404, str(exc))


async def _on_invalid(_: Request, exc: Exception) -> JSONResponse:
    return _error(422, str(exc))


async def _on_database(_: Request, exc: Exception) -> JSONResponse:
    if is_transient(exc):
        return _error(503, "database unavailable, retry later", headers={"Retry-After": "1"})
    log.exception("database error", exc_info=exc)
    return _error(500, "internal error")


# ---- middleware


class RequestContextMiddleware:
    """Request id (from `X-Request-ID` or new) for logs and responses; the trace id in
    `X-Trace-ID`; an unexpected error becomes a JSON 500 that names the request."""

    def __init__(self, app: ASGIApp, request_threads: int | None = None) -> None:
        self.app = app
        self._request_threads = request_threads

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._request_threads is not None:
            # Sync endpoints run on anyio's default thread pool (40 threads), which
            # belongs to the running event loop: sized here, on the loop, once. Measured
            # (1 worker, 32 concurrent uncached recommends): 40 threads 37 ms of CPU per
            # request, 4 threads 26 ms, as fewer threads contend for the GIL.
            to_thread.current_default_thread_limiter().total_tokens = self._request_threads
            self._request_threads = None
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
                await _error(500, "internal error")(scope, receive, send_with_ids)


class BodySizeLimitMiddleware:
    """413 for bodies over `app.state.max_request_bytes`, by header or while streaming."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int = scope["app"].state.max_request_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and not length.isdigit():
            await _error(400, "invalid Content-Length header")(scope, receive, send)
            return
        if length is not None and int(length) > limit:
            await _too_large(limit)(scope, receive, send)
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


def _too_large(limit: int) -> JSONResponse:
    return _error(413, f"request body larger than {limit} bytes")


# ---- the app


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
    config = ServingConfig()
    app.state.max_request_bytes = config.max_request_bytes
    app.include_router(router)
    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        RequestValidationError: _on_validation,
        HTTPException: _on_http,
        AuthError: _on_auth,
        Forbidden: _on_forbidden,
        RateLimited: _on_rate_limited,
        NotFound: _on_not_found,
        InvalidValue: _on_invalid,
        SQLAlchemyError: _on_database,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
    app.add_middleware(BodySizeLimitMiddleware)
    # Outermost: ids on every answer.
    app.add_middleware(RequestContextMiddleware, request_threads=config.request_threads)
    return app


def attach(app: FastAPI, runtime: ServingRuntime) -> None:
    """Serve `runtime` from `app` (the service does this at start-up)."""
    app.state.max_request_bytes = runtime.config.max_request_bytes
    app.state.runtime = runtime
