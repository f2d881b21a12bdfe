"""A dataset made ready to load: the rating columns as sorted, checked numpy arrays, the
movies as a frame, their genres exploded, and a content hash of it all."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recolab.adapters.ingest.movielens import MOVIE_COLUMNS, RATING_COLUMNS


@dataclass(frozen=True)
class LoadBatch:
    """The frames as plain arrays (ratings sorted by user, movie), checked."""

    user: np.ndarray
    movie: np.ndarray
    score: np.ndarray
    timestamp: np.ndarray
    movies: pd.DataFrame
    genres: pd.DataFrame
    users: np.ndarray
    content_hash: str

    @property
    def rating_columns(self) -> tuple[np.ndarray, ...]:
        return (self.user, self.movie, self.score, self.timestamp)


def prepare_batch(ratings: pd.DataFrame, movies: pd.DataFrame) -> LoadBatch:
    """Check and arrange the normalised frames; ValueError on missing columns or duplicates."""
    _require_columns(ratings, RATING_COLUMNS, "ratings")
    _require_columns(movies, MOVIE_COLUMNS, "movies")
    user, movie, score, timestamp = _sorted_by_pair(rating_arrays(ratings))
    same_pair = (user[1:] == user[:-1]) & (movie[1:] == movie[:-1])
    if same_pair.any():
        raise ValueError(
            f"ratings: {int(same_pair.sum())} duplicate (user_id, movie_id) pairs, "
            f"e.g. user {user[1:][same_pair][0]} movie {movie[1:][same_pair][0]}"
        )
    movie_frame = pd.DataFrame(
        {
            "movie_id": movies["movie_id"].to_numpy(dtype=np.int64),
            "title": movies["title"].astype(str).to_numpy(),
            "year": movies["year"].astype("Int64").array,
            "genres": movies["genres"].astype(str).to_numpy(),
        }
    )
    movie_frame = movie_frame.sort_values("movie_id", kind="stable").reset_index(drop=True)
    movie_ids = movie_frame["movie_id"].to_numpy()
    if (movie_ids[1:] == movie_ids[:-1]).any():
        raise ValueError("movies: duplicate movie_id values")
    first_of_user = np.r_[True, user[1:] != user[:-1]] if len(user) else np.zeros(0, bool)
    return LoadBatch(
        user=user,
        movie=movie,
        score=score,
        timestamp=timestamp,
        movies=movie_frame,
        genres=_explode_genres(movie_frame),
        users=user[first_of_user],
        content_hash=_content_hash((user, movie, score, timestamp), movie_frame),
    )


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")


def rating_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(frame["user_id"].to_numpy(dtype=np.int64)),
        np.ascontiguousarray(frame["movie_id"].to_numpy(dtype=np.int64)),
        np.ascontiguousarray(frame["rating"].to_numpy(dtype=np.float64)),
        np.ascontiguousarray(frame["timestamp"].to_numpy(dtype=np.int64)),
    )


def _sorted_by_pair(
    columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Order by (user_id, movie_id): index-friendly inserts, cheap duplicate check."""
    user, movie = columns[0], columns[1]
    ordered = (user[1:] > user[:-1]) | ((user[1:] == user[:-1]) & (movie[1:] >= movie[:-1]))
    if ordered.all():
        return columns
    order = np.lexsort((movie, user))
    return (user[order], movie[order], columns[2][order], columns[3][order])


def _explode_genres(movie_frame: pd.DataFrame) -> pd.DataFrame:
    split = movie_frame["genres"].astype(str).str.split("|")
    exploded = pd.DataFrame({"movie_id": movie_frame["movie_id"], "genre": split}).explode("genre")
    genre = exploded["genre"].astype(str).str.strip()
    out = pd.DataFrame({"movie_id": exploded["movie_id"].to_numpy(np.int64), "genre": genre})
    return out[out["genre"] != ""].drop_duplicates().reset_index(drop=True)


def _content_hash(columns: Sequence[np.ndarray], movie_frame: pd.DataFrame) -> str:
    """SHA-256 of the (sorted) rows: the same data in any row order hashes the same."""
    digest = hashlib.sha256()
    for column in columns:
        digest.update(column.astype(column.dtype.newbyteorder("<"), copy=False).data)
    digest.update(pd.util.hash_pandas_object(movie_frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
