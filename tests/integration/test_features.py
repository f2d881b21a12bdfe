"""Feature snapshots from a real database: content-addressed, leakage-free splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.features import read_feature_tables
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.ml.features import (
    FeaturesError,
    FeatureSnapshot,
    SnapshotNotFound,
    build_snapshot,
    latest_snapshot,
    open_snapshot,
)


def _snapshot(engine: Engine, root: Path, **names: str) -> FeatureSnapshot:
    return build_snapshot(read_feature_tables(engine), root, **names)


def synthetic(
    n_users: int = 40, n_movies: int = 60, seed: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    pairs = {
        (int(u), int(m))
        for u, m in zip(
            rng.integers(1, n_users + 1, 1500), rng.integers(1, n_movies + 1, 1500), strict=True
        )
    }
    users, movies = zip(*sorted(pairs), strict=True)
    ratings = pd.DataFrame(
        {
            "user_id": np.array(users, dtype=np.int64),
            "movie_id": np.array(movies, dtype=np.int64),
            "rating": rng.integers(1, 11, len(users)) / 2.0,
            "timestamp": rng.integers(1_000_000_000, 1_100_000_000, len(users)),
        }
    )
    genres = ["Action", "Drama", "Comedy|Romance", "Sci-Fi|Action"]
    catalogue = pd.DataFrame(
        {
            "movie_id": np.arange(1, n_movies + 1, dtype=np.int64),
            "title": [f"Movie {i}" for i in range(1, n_movies + 1)],
            "year": pd.array([1990 + i % 30 for i in range(n_movies)], dtype="Int64"),
            "genres": [genres[i % 4] for i in range(n_movies)],
        }
    )
    return ratings, catalogue


@pytest.fixture
def engine(db_url: str) -> Engine:
    upgrade(db_url)
    engine = make_engine(db_url)
    ratings, movies = synthetic()
    load_dataset(engine, ratings, movies, dataset="synthetic", source="test")
    return engine


def test_same_content_same_id_and_no_leakage(engine: Engine, tmp_path: Path) -> None:
    first = _snapshot(engine, tmp_path, dataset="synthetic", database="db")
    again = _snapshot(engine, tmp_path / "other", dataset="synthetic", database="db")
    assert first.id == again.id
    assert (
        open_snapshot(tmp_path, first.id).manifest["content_hash"] == first.manifest["content_hash"]
    )
    assert latest_snapshot(tmp_path).id == first.id
    ratings = first.ratings
    assert first.manifest["rows"]["ratings"] == len(ratings) > 0
    # protocol A: five folds cover every row exactly once
    assert sorted(ratings["fold"].unique()) == [0, 1, 2, 3, 4]
    # protocol B: about a quarter per user held out, each user keeps training rows
    per_user = ratings.groupby("user_id")["holdout_b"].agg(["sum", "count"])
    assert (per_user["sum"] < per_user["count"]).all()
    assert 0.2 < ratings["holdout_b"].mean() < 0.3
    train_pairs = set(
        zip(
            ratings.loc[~ratings.holdout_b, "user_id"],
            ratings.loc[~ratings.holdout_b, "movie_id"],
            strict=True,
        )
    )
    test_pairs = set(
        zip(
            ratings.loc[ratings.holdout_b, "user_id"],
            ratings.loc[ratings.holdout_b, "movie_id"],
            strict=True,
        )
    )
    assert not train_pairs & test_pairs
    # protocol C: the held-out row is each user's latest rating
    loo = ratings[ratings.loo_test].set_index("user_id")["timestamp"]
    latest = ratings.groupby("user_id")["timestamp"].max()
    assert (loo == latest.loc[loo.index]).all()
    assert ratings.groupby("user_id")["loo_test"].sum().max() == 1
    # contiguous id maps
    assert (
        ratings["user_idx"].max() + 1 == first.manifest["n_users"] == ratings["user_id"].nunique()
    )
    assert set(first.table("genres").columns) >= {"movie_id", "Action", "Drama"}


def test_changed_content_changes_the_id(engine: Engine, tmp_path: Path) -> None:
    before = _snapshot(engine, tmp_path, dataset="synthetic", database="db")
    ratings, movies = synthetic()
    changed = ratings.copy()
    changed.loc[0, "rating"] = 5.0 if changed.loc[0, "rating"] != 5.0 else 1.0
    load_dataset(engine, changed, movies, dataset="synthetic", source="test")
    assert _snapshot(engine, tmp_path, dataset="synthetic", database="db").id != before.id


def test_missing_snapshot_and_empty_database(tmp_path: Path, sqlite_url: str) -> None:
    with pytest.raises(SnapshotNotFound):
        open_snapshot(tmp_path, "nope")
    with pytest.raises(SnapshotNotFound):
        latest_snapshot(tmp_path)
    upgrade(sqlite_url)
    with pytest.raises(FeaturesError, match="ingest"):
        _snapshot(make_engine(sqlite_url), tmp_path, dataset="x", database="db")


def test_ratings_are_read_in_chunks_into_the_same_typed_columns(engine: Engine) -> None:
    expected, _ = synthetic()
    whole, movies, users = read_feature_tables(engine)
    chunked, _, _ = read_feature_tables(engine, chunk_rows=7)  # many chunks, the last partial
    pd.testing.assert_frame_equal(chunked, whole)
    pd.testing.assert_frame_equal(whole, expected)  # ordered by (user, movie), typed
    assert list(whole.dtypes.astype(str)) == ["int64", "int64", "float64", "int64"]
    assert len(movies) == 60 and len(users) == whole["user_id"].nunique()
    with pytest.raises(ValueError, match="chunk_rows"):
        read_feature_tables(engine, chunk_rows=0)


def test_reading_the_ratings_holds_no_python_row_per_rating(db_url: str) -> None:
    """The peak of Python allocations while reading n ratings stays near the final columns'
    size (33 bytes a rating): reading every row as a Python object first took ~310."""
    import tracemalloc

    upgrade(db_url)
    engine = make_engine(db_url)
    n_users, per_user = 400, 100
    ratings = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(1, n_users + 1, dtype=np.int64), per_user),
            "movie_id": np.tile(np.arange(1, per_user + 1, dtype=np.int64), n_users),
            "rating": 3.5,
            "timestamp": np.arange(n_users * per_user, dtype=np.int64) + 1_000_000_000,
        }
    )
    _, movies = synthetic(n_movies=per_user)
    load_dataset(engine, ratings, movies, dataset="synthetic", source="test")
    tracemalloc.start()
    try:
        read, _, _ = read_feature_tables(engine, chunk_rows=2_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        engine.dispose()
    assert len(read) == len(ratings)
    assert peak / len(ratings) < 120, f"{peak / len(ratings):.0f} bytes a rating at the peak"


@pytest.mark.postgres
def test_postgres_binary_copy_reads_what_the_row_cursor_reads(postgres_url: str) -> None:
    """PostgreSQL's ratings come through binary COPY parsed by numpy: the same typed columns,
    in the same order, as SQLAlchemy's streamed rows, whatever the chunk boundaries."""
    from recolab.adapters.sql import features as F

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    ratings, movies = synthetic()
    ratings.loc[::7, "timestamp"] = -(2**40)  # negative and wide values survive byte order
    ratings.loc[::5, "rating"] = 0.5
    load_dataset(engine, ratings, movies, dataset="synthetic", source="test")
    with engine.connect() as conn:
        copied = {n: F.read_ratings(conn, chunk_rows=n) for n in (1, 13, 10_000)}
        rows = pd.DataFrame(F._row_columns(conn, F.ratings_query(), 50))
    engine.dispose()
    for frame in copied.values():
        pd.testing.assert_frame_equal(frame, rows)
    expected = ratings.sort_values(["user_id", "movie_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, expected, check_dtype=True)


def test_a_stream_that_is_not_binary_copy_is_refused() -> None:
    from recolab.adapters.sql.features import _drop_header

    assert _drop_header(bytearray(b"PGCOPY\n")) is False  # not whole yet: wait for more
    with pytest.raises(ValueError, match="binary COPY"):
        _drop_header(bytearray(b"user_id,movie_id,rating,timestamp\n"))
