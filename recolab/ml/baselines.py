"""Non-neural baselines with the same fit/predict/score API as the NeuMF recommender.

Both also rank whole catalogues (`recolab.ml.ranking.CatalogueScorer`): a block of users'
scores is the item terms looked up once per catalogue, broadcast over the block (plus the
users' biases), not a lookup per (user, item) pair; the scores are those of `score`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from recolab.ml.datamodule import IdIndex

# Peak bytes per scored pair of a catalogue block: the float64 block and one temporary.
CATALOGUE_PAIR_BYTES = 16


def _gather(values: np.ndarray, index: np.ndarray, default: float = 0.0) -> np.ndarray:
    return np.where(index >= 0, values[index.clip(min=0)], default)


class PopularityRecommender:
    """Ranks items by how many users rated them; predicts a damped item mean rating."""

    def __init__(self, damping: float = 5.0) -> None:
        self.damping = damping
        self.items = IdIndex(np.empty(0))
        self.counts = np.empty(0)
        self.item_means = np.empty(0)
        self.global_mean = 0.0

    def fit(self, ratings: pd.DataFrame) -> PopularityRecommender:
        self.items = IdIndex(ratings["movie_id"].to_numpy())
        idx = self.items.lookup(ratings["movie_id"].to_numpy())
        r = ratings["rating"].to_numpy(dtype=np.float64)
        self.global_mean = float(r.mean())
        self.counts = np.bincount(idx, minlength=len(self.items)).astype(np.float64)
        sums = np.bincount(idx, weights=r, minlength=len(self.items))
        self.item_means = (sums + self.damping * self.global_mean) / (self.counts + self.damping)
        return self

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return _gather(self.item_means, self.items.lookup(item_ids), self.global_mean)

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return _gather(self.counts, self.items.lookup(item_ids), 0.0)

    def score_catalogue(self, user_ids: np.ndarray, catalogue: np.ndarray) -> Tensor:
        row = torch.from_numpy(self.score(np.empty(0), catalogue))
        return row.expand(len(user_ids), row.numel()).clone()  # ranking writes into it

    def score_candidates(self, user_ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        candidates = np.asarray(candidates)
        return self.score(np.empty(0), candidates.reshape(-1)).reshape(candidates.shape)

    def pair_bytes(self) -> int:
        return CATALOGUE_PAIR_BYTES


class BiasOnlyRecommender:
    """r(u, i) = mu + b_u + b_i, fitted by regularised alternating least squares.

    The same estimator as Surprise's BaselineOnly (ALS, reg_i=10, reg_u=15, 10 epochs).
    """

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, n_epochs: int = 10) -> None:
        self.reg_user = reg_user
        self.reg_item = reg_item
        self.n_epochs = n_epochs
        self.users = IdIndex(np.empty(0))
        self.items = IdIndex(np.empty(0))
        self.user_bias = np.empty(0)
        self.item_bias = np.empty(0)
        self.global_mean = 0.0

    def fit(self, ratings: pd.DataFrame) -> BiasOnlyRecommender:
        self.users = IdIndex(ratings["user_id"].to_numpy())
        self.items = IdIndex(ratings["movie_id"].to_numpy())
        u = self.users.lookup(ratings["user_id"].to_numpy())
        i = self.items.lookup(ratings["movie_id"].to_numpy())
        r = ratings["rating"].to_numpy(dtype=np.float64)
        self.global_mean = float(r.mean())
        n_u = np.bincount(u, minlength=len(self.users))
        n_i = np.bincount(i, minlength=len(self.items))
        bu = np.zeros(len(self.users))
        bi = np.zeros(len(self.items))
        for _ in range(self.n_epochs):
            resid_i = r - self.global_mean - bu[u]
            bi = np.bincount(i, weights=resid_i, minlength=len(self.items)) / (self.reg_item + n_i)
            resid_u = r - self.global_mean - bi[i]
            bu = np.bincount(u, weights=resid_u, minlength=len(self.users)) / (self.reg_user + n_u)
        self.user_bias, self.item_bias = bu, bi
        return self

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        bu = _gather(self.user_bias, self.users.lookup(user_ids))
        bi = _gather(self.item_bias, self.items.lookup(item_ids))
        return np.clip(self.global_mean + bu + bi, 0.5, 5.0)

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return self.predict(user_ids, item_ids)

    def score_catalogue(self, user_ids: np.ndarray, catalogue: np.ndarray) -> Tensor:
        bu = _gather(self.user_bias, self.users.lookup(np.asarray(user_ids)))
        bi = _gather(self.item_bias, self.items.lookup(np.asarray(catalogue)))
        # the same sum, in the same order, as `predict`: mu + b_u, then + b_i
        block = torch.from_numpy(self.global_mean + bu).unsqueeze(1) + torch.from_numpy(bi)
        return block.clamp_(0.5, 5.0)

    def score_candidates(self, user_ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        candidates = np.asarray(candidates)
        users = np.repeat(np.asarray(user_ids), candidates.shape[1])
        return self.predict(users, candidates.reshape(-1)).reshape(candidates.shape)

    def pair_bytes(self) -> int:
        return CATALOGUE_PAIR_BYTES
