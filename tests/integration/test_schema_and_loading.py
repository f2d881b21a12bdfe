"""Migrations, bulk loading and statistics against real SQLite and PostgreSQL."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from recolab.adapters.sql import loading
from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine, normalise_url
from recolab.adapters.sql.loading import LoadResult, copy_floor, load_dataset
from recolab.adapters.sql.migrate import alembic_config, current_revision, upgrade
from recolab.adapters.sql.stats import recompute_statistics

GENRES = ["Action", "Comedy", "Drama", "Film-Noir", "Sci-Fi", "Thriller", "animation"]


def make_frames(seed: int, n_users: int = 40, n_movies: int = 30) -> tuple[pd.DataFrame, ...]:
    """Random ratings and movies in the normalised schema (ties in genre counts are common)."""
    rng = np.random.default_rng(seed)
    pairs = [(u, m) for u in range(1, n_users + 1) for m in range(1, n_movies + 1)]
    chosen = rng.choice(len(pairs), size=len(pairs) // 3, replace=False)
    ratings = pd.DataFrame(
        {
            "user_id": np.array([pairs[i][0] for i in chosen], dtype=np.int64),
            "movie_id": np.array([pairs[i][1] for i in chosen], dtype=np.int64),
            "rating": rng.integers(1, 11, size=len(chosen)) / 2.0,
            "timestamp": rng.integers(900_000_000, 1_600_000_000, size=len(chosen)),
        }
    )
    # Movie n_movies + 1 is never rated: its statistics must stay zero.
    ids = np.arange(1, n_movies + 2, dtype=np.int64)
    movies = pd.DataFrame(
        {
            "movie_id": ids,
            "title": [f'Title {i}, "quoted" 100%' for i in ids],
            "year": pd.array([None if i % 7 == 0 else 1950 + int(i) for i in ids], dtype="Int64"),
            "genres": [
                "|".join(sorted(rng.choice(GENRES, size=rng.integers(1, 4), replace=False)))
                for _ in ids
            ],
        }
    )
    return ratings, movies


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=[False, True], ids=["rowwise", "bulk"])
def bulk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test through the per-row merge and through the drop-and-rebuild bulk path."""
    monkeypatch.setattr(loading, "BULK_MIN_ROWS", 1 if request.param else 10**12)
    monkeypatch.setattr(loading, "BULK_MIN_FRACTION", 0.0)
    return bool(request.param)


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    tables = (s.users, s.movies, s.movie_genres, s.ratings)
    with engine.connect() as conn:
        return {
            t.name: [
                tuple(row) for row in conn.execute(select(t).order_by(*t.primary_key.columns)).all()
            ]
            for t in tables
        }


Stats = dict[int, dict[str, Any]]


def expected_statistics(ratings: pd.DataFrame, movies: pd.DataFrame) -> tuple[Stats, Stats]:
    """Recount user and movie statistics with pandas, independently of the SQL."""
    genres = movies.assign(genre=movies["genres"].str.split("|")).explode("genre")
    positive = ratings[ratings["rating"] >= 4.0].merge(genres[["movie_id", "genre"]])
    counts = positive.groupby(["user_id", "genre"]).size().reset_index(name="n")
    counts = counts.sort_values(["user_id", "n", "genre"], ascending=[True, False, True])
    favorites = counts.groupby("user_id")["genre"].apply(lambda g: "|".join(g.iloc[:3]))
    users: Stats = {}
    for user_id, group in ratings.groupby("user_id"):
        users[int(user_id)] = {
            "n_ratings": len(group),
            "rating_sum": group["rating"].sum(),
            "avg_rating": group["rating"].mean(),
            "last_activity": int(group["timestamp"].max()),
            "favorite_genres": favorites.get(user_id, ""),
        }
    movie_stats: Stats = {}
    by_movie = ratings.groupby("movie_id")["rating"]
    for movie_id in movies["movie_id"]:
        scores = by_movie.get_group(movie_id) if movie_id in by_movie.groups else pd.Series([])
        count = len(scores)
        avg = float(scores.mean()) if count else 0.0
        movie_stats[int(movie_id)] = {
            "rating_count": count,
            "rating_sum": float(scores.sum()),
            "avg_rating": avg,
            "popularity_score": math.log10(count + 1) * avg,
        }
    return users, movie_stats


def epoch(value: datetime | None) -> int | None:
    if value is None:
        return None
    # SQLite hands back naive datetimes; they hold UTC.
    return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


def assert_statistics(engine: Engine, ratings: pd.DataFrame, movies: pd.DataFrame) -> None:
    users, movie_stats = expected_statistics(ratings, movies)
    with engine.connect() as conn:
        user_rows = {r.id: r for r in conn.execute(select(s.users)).all()}
        movie_rows = {r.id: r for r in conn.execute(select(s.movies)).all()}
    assert set(user_rows) >= set(users)
    for user_id, row in user_rows.items():
        want = users.get(user_id)
        if want is None:
            assert (row.n_ratings, row.avg_rating, row.favorite_genres) == (0, 0, "")
            assert row.last_activity is None
            continue
        assert row.n_ratings == want["n_ratings"], user_id
        assert row.rating_sum == pytest.approx(want["rating_sum"])
        assert row.avg_rating == pytest.approx(want["avg_rating"])
        assert epoch(row.last_activity) == want["last_activity"]
        assert row.favorite_genres == want["favorite_genres"], user_id
    assert set(movie_rows) == set(movie_stats)
    for movie_id, want in movie_stats.items():
        row = movie_rows[movie_id]
        assert row.rating_count == want["rating_count"]
        assert row.rating_sum == pytest.approx(want["rating_sum"])
        assert row.avg_rating == pytest.approx(want["avg_rating"])
        assert row.popularity_score == pytest.approx(want["popularity_score"])


# --- engine and migrations ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p%40ss@db:5432/reco", "postgresql+psycopg://u:p%40ss@db:5432/reco"),
        ("postgres://u@db/reco", "postgresql+psycopg://u@db/reco"),
        ("postgresql+psycopg2://u@db/reco", "postgresql+psycopg://u@db/reco"),
        ("postgresql+psycopg://u@db/reco", "postgresql+psycopg://u@db/reco"),
        ("sqlite:///data/recolab.db", "sqlite:///data/recolab.db"),
    ],
)
def test_normalise_url_points_postgres_at_psycopg3(url: str, expected: str) -> None:
    assert normalise_url(url).render_as_string(hide_password=False) == expected


def test_sqlite_connections_get_wal_foreign_keys_and_log10(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("SELECT log10(1000)").scalar() == pytest.approx(3.0)
    engine.dispose()


def test_sqlite_transactions_cover_ddl(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.rollback()
        assert not inspect(conn).has_table("t")
    engine.dispose()


def test_migrations_upgrade_from_empty_and_match_the_metadata(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(db_url) == head
    engine = make_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, s.metadata) == []
        command.check(alembic_config(conn))  # raises when autogenerate finds a difference
        indexes = {i["name"] for t in s.metadata.tables for i in inspect(conn).get_indexes(t)}
    engine.dispose()
    assert {
        "idx_user_activity",
        "idx_user_n_ratings",
        "idx_movie_title",
        "idx_movie_rating_count",
        "idx_movie_avg_rating",
        "idx_movie_popularity",
        "idx_rating_movie",
        "idx_rec_history_created",
    } <= indexes
    assert "idx_rating_user_ts" not in indexes  # dropped by 0002
    upgrade(db_url)  # already at head: a no-op
    assert current_revision(db_url) == head


def _indexes(db_url: str, table: str) -> set[str]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        names = {i["name"] for i in inspect(conn).get_indexes(table)}
    engine.dispose()
    return names


def test_migration_0004_indexes_the_history_by_time_and_its_downgrade_removes_it(
    db_url: str,
) -> None:
    def history_indexes() -> set[str]:
        return _indexes(db_url, "recommendation_history")

    upgrade(db_url, "0003")
    assert "idx_rec_history_created" not in history_indexes()
    upgrade(db_url, "0004")
    assert "idx_rec_history_created" in history_indexes()
    command.downgrade(alembic_config(url=db_url), "0003")
    assert history_indexes() == {
        "idx_rec_history_user_created",
        "idx_rec_history_experiment_created",
    }


def test_migration_0002_drops_the_user_time_index_and_its_downgrade_restores_it(
    db_url: str,
) -> None:
    def rating_indexes() -> set[str]:
        return _indexes(db_url, "ratings")

    upgrade(db_url, "0001")
    assert "idx_rating_user_ts" in rating_indexes()
    upgrade(db_url, "0002")
    assert rating_indexes() == {"idx_rating_movie"}
    command.downgrade(alembic_config(url=db_url), "0001")
    assert "idx_rating_user_ts" in rating_indexes()


def test_migration_0003_keeps_history_rows_as_the_champion_s_and_its_downgrade_removes_the_columns(
    db_url: str,
) -> None:
    def history_columns() -> set[str]:
        engine = make_engine(db_url)
        with engine.connect() as conn:
            names = {c["name"] for c in inspect(conn).get_columns("recommendation_history")}
            tables = set(inspect(conn).get_table_names())
        engine.dispose()
        return names | ({"<retrain_requests>"} if "retrain_requests" in tables else set())

    upgrade(db_url, "0002")
    engine = make_engine(db_url)
    with engine.begin() as conn:  # an answer served before experiments existed
        conn.execute(insert(s.users).values(id=1))
        conn.execute(insert(s.movies).values(id=10, title="T", genres="Drama"))
        conn.execute(
            text(
                "INSERT INTO recommendation_history (user_id, movie_id, rank, score, strategy,"
                " source) VALUES (1, 10, 1, 0.5, 'popular', 'popular')"
            )
        )
    engine.dispose()
    upgrade(db_url, "0003")
    assert {"tier", "fallback", "experiment", "variant", "<retrain_requests>"} <= history_columns()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                s.recommendation_history.c.fallback,
                s.recommendation_history.c.experiment,
                s.recommendation_history.c.variant,
            )
        ).one()
    engine.dispose()
    assert tuple(row) == (False, None, None)
    command.downgrade(alembic_config(url=db_url), "0002")
    assert (
        not {"tier", "fallback", "experiment", "variant", "<retrain_requests>"} & history_columns()
    )


def test_concurrent_upgrades_of_a_fresh_database_wait_for_each_other(db_url: str) -> None:
    # As the workers of one service starting together on an empty database do.
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def migrate() -> None:
        barrier.wait()
        try:
            upgrade(db_url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=migrate, daemon=True) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers), "migrations deadlocked"
    assert errors == []
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(db_url) == head


def test_rating_scores_outside_the_range_are_rejected(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(s.users.insert().values(id=1))
        conn.execute(s.movies.insert().values(id=1, title="A", genres="Drama"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(s.ratings.insert().values(user_id=1, movie_id=1, score=5.5, timestamp=0))


def test_new_user_statement_takes_the_next_id(engine: Engine) -> None:
    with engine.begin() as conn:
        assert conn.execute(s.new_user_statement()).scalar_one() == 1
        conn.execute(s.users.insert().values(id=41))
        assert conn.execute(s.new_user_statement()).scalar_one() == 42
        created = conn.execute(select(s.users).where(s.users.c.id == 42)).one()
    assert (created.n_ratings, created.favorite_genres, created.last_activity) == (0, "", None)
    assert created.created_at is not None


# --- loading -------------------------------------------------------------------------


def test_load_inserts_everything_and_counts_it(engine: Engine, bulk: bool) -> None:
    ratings, movies = make_frames(1)
    messages: list[str] = []
    result = load_dataset(
        engine, ratings, movies, dataset="synthetic", source="numpy", progress=messages.append
    )
    assert result.bulk is bulk
    assert result.ratings == loading.TableCounts(inserted=len(ratings))
    assert result.movies == loading.TableCounts(inserted=len(movies))
    assert result.users == loading.TableCounts(inserted=ratings["user_id"].nunique())
    assert len(messages) >= 6 and result.seconds > 0
    state = snapshot(engine)
    assert len(state["ratings"]) == len(ratings)
    loaded = pd.DataFrame(state["ratings"], columns=["user_id", "movie_id", "rating", "timestamp"])
    pd.testing.assert_frame_equal(
        loaded,
        ratings.sort_values(["user_id", "movie_id"]).reset_index(drop=True),
        check_dtype=False,
    )
    expected_genres = {
        (m, g) for m, gs in zip(movies.movie_id, movies.genres, strict=True) for g in gs.split("|")
    }
    assert set(state["movie_genres"]) == expected_genres
    by_id = {row[0]: row for row in state["movies"]}
    assert by_id[7][1:4] == ('Title 7, "quoted" 100%', None, movies.genres[6])
    with engine.connect() as conn:
        log = conn.execute(select(s.datasets_loaded)).one()
    assert (log.dataset, log.source, log.n_ratings) == ("synthetic", "numpy", len(ratings))
    assert (log.n_movies, log.content_hash) == (len(movies), result.content_hash)
    assert_statistics(engine, ratings, movies)
    with engine.connect() as conn:  # the bulk path rebuilt what it dropped
        indexes = {i["name"] for i in inspect(conn).get_indexes("ratings")}
        foreign_keys = {fk["name"] for fk in inspect(conn).get_foreign_keys("ratings")}
    assert "idx_rating_movie" in indexes
    assert foreign_keys == {"fk_ratings_user_id_users", "fk_ratings_movie_id_movies"}


def test_loading_the_same_data_again_changes_nothing(engine: Engine, bulk: bool) -> None:
    ratings, movies = make_frames(2)
    first = load_dataset(engine, ratings, movies, dataset="d", source="x")
    before = snapshot(engine)
    shuffled = ratings.sample(frac=1.0, random_state=0)
    again = load_dataset(engine, shuffled, movies[::-1], dataset="d", source="x")
    assert snapshot(engine) == before
    assert not again.changed
    assert again.ratings == loading.TableCounts(unchanged=len(ratings))
    assert again.movies == loading.TableCounts(unchanged=len(movies))
    assert again.users == loading.TableCounts(unchanged=ratings["user_id"].nunique())
    assert again.content_hash == first.content_hash
    with engine.connect() as conn:
        hashes = conn.execute(select(s.datasets_loaded.c.content_hash)).scalars().all()
    assert hashes == [first.content_hash, first.content_hash]


def test_changed_ratings_and_movies_are_updated(engine: Engine, bulk: bool) -> None:
    ratings, movies = make_frames(3)
    load_dataset(engine, ratings, movies, dataset="d", source="x")
    changed = ratings.copy()
    changed.loc[0, "rating"] = 5.5 - changed.loc[0, "rating"]  # a different valid score
    changed.loc[1, "timestamp"] += 60
    new_pair = pd.DataFrame(
        {"user_id": [999], "movie_id": [31], "rating": [4.5], "timestamp": [1_700_000_000]}
    )
    changed = pd.concat([changed, new_pair], ignore_index=True)
    # Users who liked movie 1 must get new favourites though their own ratings are unchanged.
    new_movies = movies.copy()
    new_movies.loc[0, ["title", "genres"]] = ["Renamed", "Western|Drama"]
    result = load_dataset(engine, changed, new_movies, dataset="d", source="x")
    assert result.ratings == loading.TableCounts(inserted=1, updated=2, unchanged=len(ratings) - 2)
    assert result.movies == loading.TableCounts(updated=1, unchanged=len(movies) - 1)
    assert result.users.inserted == 1
    state = snapshot(engine)
    assert len(state["ratings"]) == len(changed)
    assert {g for m, g in state["movie_genres"] if m == 1} == {"Western", "Drama"}
    assert_statistics(engine, changed, new_movies)


def test_new_genres_refresh_the_favourites_of_users_who_liked_the_movie(engine: Engine) -> None:
    movies = pd.DataFrame(
        {"movie_id": [1, 2], "title": ["A", "B"], "year": pd.array([1, 2], dtype="Int64"),
         "genres": ["Drama", "Comedy"]}
    )  # fmt: skip
    ratings = pd.DataFrame(
        {"user_id": [1, 1, 2], "movie_id": [1, 2, 2], "rating": [5.0, 1.0, 4.0], "timestamp": 1}
    )
    load_dataset(engine, ratings, movies, dataset="d", source="x")
    renamed = movies.assign(genres=["Western|Action", "Comedy"])
    result = load_dataset(engine, ratings, renamed, dataset="d", source="x")
    assert result.ratings == loading.TableCounts(unchanged=3)
    with engine.connect() as conn:
        favorites = dict(conn.execute(select(s.users.c.id, s.users.c.favorite_genres)).all())
    assert favorites == {1: "Action|Western", 2: "Comedy"}


@pytest.mark.parametrize("preloaded", [0, 50], ids=["into-empty", "into-loaded"])
def test_a_rating_of_an_unknown_movie_rolls_back_everything(
    engine: Engine, bulk: bool, preloaded: int
) -> None:
    ratings, movies = make_frames(4)
    if preloaded:
        load_dataset(engine, ratings.iloc[:preloaded], movies, dataset="d", source="x")
    before = snapshot(engine)
    unknown = pd.DataFrame({"user_id": [1], "movie_id": [12345], "rating": [3.0], "timestamp": [1]})
    bad = pd.concat([ratings, unknown], ignore_index=True)
    with pytest.raises(IntegrityError):
        load_dataset(engine, bad, movies, dataset="d", source="x")
    assert snapshot(engine) == before
    with engine.connect() as conn:
        logged = conn.execute(select(s.datasets_loaded.c.id)).scalars().all()
    assert len(logged) == (1 if preloaded else 0)


@pytest.mark.parametrize("failing_phase", ["merging ratings", "recomputing statistics", "logging"])
def test_an_error_in_any_phase_rolls_back_everything(
    engine: Engine, bulk: bool, failing_phase: str
) -> None:
    ratings, movies = make_frames(5)
    # Start from an empty database: the bulk path then copies ratings straight in.
    before = snapshot(engine)

    def progress(message: str) -> None:
        if message.startswith(failing_phase):
            raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        load_dataset(engine, ratings, movies, dataset="d", source="x", progress=progress)
    assert snapshot(engine) == before
    with engine.connect() as conn:
        assert {i["name"] for i in inspect(conn).get_indexes("ratings")} == {"idx_rating_movie"}
        assert len(inspect(conn).get_foreign_keys("ratings")) == 2
    # The connection went back to the pool clean: a later load works.
    result = load_dataset(engine, ratings, movies, dataset="d", source="x")
    assert result.ratings.inserted == len(ratings)


def test_duplicate_pairs_are_refused_before_touching_the_database(engine: Engine) -> None:
    ratings, movies = make_frames(6)
    doubled = pd.concat([ratings, ratings.iloc[[3]]], ignore_index=True)
    with pytest.raises(ValueError, match="1 duplicate"):
        load_dataset(engine, doubled, movies, dataset="d", source="x")
    assert snapshot(engine)["ratings"] == []


# --- statistics ----------------------------------------------------------------------


def test_favorite_genres_break_ties_by_name_and_need_positive_ratings(engine: Engine) -> None:
    movies = pd.DataFrame(
        {
            "movie_id": [1, 2, 3, 4, 5, 6],
            "title": list("ABCDEF"),
            "year": pd.array([2000] * 6, dtype="Int64"),
            "genres": ["Thriller|Drama", "Comedy|Drama", "Action|Thriller", "Comedy", "abc", "Zed"],
        }
    )
    rows = [
        # user 1: Drama 2, Thriller 2, Comedy 2, Action 1 -> ties broken by name.
        (1, 1, 4.0), (1, 2, 4.5), (1, 3, 5.0), (1, 4, 4.0),
        # user 2: only one genre family liked; a 3.5 is not positive.
        (2, 5, 4.0), (2, 6, 4.0), (2, 1, 3.5),
        # user 3: nothing positive at all.
        (3, 1, 2.0),
    ]  # fmt: skip
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"]).assign(
        timestamp=np.arange(len(rows)) + 1_000_000_000
    )
    load_dataset(engine, ratings, movies, dataset="d", source="x")
    with engine.connect() as conn:
        favorites = dict(conn.execute(select(s.users.c.id, s.users.c.favorite_genres)).all())
    # Binary order: upper case sorts before lower case ("Zed" < "abc").
    assert favorites == {1: "Comedy|Drama|Thriller", 2: "Zed|abc", 3: ""}
    assert_statistics(engine, ratings, movies)


def test_popularity_score_is_log10_count_plus_one_times_average(engine: Engine) -> None:
    movies = pd.DataFrame(
        {"movie_id": [1, 2], "title": ["A", "B"], "year": pd.array([1, 2], dtype="Int64"),
         "genres": ["Drama", "Drama"]}
    )  # fmt: skip
    ratings = pd.DataFrame(
        {"user_id": np.arange(1, 10), "movie_id": 1, "rating": [4.0] * 8 + [2.5],
         "timestamp": 1}
    )  # fmt: skip
    load_dataset(engine, ratings, movies, dataset="d", source="x")
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(s.movies)).all()}
    average = (8 * 4.0 + 2.5) / 9
    assert rows[1].popularity_score == pytest.approx(math.log10(10) * average)
    assert (rows[2].rating_count, rows[2].avg_rating, rows[2].popularity_score) == (0, 0, 0)


def test_statistics_match_a_pandas_recount_on_generated_data(engine: Engine) -> None:
    ratings, movies = make_frames(7, n_users=120, n_movies=60)
    load_dataset(engine, ratings, movies, dataset="d", source="x")
    assert_statistics(engine, ratings, movies)


def test_a_load_into_empty_tables_counts_in_memory_exactly_what_sql_recounts(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratings, movies = make_frames(11, n_users=150, n_movies=70)
    # Genre names whose binary order differs from a case-insensitive or accented one.
    movies.loc[movies["movie_id"] % 3 == 0, "genres"] = "Zeta|alpha|\u00c9mile"
    registered = 10_000  # a user of the database who is not in the batch
    with engine.begin() as conn:
        conn.execute(s.users.insert().values(id=registered))
    monkeypatch.setattr(loading, "_recompute_touched", _must_not_run)
    load_dataset(engine, ratings, movies, dataset="d", source="x")
    in_memory = snapshot(engine)
    with engine.begin() as conn:
        recompute_statistics(conn)
    assert snapshot(engine) == in_memory
    assert_statistics(engine, ratings, movies)
    users = {row[0]: row for row in in_memory["users"]}
    assert users[registered][2:] == (0, 0.0, 0.0, None, "")


def test_a_batch_rating_movies_it_does_not_carry_is_recounted_in_sql(engine: Engine) -> None:
    ratings, movies = make_frames(12)
    load_dataset(engine, ratings.iloc[:0], movies, dataset="movies", source="x")
    carried = movies[movies["movie_id"] % 2 == 0]  # the others are only in the database
    load_dataset(engine, ratings, carried, dataset="d", source="x")
    assert_statistics(engine, ratings, movies)


def _must_not_run(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("statistics were recounted in SQL")


def test_recompute_statistics_repairs_only_the_scope_it_is_given(engine: Engine) -> None:
    ratings, movies = make_frames(8)
    load_dataset(engine, ratings, movies, dataset="d", source="x")
    with engine.begin() as conn:
        conn.execute(update(s.users).values(n_ratings=-1, favorite_genres="stale"))
        conn.execute(update(s.movies).values(rating_count=-1, popularity_score=-1))
        registered = conn.execute(s.new_user_statement()).scalar_one()
        conn.execute(update(s.users).where(s.users.c.id == registered).values(n_ratings=7))
        recompute_statistics(conn, user_ids=[1, registered], movie_ids=[])
    with engine.connect() as conn:
        n_ratings = dict(conn.execute(select(s.users.c.id, s.users.c.n_ratings)).all())
        movie_counts = set(conn.execute(select(s.movies.c.rating_count)).scalars())
    assert n_ratings[1] == (ratings["user_id"] == 1).sum()
    assert n_ratings[registered] == 0
    assert {v for k, v in n_ratings.items() if k not in (1, registered)} == {-1}
    assert movie_counts == {-1}
    with engine.begin() as conn:
        recompute_statistics(conn)
    assert_statistics(engine, ratings, movies)


# --- copy floor ----------------------------------------------------------------------


def test_copy_floor_times_a_copy_and_keeps_nothing(engine: Engine, db_url: str) -> None:
    ratings, _ = make_frames(9)
    seconds = copy_floor(db_url, ratings)
    assert 0 < seconds < 60
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ratings")).scalar() == 0


def test_load_result_reports_every_phase(engine: Engine) -> None:
    ratings, movies = make_frames(10)
    result: LoadResult = load_dataset(engine, ratings, movies, dataset="d", source="x")
    assert {"prepare", "stage", "movies", "users", "ratings", "statistics", "log"} <= set(
        result.phases
    )
    assert result.seconds == pytest.approx(sum(result.phases.values()))


def test_a_connection_opening_a_fresh_sqlite_file_waits_for_another_to_switch_it_to_wal(
    tmp_path: Path,
) -> None:
    # Switching to WAL needs an exclusive lock, and SQLite refuses it at once (no busy
    # timeout) while another connection holds the file: make_engine must wait instead.
    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    releaser = threading.Timer(0.3, holder.execute, args=("COMMIT",))
    releaser.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("SELECT x FROM t").scalar() == 1
    finally:
        releaser.join()
        engine.dispose()
        holder.close()
