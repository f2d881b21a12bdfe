"""The tables a feature snapshot is built from, read from the database as DataFrames.

The ratings are streamed (a server-side cursor on PostgreSQL) and turned into typed columns
`chunk_rows` at a time: the whole result never exists as Python row objects (about 300 bytes
a rating: 1.5 GB at 5M ratings, 10 GB at 32M), only as the final columns (33 bytes a rating)
and one chunk of rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, select

from recolab.adapters.sql import schema as s

CHUNK_ROWS = 250_000
RATING_DTYPES = {"user_id": "int64", "movie_id": "int64", "rating": "float64", "timestamp": "int64"}


def read_feature_tables(
    engine: Engine, *, chunk_rows: int = CHUNK_ROWS
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings, movies, users) as `recolab.ml.features.build_snapshot` takes them."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    m, u = s.movies.c, s.users.c
    with engine.connect() as conn:
        ratings = read_ratings(conn, chunk_rows)
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
    movies["year"] = movies["year"].astype("Int64")
    return ratings, movies, users


def read_ratings(conn: Connection, chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """Every rating, ordered by (user_id, movie_id), in `RATING_DTYPES` columns; read
    `chunk_rows` rows at a time."""
    r = s.ratings.c
    query = select(r.user_id, r.movie_id, r.score.label("rating"), r.timestamp).order_by(
        r.user_id, r.movie_id
    )
    result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(query)
    record = np.dtype(list(RATING_DTYPES.items()))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in RATING_DTYPES}
    for rows in result.partitions(chunk_rows):
        # tuples into one structured array: numpy converts them in C, exactly, per field
        block = np.array([tuple(row) for row in rows], dtype=record)
        for name in RATING_DTYPES:
            parts[name].append(np.ascontiguousarray(block[name]))
        del block
    columns = {
        name: np.concatenate(chunks) if chunks else np.empty(0, dtype=RATING_DTYPES[name])
        for name, chunks in parts.items()
    }
    parts.clear()
    return pd.DataFrame(columns, copy=False)  # the columns as they are: no third copy
