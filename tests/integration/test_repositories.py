"""The SQL repositories and unit of work against real SQLite and PostgreSQL."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, create_engine, func, select

from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.adapters.sql.queries import _PG_HISTORY, HistoryItem, SqlQueries
from recolab.adapters.sql.repositories import SqlAlchemyUnitOfWork, SqlCatalogue
from recolab.adapters.sql.stats import recompute_statistics
from recolab.application.users import RateMovie, get_profile, rate_movie, register_user
from recolab.domain import (
    EventBus,
    MovieId,
    MovieNotFound,
    MovieRated,
    User,
    UserId,
    UserNotFound,
)
from recolab.domain.events import RecommendationsGenerated as Generated
from recolab.domain.values import Timestamp

MOVIES = pd.DataFrame(
    {
        "movie_id": [1, 2, 3, 4, 5],
        "title": ["Heat", "Amélie", "100% Love_Story", "Alien", "Toy Story"],
        "year": pd.array([1995, 2001, None, 1979, 1995], dtype="Int64"),
        "genres": [
            "Action|Crime",
            "Comedy|Romance",
            "Romance",
            "Horror|Sci-Fi",
            "Animation|Comedy",
        ],
    }
)
RATINGS = pd.DataFrame(
    {
        "user_id": [1, 1, 1, 2, 2, 3],
        "movie_id": [1, 2, 4, 1, 3, 5],
        "rating": [5.0, 4.0, 2.0, 3.5, 4.5, 1.0],
        "timestamp": [1_000_000_000 + i for i in range(6)],
    }
)


@pytest.fixture
def engine(db_url: str) -> Engine:
    upgrade(db_url)
    engine = make_engine(db_url)
    load_dataset(engine, RATINGS, MOVIES, dataset="tiny", source="test")
    return engine


def recount(engine: Engine) -> dict[int, tuple[int, float]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.ratings.c.user_id, func.count(), func.avg(s.ratings.c.score)).group_by(
                s.ratings.c.user_id
            )
        )
        return {int(u): (int(n), round(float(a), 9)) for u, n, a in rows}


def stored_users(engine: Engine) -> dict[int, tuple[int, float]]:
    with engine.connect() as conn:
        rows = conn.execute(select(s.users.c.id, s.users.c.n_ratings, s.users.c.avg_rating))
        return {int(u): (int(n), round(float(a), 9)) for u, n, a in rows if n}


def test_rate_new_and_rerate_update_statistics(engine: Engine) -> None:
    bus = EventBus()
    seen: list[MovieRated] = []
    bus.subscribe(MovieRated, seen.append)
    out = rate_movie(RateMovie(3, 2, 4.5), SqlAlchemyUnitOfWork(engine), bus)
    assert out.previous_score is None
    assert (out.user.n_ratings, out.user.avg_rating) == (2, pytest.approx(2.75))
    assert out.user.favorite_genres == ["Comedy", "Romance"]
    again = rate_movie(RateMovie(3, 2, 2.0), SqlAlchemyUnitOfWork(engine), bus)
    assert again.previous_score is not None and again.previous_score.value == 4.5
    assert (again.user.n_ratings, again.user.avg_rating) == (2, pytest.approx(1.5))
    assert again.user.favorite_genres == []
    assert len(seen) == 2
    catalogue = SqlCatalogue(engine)
    catalogue.refresh()
    movie = catalogue.get(MovieId(2))
    assert movie is not None
    assert (movie.rating_count, movie.avg_rating) == (2, pytest.approx(3.0))
    assert stored_users(engine) == recount(engine)


def test_a_read_only_unit_reads_fresh_rows_and_cannot_commit(engine: Engine) -> None:
    """A user's ratings as stored, a re-rating included; reading never writes."""
    with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
        first = uow.ratings.for_user(UserId(1))
        user = uow.users.get(UserId(1))
        with pytest.raises(RuntimeError, match="read-only"):
            uow.commit()
    assert user is not None and user.n_ratings == 3
    assert [(r.movie_id.value, r.score.value) for r in first] == [(4, 2.0), (2, 4.0), (1, 5.0)]
    rate_movie(RateMovie(1, 2, 1.5), SqlAlchemyUnitOfWork(engine), EventBus())
    with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
        again = {r.movie_id.value: r.score.value for r in uow.ratings.for_user(UserId(1))}
    assert again == {1: 5.0, 2: 1.5, 4: 2.0}
    assert stored_users(engine) == recount(engine)


@pytest.mark.postgres
def test_a_read_only_unit_leaves_its_pooled_connection_transactional(postgres_url: str) -> None:
    """Autocommit is the read-only unit's alone: the next unit on the same connection rolls
    back what it does not commit."""
    upgrade(postgres_url)
    engine = create_engine(make_engine(postgres_url).url, pool_size=1, max_overflow=0)
    load_dataset(engine, RATINGS, MOVIES, dataset="tiny", source="test")
    with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
        assert uow.conn.connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]
        assert uow.users.get(UserId(1)) is not None
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.conn.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]
        uow.users.add(User(id=UserId(77)))  # not committed
    with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
        assert uow.users.get(UserId(77)) is None
    engine.dispose()


@pytest.mark.postgres
def test_history_insert_turns_off_synchronous_commit_for_its_transaction_only(
    postgres_url: str,
) -> None:
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    load_dataset(engine, RATINGS, MOVIES, dataset="tiny", source="test")
    rows = {
        "user_ids": [1],
        "movie_ids": [5],
        "ranks": [1],
        "scores": [0.5],
        "strategies": ["popular"],
        "sources": ["popular"],
        "model_versions": [None],
        "created_ats": [datetime(2026, 1, 2, tzinfo=UTC)],
        "tiers": ["cold_start"],
        "fallbacks": [False],
        "experiments": [None],
        "variants": ["champion"],
    }
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        assert conn.execute(_PG_HISTORY, rows).rowcount == 1
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    engine.dispose()


@pytest.mark.parametrize(
    ("command", "error"),
    [(RateMovie(99, 1, 4.0), UserNotFound), (RateMovie(1, 99, 4.0), MovieNotFound)],
)
def test_bad_rating_writes_nothing(engine: Engine, command: RateMovie, error: type) -> None:
    before = recount(engine)
    with pytest.raises(error):
        rate_movie(command, SqlAlchemyUnitOfWork(engine), EventBus())
    assert recount(engine) == before


def test_register_profile_search_and_catalogue(engine: Engine) -> None:
    user = register_user(SqlAlchemyUnitOfWork(engine), EventBus())
    assert user.id.value == 4
    profile = get_profile(4, SqlAlchemyUnitOfWork(engine))
    assert profile.classification.value == "cold_start" and profile.recent_ratings == []
    profile = get_profile(1, SqlAlchemyUnitOfWork(engine), recent=2)
    assert [r.movie_id.value for r in profile.recent_ratings] == [4, 2]
    queries = SqlQueries(engine)
    assert [m.title for m in queries.search("love_", None, 10)] == ["100% Love_Story"]
    assert [m.title for m in queries.search("%", None, 10)] == ["100% Love_Story"]
    assert {m.movie_id for m in queries.search(None, "comedy", 10)} == {2, 5}
    # log10(2 + 1) * 4.25 for Heat beats log10(1 + 1) * 4.5 for the romance
    romance = queries.search(None, "romance", 5)
    assert [m.title for m in romance] == ["100% Love_Story", "Amélie"]
    catalogue = SqlCatalogue(engine)
    catalogue.refresh()
    assert len(catalogue.movies()) == 5
    assert [m.title for m in catalogue.by_popularity()[:2]] == ["Heat", "100% Love_Story"]
    amelie = catalogue.get(MovieId(2))
    assert amelie is not None and amelie.genres == ("Comedy", "Romance")


@pytest.mark.postgres
def test_favourite_genres_stay_equal_to_a_recount_through_positive_and_negative_ratings(
    engine: Engine,
) -> None:
    # new negative, negative re-rated negative, positive, positive re-rated negative, ...
    steps = [(3, 4, 2.0), (3, 4, 1.0), (3, 1, 4.5), (3, 1, 2.5), (2, 4, 5.0), (2, 3, 3.0)]
    for user_id, movie_id, score in steps:
        rate_movie(RateMovie(user_id, movie_id, score), SqlAlchemyUnitOfWork(engine), EventBus())

    def favourites() -> dict[int, str]:
        with engine.connect() as conn:
            rows = conn.execute(select(s.users.c.id, s.users.c.favorite_genres))
            return {int(u): str(g) for u, g in rows}

    stored = favourites()
    with engine.begin() as conn:
        recompute_statistics(conn)
    assert stored == favourites()
    assert (stored[2], stored[3]) == ("Horror|Sci-Fi", "")  # 3 re-rated 3.0 dropped Romance


def test_concurrent_ratings_lose_no_update(postgres_url: str) -> None:
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    load_dataset(engine, RATINGS, MOVIES, dataset="tiny", source="test")
    rng = random.Random(7)
    commands = [
        RateMovie(rng.choice([1, 2, 3]), rng.choice([1, 2, 3, 4, 5]), rng.choice([1.0, 3.5, 5.0]))
        for _ in range(200)
    ]

    def rate(cmd: RateMovie) -> None:
        rate_movie(cmd, SqlAlchemyUnitOfWork(engine), EventBus())

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(rate, commands))
    assert stored_users(engine) == recount(engine)
    with engine.connect() as conn:
        movies = conn.execute(
            select(s.movies.c.id, s.movies.c.rating_count, s.movies.c.avg_rating)
        ).all()
        truth = dict(
            (int(m), (int(n), round(float(a), 9)))
            for m, n, a in conn.execute(
                select(s.ratings.c.movie_id, func.count(), func.avg(s.ratings.c.score)).group_by(
                    s.ratings.c.movie_id
                )
            )
        )
    assert {int(m): (int(n), round(float(a), 9)) for m, n, a in movies if n} == truth


def test_recommendation_history_round_trips(engine: Engine) -> None:
    queries = SqlQueries(engine)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def answer(strategy: str, version: str | None, items: list[HistoryItem]) -> Generated:
        return Generated(
            user_id=UserId(1),
            tier="active",
            requested="auto",
            strategy=strategy,
            items=items,
            diversity_score=0.0,
            model_version=version,
            occurred_at=Timestamp(at),
        )

    queries.record_answers(
        [
            answer(
                "hybrid",
                None,
                [HistoryItem(5, 1, 0.9, "collaborative"), HistoryItem(3, 2, 0.25, "content_based")],
            ),
            answer("popular", "7", [HistoryItem(2, 1, 1.0, "popular")]),
            answer("popular", "7", []),
        ]
    )
    rows = sorted(queries.history(1, 10), key=lambda h: (h.strategy, h.rank))
    got = [(h.movie_id, h.rank, h.score, h.strategy, h.source, h.model_version) for h in rows]
    assert got == [
        (5, 1, 0.9, "hybrid", "collaborative", None),
        (3, 2, 0.25, "hybrid", "content_based", None),
        (2, 1, 1.0, "popular", "popular", "7"),
    ]
    assert [h.title for h in rows] == ["Toy Story", "100% Love_Story", "Amélie"]
    assert all(h.recommended_at.replace(tzinfo=h.recommended_at.tzinfo or UTC) == at for h in rows)


def test_rated_by_reads_a_users_ratings_as_arrays_in_read_order(engine: Engine) -> None:
    rate_movie(RateMovie(1, 5, 4.5), SqlAlchemyUnitOfWork(engine), EventBus())
    with SqlAlchemyUnitOfWork(engine, read_only=True) as uow:
        ratings = uow.ratings.for_user(UserId(1))
        rated = uow.ratings.rated_by(UserId(1))
        nothing = uow.ratings.rated_by(UserId(999))
    assert rated.movie_ids.tolist() == [r.movie_id.value for r in ratings]
    assert rated.scores.tolist() == [r.score.value for r in ratings]
    assert rated.timestamps.tolist() == [r.timestamp.to_unix() for r in ratings]
    assert rated.movie_ids.tolist()[0] == 5 and len(nothing) == 0
    assert (rated.movie_ids.dtype, rated.scores.dtype) == (np.int64, np.float64)


def test_the_catalogue_index_is_built_once_per_refresh(engine: Engine) -> None:
    catalogue = SqlCatalogue(engine)
    catalogue.refresh()
    index = catalogue.index()
    assert catalogue.index() is index  # no request builds it
    assert index.ids.tolist() == [m.id.value for m in catalogue.movies()]
    assert index.locate(np.array([4, 99])).tolist() == [index.positions[MovieId(4)], -1]
    catalogue.refresh()
    assert catalogue.index() is not index
