"""The API's routes: parse, authorise, call the application, map the answer."""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from starlette.exceptions import HTTPException

from recolab.application.access import Principal
from recolab.application.recommend import RecommendRequest
from recolab.application.service import ServingRuntime
from recolab.application.users import RateMovie
from serving import examples as ex
from serving import schemas as sc
from serving.errors import responses


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
    request: Request,
    rt: Runtime,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller, from the bearer token; one request counted against its rate limit, and
    a failed one against the client's address (the peer: a forwarded-for header is the
    client's to forge)."""
    client = request.client.host if request.client else None
    return rt.authenticate(credentials.credentials if credentials else None, client)


Caller = Annotated[Principal, Depends(authenticate)]
UserIdPath = Annotated[
    int, Path(ge=1, le=sc.MAX_ID, description="a user id", examples=[ex.USER_ID])
]
MovieIdPath = Annotated[
    int, Path(ge=1, le=sc.MAX_ID, description="a movie id", examples=[ex.MOVIE_ID])
]


# Query strings without control characters: the pattern for the spec, the check (with a
# message naming the character) for the server.
_PRINTABLE = {"pattern": sc.NO_CONTROL_CHARACTERS}
_NO_CONTROL = AfterValidator(sc.refuse_control_characters)
TitleQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        description="part of the title",
        examples=[ex.TITLE_QUERY],
        json_schema_extra=_PRINTABLE,
    ),
    _NO_CONTROL,
]
GenreQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="a genre",
        examples=[ex.GENRE_QUERY],
        json_schema_extra=_PRINTABLE,
    ),
    _NO_CONTROL,
]


def _repeatable(annotation: Any) -> bool:
    """Whether a query parameter of this type may be given more than once (a list)."""
    if annotation in (list, tuple, set, frozenset):
        return True
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return origin is not None and any(_repeatable(arg) for arg in get_args(annotation))


def _query_parameters(dependant: Dependant) -> dict[str, bool]:
    """The query parameters a route takes (its dependencies' too): name -> repeatable."""
    found = {f.alias: _repeatable(f.field_info.annotation) for f in dependant.query_params}
    for sub in dependant.dependencies:
        found |= _query_parameters(sub)
    return found


# id(route) -> its query parameters (routes compare by value, so they are not dict keys;
# they live as long as the app)
_route_queries: dict[int, dict[str, bool]] = {}


def _query_error(kind: str, name: str, message: str, value: str) -> dict[str, Any]:
    return {"type": kind, "loc": ("query", name), "msg": message, "input": value}


async def refuse_unknown_query_parameters(request: Request) -> None:
    """422 naming every query parameter the route does not take, or takes once but was
    given more often: unknown body fields are refused too, so a misspelt `limti=5` is an
    error rather than a silent default, and `title=a&title=b` is not silently `b`."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _route_queries.get(id(route))
    if known is None:
        known = _route_queries[id(route)] = _query_parameters(dependant)
    takes = ", ".join(sorted(known)) or "none"
    errors = []
    for name in dict.fromkeys(request.query_params):
        values = request.query_params.getlist(name)
        if name not in known:
            message = f"unknown query parameter (this route takes: {takes})"
            errors.append(_query_error("extra_forbidden", name, message, values[0]))
        elif len(values) > 1 and not known[name]:
            message = f"given {len(values)} times: this parameter takes one value"
            errors.append(_query_error("repeated", name, message, values[-1]))
    if errors:
        raise RequestValidationError(errors)


router = APIRouter(dependencies=[Depends(refuse_unknown_query_parameters)])


@router.post(
    "/recommend",
    response_model=sc.RecommendResponse,
    tags=["recommendations"],
    responses=responses(403, 404),
)
def recommend(body: sc.RecommendBody, caller: Caller, rt: Runtime) -> Response:
    """Recommend movies to a user; the strategy follows the user's tier unless given.

    Header `X-RecoLab-Fallback` says why the requested strategy was replaced, if it was
    (no ratings yet, no model loaded yet, ...); `X-RecoLab-Variant` which model answered
    (champion, or an experiment's challenger), as the body's `variant` does."""
    caller.require_access(body.user_id)
    result = rt.recommend(RecommendRequest(**body.model_dump()))
    # Validated and written by the response model itself, once: returned as is, FastAPI
    # neither validates it again nor encodes it a second time (the hot path's largest body).
    answer = sc.RecommendResponse.model_validate(result, from_attributes=True)
    headers = {"X-RecoLab-Variant": result.variant}
    if result.fallback:
        headers["X-RecoLab-Fallback"] = result.fallback
    return Response(answer.model_dump_json(), media_type="application/json", headers=headers)


@router.post(
    "/ratings",
    response_model=sc.RatingResponse,
    status_code=201,
    tags=["ratings"],
    responses={
        200: {"model": sc.RatingResponse, "description": "replaced an earlier rating"},
        **responses(403, 404),
    },
)
def rate(body: sc.RateBody, caller: Caller, rt: Runtime, response: Response) -> Any:
    """Store a rating (or replace the user's earlier one); the user's cached
    recommendations are invalidated, so the movie is not recommended again."""
    caller.require_access(body.user_id)
    outcome = rt.rate(RateMovie(body.user_id, body.movie_id, body.score))
    if outcome.previous_score is not None:
        response.status_code = 200
    return sc.RatingResponse.of(outcome)


@router.post(
    "/users",
    response_model=sc.RegisteredUser,
    status_code=201,
    tags=["users"],
    responses=responses(403),
)
def register(caller: Caller, rt: Runtime) -> Any:
    """Register a new user (a cold start) and issue a token for them. Admin only."""
    caller.require_admin()
    return sc.RegisteredUser.of(rt.register())


@router.get(
    "/users/{user_id}",
    response_model=sc.ProfileResponse,
    tags=["users"],
    responses=responses(403, 404),
)
def profile(user_id: UserIdPath, caller: Caller, rt: Runtime) -> Any:
    """A user's tier, statistics, favourite genres, recent ratings and strategy weights."""
    caller.require_access(user_id)
    return sc.ProfileResponse.of(rt.profile(user_id))


@router.get(
    "/users/{user_id}/history",
    response_model=sc.HistoryResponse,
    tags=["users"],
    responses=responses(403, 404),
)
def history(
    user_id: UserIdPath,
    caller: Caller,
    rt: Runtime,
    limit: Annotated[int, Query(ge=1, le=500, description="items, newest first")] = 50,
) -> Any:
    """The movies recommended to a user, newest response first."""
    caller.require_access(user_id)
    items = rt.history(user_id, limit)
    return sc.HistoryResponse(
        user_id=user_id,
        items=[sc.HistoryItem.model_validate(i, from_attributes=True) for i in items],
    )


@router.get("/movies", response_model=sc.MovieList, tags=["movies"], responses=responses())
def search_movies(
    caller: Caller,
    rt: Runtime,
    title: TitleQuery = None,
    genre: GenreQuery = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """Search movies by title and genre (case-insensitive), most popular first."""
    found = rt.search(title, genre, limit)
    return sc.MovieList(items=[sc.MovieOut.model_validate(m, from_attributes=True) for m in found])


@router.get(
    "/movies/{movie_id}", response_model=sc.MovieOut, tags=["movies"], responses=responses(404)
)
def movie(movie_id: MovieIdPath, caller: Caller, rt: Runtime) -> Any:
    """One movie with its rating statistics."""
    return sc.MovieOut.model_validate(rt.movie(movie_id), from_attributes=True)


@router.get(
    "/movies/{movie_id}/similar",
    response_model=sc.SimilarResponse,
    tags=["movies"],
    responses=responses(404),
)
def similar(
    movie_id: MovieIdPath,
    caller: Caller,
    rt: Runtime,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Any:
    """Movies like this one: by the model's item embeddings, else by shared genres."""
    return sc.SimilarResponse.of(movie_id, rt.similar(movie_id, k))


@router.get(
    "/status",
    response_model=sc.StatusResponse,
    tags=["operations"],
    responses={503: {"model": sc.StatusResponse, "description": "not ready, with reasons"}},
)
def status(rt: Runtime, response: Response) -> Any:
    """Readiness with reasons (database, cache, model and its version); 503 when not ready.
    BentoML's `/readyz` answers the same question for probes, without the details."""
    report = sc.StatusResponse.of(rt.status())
    if not report.ready:
        response.status_code = 503
    return report
