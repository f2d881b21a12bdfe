"""The floor of this stack on one core: a bare BentoML service mounting one FastAPI route.

`POST /recommend` parses a body like RecoLab's and answers a fixed 10-item JSON of the
same shape as RecoLab's `/recommend` (no auth, no database, no model, no middleware of
ours), through a response model as RecoLab's route does. What RecoLab spends beyond it is
RecoLab's own. `benchmarks/serve.py` runs it with `bentoml serve benchmarks.floor_service:Floor`
under the same pinning and load as the service.
"""

from __future__ import annotations

from datetime import UTC, datetime

import bentoml
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int
    n: int = 10
    strategy: str = "auto"
    diversity_lambda: float | None = None
    force_refresh: bool = False


class Item(BaseModel):
    movie_id: int
    title: str
    genres: list[str]
    year: int | None
    score: float
    rank: int
    source: str
    explanation: str


class Answer(BaseModel):
    user_id: int
    classification: str
    strategy_used: str
    model_version: str | None
    diversity_score: float
    cached: bool
    generated_at: str
    items: list[Item]


ITEMS = [
    Item(
        movie_id=1000 + i,
        title=f"A Movie Title of Ordinary Length ({1990 + i})",
        genres=["Drama", "Comedy"] if i % 2 else ["Action", "Thriller", "Crime"],
        year=1990 + i,
        score=round(0.95 - i * 0.03, 6),
        rank=i + 1,
        source="collaborative" if i % 3 else "content_based",
        explanation="Because you rated Heat 5.0" if i % 2 else "Popular in Drama",
    )
    for i in range(10)
]

api = FastAPI(title="floor")


@api.post("/recommend", response_model=Answer)
def recommend(body: Body) -> Answer:
    return Answer(
        user_id=body.user_id,
        classification="active",
        strategy_used="hybrid",
        model_version="1",
        diversity_score=0.61,
        cached=False,
        generated_at=datetime.now(UTC).isoformat(),
        items=ITEMS,
    )


@bentoml.service(name="floor", workers=1, traffic={"timeout": 30, "max_concurrency": 256})
@bentoml.asgi_app(api, name="floor-api")
class Floor:
    """The bare service: BentoML + FastAPI, nothing else."""

    def __is_ready__(self) -> bool:
        return True
