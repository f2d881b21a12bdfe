"""Small ratings tables for tests that run a real fit."""

import numpy as np
import pandas as pd


def tiny_ratings(
    n_users: int = 20, per_user: int = 8, n_movies: int = 40, first_timestamp: int = 0
) -> pd.DataFrame:
    """`per_user` distinct movies of `n_movies` for each of `n_users` users (seeded), rating 4,
    timestamps increasing per user from `first_timestamp`."""
    rng = np.random.default_rng(0)
    rows = [
        (user, int(movie) + 1, 4.0, first_timestamp + user * per_user + j)
        for user in range(1, n_users + 1)
        for j, movie in enumerate(rng.choice(n_movies, size=per_user, replace=False))
    ]
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
