"""Request and response bodies of the HTTP API (pydantic), with examples.

Requests are strict (no "5" for 5, no true for 1, no NaN) and refuse unknown fields, so a
typo is a 422 with a message rather than a silently ignored field; query strings likewise
(`serving.routes`). No string, in a body or a query, may hold a control character: a NUL
cuts SQLite's LIKE pattern short, and PostgreSQL refuses it. The rules on values
(how many movies, which strategies, a score's range and step) are the application's and
are checked there once (a 422 naming the field); the schemas document them from the same
constants, so the OpenAPI page and the checks cannot disagree.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from recolab.application.recommend import MAX_N, REQUESTABLE, SOURCES, TIERS
from recolab.application.service import ProfileView, Readiness, Registered
from recolab.application.users import SCORE_RANGE, RatingOutcome
from serving import examples as ex

# The largest id, path or body. BentoML writes the spec's numeric bounds as floats, and 2**53-1
# is the largest integer a double (and JavaScript) holds exactly: the spec, the checks and
# clients agree on it. Far below BIGINT's 2**63-1.
MAX_ID = 2**53 - 1
# ge=1, not gt=0: BentoML labels the spec OpenAPI 3.0, where exclusiveMinimum is a boolean
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
if TYPE_CHECKING:
    Tier = str
else:
    Tier = Literal[TIERS]  # Literal of a tuple: one value per tier
MIN_SCORE, MAX_SCORE, SCORE_STEP = SCORE_RANGE
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc: C0, DEL and C1
# The same rule for the spec: schemathesis and clients generate strings that obey it.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"


def example(value: dict[str, Any]) -> ConfigDict:
    """A model's example, for the OpenAPI page (`serving.examples`)."""
    return ConfigDict(json_schema_extra={"examples": [value]})


def refuse_control_characters(value: str | None) -> str | None:
    """`value` unless it holds a control character (NUL, line breaks, tabs, DEL, C1)."""
    found = _CONTROL.search(value) if value is not None else None
    if found is not None:
        raise ValueError(
            f"control characters are not allowed (U+{ord(found.group()):04X} at "
            f"position {found.start()})"
        )
    return value


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        return refuse_control_characters(value) if isinstance(value, str) else value


EXAMPLE_REQUEST_ID = "5f2b0c3e9a7d4e1f8b6a2c4d0e9f1a3b"  # in the OpenAPI page's examples


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer has this shape."""

    error: str = Field(description="what went wrong, for a person")
    detail: list[dict[str, Any]] | None = Field(
        default=None, description="one entry per invalid field (validation errors only)"
    )
    request_id: str | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid request: body.colour: Extra inputs are not permitted",
                    "detail": [{"loc": "body.colour", "msg": "Extra inputs are not permitted"}],
                    "request_id": EXAMPLE_REQUEST_ID,
                }
            ]
        }
    )


# ---- recommend


class RecommendBody(_Request):
    user_id: Id
    n: int = Field(
        default=10,
        description="how many movies",
        json_schema_extra={"minimum": 1, "maximum": MAX_N},
    )
    strategy: str = Field(
        default=REQUESTABLE[0],
        description="auto follows the user's tier (popular ... collaborative)",
        json_schema_extra={"enum": list(REQUESTABLE)},
    )
    diversity_lambda: float | None = Field(
        default=None,
        description="MMR relevance weight (1 = relevance only); the service default if absent",
        json_schema_extra={"minimum": 0.0, "maximum": 1.0},
    )
    force_refresh: bool = Field(default=False, description="ignore the cache")

    model_config = example(ex.RECOMMEND_BODY)


class RecommendedItem(BaseModel):
    movie_id: int
    title: str
    genres: list[str]
    year: int | None
    score: float = Field(ge=0.0, le=1.0)
    rank: int = Field(ge=1)
    source: str = Field(description=", ".join(SOURCES))
    explanation: str


class RecommendResponse(BaseModel):
    user_id: int
    classification: Tier
    strategy_used: str
    model_version: str | None
    diversity_score: float
    cached: bool
    generated_at: str
    items: list[RecommendedItem]
    experiment: str | None = Field(
        default=None, description="the online experiment the user is in (absent: none runs)"
    )
    variant: Literal["champion", "challenger"] = Field(
        default="champion",
        description="which model answered: the champion, or the experiment's challenger "
        "(a canary's share of users, sticky per user)",
    )

    model_config = example(ex.RECOMMEND_RESPONSE)


# ---- ratings and users


class RateBody(_Request):
    user_id: Id
    movie_id: Id
    score: float = Field(
        description=f"{MIN_SCORE} to {MAX_SCORE} in {SCORE_STEP} steps",
        json_schema_extra={"minimum": MIN_SCORE, "maximum": MAX_SCORE, "multipleOf": SCORE_STEP},
    )

    model_config = example(ex.RATE_BODY)


class RatingResponse(BaseModel):
    user_id: int
    movie_id: int
    score: float
    # None fields have a default: the spec's examples lose their nulls (FastAPI writes the
    # document without None values), and they still fit the schema.
    previous_score: float | None = Field(
        default=None, description="the replaced score of a re-rating"
    )
    rated_at: datetime
    classification: Tier = Field(description="the user's tier after this rating")
    n_ratings: int
    avg_rating: float

    model_config = example(ex.RATING_RESPONSE)

    @classmethod
    def of(cls, outcome: RatingOutcome) -> RatingResponse:
        user, previous = outcome.user, outcome.previous_score
        return cls(
            user_id=outcome.rating.user_id.value,
            movie_id=outcome.rating.movie_id.value,
            score=outcome.rating.score.value,
            previous_score=previous.value if previous else None,
            rated_at=outcome.rating.timestamp.value,
            classification=outcome.classification.value,
            n_ratings=user.n_ratings,
            avg_rating=user.avg_rating,
        )


class RegisteredUser(BaseModel):
    user_id: int
    classification: Tier
    created_at: datetime
    access_token: str = Field(description="a bearer token for this user (role user)")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds")

    model_config = example(ex.REGISTERED_USER)

    @classmethod
    def of(cls, registered: Registered) -> RegisteredUser:
        user = registered.user
        return cls(
            user_id=user.id.value,
            classification=user.classify().value,
            created_at=user.created_at.value,
            access_token=registered.token,
            expires_in=registered.expires_in,
        )


class RatedMovie(BaseModel):
    movie_id: int
    title: str | None
    score: float
    rated_at: datetime


class ProfileResponse(BaseModel):
    user_id: int
    classification: Tier
    n_ratings: int
    avg_rating: float
    n_positive: int = Field(description="ratings >= 4.0")
    n_negative: int = Field(description="ratings <= 2.5")
    favorite_genres: list[str]
    cf_weight: float = Field(description="weight of collaborative filtering: min(1, n/50)")
    cb_weight: float
    created_at: datetime
    last_activity: datetime | None
    recent_ratings: list[RatedMovie]

    model_config = example(ex.PROFILE)

    @classmethod
    def of(cls, view: ProfileView) -> ProfileResponse:
        found, user = view.profile, view.profile.user
        return cls(
            user_id=user.id.value,
            classification=found.classification.value,
            n_ratings=user.n_ratings,
            avg_rating=user.avg_rating,
            n_positive=view.breakdown.positive,
            n_negative=view.breakdown.negative,
            favorite_genres=user.favorite_genres,
            cf_weight=found.cf_weight,
            cb_weight=found.cb_weight,
            created_at=user.created_at.value,
            last_activity=user.last_activity.value if user.last_activity else None,
            recent_ratings=[
                RatedMovie(
                    movie_id=r.movie_id.value,
                    title=view.titles.get(r.movie_id.value),
                    score=r.score.value,
                    rated_at=r.timestamp.value,
                )
                for r in found.recent_ratings
            ],
        )


class HistoryItem(BaseModel):
    movie_id: int
    title: str
    rank: int
    score: float
    strategy: str
    source: str
    model_version: str | None
    recommended_at: datetime


class HistoryResponse(BaseModel):
    user_id: int
    items: list[HistoryItem]

    model_config = example(ex.HISTORY)


# ---- movies


class MovieOut(BaseModel):
    movie_id: int
    title: str
    year: int | None
    genres: list[str]
    rating_count: int
    avg_rating: float
    popularity_score: float

    model_config = example(ex.MOVIE)


class MovieList(BaseModel):
    items: list[MovieOut]

    model_config = example(ex.MOVIE_LIST)


class SimilarMovie(MovieOut):
    similarity: float

    model_config = example(ex.SIMILAR["items"][0])


class SimilarResponse(BaseModel):
    movie_id: int
    method: Literal["embedding", "genre_jaccard"] = Field(
        description="the model's item embeddings when it has them, else genre overlap"
    )
    items: list[SimilarMovie]

    model_config = example(ex.SIMILAR)

    @classmethod
    def of(cls, movie_id: int, found: Any) -> SimilarResponse:
        items = [
            SimilarMovie(
                **MovieOut.model_validate(s.movie, from_attributes=True).model_dump(),
                similarity=s.similarity,
            )
            for s in found.items
        ]
        return cls(movie_id=movie_id, method=found.method, items=items)


# ---- status


class ModelStatus(BaseModel):
    name: str
    loaded: bool
    version: str | None
    error: str | None = None


class ComponentStatus(BaseModel):
    ok: bool
    backend: str
    error: str | None = None


class ExperimentOut(BaseModel):
    name: str
    mode: Literal["canary", "shadow"] = Field(
        description="canary: the challenger answers the share; shadow: it is only scored"
    )
    share: float = Field(ge=0.0, le=1.0, description="of users, by a hash of name and user id")
    challenger_version: str | None
    running: bool = Field(description="false: the challenger is not loaded (see error)")
    error: str | None = None


class StatusResponse(BaseModel):
    ready: bool
    reasons: list[str] = Field(description="why the service is not ready (empty when ready)")
    model: ModelStatus
    database: ComponentStatus
    cache: ComponentStatus = Field(description="a cache down degrades to uncached answers")
    experiment: ExperimentOut | None = Field(
        default=None,
        description="the online experiment set in the registry (absent: none); one whose "
        "challenger is not loaded leaves the champion answering everyone",
    )

    model_config = example(ex.STATUS)

    @classmethod
    def of(cls, report: Readiness) -> StatusResponse:
        model = report.model
        return cls(
            ready=report.ready,
            reasons=report.reasons,
            model=ModelStatus(
                name=model.model_name, loaded=model.loaded, version=model.version, error=model.error
            ),
            database=ComponentStatus.model_validate(report.database, from_attributes=True),
            cache=ComponentStatus.model_validate(report.cache, from_attributes=True),
            experiment=None
            if report.experiment is None
            else ExperimentOut.model_validate(report.experiment, from_attributes=True),
        )
