"""The tables a feature snapshot is built from, read from the database as DataFrames."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, select

from recolab.adapters.sql import schema as s


def read_feature_tables(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings, movies, users) as `recolab.ml.features.build_snapshot` takes them."""
    r, m, u = s.ratings.c, s.movies.c, s.users.c
    with engine.connect() as conn:
        ratings = pd.read_sql(
            select(r.user_id, r.movie_id, r.score.label("rating"), r.timestamp).order_by(
                r.user_id, r.movie_id
            ),
            conn,
        )
        movies = pd.read_sql(
            select(
                m.id.label("movie_id"),
                m.title,
                m.year,
                m.genres,
                m.rating_count,
                m.avg_rating,
                m.popularity_score,
            ).order_by(m.id),
            conn,
        )
        users = pd.read_sql(
            select(u.id.label("user_id"), u.n_ratings, u.avg_rating, u.favorite_genres).order_by(
                u.id
            ),
            conn,
        )
    ratings = ratings.astype(
        {"user_id": "int64", "movie_id": "int64", "rating": "float64", "timestamp": "int64"}
    )
    movies["year"] = movies["year"].astype("Int64")
    return ratings, movies, users
