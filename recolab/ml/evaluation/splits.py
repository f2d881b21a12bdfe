"""Seeded splits of a ratings table (contract columns): protocol A's folds, protocol B's
per-user holdout, protocol C's latest rating per user, and a split's cells in the ranking
matrix of users x catalogue. `recolab.ml.evaluation.protocols` re-exports them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

USER, ITEM, TIME = "user_id", "movie_id", "timestamp"


def kfold_indices(n_rows: int, n_folds: int, seed: int) -> list[np.ndarray]:
    """Row positions of `n_folds` disjoint random folds that together cover every row."""
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2")
    perm = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(perm[f::n_folds]) for f in range(n_folds)]


def kfold_splits(
    ratings: pd.DataFrame, n_folds: int, seed: int
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """(train, test) of each fold of `kfold_indices`: the fold's rows are the test."""
    for test_pos in kfold_indices(len(ratings), n_folds, seed):
        mask = np.zeros(len(ratings), dtype=bool)
        mask[test_pos] = True
        yield ratings[~mask], ratings[mask]


def by_user_then_key(users: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """`np.lexsort((keys, users))` as two sorts: by `keys`, then stably by user (an integer
    radix sort): the same order, in about 0.7 of the time at 5M rows."""
    by_key = np.argsort(keys, kind="stable")
    return by_key[np.argsort(np.asarray(users)[by_key], kind="stable")]


def stratified_user_split(
    ratings: pd.DataFrame, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user, a random `test_fraction` of their ratings (rounded) goes to test.

    Every user keeps at least one training rating.
    """
    is_test = stratified_test_mask(ratings[USER].to_numpy(), test_fraction, seed)
    return ratings[~is_test], ratings[is_test]


def stratified_test_mask(users: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """`stratified_user_split`'s test rows as a mask over `users` (one entry per rating)."""
    rng = np.random.default_rng(seed)
    order = by_user_then_key(users, rng.random(len(users)))
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order)) - np.repeat(starts, sizes)
    n_test = np.minimum(np.rint(sizes * test_fraction).astype(np.int64), sizes - 1)
    is_test = np.zeros(len(users), dtype=bool)
    is_test[order] = position < np.repeat(n_test, sizes)
    return is_test


def leave_latest_out(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest rating (ties: highest movie_id) is the test row.

    Users with a single rating stay entirely in training. Both frames come ordered by
    (user, time, movie).
    """
    ordered = ratings.sort_values([USER, TIME, ITEM], kind="stable")
    last = ~ordered[USER].duplicated(keep="last")
    multi = ordered[USER].map(ordered[USER].value_counts()) > 1
    test_mask = (last & multi).to_numpy()
    return ordered[~test_mask], ordered[test_mask]


def latest_mask(users: np.ndarray, times: np.ndarray, items: np.ndarray) -> np.ndarray:
    """`leave_latest_out`'s test rows as a mask in the rows' own order, without sorting the
    table: each user's largest (time, movie) pair, found per user group (about 0.2 s at 5M
    rows where the three-key sort took 2)."""
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=bool)
    grouped = bool((users[1:] >= users[:-1]).all())  # the snapshot's rows come by user
    order = np.arange(n) if grouped else np.argsort(users, kind="stable")
    u = users[order]
    starts = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    sizes = np.diff(np.r_[starts, n])
    # (time, movie) as one int64 key: the movie's rank within the catalogue below each time
    item_codes, item_rank = np.unique(items, return_inverse=True)
    t = np.asarray(times, dtype=np.int64)[order]
    t_min, t_max = int(t.min()), int(t.max())
    span = len(item_codes)
    if (t_max - t_min + 1) * span >= np.iinfo(np.int64).max:  # too wide for one key: sort
        ordered = np.lexsort((items[order], t, u))
        last = np.r_[starts[1:], n] - 1
        mask = np.zeros(n, dtype=bool)
        chosen = ordered[last]
        mask[order[chosen[sizes > 1]]] = True
        return mask
    key = (t - t_min) * span + item_rank.reshape(-1)[order]
    best = np.maximum.reduceat(key, starts)
    hit = (key == np.repeat(best, sizes)) & np.repeat(sizes > 1, sizes)
    mask = np.zeros(n, dtype=bool)
    mask[order[hit]] = True
    return mask


def users_within(n_users: int, n_catalogue: int, max_pairs: int) -> int | None:
    """How many users may be ranked against `n_catalogue` movies in `max_pairs` scores, when
    not all `n_users` fit (None: they do)."""
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be a positive number of scores, got {max_pairs}")
    if n_users * n_catalogue <= max_pairs:
        return None
    return max(1, max_pairs // max(n_catalogue, 1))


def seeded_users(users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded `n` of `users`, sorted: protocol B's user sample (not the split's stream)."""
    return np.sort(np.random.default_rng([seed, 1]).choice(users, n, replace=False))


def catalogue_cells(
    frame: pd.DataFrame, row_of: pd.Series, catalogue: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The (row, catalogue position) cells of `frame`'s pairs: users mapped to rows by
    `row_of`, movies to positions in the sorted `catalogue`; movies outside it have none."""
    rows = row_of[frame[USER]].to_numpy()
    movies = frame[ITEM].to_numpy()
    positions = np.searchsorted(catalogue, movies).clip(max=catalogue.size - 1)
    in_catalogue = catalogue[positions] == movies
    return rows[in_catalogue], positions[in_catalogue]


def relevant_cells(
    test: pd.DataFrame, row_of: pd.Series, catalogue: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Protocol B's relevant cells of `test` (`catalogue_cells`: movies outside the catalogue
    can never be ranked), and each row's number of relevant movies, counting those outside
    the catalogue too (so the ideal DCG and recall do not forget them)."""
    n_relevant = np.bincount(row_of[test[USER]].to_numpy(), minlength=row_of.size)
    return (*catalogue_cells(test, row_of, catalogue), n_relevant)


__all__ = [
    "by_user_then_key",
    "catalogue_cells",
    "kfold_indices",
    "kfold_splits",
    "latest_mask",
    "leave_latest_out",
    "relevant_cells",
    "seeded_users",
    "stratified_test_mask",
    "stratified_user_split",
    "users_within",
]
