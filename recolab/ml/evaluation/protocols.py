"""Seeded splits and protocol runners for any recommender with a fit/predict/score API.

Protocols (all on a ratings DataFrame with the contract columns):
- A `run_rating_cv`: explicit rating prediction, k random folds, RMSE/MAE in stars.
- B `run_topk`: per-user stratified random split; top-k over every training item the user
  has not rated in training; binary relevance (see `relevance_threshold`).
- C `run_leave_one_out`: each user's latest rating ranked against sampled unrated items.
Every protocol also reports its figures by user tier (n_ratings in the training part).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from recolab.ml import ranking
from recolab.ml.evaluation import metrics
from recolab.ml.evaluation.splits import by_user_then_key as by_user_then_key  # re-exported
from recolab.ml.evaluation.splits import catalogue_cells as catalogue_cells
from recolab.ml.evaluation.splits import kfold_indices as kfold_indices
from recolab.ml.evaluation.splits import kfold_splits as kfold_splits
from recolab.ml.evaluation.splits import latest_mask as latest_mask
from recolab.ml.evaluation.splits import leave_latest_out as leave_latest_out
from recolab.ml.evaluation.splits import relevant_cells as relevant_cells
from recolab.ml.evaluation.splits import seeded_users, users_within
from recolab.ml.evaluation.splits import stratified_test_mask as stratified_test_mask
from recolab.ml.evaluation.splits import stratified_user_split as stratified_user_split
from recolab.ml.evaluation.tiers import TIERS, by_tier, user_tiers
from recolab.ml.progress import PROGRESS_LOGGER

USER, ITEM, RATING, TIME = "user_id", "movie_id", "rating", "timestamp"
log = logging.getLogger(PROGRESS_LOGGER)  # with the progress lines: in the flow logs too


class OfflineRecommender(Protocol):
    """What the protocols need. Ids are raw `user_id` / `movie_id` values.

    `predict` returns ratings in stars; `score` returns any ranking score (higher is better).
    Both must accept ids that were not in the training data.
    """

    def fit(self, ratings: pd.DataFrame) -> object: ...

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray: ...

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray: ...


RecommenderFactory = Callable[[], OfflineRecommender]


# -- splits -------------------------------------------------------------------------------


def sample_unrated(
    users: np.ndarray,
    catalogue: np.ndarray,
    rated_users: np.ndarray,
    rated_items: np.ndarray,
    n: int,
    seed: int,
) -> np.ndarray:
    """For each user, `n` distinct items from `catalogue` that the user never rated.

    Rows of the result follow `users`; raises if a user has fewer than `n` unrated items.
    """
    rng = np.random.default_rng(seed)
    catalogue = np.unique(np.asarray(catalogue, dtype=np.int64))
    users = np.asarray(users, dtype=np.int64)
    width = int(max(catalogue.max(initial=0), np.max(rated_items, initial=0))) + 1
    rated = np.unique(np.asarray(rated_users, np.int64) * width + np.asarray(rated_items))
    out = np.full((users.size, n), -1, dtype=np.int64)
    todo = np.arange(users.size)
    for _ in range(32):
        if todo.size == 0:
            return out
        draw = catalogue[rng.integers(0, catalogue.size, size=(todo.size, 3 * n))]
        draw = np.concatenate([out[todo], draw], axis=1)
        valid = (draw >= 0) & ~np.isin(users[todo, None] * width + draw, rated)
        # Keep the first copy of each item per row, then take n valid ones in random order.
        srt = np.sort(np.where(valid, draw, -1), axis=1)
        unique = srt >= 0
        unique[:, 1:] &= srt[:, 1:] != srt[:, :-1]
        keys = np.where(unique, rng.random(srt.shape), np.inf)
        pick = np.argsort(keys, axis=1)[:, :n]
        chosen = np.take_along_axis(srt, pick, axis=1)
        enough = np.take_along_axis(unique, pick, axis=1).all(axis=1)
        out[todo] = np.where(enough[:, None], chosen, -1)
        todo = todo[~enough]
    raise ValueError(f"could not sample {n} unrated items for {todo.size} users")


# -- results ------------------------------------------------------------------------------


@dataclass
class ProtocolResult:
    """Summary figures (JSON-ready), per-user figures and the scored rows behind them."""

    name: str
    summary: dict[str, Any]
    per_user: pd.DataFrame = field(repr=False)
    scored: pd.DataFrame = field(repr=False)

    def export_scores(self, path: Path) -> Path:
        """Write the scored rows (user_id, movie_id, score, ...) as CSV."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.scored.to_csv(path, index=False)
        return path


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def _train_counts(train: pd.DataFrame, users: np.ndarray) -> np.ndarray:
    counts = train[USER].value_counts()
    return pd.Series(users).map(counts).fillna(0).to_numpy(dtype=np.int64)


def _timed_fit(
    factory: RecommenderFactory, train: pd.DataFrame
) -> tuple[OfflineRecommender, float]:
    model = factory()
    start = time.perf_counter()
    model.fit(train)
    return model, time.perf_counter() - start


# -- protocol A ---------------------------------------------------------------------------


def run_rating_cv(
    factory: RecommenderFactory, ratings: pd.DataFrame, n_folds: int = 5, seed: int = 0
) -> ProtocolResult:
    """Protocol A: RMSE and MAE (stars) over `n_folds` random folds; mean and std over folds."""
    rows: list[pd.DataFrame] = []
    rmses: list[float] = []
    maes: list[float] = []
    fit_times: list[float] = []
    for fold, (train, test) in enumerate(kfold_splits(ratings, n_folds, seed)):
        model, fit_s = _timed_fit(factory, train)
        pred = np.asarray(model.predict(test[USER].to_numpy(), test[ITEM].to_numpy()))
        actual = test[RATING].to_numpy()
        rmses.append(metrics.rmse(pred, actual))
        maes.append(metrics.mae(pred, actual))
        fit_times.append(fit_s)
        rows.append(
            pd.DataFrame(
                {
                    USER: test[USER].to_numpy(),
                    ITEM: test[ITEM].to_numpy(),
                    "score": pred,
                    RATING: actual,
                    "fold": fold,
                    "tier": user_tiers(_train_counts(train, test[USER].to_numpy())),
                }
            )
        )
    scored = pd.concat(rows, ignore_index=True)
    sq = (scored["score"] - scored[RATING]) ** 2
    tiers = {
        tier: {
            "n_ratings": int((scored["tier"] == tier).sum()),
            **(
                {"rmse": float(np.sqrt(sq[scored["tier"] == tier].mean()))}
                if (scored["tier"] == tier).any()
                else {}
            ),
        }
        for tier in TIERS
    }
    summary = {
        "protocol": f"A: {n_folds}-fold random CV, rating prediction",
        "n_folds": n_folds,
        "seed": seed,
        "rmse": _mean_std(rmses),
        "mae": _mean_std(maes),
        "rmse_per_fold": rmses,
        "fit_seconds": _mean_std(fit_times),
        "by_tier": tiers,
    }
    return ProtocolResult("rating_cv", summary, scored, scored)


# -- protocol B ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemFeatures:
    """Optional side information for beyond-accuracy figures."""

    movie_ids: np.ndarray
    genres: np.ndarray  # boolean multi-hot [movies, genres]

    @classmethod
    def from_movies(cls, movies: pd.DataFrame) -> ItemFeatures:
        """Multi-hot genres from the contract's '|'-joined `genres` column."""
        dummies = movies["genres"].fillna("Unknown").str.get_dummies(sep="|")
        return cls(movies[ITEM].to_numpy(np.int64), dummies.to_numpy(dtype=bool))


def top_k_items(
    model: OfflineRecommender,
    users: np.ndarray,
    catalogue: np.ndarray,
    exclude_rows: np.ndarray,
    exclude_cols: np.ndarray,
    k: int,
    *,
    memory_mb: float = ranking.DEFAULT_MEMORY_MB,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k catalogue positions and scores per user, never an excluded (row, col) pair.

    Users are ranked in blocks sized so that one block's scores (and, for NeuMF, the
    activations behind them) fit in `memory_mb`; a model with `score_catalogue` (see
    `recolab.ml.ranking.CatalogueScorer`) scores a block as one matrix, any other through
    its per-pair `score` on the block's grid. Ties are broken by catalogue position.
    """
    scorer = ranking.catalogue_scorer(model)
    rows = ranking.rows_per_block(max(catalogue.size, 1), scorer.pair_bytes(), memory_mb)
    exclusions = ranking.Exclusions.from_pairs(exclude_rows, exclude_cols, users.size)
    return ranking.top_k(
        lambda block: scorer.score_catalogue(block, catalogue),
        users,
        catalogue.size,
        exclusions,
        k,
        rows,
    )


@dataclass(frozen=True)
class TopkSplit:
    """Protocol B's split of one ratings table and everything about it that does not depend
    on the recommender ranked: built once (`topk_split`), shared by every system compared on
    it (NeuMF and the baselines of a training run)."""

    train: pd.DataFrame
    test: pd.DataFrame  # relevant rows of the users ranked (threshold and sample applied)
    seed: int
    test_fraction: float
    relevance_threshold: float | None
    catalogue: np.ndarray  # sorted training movie ids
    users: np.ndarray  # sorted ids of the users ranked
    n_test_users: int  # before any sample
    seen_rows: np.ndarray  # (row in `users`, catalogue position) of their training ratings
    seen_cols: np.ndarray
    rel_rows: np.ndarray  # (row, catalogue position) of the relevant test rows in the catalogue
    rel_pos: np.ndarray
    n_relevant: np.ndarray  # [users] relevant test rows (in the catalogue or not)
    item_popularity: np.ndarray  # [catalogue] share of training users who rated each movie
    genres: np.ndarray | None  # [catalogue, genres] when item features are given
    tiers: np.ndarray  # [users] tier by training ratings


def topk_split(
    ratings: pd.DataFrame,
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    relevance_threshold: float | None = None,
    items: ItemFeatures | None = None,
    sample_users: int | None = None,
    max_pairs: int | None = None,
) -> TopkSplit:
    """Protocol B's split of `ratings` (see `run_topk`) with its system-independent parts.

    `max_pairs`: when no `sample_users` is given and every test user times the catalogue is
    more (user, movie) scores than this, a seeded sample of `max_pairs // catalogue` users is
    ranked instead (logged, and reported by `run_topk` as `users_sampled`)."""
    train, test = stratified_user_split(ratings, test_fraction, seed)
    if relevance_threshold is not None:
        test = test[test[RATING] >= relevance_threshold]
    catalogue = np.unique(train[ITEM].to_numpy(np.int64))
    users = np.unique(test[USER].to_numpy(np.int64))
    n_test_users = int(users.size)
    if sample_users is None and max_pairs is not None:
        sample_users = users_within(users.size, catalogue.size, max_pairs)
        if sample_users is not None:
            log.info(
                "protocol B: %d test users x %d movies is more than %d scores (eval_max_pairs);"
                " ranking a seeded sample of %d users",
                users.size,
                catalogue.size,
                max_pairs,
                sample_users,
            )
    if sample_users is not None:
        if sample_users < 1:
            raise ValueError(f"sample_users must be a positive number of users, got {sample_users}")
        if sample_users < users.size:
            users = seeded_users(users, sample_users, seed)
            test = test[test[USER].isin(users)]
    row_of = pd.Series(np.arange(users.size), index=users)
    seen = train[train[USER].isin(users)]
    rel_rows, rel_pos, n_relevant = relevant_cells(test, row_of, catalogue)
    train_users = train[USER].to_numpy()
    item_users = train.groupby(ITEM)[USER].nunique().reindex(catalogue).to_numpy()
    genres = None
    if items is not None:
        genre_rows = pd.Series(np.arange(items.movie_ids.size), index=items.movie_ids)
        known = genre_rows.reindex(catalogue)
        genres = np.zeros((catalogue.size, items.genres.shape[1]), dtype=bool)
        has = known.notna().to_numpy()
        genres[has] = items.genres[known[has].to_numpy(np.int64)]
    return TopkSplit(
        train=train,
        test=test,
        seed=seed,
        test_fraction=test_fraction,
        relevance_threshold=relevance_threshold,
        catalogue=catalogue,
        users=users,
        n_test_users=n_test_users,
        seen_rows=row_of[seen[USER]].to_numpy(),
        seen_cols=np.searchsorted(catalogue, seen[ITEM].to_numpy()),
        rel_rows=rel_rows,
        rel_pos=rel_pos,
        n_relevant=n_relevant,
        item_popularity=item_users / np.unique(train_users).size,
        genres=genres,
        tiers=user_tiers(_train_counts(train, users)),
    )


def run_topk(
    factory: RecommenderFactory,
    ratings: pd.DataFrame,
    *,
    k: int = 10,
    test_fraction: float = 0.25,
    seed: int = 0,
    relevance_threshold: float | None = None,
    items: ItemFeatures | None = None,
    memory_mb: float = ranking.DEFAULT_MEMORY_MB,
    sample_users: int | None = None,
    split: TopkSplit | None = None,
    max_pairs: int | None = None,
) -> ProtocolResult:
    """Protocol B: top-k over all training items a user has not rated in training.

    Relevant = the user's test items (all of them when `relevance_threshold` is None, else
    those rated >= threshold). AP@k divides by the number of relevant test items. Users
    with no relevant test item are skipped. Ranking runs in blocks of users that fit
    `memory_mb` (see `top_k_items`). With `sample_users` = N, a seeded random N of the test
    users are ranked instead of all of them (with `max_pairs`, only when every user would be
    more scores than that; see `topk_split`), and the summary says so (`users_sampled`)
    with a 95% bootstrap interval of each ranking metric's mean. `split`: the split already
    made by `topk_split` (then `ratings` and the split's arguments are not read again), so
    that systems compared on one split do not each make it.
    """
    if split is None:
        split = topk_split(
            ratings,
            test_fraction=test_fraction,
            seed=seed,
            relevance_threshold=relevance_threshold,
            items=items,
            sample_users=sample_users,
            max_pairs=max_pairs,
        )
    model, fit_s = _timed_fit(factory, split.train)
    catalogue, users = split.catalogue, split.users
    top, top_scores = top_k_items(
        model, users, catalogue, split.seen_rows, split.seen_cols, k, memory_mb=memory_mb
    )
    hits = metrics.hits_matrix(top, split.rel_rows, split.rel_pos)
    per_user: dict[str, np.ndarray] = {
        f"ndcg@{k}": metrics.ndcg_at_k(hits, split.n_relevant),
        f"map@{k}": metrics.average_precision_at_k(hits, split.n_relevant),
        f"precision@{k}": metrics.precision_at_k(hits),
        f"recall@{k}": metrics.recall_at_k(hits, split.n_relevant),
    }
    per_user["novelty"] = metrics.novelty(top, split.item_popularity)
    if split.genres is not None:
        per_user["ild"] = metrics.intra_list_diversity(top, split.genres)
    threshold = split.relevance_threshold
    summary: dict[str, Any] = {
        "protocol": f"B: per-user random {1 - split.test_fraction:.0%}/{split.test_fraction:.0%}"
        f" split, top-{k} over unrated training items",
        "relevance": "every test item" if threshold is None else f"test items rated >= {threshold}",
        "seed": split.seed,
        "n_users": int(users.size),
        "n_catalogue": int(catalogue.size),
        **{name: float(v.mean()) for name, v in per_user.items()},
        "coverage": metrics.catalogue_coverage(top, catalogue.size),
        "fit_seconds": fit_s,
        "by_tier": by_tier(per_user, split.tiers),
    }
    if users.size < split.n_test_users:
        summary["users_sampled"] = {
            "evaluated": int(users.size),
            "of": split.n_test_users,
            "seed": split.seed,
            "ci95": {
                name: list(metrics.bootstrap_ci(values, seed=split.seed))
                for name, values in per_user.items()
            },
        }
    frame = pd.DataFrame({USER: users, "tier": split.tiers, **per_user})
    scored = pd.DataFrame(
        {
            USER: np.repeat(users, k),
            ITEM: catalogue[top.reshape(-1)],
            "score": top_scores.reshape(-1),
            "rank": np.tile(np.arange(1, k + 1), users.size),
        }
    )
    return ProtocolResult("topk", summary, frame, scored)


# -- protocol C ---------------------------------------------------------------------------


def loo_candidates(
    train: pd.DataFrame, test: pd.DataFrame, ratings: pd.DataFrame, n_negatives: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Protocol C's lists: each test user (row order) and their candidates, the held-out
    item first, then `n_negatives` training-catalogue items they never rated."""
    users = test[USER].to_numpy(np.int64)
    negatives = sample_unrated(
        users,
        train[ITEM].to_numpy(),
        ratings[USER].to_numpy(),
        ratings[ITEM].to_numpy(),
        n_negatives,
        seed,
    )
    return users, np.concatenate([test[ITEM].to_numpy(np.int64)[:, None], negatives], axis=1)


def run_leave_one_out(
    factory: RecommenderFactory,
    ratings: pd.DataFrame,
    *,
    k: int = 10,
    n_negatives: int = 100,
    seed: int = 0,
) -> ProtocolResult:
    """Protocol C: the latest rating of each user against `n_negatives` sampled unrated items.

    Negatives come from the training catalogue and exclude everything the user rated
    (train or test). Ties with the held-out item count against it.
    """
    train, test = leave_latest_out(ratings)
    model, fit_s = _timed_fit(factory, train)
    users, candidates = loo_candidates(train, test, ratings, n_negatives, seed)
    scorer = ranking.catalogue_scorer(model)
    # Each user's own list: the user side once per row (NeuMF), in blocks of about 2M pairs.
    step = max(1, (1 << 21) // candidates.shape[1])
    scores = np.concatenate(
        [
            scorer.score_candidates(users[a:b], candidates[a:b])
            for a, b in ranking.blocks(users.size, step)
        ]
        or [np.empty((0, candidates.shape[1]))]
    ).astype(np.float64)
    ranks = metrics.rank_of_positive(scores)
    per_user = {f"hr@{k}": metrics.loo_hit_rate(ranks, k), f"ndcg@{k}": metrics.loo_ndcg(ranks, k)}
    tiers = user_tiers(_train_counts(train, users))
    summary: dict[str, Any] = {
        "protocol": f"C: leave latest out, ranked against {n_negatives} sampled unrated items",
        "seed": seed,
        "n_users": int(users.size),
        **{name: float(v.mean()) for name, v in per_user.items()},
        "fit_seconds": fit_s,
        "by_tier": by_tier(per_user, tiers),
    }
    frame = pd.DataFrame({USER: users, "tier": tiers, "rank": ranks, **per_user})
    scored = pd.DataFrame(
        {
            USER: np.repeat(users, candidates.shape[1]),
            ITEM: candidates.reshape(-1),
            "score": scores.reshape(-1),
            "is_held_out": np.tile(np.r_[True, np.zeros(n_negatives, bool)], users.size),
        }
    )
    return ProtocolResult("leave_one_out", summary, frame, scored)
