"""Splits hold no leakage; protocol runners score what they claim to score."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recolab.ml.baselines import BiasOnlyRecommender, PopularityRecommender
from recolab.ml.evaluation import protocols as P


def _ratings(
    n_users: int = 30, n_items: int = 40, per_user: int = 12, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)
        for j, item in enumerate(items):
            rows.append((user, int(item), float(rng.integers(1, 11) / 2), 1_000_000 + j // 2))
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    return frame.astype({"user_id": "int64", "movie_id": "int64", "timestamp": "int64"})


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"], frame["movie_id"], strict=True))


def test_kfold_indices_are_disjoint_and_cover_every_row() -> None:
    folds = P.kfold_indices(103, 5, seed=1)
    joined = np.concatenate(folds)
    assert sorted(joined.tolist()) == list(range(103))
    assert {len(f) for f in folds} <= {20, 21}
    assert [f.tolist() for f in folds] == [f.tolist() for f in P.kfold_indices(103, 5, seed=1)]


def test_kfold_splits_pair_each_fold_with_every_other_row() -> None:
    ratings = _ratings()
    folds = P.kfold_indices(len(ratings), 4, seed=2)
    splits = list(P.kfold_splits(ratings, 4, seed=2))
    assert len(splits) == 4
    for (train, test), test_pos in zip(splits, folds, strict=True):
        assert test.index.equals(ratings.index[test_pos])
        assert len(train) + len(test) == len(ratings)
        assert not set(train.index) & set(test.index)


def test_stratified_split_has_no_leakage_and_keeps_the_fraction_per_user() -> None:
    ratings = _ratings()
    train, test = P.stratified_user_split(ratings, 0.25, seed=3)
    assert not _pairs(train) & _pairs(test)
    assert len(train) + len(test) == len(ratings)
    assert (test.groupby("user_id").size() == 3).all()  # round(12 * 0.25)
    assert set(train["user_id"]) == set(ratings["user_id"])
    again_train, _ = P.stratified_user_split(ratings, 0.25, seed=3)
    assert again_train.index.equals(train.index)


def test_leave_latest_out_holds_out_the_latest_rating_with_deterministic_ties() -> None:
    ratings = _ratings()
    train, test = P.leave_latest_out(ratings)
    assert test["user_id"].is_unique and len(test) == ratings["user_id"].nunique()
    assert not _pairs(train) & _pairs(test)
    latest = ratings.groupby("user_id")["timestamp"].max()
    assert (test.set_index("user_id")["timestamp"] == latest).all()
    # every user's last two ratings share a timestamp: the higher movie_id is held out
    tied = ratings[ratings["timestamp"] == ratings["user_id"].map(latest)]
    assert (
        test.set_index("user_id")["movie_id"] == tied.groupby("user_id")["movie_id"].max()
    ).all()


def test_sampled_negatives_are_unrated_distinct_catalogue_items() -> None:
    ratings = _ratings()
    users = np.unique(ratings["user_id"].to_numpy())
    catalogue = np.arange(1, 41)
    neg = P.sample_unrated(
        users, catalogue, ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy(), 20, seed=0
    )
    rated = _pairs(ratings)
    for user, row in zip(users, neg, strict=True):
        assert len(set(row.tolist())) == 20
        assert set(row.tolist()) <= set(catalogue.tolist())
        assert not {(int(user), int(item)) for item in row} & rated
    with pytest.raises(ValueError):
        P.sample_unrated(
            users, catalogue, ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy(), 29, 0
        )


class _Oracle:
    """Knows the held-out rows: scores them above everything (or below, when `invert`)."""

    def __init__(self, held_out: pd.DataFrame, invert: bool = False) -> None:
        self.keys = set(zip(held_out["user_id"], held_out["movie_id"], strict=True))
        self.sign = -1.0 if invert else 1.0

    def fit(self, ratings: pd.DataFrame) -> "_Oracle":
        return self

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        hit = [(int(u), int(i)) in self.keys for u, i in zip(user_ids, item_ids, strict=True)]
        return self.sign * np.asarray(hit, dtype=np.float64)

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return self.score(user_ids, item_ids)


def test_leave_one_out_scores_a_perfect_and_a_worst_recommender() -> None:
    ratings = _ratings()
    _, test = P.leave_latest_out(ratings)
    best = P.run_leave_one_out(lambda: _Oracle(test), ratings, n_negatives=20, seed=0)
    worst = P.run_leave_one_out(lambda: _Oracle(test, invert=True), ratings, n_negatives=20)
    assert best.summary["hr@10"] == 1.0 and best.summary["ndcg@10"] == 1.0
    assert worst.summary["hr@10"] == 0.0
    assert best.summary["by_tier"]["casual"]["n_users"] == 30  # 11 training ratings each
    assert len(best.scored) == 30 * 21


@pytest.mark.parametrize("seed", range(4))
def test_the_stratified_split_is_the_lexsort_one(seed: int) -> None:
    """The split's order (two sorts) is np.lexsort((random, users))'s, so snapshots and
    reports made before keep their test rows."""
    rng = np.random.default_rng(100 + seed)
    n = 5000
    ratings = pd.DataFrame(
        {
            "user_id": rng.permutation(
                np.repeat(rng.integers(1, 10**6, 300), rng.integers(1, 40, 300))
            )[:n],
            "movie_id": np.arange(n),
            "rating": 4.0,
            "timestamp": 0,
        }
    )
    train, test = P.stratified_user_split(ratings, 0.25, seed)
    users = ratings["user_id"].to_numpy()
    order = np.lexsort((np.random.default_rng(seed).random(len(ratings)), users))
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order)) - np.repeat(starts, sizes)
    n_test = np.minimum(np.rint(sizes * 0.25).astype(np.int64), sizes - 1)
    is_test = np.zeros(len(ratings), dtype=bool)
    is_test[order] = position < np.repeat(n_test, sizes)
    assert test.index.tolist() == np.flatnonzero(is_test).tolist()
    assert train.index.tolist() == np.flatnonzero(~is_test).tolist()


@pytest.mark.parametrize("seed", range(4))
def test_ordering_by_user_then_a_key_is_lexsorts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 50, 3000)
    for keys in (rng.random(3000), rng.integers(0, 5, 3000)):  # ties in the key too
        assert np.array_equal(P.by_user_then_key(users, keys), np.lexsort((keys, users)))


def test_topk_never_recommends_training_items_and_matches_a_recount() -> None:
    ratings = _ratings()
    train, test = P.stratified_user_split(ratings, 0.25, seed=0)
    result = P.run_topk(PopularityRecommender, ratings, k=5, seed=0)
    recs = result.scored
    assert not _pairs(recs) & _pairs(train)
    assert (recs.groupby("user_id").size() == 5).all()
    relevant = test.groupby("user_id")["movie_id"].apply(set)
    precision = [
        len(set(group["movie_id"]) & relevant[user]) / 5 for user, group in recs.groupby("user_id")
    ]
    assert result.summary["precision@5"] == pytest.approx(np.mean(precision))
    assert 0 < result.summary["coverage"] <= 1


def test_topk_perfect_recommender_reaches_full_precision_and_ndcg() -> None:
    ratings = _ratings()
    _, test = P.stratified_user_split(ratings, 0.25, seed=0)
    movies = pd.DataFrame({"movie_id": np.arange(1, 41), "genres": ["Action|Drama", "Comedy"] * 20})
    result = P.run_topk(
        lambda: _Oracle(test), ratings, k=3, seed=0, items=P.ItemFeatures.from_movies(movies)
    )
    assert result.summary["precision@3"] == 1.0
    assert result.summary["ndcg@3"] == pytest.approx(1.0)
    assert result.summary["recall@3"] == pytest.approx(1.0)
    assert result.summary["map@3"] == pytest.approx(1.0)
    assert 0 <= result.summary["ild"] <= 1


@pytest.mark.parametrize("sample_users", [None, 12])
def test_topk_on_a_split_made_once_gives_what_each_run_splitting_alone_gives(
    sample_users: int | None,
) -> None:
    """A training run makes protocol B's split once for NeuMF and its baselines: the same
    figures, lists and sample as a run that splits by itself."""
    ratings = _ratings()
    movies = pd.DataFrame({"movie_id": np.arange(1, 41), "genres": ["Action|Drama", "Comedy"] * 20})
    items = P.ItemFeatures.from_movies(movies)
    options: dict[str, Any] = {"seed": 3, "items": items, "sample_users": sample_users}
    split = P.topk_split(ratings, test_fraction=0.25, **options)
    for factory in (PopularityRecommender, BiasOnlyRecommender):
        alone = P.run_topk(factory, ratings, k=5, **options)
        shared = P.run_topk(factory, ratings, k=5, split=split)
        fit_free = {k: v for k, v in alone.summary.items() if k != "fit_seconds"}
        assert {k: v for k, v in shared.summary.items() if k != "fit_seconds"} == fit_free
        pd.testing.assert_frame_equal(shared.scored, alone.scored)
        pd.testing.assert_frame_equal(shared.per_user, alone.per_user)
    assert ("users_sampled" in alone.summary) == (sample_users is not None)


def test_topk_samples_users_only_when_every_user_is_over_the_pair_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`max_pairs` (trainer `eval_max_pairs`): every test user while users x catalogue fits;
    above it, a seeded sample of max_pairs // catalogue users, reported as a sample and
    said on the progress logger (which the flows forward to their logs)."""
    caplog.set_level(logging.INFO, logger="recolab.progress")
    ratings = _ratings()
    full = P.topk_split(ratings, test_fraction=0.25, seed=3)
    pairs = full.users.size * full.catalogue.size
    within = P.topk_split(ratings, test_fraction=0.25, seed=3, max_pairs=pairs)
    np.testing.assert_array_equal(within.users, full.users)
    over = P.topk_split(ratings, test_fraction=0.25, seed=3, max_pairs=pairs - 1)
    assert over.users.size == (pairs - 1) // full.catalogue.size < full.users.size
    assert set(over.users) <= set(full.users)
    assert over.n_test_users == full.users.size
    said = [r.getMessage() for r in caplog.records if r.name == "recolab.progress"]
    assert len(said) == 1 and "eval_max_pairs" in said[0]
    budget = 5 * full.catalogue.size
    same_as_asked = P.topk_split(ratings, test_fraction=0.25, seed=3, sample_users=5)
    np.testing.assert_array_equal(
        P.topk_split(ratings, test_fraction=0.25, seed=3, max_pairs=budget).users,
        same_as_asked.users,
    )
    result = P.run_topk(PopularityRecommender, ratings, k=5, seed=3, max_pairs=budget)
    assert result.summary["users_sampled"]["evaluated"] == 5
    with pytest.raises(ValueError, match="max_pairs"):
        P.topk_split(ratings, test_fraction=0.25, seed=3, max_pairs=0)


def test_rating_cv_bias_only_beats_the_global_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(1, 60, 3000)
    items = rng.integers(1, 80, 3000)
    user_bias = rng.normal(0, 0.7, 61)
    item_bias = rng.normal(0, 0.7, 81)
    rating = np.clip(3.5 + user_bias[users] + item_bias[items] + rng.normal(0, 0.3, 3000), 0.5, 5)
    ratings = pd.DataFrame(
        {"user_id": users, "movie_id": items, "rating": rating, "timestamp": np.arange(3000)}
    ).drop_duplicates(["user_id", "movie_id"])
    result = P.run_rating_cv(BiasOnlyRecommender, ratings, n_folds=3, seed=0)
    spread = float(ratings["rating"].std())
    assert result.summary["rmse"]["mean"] < 0.6 * spread
    assert len(result.summary["rmse_per_fold"]) == 3
    path = result.export_scores(tmp_path / "out" / "predictions.csv")
    exported = pd.read_csv(path)
    assert len(exported) == len(ratings)
    assert {"user_id", "movie_id", "score"} <= set(exported.columns)


@pytest.mark.parametrize("grouped", [True, False], ids=["rows-by-user", "shuffled"])
@pytest.mark.parametrize("wide", [False, True], ids=["one-key", "too-wide-for-one-key"])
def test_latest_mask_marks_the_rows_leave_latest_out_holds_out(grouped: bool, wide: bool) -> None:
    """The snapshot's protocol C column (a mask, no sort of the table) is the same rows as
    the protocol's own split, ties and single-rating users included."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        n = int(rng.integers(1, 400))
        frame = pd.DataFrame(
            {
                "user_id": rng.integers(0, 25, n),
                "movie_id": rng.integers(0, 60, n),
                "timestamp": rng.integers(0, 6, n),  # many ties
            }
        ).drop_duplicates(["user_id", "movie_id"])
        if wide:  # (time, movie) no longer fits one int64 key: the lexsort path
            frame["timestamp"] = frame["timestamp"] * (2**60) - 2**62
        if grouped:
            frame = frame.sort_values(["user_id", "movie_id"])
        else:
            frame = frame.sample(frac=1.0, random_state=1)
        frame = frame.reset_index(drop=True)
        _, test = P.leave_latest_out(frame)
        mask = P.latest_mask(*(frame[c].to_numpy() for c in ("user_id", "timestamp", "movie_id")))
        assert np.flatnonzero(mask).tolist() == sorted(test.index)
    empty = np.zeros(0, dtype=np.int64)
    assert P.latest_mask(empty, empty, empty).size == 0


def test_stratified_test_mask_is_the_splits_test_rows() -> None:
    ratings = _ratings(n_users=50, per_user=9, seed=4).sample(frac=1.0, random_state=2)
    _, test = P.stratified_user_split(ratings, 0.3, seed=5)
    mask = P.stratified_test_mask(ratings["user_id"].to_numpy(), 0.3, seed=5)
    assert ratings.index[mask].equals(test.index)


def test_relevant_cells_keep_catalogue_movies_and_count_every_test_movie() -> None:
    test = pd.DataFrame({"user_id": [7, 7, 9, 9, 9], "movie_id": [30, 99, 10, 20, 5]})
    row_of = pd.Series([0, 1, 2], index=[3, 7, 9])  # user 3 has no test movie
    catalogue = np.array([10, 20, 30])
    rows, positions, n_relevant = P.relevant_cells(test, row_of, catalogue)
    # movies 99 and 5 are outside the catalogue: no cell, but still relevant to their users
    assert list(zip(rows.tolist(), positions.tolist(), strict=True)) == [(1, 2), (2, 0), (2, 1)]
    assert n_relevant.tolist() == [0, 2, 3]
