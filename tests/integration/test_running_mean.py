"""One definition of each statistics rule: the SQL write path and the SQL reports follow the
domain's.

The running mean of a rating is defined by the entities (`User.record_rating`,
`Movie.add_rating`); the repositories apply it as SQL increments (`SET n = n + 1`) so that
concurrent ratings lose no update. Any sequence of ratings and re-ratings applied through
the real repositories on SQLite leaves the same statistics as the entity methods, as the SQL
recount (`recompute_statistics`) and as the numpy count of a bulk load into an empty table.
The ingest report's tier counts follow the domain's tiers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recolab.adapters.ingest.steps import SqlLoader
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.adapters.sql.repositories import SqlAlchemyUnitOfWork
from recolab.adapters.sql.stats import recompute_statistics
from recolab.application.users import RateMovie, rate_movie
from recolab.domain import EventBus, Movie, MovieId, Rating, RatingScore, User, UserId
from recolab.domain.model import TIER_UPPER_BOUNDS, UserClassification, favorite_genres
from recolab.domain.values import RATING_VALUES, Timestamp
from tests.integration.statistics_data import differences, stored_statistics

USERS = (1, 2, 3)
GENRES = {1: ("Action", "Crime"), 2: ("Comedy", "Romance"), 3: ("Romance",), 4: ("Drama",)}
MOVIES = pd.DataFrame(
    {
        "movie_id": list(GENRES),
        "title": [f"Movie {m}" for m in GENRES],
        "year": pd.array([1995, 2001, None, 1979], dtype="Int64"),
        "genres": ["|".join(g) for g in GENRES.values()],
    }
)
NO_RATINGS = pd.DataFrame(
    {
        "user_id": pd.Series([], dtype="int64"),
        "movie_id": pd.Series([], dtype="int64"),
        "rating": pd.Series([], dtype="float64"),
        "timestamp": pd.Series([], dtype="int64"),
    }
)

ratings_steps = st.lists(
    st.tuples(
        st.sampled_from(USERS), st.sampled_from(sorted(GENRES)), st.sampled_from(RATING_VALUES)
    ),
    min_size=1,
    max_size=30,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database holding the movies and users, with no ratings."""
    path = tmp_path_factory.mktemp("running-mean") / "template.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    load_dataset(engine, NO_RATINGS, MOVIES, dataset="movies", source="test")
    with SqlAlchemyUnitOfWork(engine) as uow:
        for user_id in USERS:
            uow.users.add(User(UserId(user_id)))
        uow.commit()
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=ratings_steps)
def test_sql_increments_follow_the_domain_running_mean_and_both_recounts(
    template: Path, tmp_path: Path, steps: list[tuple[int, int, float]]
) -> None:
    path = tmp_path / "example.db"
    shutil.copyfile(template, path)
    engine = make_engine(f"sqlite:///{path}")
    users = {u: User(UserId(u)) for u in USERS}
    movies = {m: Movie(MovieId(m), f"Movie {m}", genres) for m, genres in GENRES.items()}
    latest: dict[tuple[int, int], Rating] = {}
    try:
        for user_id, movie_id, score in steps:
            rate_movie(
                RateMovie(user_id, movie_id, score), SqlAlchemyUnitOfWork(engine), EventBus()
            )
            new = RatingScore(score)
            old = latest.get((user_id, movie_id))
            previous = None if old is None else old.score
            users[user_id].record_rating(new, previous=previous)
            movies[movie_id].add_rating(new, previous=previous)
            latest[(user_id, movie_id)] = Rating(
                UserId(user_id), MovieId(movie_id), new, Timestamp.now()
            )

        genres_of = {MovieId(m): g for m, g in GENRES.items()}
        by_user = {u: [r for (ru, _), r in latest.items() if ru == u] for u in USERS}
        domain_users = {
            u: (
                user.n_ratings,
                user.avg_rating,
                "|".join(favorite_genres(by_user[u], genres_of)),
            )
            for u, user in users.items()
        }
        domain_movies = {
            m: (movie.rating_count, movie.avg_rating, movie.popularity_score())
            for m, movie in movies.items()
        }
        incremented = stored_statistics(engine)
        assert not differences(incremented[0], domain_users)
        assert not differences(incremented[1], domain_movies)

        with engine.begin() as conn:
            recompute_statistics(conn)
        recounted = stored_statistics(engine)
        assert not differences(recounted[0], domain_users)
        assert not differences(recounted[1], domain_movies)
    finally:
        engine.dispose()

    # The same final ratings bulk-loaded into an empty table: counted in numpy.
    path = tmp_path / "loaded.db"
    shutil.copyfile(template, path)
    engine = make_engine(f"sqlite:///{path}")
    final = pd.DataFrame(
        {
            "user_id": [u for u, _ in latest],
            "movie_id": [m for _, m in latest],
            "rating": [r.score.value for r in latest.values()],
            "timestamp": 1_000_000_000,
        }
    )
    try:
        load_dataset(engine, final, MOVIES, dataset="final", source="test")
        loaded = stored_statistics(engine)
    finally:
        engine.dispose()
    assert not differences(loaded[0], domain_users)
    assert not differences(loaded[1], domain_movies)


def test_the_ingest_report_counts_users_by_the_domain_tiers(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    # One user at each tier boundary and one past it: n ratings of n distinct movies.
    counts = sorted({0, *TIER_UPPER_BOUNDS, *(b + 1 for b in TIER_UPPER_BOUNDS)})
    n_movies = max(counts)
    movies = pd.DataFrame(
        {
            "movie_id": range(1, n_movies + 1),
            "title": [f"Movie {m}" for m in range(1, n_movies + 1)],
            "year": pd.array([None] * n_movies, dtype="Int64"),
            "genres": ["Drama"] * n_movies,
        }
    )
    rated = [(user, n) for user, n in enumerate(counts, start=1) if n]
    ratings = pd.DataFrame(
        {
            "user_id": [user for user, n in rated for _ in range(n)],
            "movie_id": [m for _, n in rated for m in range(1, n + 1)],
            "rating": 3.0,
            "timestamp": 1_000_000_000,
        }
    )
    load_dataset(engine, ratings, movies, dataset="tiers", source="test")
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.users.add(User(UserId(len(counts) + 1)))  # a user without ratings
        uow.commit()
    report = SqlLoader(engine).refresh_statistics({})
    engine.dispose()
    expected: dict[str, int] = {}
    for n in [*(n for _, n in rated), 0]:
        tier = UserClassification.from_count(n).value
        expected[f"tier_{tier}"] = expected.get(f"tier_{tier}", 0) + 1
    assert {k: v for k, v in report.items() if k.startswith("tier_")} == expected
