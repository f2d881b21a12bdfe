"""Measure two trained models on the same rows: a candidate's own test split.

Promotion compares the candidate with the current champion, which may have been trained
under another protocol or on another feature snapshot. Both are wrapped in `ServedModel`,
which ranks as the service does (the `Scorer` port: a known user's ranking, an unseen user
folded in from their training ratings, movies the model never saw never served), and are
scored by the same code on the candidate's split.

The champion must not be judged on rows it was trained on (any model looks good on its own
training data): when its training rows are known (`training_rows`), the test rows among
them are left out of the comparison for both models. A champion refitted on all of its
snapshot (`FITTED_ON_ALL`) was trained on every row of it: only ratings that arrived since
can judge it. The candidate compared is the model its protocol figures measure (fitted on
the split's training rows), never its refit, which has seen the test rows too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recolab.domain.model import RatedMovies
from recolab.domain.values import MIN_RATING, RATING_SPAN, UserId
from recolab.ml.evaluation import metrics
from recolab.ml.evaluation.protocols import (
    catalogue_cells,
    loo_candidates,
    relevant_cells,
    top_k_items,
)
from recolab.ml.evaluation.splits import seeded_users, users_within
from recolab.ml.features import FeatureSnapshot
from recolab.ml.progress import Progress, Reporting
from recolab.ml.scorer import NeuMFScorer

USER, ITEM, RATING, TIME = "user_id", "movie_id", "rating", "timestamp"
CONTRACT = [USER, ITEM, RATING, TIME]
K = 10
N_NEGATIVES = 100  # protocol C (recolab.ml.experiment)
_NO_ITEMS = np.empty(0, dtype=np.int64)
# What a registered model was fitted on (its run's `model.fitted_on` tag).
FITTED_ON_SPLIT = "protocol_train_split"
FITTED_ON_ALL = "all_ratings"


class ServedModel:
    """A `NeuMFScorer` behind the evaluation API (fit / score / predict), ranking exactly as
    `recolab.application.recommend.Recommender` serves it.

    `fit` does not train: it keeps the ratings of the users the model never saw, so that they
    are folded in (`fold_in_top_k_ids`) like a user who rated after training. `score` is a
    rank score per pair (higher is better) from the user's whole ranking; a movie the model
    does not know, or one the fold-in excludes (already rated), scores -inf: the service
    never returns it. `predict` (explicit models only) is the relevance in stars.
    """

    def __init__(self, scorer: NeuMFScorer) -> None:
        self.scorer = scorer
        self._unseen: dict[int, RatedMovies] = {}
        self._items: np.ndarray | None = None

    def fit(self, ratings: pd.DataFrame) -> ServedModel:
        users = ratings[USER].to_numpy(np.int64)
        unseen = [u for u in np.unique(users).tolist() if not self.scorer.knows_user(UserId(u))]
        rows = ratings[np.isin(users, unseen)]
        self._unseen = {
            int(user): RatedMovies(
                group[ITEM].to_numpy(np.int64),
                group[RATING].to_numpy(np.float64),
                group[TIME].to_numpy(np.int64),
            )
            for user, group in rows.groupby(USER, sort=False)
        }
        return self

    @property
    def n_folded_in(self) -> int:
        return len(self._unseen)

    def _ranking(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(movie ids, relevance), best first, of everything the service could return."""
        rated = self._unseen.get(user)
        n = self.scorer.n_items
        if rated is not None:
            return self.scorer.fold_in_top_k_ids(rated, n, _NO_ITEMS)
        if self.scorer.knows_user(UserId(user)):
            return self.scorer.top_k_ids(UserId(user), n, _NO_ITEMS)
        # Not in the model, no ratings: the mean user's ranking (popularity as learnt).
        nothing = RatedMovies(_NO_ITEMS, np.empty(0), _NO_ITEMS)
        return self.scorer.fold_in_top_k_ids(nothing, n, _NO_ITEMS)

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        users = np.asarray(user_ids, dtype=np.int64)
        items = np.asarray(item_ids, dtype=np.int64)
        out = np.full(users.shape, -np.inf)
        per_user = np.ones(users.shape, dtype=bool)
        if self.scorer.mode == "implicit":
            # A known user's served ranking is by the model's ranking score, of which the
            # relevance (a sigmoid) is monotonic: one vectorised pass instead of a ranking
            # per user. (Explicit relevance is clipped to [0, 1], which would tie the ends.)
            distinct = np.unique(users)
            known = [u for u in distinct.tolist() if self._served_directly(u)]
            direct = np.isin(users, known) & np.isin(items, self._catalogue())
            out[direct] = self.scorer.score_pairs(users[direct], items[direct])
            per_user = ~np.isin(users, known)
        positions = np.flatnonzero(per_user)
        for user, subset in _rows_by_user(users[per_user]):
            rows = positions[subset]
            ranked, _ = self._ranking(user)
            order = np.argsort(ranked)
            found = _positions(ranked[order], items[rows])
            hit = found >= 0
            # the best movie scores n, the worst 1: ties only among the never-served (-inf)
            out[rows[hit]] = (ranked.size - order[found[hit]]).astype(np.float64)
        return out

    def _served_directly(self, user: int) -> bool:
        return user not in self._unseen and self.scorer.knows_user(UserId(user))

    def _catalogue(self) -> np.ndarray:
        """The movies the model knows (what its rankings can hold), sorted."""
        if self._items is None:
            nothing = RatedMovies(_NO_ITEMS, np.empty(0), _NO_ITEMS)
            ids, _ = self.scorer.fold_in_top_k_ids(nothing, self.scorer.n_items, _NO_ITEMS)
            self._items = np.sort(ids)
        return self._items

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        if self.scorer.mode != "explicit":
            raise ValueError("an implicit-feedback model does not predict ratings")
        users = np.asarray(user_ids, dtype=np.int64)
        items = np.asarray(item_ids, dtype=np.int64)
        # Known users, and unknown ids: the bias terms that are known (the scorer's fallback).
        relevance = self.scorer.score_pairs(users, items)
        for user, rows in _rows_by_user(users):
            if user not in self._unseen:
                continue
            ranked, values = self._ranking(user)
            order = np.argsort(ranked)
            found = _positions(ranked[order], items[rows])
            hit = found >= 0
            relevance[rows[hit]] = values[order[found[hit]]]
        return np.asarray(relevance * RATING_SPAN + MIN_RATING, dtype=np.float64)


@dataclass(frozen=True)
class SameData:
    """Two models' figure under one protocol on the same rows, and what those rows were."""

    metric: str
    candidate: float
    champion: float
    rows: dict[str, Any]


def protocol_split(snapshot: FeatureSnapshot, protocol: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) of `snapshot` as `recolab.ml.experiment.train` fits and evaluates the
    model it registers under `protocol`: A the last fold, B the per-user holdout, C each
    user's latest rating. The snapshot stores these assignments (`recolab.ml.features`)."""
    ratings = snapshot.ratings
    if protocol == "A":
        test = (ratings["fold"] == int(snapshot.manifest["splits"]["n_folds"]) - 1).to_numpy()
    elif protocol == "B":
        test = ratings["holdout_b"].to_numpy(bool)
    elif protocol == "C":
        test = ratings["loo_test"].to_numpy(bool)
    else:
        raise ValueError(f"unknown protocol {protocol!r}: expected A, B or C")
    frame = ratings[CONTRACT]
    return frame[~test], frame[test]


def training_rows(
    snapshot: FeatureSnapshot, protocol: str, fitted_on: str = FITTED_ON_SPLIT
) -> pd.DataFrame:
    """The (user_id, movie_id) pairs a model registered under `protocol` on `snapshot` was
    trained on: its protocol's training split, or every rating when it was refitted on all
    of them (`fitted_on` = `FITTED_ON_ALL`)."""
    if fitted_on == FITTED_ON_ALL:
        return snapshot.ratings[[USER, ITEM]]
    if fitted_on != FITTED_ON_SPLIT:
        raise ValueError(
            f"fitted_on = {fitted_on!r}: expected {FITTED_ON_SPLIT!r} or {FITTED_ON_ALL!r}"
        )
    return protocol_split(snapshot, protocol)[0][[USER, ITEM]]


def compare_on_split(
    candidate: NeuMFScorer,
    champion: NeuMFScorer,
    snapshot: FeatureSnapshot,
    protocol: str,
    *,
    champion_trained_on: pd.DataFrame | None = None,
    max_pairs: int | None = None,
) -> SameData:
    """Both models' primary figure (A: RMSE, B: nDCG@10, C: HR@10) on the candidate's
    `protocol` split of `snapshot`, leaving out the test rows in `champion_trained_on`
    (None: the champion's training rows are unknown, every test row counts).

    Under B, when the test users times the catalogue are more than `max_pairs` scores (the
    trainer's `eval_max_pairs`), both models rank the same seeded sample of
    `max_pairs // catalogue` users (`rows["users_sampled"]`), as the protocol's own
    evaluation does.

    A model that cannot be measured under the protocol (an implicit model under A, which
    predicts no ratings) gets NaN."""
    train, test = protocol_split(snapshot, protocol)
    n_test = len(test)
    if champion_trained_on is not None:
        test = test[~_pairs_in(test, champion_trained_on)]
    ratings = snapshot.ratings[CONTRACT]
    seed = int(snapshot.manifest["splits"]["split_seed"])
    sampled: dict[str, int] = {}
    if protocol == "B" and max_pairs is not None:
        test, sampled = _sample_users(test, int(train[ITEM].nunique()), max_pairs, seed)
    metric = {"A": "rmse", "B": f"ndcg@{K}", "C": f"hr@{K}"}[protocol]
    figures: list[float] = []
    folded: list[int] = []
    for name, scorer in (("candidate", candidate), ("champion", champion)):
        model = ServedModel(scorer).fit(train)
        folded.append(model.n_folded_in)
        work = (
            (len(test), "ratings predicted")
            if protocol == "A"
            else (
                int(test[USER].nunique()),
                "users ranked",
            )
        )
        counted = Reporting(model, Progress(f"same-data comparison, {name}", *work))
        try:
            figures.append(_measure(counted, protocol, train, test, ratings, seed))
        except ValueError:
            figures.append(math.nan)
    rows = {
        "snapshot": snapshot.id,
        "protocol": protocol,
        "test_rows": n_test,
        "test_rows_compared": len(test),
        "test_rows_champion_trained_on": (
            None if champion_trained_on is None else n_test - len(test)
        ),
        "users_compared": int(test[USER].nunique()),
        "users_folded_in_for_champion": folded[1],
    }
    if sampled:
        rows["users_sampled"] = sampled
    return SameData(metric, figures[0], figures[1], rows)


def _sample_users(
    test: pd.DataFrame, n_catalogue: int, max_pairs: int, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """`test`'s rows of a seeded sample of its users when all of them would be more than
    `max_pairs` scores against the catalogue; else `test` as it is."""
    users = np.unique(test[USER].to_numpy(np.int64))
    n = users_within(users.size, n_catalogue, max_pairs)
    if n is None:
        return test, {}
    chosen = seeded_users(users, n, seed)
    return test[test[USER].isin(chosen)], {"evaluated": n, "of": int(users.size)}


def _measure(
    model: Reporting,
    protocol: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    ratings: pd.DataFrame,
    seed: int,
) -> float:
    if test.empty:
        return math.nan
    if protocol == "A":
        predicted = model.predict(test[USER].to_numpy(), test[ITEM].to_numpy())
        return metrics.rmse(predicted, test[RATING].to_numpy())
    if protocol == "B":
        return _ndcg(model, train, test, ratings)
    users, candidates = loo_candidates(train, test, ratings, N_NEGATIVES, seed)
    scores = model.score(np.repeat(users, candidates.shape[1]), candidates.reshape(-1))
    ranks = metrics.rank_of_positive(scores.reshape(candidates.shape))
    return float(metrics.loo_hit_rate(ranks, K).mean())


def _ndcg(
    model: Reporting, train: pd.DataFrame, test: pd.DataFrame, ratings: pd.DataFrame
) -> float:
    """Protocol B's nDCG@10 (`run_topk`) on `test`: rank every training movie the user has
    not rated outside `test` (rows left out of the comparison are excluded like training)."""
    catalogue = np.unique(train[ITEM].to_numpy(np.int64))
    users = np.unique(test[USER].to_numpy(np.int64))
    row_of = pd.Series(np.arange(users.size), index=users)
    seen = ratings[ratings[USER].isin(users) & ~_pairs_in(ratings, test)]
    top, _ = top_k_items(model, users, catalogue, *catalogue_cells(seen, row_of, catalogue), K)
    rel_rows, rel_pos, n_relevant = relevant_cells(test, row_of, catalogue)
    hits = metrics.hits_matrix(top, rel_rows, rel_pos)
    return float(metrics.ndcg_at_k(hits, n_relevant).mean())


def _keys(frame: pd.DataFrame) -> np.ndarray:
    return (frame[USER].to_numpy(np.int64) << 32) | frame[ITEM].to_numpy(np.int64)


def _pairs_in(frame: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Which rows of `frame` have a (user_id, movie_id) pair in `pairs`."""
    return np.isin(_keys(frame), _keys(pairs))


def _rows_by_user(users: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(user, row positions) for each distinct user in `users`."""
    order = np.argsort(users, kind="stable")
    distinct, starts = np.unique(users[order], return_index=True)
    bounds = np.r_[starts, users.size]
    return [(int(u), order[bounds[j] : bounds[j + 1]]) for j, u in enumerate(distinct.tolist())]


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each id in `sorted_ids`, -1 when absent."""
    if sorted_ids.size == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    at = np.searchsorted(sorted_ids, ids).clip(max=sorted_ids.size - 1)
    return np.where(sorted_ids[at] == ids, at, -1)
