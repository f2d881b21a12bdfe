"""Data and a platform for promotion tests: taste groups that a model learns in a few
epochs, loaded into SQLite with a local MLflow store; ratings added as the API adds them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from recolab.application.users import RateMovie, rate_movie
from recolab.bootstrap import Platform, bootstrap
from recolab.config import PROJECT_ROOT, Settings

MODEL = "recolab-neumf"
GROUPS = 3
# Tiny and quick; 4 epochs learn the taste groups below far beyond popularity.
TINY = [
    "batch_size=128",
    "val_negatives=20",
    "patience=5",
    "gmf_dim=16",
    "mlp_dim=8",
    "mlp_layers=[16, 8]",
    "num_negatives=4",
]
TRAINED = [*TINY, "max_epochs=4"]
# Learning rate 0 and no popularity prior: a random ranking, below popularity.
UNTRAINED = [*TINY, "max_epochs=1", "lr=0.0", "popularity_weight=0.0"]


def grouped_tables(
    n_users: int = 120, n_movies: int = 180, per_user: int = 25, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ratings, movies) where taste decides: each user rates only movies of their group
    (popular ones more), so a model that learns beats "most rated first" by far."""
    rng = np.random.default_rng(seed)
    rows = []
    weight = 1.0 / (1 + np.arange(n_movies // GROUPS)) ** 0.7
    for user in range(1, n_users + 1):
        pool = np.arange(user % GROUPS, n_movies, GROUPS)
        p = weight[: pool.size] / weight[: pool.size].sum()
        for movie in rng.choice(pool, size=per_user, replace=False, p=p):
            stars = float(rng.integers(7, 11)) / 2
            rows.append((user, int(movie) + 1, stars, 1_000_000 + len(rows)))
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    ids = np.arange(1, n_movies + 1)
    movies = pd.DataFrame(
        {
            "movie_id": ids,
            "title": [f"Movie {i}" for i in ids],
            "year": pd.array([1990 + i % 20 for i in ids], dtype="Int64"),
            "genres": [("Action", "Comedy", "Drama")[(i - 1) % GROUPS] for i in ids],
        }
    )
    return ratings, movies


def grouped_platform(tmp_path: Path) -> Platform:
    """A platform on SQLite + a local MLflow store, loaded with `grouped_tables` and with
    one feature snapshot built."""
    from recolab.adapters.sql.loading import load_dataset

    config_dir = tmp_path / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", config_dir)
    settings = Settings(
        data_dir=tmp_path / "data",
        config_dir=config_dir,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    platform = bootstrap(settings)
    ratings, movies = grouped_tables()
    load_dataset(platform.engine, ratings, movies, dataset="grouped", source="test")
    platform.build_features("grouped")
    return platform


def rate_through_the_api(platform: Platform, users: range) -> None:
    """Each user rates one more movie of their own group, as `POST /ratings` does."""
    with platform.engine.connect() as conn:
        rated = pd.read_sql("SELECT user_id, movie_id FROM ratings", conn)
    for user in users:
        mine = set(rated.loc[rated["user_id"] == user, "movie_id"])
        movie = next(
            m for m in range(180, 0, -1) if (m - 1) % GROUPS == user % GROUPS and m not in mine
        )
        rate_movie(RateMovie(user, movie, 4.5), platform.uow(), platform.bus)
