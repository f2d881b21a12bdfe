"""The serving view of a trained NeuMF: the domain's `Scorer` port on CPU.

Everything that does not depend on the user (item embeddings, the item half of the first
MLP layer, item biases) is computed once at load time, so ranking the whole catalogue for a
user is one vectorised pass. Users the model never saw are folded in: their own user vector
is fitted against the frozen item side from the movies they rated.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recolab.domain.model import RatedMovies, Rating
from recolab.domain.values import MIN_RATING, RATING_SPAN, MovieId, UserId, shared_movie_id
from recolab.ml.neumf import NeuMF, NeuMFConfig, rest_of_mlp

if TYPE_CHECKING:
    from recolab.ml.fitting import FitResult

# Explicit targets are (rating - 0.5) / 4.5 (see recolab.ml.system).
_RATING_MIN = MIN_RATING
_RATING_SPAN = RATING_SPAN


def to_relevance(raw: Tensor, mode: str) -> Tensor:
    """Raw model output to relevance in [0, 1]: sigmoid of the logit (implicit) or the
    normalised rating clipped to [0, 1] (explicit). Monotonic, so ranks are unchanged."""
    return torch.sigmoid(raw) if mode == "implicit" else raw.clamp(0.0, 1.0)


@dataclass(frozen=True)
class FoldInConfig:
    """How an unseen user's vector is fitted: a MAP estimate centred on the mean user."""

    # An earlier tuning on 60 ml-latest-small users (lr 0.2, prior 0.1) let a single draw of
    # negatives steer the user on small catalogues (tests/unit/ml/test_scorer.py fails for
    # some seeds); these settings keep the planted taste groups for every seed tried.
    steps: int = 25
    lr: float = 0.1
    negatives: int = 2  # sampled unrated items per rated one (implicit mode)
    prior_weight: float = 1.0  # pull towards the mean user, divided by the number of ratings
    seed: int = 0


@dataclass(frozen=True)
class _ItemSide:
    """Item-side terms of the network for all items, or for a gathered subset."""

    gmf: Tensor | None  # [n, gmf_dim], already scaled by the GMF half of the fusion layer
    first: Tensor | None  # [n, h1]: the item half of the first MLP layer
    bias: Tensor | None  # [n]

    def take(self, idx: Tensor) -> _ItemSide:
        return _ItemSide(
            *(None if t is None else t[idx] for t in (self.gmf, self.first, self.bias))
        )


class NeuMFScorer:
    """A fitted NeuMF behind the `Scorer` port, plus `similar()` for item-to-item lookups.

    A user is one flat vector [GMF embedding | MLP embedding | bias]; users the model saw
    are rows of a precomputed table, unseen users are fitted by `fold_in_top_k`. Safe for
    concurrent calls: nothing is mutated after construction. Build it with
    `from_fit_result` after training or `from_checkpoint` when serving (which needs only
    torch and `recolab.ml.neumf`, not Lightning).
    """

    def __init__(
        self,
        model: NeuMF,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        mode: str,
        movies: pd.DataFrame | None = None,
        *,
        version: str = "local",
        fold_in: FoldInConfig | None = None,
    ) -> None:
        self.version = version
        self.model = model.eval()
        self.movies = movies
        self.mode = mode
        self.fold_in_config = fold_in or FoldInConfig()
        self._user_ids = np.asarray(user_ids, dtype=np.int64)
        self._item_ids = np.asarray(item_ids, dtype=np.int64)
        if np.any(np.diff(self._user_ids) <= 0) or np.any(np.diff(self._item_ids) <= 0):
            raise ValueError("user and item ids must be sorted and unique (index order)")
        self._user_index = {int(u): i for i, u in enumerate(self._user_ids)}
        self._item_index = {int(m): i for i, m in enumerate(self._item_ids)}
        # One MovieId per item, shared with the catalogue and ratings (see shared_movie_id).
        self._movie_ids = [shared_movie_id(int(m)) for m in self._item_ids]
        self.n_items = len(self._item_ids)
        with torch.no_grad():  # plain tensors, not inference ones: fold-in differentiates
            self._extract(model)

    @classmethod
    def from_fit_result(
        cls,
        fit_result: FitResult,
        movies: pd.DataFrame | None = None,
        *,
        version: str = "local",
        fold_in: FoldInConfig | None = None,
    ) -> NeuMFScorer:
        """The scorer of a model just trained."""
        return cls(
            fit_result.model,
            fit_result.users.ids,
            fit_result.items.ids,
            fit_result.config.mode,
            movies,
            version=version,
            fold_in=fold_in,
        )

    @classmethod
    def from_checkpoint(
        cls,
        data: Mapping[str, Any],
        movies: pd.DataFrame | None = None,
        *,
        version: str = "local",
        fold_in: FoldInConfig | None = None,
    ) -> NeuMFScorer:
        """The scorer of a `FitResult.checkpoint()` dict, on CPU."""
        model = NeuMF(NeuMFConfig.from_dict(data["model_config"]))
        model.load_state_dict(data["state_dict"])
        return cls(
            model,
            np.asarray(data["user_ids"]),
            np.asarray(data["item_ids"]),
            str(data["train_config"]["mode"]),
            movies,
            version=version,
            fold_in=fold_in,
        )

    def _extract(self, model: NeuMF) -> None:
        terms = model.item_terms()
        fusion = model.fusion.weight.detach().squeeze(0).float()
        gmf_dim = model.config.gmf_dim if model.user_gmf is not None else 0
        self._w_mlp = fusion[gmf_dim:].clone()
        self._global = float(model.global_bias.detach())
        gmf = None if terms.gmf is None else _plain(terms.gmf) * fusion[:gmf_dim]
        first = _opt(terms.mlp_first)
        # Ranking sorts by `ranking_score` (item terms' bias may carry a popularity prior);
        # fold-in fits the trained output itself, so it uses the learnt item bias alone.
        self._items = _ItemSide(gmf, first, _opt(terms.bias))
        raw_bias = None if model.item_bias is None else _plain(model.item_bias.weight).squeeze(1)
        self._fit_items = _ItemSide(gmf, first, raw_bias)
        users = [
            _plain(m.weight)
            for m in (model.user_gmf, model.user_mlp, model.user_bias)
            if m is not None
        ]
        sizes = [u.shape[1] for u in users]
        self._users = torch.cat(users, dim=1).contiguous()
        # Where each part of a user vector lives (empty slices for disabled paths).
        cuts = np.cumsum([0, gmf_dim, model.config.mlp_dim if model.user_mlp is not None else 0])
        self._gmf = slice(int(cuts[0]), int(cuts[1]))
        self._mlp = slice(int(cuts[1]), int(cuts[2]))
        self._bias = slice(int(cuts[2]), int(sum(sizes)))
        self._first_user: Tensor | None = None
        self._first_bias: Tensor | None = None
        self._mlp_rest: nn.Sequential | None = None
        if model.mlp_first is not None and model.mlp_rest is not None:
            d = model.config.mlp_dim
            self._first_user = _plain(model.mlp_first.weight[:, :d])
            self._first_bias = _plain(model.mlp_first.bias)
            self._mlp_rest = copy.deepcopy(model.mlp_rest).float().eval().requires_grad_(False)
        self._prior = self._users.mean(dim=0)  # the mean user: fold-in start and fallback
        self._prior_scores = self._raw(self._prior, self._items, self.n_items)
        self._item_unit = _unit_rows(self._items)

    # -- the Scorer port ---------------------------------------------------------------

    def knows_user(self, user_id: UserId) -> bool:
        return int(user_id) in self._user_index

    def top_k(
        self, user_id: UserId, k: int, exclude: Collection[MovieId]
    ) -> list[tuple[MovieId, float]]:
        """The `k` best movies for a user seen in training, never one in `exclude`."""
        return self._pairs(*self._top_k(user_id, k, self._blocked(exclude)))

    def top_k_ids(
        self, user_id: UserId, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`top_k` on arrays: (movie ids, relevance), best first; `exclude` holds ids."""
        order, scores = self._top_k(user_id, k, _lookup(self._item_ids, exclude))
        return self._item_ids[order], scores

    def fold_in_top_k(
        self, rated: Sequence[Rating], k: int, exclude: Collection[MovieId]
    ) -> list[tuple[MovieId, float]]:
        """Top `k` for a user the model never saw, fitted from their ratings.

        Rated movies the model does not know are ignored; with none it knows, the mean
        user's ranking (popularity as the model learnt it) is returned. Rated movies are
        never returned. Deterministic for the same ratings.
        """
        latest = {int(r.movie_id): float(r.score) for r in rated}
        movie_ids = np.fromiter(latest, dtype=np.int64, count=len(latest))
        stars = np.fromiter(latest.values(), dtype=np.float64, count=len(latest))
        blocked = np.concatenate((self._blocked(exclude), _lookup(self._item_ids, movie_ids)))
        return self._pairs(*self._fold_in_top_k(movie_ids, stars, k, blocked))

    def fold_in_top_k_ids(
        self, rated: RatedMovies, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`fold_in_top_k` on arrays: (movie ids, relevance), best first."""
        movie_ids, stars = rated.movie_ids, rated.scores
        if len(np.unique(movie_ids)) != len(movie_ids):  # the reference keeps the last score
            latest = dict(zip(movie_ids.tolist(), stars.tolist(), strict=True))
            movie_ids = np.fromiter(latest, dtype=np.int64, count=len(latest))
            stars = np.fromiter(latest.values(), dtype=np.float64, count=len(latest))
        blocked = _lookup(self._item_ids, np.concatenate((exclude, movie_ids)))
        order, scores = self._fold_in_top_k(movie_ids, stars, k, blocked)
        return self._item_ids[order], scores

    def _top_k(self, user_id: UserId, k: int, blocked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self._user_index.get(int(user_id))
        if idx is None:
            raise KeyError(f"{user_id} is not known to model version {self.version}")
        with torch.inference_mode():
            raw = self._raw(self._users[idx], self._items, self.n_items)
            return self._rank_idx(raw, k, blocked)

    def _fold_in_top_k(
        self, movie_ids: np.ndarray, stars: np.ndarray, k: int, blocked: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        positions = _lookup(self._item_ids, movie_ids)
        known = positions >= 0
        if not known.any():
            with torch.inference_mode():
                return self._rank_idx(self._prior_scores, k, blocked)
        items = torch.from_numpy(positions[known].copy())
        user = self.fold_in(items, torch.from_numpy(stars[known]).float())
        with torch.inference_mode():
            return self._rank_idx(self._raw(user, self._items, self.n_items), k, blocked)

    def score_pairs(self, user_ids: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
        """Relevance in [0, 1] of (user, movie) pairs: `to_relevance` of the model's ranking
        score. A pair with an id unseen in training gets the bias terms that are known (as
        the evaluation harness does)."""
        u = torch.from_numpy(_lookup(self._user_ids, user_ids))
        i = torch.from_numpy(_lookup(self._item_ids, movie_ids))
        known = (u >= 0) & (i >= 0)
        with torch.inference_mode():
            raw = torch.full(u.shape, self._global)
            if self._bias.stop > self._bias.start:
                raw += torch.where(u >= 0, self._users[u.clamp(min=0), self._bias.start], 0.0)
            if self._fit_items.bias is not None:
                raw += torch.where(i >= 0, self._fit_items.bias[i.clamp(min=0)], 0.0)
            if bool(known.any()):
                raw[known] = self.model.ranking_score(u[known], i[known]).float()
            return to_relevance(raw.double(), self.mode).numpy()

    # -- item to item --------------------------------------------------------------------

    def similar(self, movie_id: MovieId, k: int) -> list[tuple[MovieId, float]]:
        """The `k` movies whose learnt representation is closest (cosine) to `movie_id`'s.

        The representation is the item as the network sees it: its GMF factor scaled by
        the fusion layer and its half of the first MLP layer, each of unit length.
        """
        idx = self._item_index.get(int(movie_id))
        if idx is None or k <= 0 or self.n_items < 2:
            return []
        with torch.inference_mode():
            sims = self._item_unit @ self._item_unit[idx]
            sims[idx] = float("-inf")
            values, order = torch.topk(sims, min(k, self.n_items - 1))
        return [
            (self._movie_ids[i], float(v))
            for i, v in zip(order.tolist(), values.tolist(), strict=True)
        ]

    # -- internals -----------------------------------------------------------------------

    def _raw(self, user: Tensor, items: _ItemSide, n: int) -> Tensor:
        """Raw model output (logit or normalised rating) of one user vector against items."""
        out = torch.full((n,), self._global)
        if items.gmf is not None:
            out = out + items.gmf @ user[self._gmf]
        if items.first is not None:
            assert self._first_user is not None and self._first_bias is not None
            assert self._mlp_rest is not None
            hidden = items.first + (self._first_user @ user[self._mlp] + self._first_bias)
            out = out + rest_of_mlp(self._mlp_rest, hidden) @ self._w_mlp
        if items.bias is not None:
            out = out + items.bias
        if self._bias.stop > self._bias.start:
            out = out + user[self._bias]
        return out

    def _blocked(self, exclude: Iterable[MovieId]) -> np.ndarray:
        """Item indices of the movie ids in `exclude` that the model knows."""
        index = self._item_index
        found = [i for m in exclude if (i := index.get(m.value)) is not None]
        return np.asarray(found, dtype=np.int64)

    def _rank_idx(self, raw: Tensor, k: int, blocked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, relevance) of the `k` best items, none in `blocked` (indices; -1
        entries are ignored)."""
        blocked = np.unique(blocked[blocked >= 0])
        n = min(k, self.n_items - len(blocked))
        if n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        if blocked.size:
            raw = raw.index_fill(0, torch.from_numpy(blocked), float("-inf"))
        values, order = torch.topk(raw, n)
        scores = to_relevance(values, self.mode)
        return order.numpy(), scores.double().numpy()

    def _pairs(self, order: np.ndarray, scores: np.ndarray) -> list[tuple[MovieId, float]]:
        return [
            (self._movie_ids[i], s) for i, s in zip(order.tolist(), scores.tolist(), strict=True)
        ]

    def fold_in(self, items: Tensor, stars: Tensor) -> Tensor:
        """A user vector fitted to ratings `stars` of item indices `items` (item side frozen).

        Adam from the mean user, with an L2 pull back to it (a Gaussian prior) that fades
        as ratings accumulate. Implicit mode: rated items against a seeded sample of unrated
        ones (BCE); explicit mode: the normalised ratings (MSE).
        """
        cfg = self.fold_in_config
        anchor = self._prior
        weight = cfg.prior_weight / items.numel()
        loss_fn = F.binary_cross_entropy_with_logits if self.mode == "implicit" else F.mse_loss
        # Callers may be in inference mode, whose tensors autograd refuses: clone out of it.
        with torch.inference_mode(False), torch.enable_grad():
            batch, targets = self._fold_in_batch(items.clone(), stars.clone())
            side = self._fit_items.take(batch)
            user = anchor.clone().requires_grad_(True)
            optimiser = torch.optim.Adam([user], lr=cfg.lr, fused=True)
            for _ in range(cfg.steps):
                optimiser.zero_grad(set_to_none=True)
                raw = self._raw(user, side, int(batch.numel()))
                loss = loss_fn(raw, targets) + weight * (user - anchor).pow(2).sum()
                torch.autograd.backward(loss)
                optimiser.step()
        return user.detach()

    def _fold_in_batch(self, items: Tensor, stars: Tensor) -> tuple[Tensor, Tensor]:
        if self.mode != "implicit":
            return items, (stars - _RATING_MIN) / _RATING_SPAN
        unrated = torch.ones(self.n_items, dtype=torch.bool)
        unrated[items] = False
        pool = torch.nonzero(unrated).squeeze(1)
        generator = torch.Generator().manual_seed(self.fold_in_config.seed)
        n_neg = min(self.fold_in_config.negatives * int(items.numel()), int(pool.numel()))
        negatives = pool[torch.randperm(pool.numel(), generator=generator)[:n_neg]]
        targets = torch.cat([torch.ones(items.numel()), torch.zeros(n_neg)])
        return torch.cat([items, negatives]), targets


def _lookup(sorted_ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Index of each raw id in `sorted_ids`, -1 when absent."""
    raw = np.asarray(raw, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.full(raw.shape, -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, raw).clip(max=sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == raw, pos, -1)


def _plain(tensor: Tensor) -> Tensor:
    return tensor.detach().float().contiguous().clone()


def _opt(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else _plain(tensor)


def _unit_rows(items: _ItemSide) -> Tensor:
    blocks = [F.normalize(t, dim=1) for t in (items.gmf, items.first) if t is not None]
    return F.normalize(torch.cat(blocks, dim=1), dim=1)
