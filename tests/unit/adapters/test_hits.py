"""Online hit counters on hand-built events: a rating within the window of an answer that
showed the movie counts (with its rank's cut-offs); out of the window, a movie the answer did
not show, or a second rating of the same movie does not; the memory is bounded (LRU)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from recolab.adapters.runtime.hits import LastServed
from recolab.adapters.runtime.observability import serving_metrics
from recolab.adapters.sql.queries import HistoryItem
from recolab.domain import MovieId, MovieRated, RatingScore, RecommendationsGenerated, UserId
from recolab.domain.values import Timestamp

T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)
WINDOW = 3600


class Hits:
    def __init__(self) -> None:
        self.counted: list[dict[str, Any]] = []

    def online_hit(self, **labels: Any) -> None:
        self.counted.append(labels)


def answer(
    user: int,
    movies: list[int],
    *,
    at: datetime = T0,
    variant: str = "challenger",
    version: str = "2",
    experiment: str | None = "v2",
) -> RecommendationsGenerated:
    items = [
        HistoryItem(movie_id=m, rank=r, score=0.5, source="collaborative")
        for r, m in enumerate(movies, 1)
    ]
    return RecommendationsGenerated(
        user_id=UserId(user),
        tier="active",
        requested="auto",
        strategy="hybrid",
        items=items,
        diversity_score=0.5,
        model_version=version,
        experiment=experiment,
        variant=variant,
        occurred_at=Timestamp(at),
    )


def rating(user: int, movie: int, after_s: float, score: float = 4.0) -> MovieRated:
    return MovieRated(
        user_id=UserId(user),
        movie_id=MovieId(movie),
        score=RatingScore(score),
        occurred_at=Timestamp(T0 + timedelta(seconds=after_s)),
    )


def memory(capacity: int = 100) -> tuple[LastServed, Hits]:
    hits = Hits()
    return LastServed(hits, capacity=capacity, window_s=WINDOW, cutoffs=[1, 3, 5, 10]), hits


def test_a_rating_within_the_window_of_a_movie_shown_is_a_hit_at_its_rank() -> None:
    served, hits = memory()
    served.remember(answer(1, [10, 20, 30, 40]))
    assert served.rated(rating(1, 30, after_s=60)) == 1
    assert hits.counted == [
        {
            "experiment": "v2",
            "variant": "challenger",
            "version": "2",
            "strategy": "hybrid",
            "tier": "active",
            "within": [3, 5, 10],
        }
    ]
    assert served.rated(rating(1, 10, after_s=WINDOW)) == 1  # the window's last second
    assert hits.counted[-1]["within"] == [1, 3, 5, 10]


@pytest.mark.parametrize(
    ("user", "movie", "after_s"),
    [
        (1, 30, WINDOW + 1),  # after the window
        (1, 30, -5),  # before the answer
        (1, 99, 60),  # a movie the answer did not show
        (2, 30, 60),  # another user
    ],
)
def test_ratings_that_are_not_hits(user: int, movie: int, after_s: float) -> None:
    served, hits = memory()
    served.remember(answer(1, [10, 20, 30]))
    assert served.rated(rating(user, movie, after_s)) == 0
    assert hits.counted == []


def test_a_movie_counts_once_per_answer_and_the_last_answer_replaces_the_previous() -> None:
    served, hits = memory()
    served.remember(answer(1, [10, 20]))
    assert served.rated(rating(1, 20, 10)) == 1
    assert served.rated(rating(1, 20, 20, score=2.0)) == 0  # a re-rating is no new hit
    served.remember(
        answer(1, [30, 40], at=T0 + timedelta(seconds=30), variant="champion", version="1")
    )
    assert served.rated(rating(1, 10, 40)) == 0  # not in the last answer
    assert served.rated(rating(1, 40, 40)) == 1
    assert (hits.counted[-1]["variant"], hits.counted[-1]["version"]) == ("champion", "1")


def test_a_shadow_answer_is_remembered_beside_the_served_one() -> None:
    served, hits = memory()
    served.remember(answer(1, [10, 20], variant="champion", version="1"))
    served.remember(answer(1, [20, 30], variant="shadow", version="2"))
    assert served.rated(rating(1, 20, 5)) == 2
    assert sorted((h["variant"], h["within"][0]) for h in hits.counted) == [
        ("champion", 3),
        ("shadow", 1),
    ]


def test_the_memory_is_bounded_and_forgets_the_least_recently_served() -> None:
    served, _ = memory(capacity=2)
    served.remember(answer(1, [10]))
    served.remember(answer(2, [10]))
    served.remember(answer(1, [11]))  # user 1 served again: user 2 is the oldest now
    served.remember(answer(3, [10]))
    assert len(served) == 2
    assert served.rated(rating(2, 10, 5)) == 0  # forgotten
    assert served.rated(rating(1, 11, 5)) == 1 and served.rated(rating(3, 10, 5)) == 1


def test_the_prometheus_counters_count_hits_per_variant_and_cutoff() -> None:
    from prometheus_client import REGISTRY

    metrics = serving_metrics()
    served = LastServed(metrics, window_s=WINDOW, cutoffs=[1, 5])
    labels = {"experiment": "prom-test", "variant": "challenger", "version": "2"}

    def sample(name: str, **extra: str) -> float:
        return REGISTRY.get_sample_value(name, {**labels, **extra}) or 0.0

    before = sample("recolab_online_hits_total", strategy="hybrid", tier="active")
    served.remember(answer(1, [10, 20, 30], experiment="prom-test"))
    served.rated(rating(1, 30, 5))
    assert sample("recolab_online_hits_total", strategy="hybrid", tier="active") == before + 1
    assert sample("recolab_online_hits_at_rank_total", cutoff="5") == 1
    assert sample("recolab_online_hits_at_rank_total", cutoff="1") == 0
