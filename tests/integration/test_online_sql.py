"""The online report's reader on real SQLite and PostgreSQL: the history grouped into answers
(items in rank order, times to the millisecond), only the ratings that can be hits, the
catalogue's popularity, the `since` filter, and the same report as from the data in memory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import Engine, insert

from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.migrate import upgrade
from recolab.adapters.sql.online import SqlExperimentHistory
from recolab.domain.services.online import Answers, ExperimentData, compute_report
from tests.unit.domain.online_data import DAY, answers, catalogue, feedback, settings
from tests.unit.domain.test_online import HISTORY, RATINGS

EXPERIMENT = "v2-vs-v1"
SHADOW = [(1, 1000.4, "shadow", [14, 11]), (6, 1000.000001, "shadow", [13])]
MOVIES = sorted({m for row in HISTORY + SHADOW for m in row[3]} | {r[1] for r in RATINGS} | {99})
COUNTS = {m: 1 for m in MOVIES}


def _history_rows(rows, experiment, versions=None) -> list[dict]:
    versions = versions or {"champion": "1", "challenger": "2", "shadow": "2"}
    return [
        {
            "user_id": user,
            "movie_id": movie,
            "rank": rank,
            "score": 1.0 / rank,
            "strategy": "hybrid",
            "source": "cf",
            "model_version": versions[variant],
            "created_at": datetime.fromtimestamp(at, UTC),
            "tier": "active",
            "fallback": False,
            "experiment": experiment,
            "variant": variant,
        }
        for user, at, variant, movies in rows
        for rank, movie in enumerate(movies, 1)
    ]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(s.users), [{"id": u} for u in range(1, 7)])
        conn.execute(
            insert(s.movies),
            [
                {"id": m, "title": f"Movie {m}", "genres": "Drama", "rating_count": COUNTS[m]}
                for m in MOVIES
            ],
        )
        conn.execute(
            insert(s.ratings),
            [{"user_id": u, "movie_id": m, "score": 4.0, "timestamp": t} for u, m, t in RATINGS]
            # served to user 6 in another experiment only; rated, never read for this one
            + [{"user_id": 6, "movie_id": 99, "score": 4.0, "timestamp": 1200}],
        )
        conn.execute(
            insert(s.recommendation_history),
            _history_rows(HISTORY + SHADOW, EXPERIMENT)
            + _history_rows([(6, 1100.0, "champion", [99, 10])], "another")
            + _history_rows([(1, 1100.0, "champion", [12])], None),
        )
    yield engine
    engine.dispose()


def _answer_set(a: Answers) -> set[tuple]:
    items: dict[int, list[tuple[int, int]]] = {}
    for answer, movie, rank in zip(a.item_answer, a.movie, a.rank, strict=True):
        items.setdefault(int(answer), []).append((int(rank), int(movie)))
    return {
        (
            int(a.user[i]),
            round(float(a.created_at[i]), 6),
            str(a.variant[i]),
            str(a.model_version[i]),
            str(a.strategy[i]),
            str(a.tier[i]),
            tuple(m for _, m in sorted(items[i])),
        )
        for i in range(len(a))
    }


def test_the_history_is_read_grouped_into_answers_with_only_the_ratings_that_can_hit(
    engine: Engine,
) -> None:
    data = SqlExperimentHistory(engine, chunk_rows=3).read(EXPERIMENT, since=None, window_s=DAY)
    expected = answers(HISTORY + SHADOW)
    assert _answer_set(data.answers) == _answer_set(expected)
    assert data.answers.created_at.dtype == np.float64 and data.answers.user.dtype == np.int64
    # ratings of served (user, movie) pairs only, from the first answer's second on
    served = {(u, m) for u, _, _, movies in HISTORY + SHADOW for m in movies}
    want = {(u, m, t) for u, m, t in RATINGS if (u, m) in served and t >= 100}
    got = set(
        zip(
            data.feedback.user.tolist(),
            data.feedback.movie.tolist(),
            data.feedback.timestamp.tolist(),
            strict=True,
        )
    )
    assert got == want
    assert data.popularity.catalogue_size == len(MOVIES)
    assert (
        dict(zip(data.popularity.movie.tolist(), data.popularity.count.tolist(), strict=True))
        == COUNTS
    )

    # the same report as from the same history in memory (but for the catalogue's size)
    from_db = compute_report(EXPERIMENT, data, settings()).to_dict()
    in_memory = ExperimentData(expected, feedback(RATINGS), catalogue())
    wanted = compute_report(EXPERIMENT, in_memory, settings()).to_dict()
    assert _without_catalogue(from_db) == _without_catalogue(wanted)
    assert from_db["variants"]["champion"]["hits"] == 3


def _without_catalogue(report: dict) -> dict:
    every = [*report["variants"].values(), report["shadow"]]
    for variant in every:
        del variant["coverage"], variant["novelty"]
    return {k: report[k] for k in ("variants", "shadow", "difference")}


def test_since_keeps_the_later_answers_and_their_ratings(engine: Engine) -> None:
    reader = SqlExperimentHistory(engine)
    data = reader.read(EXPERIMENT, since=1000.2, window_s=DAY)
    assert sorted(data.answers.created_at.round(6).tolist()) == [1000.4, 1000.4, 2000.0, 5000.0]
    assert sorted(data.feedback.timestamp.tolist()) == [1000, 6000, 2001 + DAY]
    nothing = reader.read("no-such-experiment", since=None, window_s=DAY)
    assert len(nothing.answers) == 0 and nothing.feedback.user.size == 0
    assert nothing.popularity.catalogue_size == len(MOVIES)
