"""Hand-built experiment histories and simulated experiments for the online-report tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recolab.domain.services.online import (
    Answers,
    ExperimentData,
    Feedback,
    Popularity,
    ReportSettings,
)

DAY = 86_400


def answers(
    rows: Sequence[tuple[int, float, str, Sequence[int]]],
    *,
    version: dict[str, str] | None = None,
    strategy: Sequence[str] | None = None,
    tier: Sequence[str] | None = None,
) -> Answers:
    """One answer per (user, created_at, variant, movies in rank order)."""
    version = version or {"champion": "1", "challenger": "2", "shadow": "2"}
    item_answer = [i for i, row in enumerate(rows) for _ in row[3]]
    movies = [m for row in rows for m in row[3]]
    ranks = [r for row in rows for r in range(1, len(row[3]) + 1)]
    return Answers(
        user=[r[0] for r in rows],
        created_at=[r[1] for r in rows],
        variant=[r[2] for r in rows],
        model_version=[version.get(r[2], "") for r in rows],
        strategy=list(strategy) if strategy is not None else ["hybrid"] * len(rows),
        tier=list(tier) if tier is not None else ["active"] * len(rows),
        item_answer=item_answer,
        movie=movies,
        rank=ranks,
    )


def feedback(rows: Sequence[tuple[int, int, int]]) -> Feedback:
    return Feedback([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def catalogue(n: int = 100, count: int = 1) -> Popularity:
    return Popularity(np.arange(1, n + 1), np.full(n, count))


def settings(samples: int = 500, seed: int = 0, confidence: float = 0.9) -> ReportSettings:
    return ReportSettings(DAY, (1, 3, 5), confidence, samples, seed)


def simulate(
    seed: int,
    *,
    users: int = 400,
    champion_rate: float = 0.2,
    challenger_rate: float = 0.2,
    answers_per_user: float = 3.0,
    spread: float = 8.0,
) -> ExperimentData:
    """A canary over `users` users per variant: each user gets Poisson(answers_per_user)
    answers (at least one) of 10 movies; a user's chance that an answer is followed by a
    rating of one of its movies is drawn from a Beta around the variant's rate (users
    differ: answers of one user are correlated), and the rated movie's rank is uniform."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, float, str, list[int]]] = []
    ratings: list[tuple[int, int, int]] = []
    for variant, rate, offset in (
        ("champion", champion_rate, 0),
        ("challenger", challenger_rate, users),
    ):
        propensity = rng.beta(rate * spread, (1 - rate) * spread, size=users)
        counts = np.maximum(rng.poisson(answers_per_user, size=users), 1)
        for u in range(users):
            user = offset + u + 1
            for j in range(int(counts[u])):
                at = 1_000_000.0 + j * 10 * DAY  # windows never overlap
                movies = (rng.choice(500, size=10, replace=False) + 1).tolist()
                # no movie twice for a user: one rating per (user, movie)
                movies = [m + 500 * j for m in movies]
                rows.append((user, at, variant, movies))
                if rng.random() < propensity[u]:
                    ratings.append((user, movies[int(rng.integers(10))], int(at) + 3600))
    return ExperimentData(answers(rows), feedback(ratings), catalogue(500 * 40))
