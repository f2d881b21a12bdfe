"""Full-catalogue ranking in bounded memory, shared by evaluation (protocols B and C), the
training's validation and the promotion gate's re-scoring.

Users are ranked in blocks: a block's scores against the whole catalogue are one
[users, items] matrix (for NeuMF the item side is computed once per model, the GMF part is a
matrix product and the item half of the first MLP layer is precomputed: see
`NeuMF.item_terms`), the pairs a user must not be recommended are set to -inf, and
`rank_block` takes the top k with `torch.topk` and/or the rank of a held-out item. The block
size follows a memory budget (`rows_per_block`), so the peak does not grow with the number
of users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from recolab.ml.neumf import NeuMF

# Memory for one block of full-catalogue scores and the activations behind it.
DEFAULT_MEMORY_MB = 256
# Bytes per pair of a model that scores flattened (user, item) pairs (its temporaries are
# unknown): the default budget then scores 2M pairs per call, the block size used before.
GRID_PAIR_BYTES = 128


@runtime_checkable
class CatalogueScorer(Protocol):
    """A fitted model that scores whole blocks of users against a catalogue (raw ids)."""

    def score_catalogue(self, user_ids: np.ndarray, catalogue: np.ndarray) -> Tensor:
        """Scores [len(user_ids), len(catalogue)], higher is better."""
        ...

    def score_candidates(self, user_ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores [b, c] of each user against its own candidates [b, c]."""
        ...

    def pair_bytes(self) -> int:
        """Peak bytes held per scored pair (sizes the blocks)."""
        ...


def rows_per_block(n_items: int, pair_bytes: int, memory_mb: float) -> int:
    """Users per block so that a block's [users, n_items] pass fits in `memory_mb`."""
    if memory_mb <= 0:
        raise ValueError(f"the ranking memory budget must be positive, got {memory_mb} MB")
    return max(1, int(memory_mb * 2**20) // max(1, n_items * pair_bytes))


@dataclass(frozen=True)
class Exclusions:
    """Per user row, the catalogue positions never to rank (CSR: `indptr`, `columns`)."""

    indptr: np.ndarray
    columns: np.ndarray

    @classmethod
    def from_pairs(cls, rows: np.ndarray, columns: np.ndarray, n_rows: int) -> Exclusions:
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        counts = np.bincount(rows, minlength=n_rows)[:n_rows]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr, np.asarray(columns, dtype=np.int64)[order])

    def block(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """(row within the block, column) of the excluded pairs of rows start..stop-1."""
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        lengths = np.diff(self.indptr[start : stop + 1])
        rows = np.repeat(np.arange(stop - start, dtype=np.int64), lengths)
        return torch.from_numpy(rows), torch.from_numpy(self.columns[lo:hi])


@dataclass(frozen=True)
class BlockRanking:
    top: Tensor | None  # [b, k] catalogue positions, best first
    top_scores: Tensor | None  # [b, k]
    held_out_rank: Tensor | None  # [b] 0-based, ties counted against the held-out item


def rank_block(
    scores: Tensor,
    excluded: tuple[Tensor, Tensor] | None = None,
    *,
    k: int = 0,
    held_out: Tensor | None = None,
) -> BlockRanking:
    """Rank one block of full-catalogue scores [b, n] (modified in place).

    `excluded` (rows, columns) are set to -inf first. With `k` > 0: the top k per row by
    `torch.topk`, ties broken by catalogue position. With `held_out` ([b] positions): each
    one's 0-based rank among the row's scores, an equal score ranking above it (pessimistic).
    """
    if excluded is not None and excluded[0].numel():
        scores[excluded[0].to(scores.device), excluded[1].to(scores.device)] = -torch.inf
    top = top_scores = rank = None
    if k > 0:
        values, index = _top_k_lowest_ties(scores, min(k, scores.shape[1]))
        index, order = torch.sort(index, dim=1)  # by position, then (stably) by score
        values = values.gather(1, order)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices
        top, top_scores = index.gather(1, order), values.gather(1, order)
    if held_out is not None:
        target = scores.gather(1, held_out.view(-1, 1).to(scores.device))
        rank = (scores >= target).sum(dim=1) - 1
    return BlockRanking(top, top_scores, rank)


def _top_k_lowest_ties(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`torch.topk`, except that among items tied with the k-th score the lowest positions
    are taken (topk picks any): the lists do not depend on blocks, devices or threads.

    A row's tie goes on beyond the top k exactly when its (k+1)-th score equals its k-th, so
    one `topk` of k+1 finds those rows; only they are read again, and the lowest positions
    among their tied items are a second `topk`, of minus the position, over the tied ones.
    """
    n = scores.shape[1]
    values, index = torch.topk(scores, min(k + 1, n), dim=1)
    if values.shape[1] == k:  # the whole catalogue is the top k
        return values, index
    kth = values[:, k - 1]
    split = (values[:, k] == kth).nonzero().squeeze(1)
    values, index = values[:, :k].contiguous(), index[:, :k].contiguous()
    if split.numel():
        whole = split.numel() == scores.shape[0]
        sub = scores if whole else scores[split]
        cut = kth[split].unsqueeze(1)
        # topk sorts descending: each split row starts with its scores above the cut
        above = (values[split] > cut).sum(dim=1)
        minus_position = -torch.arange(n, device=scores.device, dtype=torch.float32)
        key = torch.where(sub == cut, minus_position, -torch.inf)
        lowest = torch.topk(key, k, dim=1).indices  # tied positions, lowest first
        rows, j = (torch.arange(k, device=scores.device) < (k - above).unsqueeze(1)).nonzero(
            as_tuple=True
        )
        chosen = index[split]
        chosen[rows, above[rows] + j] = lowest[rows, j]
        index[split] = chosen
        values[split] = sub.gather(1, chosen)
    return values, index


def top_k(
    score_block: Callable[[np.ndarray], Tensor],
    users: np.ndarray,
    n_items: int,
    exclusions: Exclusions,
    k: int,
    block_rows: int,
    on_block: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k catalogue positions and scores of every user, `block_rows` users at a time.

    `score_block(user_block)` returns its [b, n_items] scores; rows with fewer than k
    rankable items are padded with -inf scores (positions then arbitrary excluded ones).
    """
    k = min(k, n_items)
    top = np.empty((users.size, k), dtype=np.int64)
    top_scores = np.empty((users.size, k), dtype=np.float64)
    for start, stop in blocks(users.size, block_rows):
        scores = score_block(users[start:stop])
        ranked = rank_block(scores, exclusions.block(start, stop), k=k)
        assert ranked.top is not None and ranked.top_scores is not None
        top[start:stop] = ranked.top.cpu().numpy()
        top_scores[start:stop] = ranked.top_scores.double().cpu().numpy()
        if on_block is not None:
            on_block(stop - start)
    return top, top_scores


def blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


# -- NeuMF behind raw ids ----------------------------------------------------------------


class NeuMFCatalogue:
    """A fitted NeuMF scored by raw ids: full-catalogue blocks, candidate lists and pairs.

    The item side (`NeuMF.item_terms`) is computed once. Scores are `NeuMF.ranking_score`;
    a pair with a user or item unseen in training gets the bias terms that are known
    (global + user bias, or global + item bias), as the per-pair evaluation always did.
    """

    def __init__(self, model: NeuMF, user_ids: np.ndarray, item_ids: np.ndarray) -> None:
        self.model = model
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        with torch.no_grad():
            self.terms = model.item_terms()
            self._global = float(model.global_bias.detach())
            self._user_bias = _bias(model.user_bias)
            self._item_bias = _bias(model.item_bias)

    def pair_bytes(self) -> int:
        return self.model.pair_bytes()

    @torch.no_grad()
    def score_catalogue(self, user_ids: np.ndarray, catalogue: np.ndarray) -> Tensor:
        users = lookup(self.user_ids, user_ids)
        columns = lookup(self.item_ids, catalogue)
        same = columns.size == self.item_ids.size and bool(
            (columns == np.arange(columns.size)).all()
        )
        known = users >= 0
        out = torch.empty((users.size, columns.size))
        if known.any():
            # The block is scored in the model's dtype and at its size (already bounded).
            part = self.model.score_users(
                torch.from_numpy(users[known]), self.terms, max_rows=int(known.sum())
            ).float()
            if not same:
                part = _columns(part, columns, self._user_bias, users[known], self._global)
            out[torch.from_numpy(known)] = part
        if not known.all():  # unseen users: global + item bias of the items seen
            fallback = torch.full((columns.size,), self._global)
            if self._item_bias is not None:
                fallback += torch.where(
                    torch.from_numpy(columns >= 0),
                    self._item_bias[torch.from_numpy(columns.clip(min=0))],
                    0.0,
                )
            out[torch.from_numpy(~known)] = fallback
        return out

    @torch.no_grad()
    def score_candidates(self, user_ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores [b, c] of each user's own candidate list (user side once per row)."""
        users = lookup(self.user_ids, user_ids)
        items = lookup(self.item_ids, candidates)
        if (users >= 0).all() and (items >= 0).all():
            out = self.model.ranking_score(torch.from_numpy(users), torch.from_numpy(items))
            return out.double().numpy()
        flat = self.score_pairs(np.repeat(user_ids, candidates.shape[1]), candidates.reshape(-1))
        return flat.reshape(candidates.shape)

    @torch.no_grad()
    def score_pairs(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """`ranking_score` per (user, item) pair, float64."""
        u = torch.from_numpy(lookup(self.user_ids, user_ids))
        i = torch.from_numpy(lookup(self.item_ids, item_ids))
        known = (u >= 0) & (i >= 0)
        out = torch.full(u.shape, self._global)
        if self._user_bias is not None and self._item_bias is not None:
            out += torch.where(u >= 0, self._user_bias[u.clamp(min=0)], 0.0)
            out += torch.where(i >= 0, self._item_bias[i.clamp(min=0)], 0.0)
        if bool(known.any()):
            out[known] = self.model.ranking_score(u[known], i[known]).float()
        return out.numpy().astype(np.float64)


def lookup(sorted_ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Index of each raw id in `sorted_ids`, -1 when absent."""
    raw = np.asarray(raw, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.full(raw.shape, -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, raw).clip(max=sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == raw, pos, -1)


def _bias(table: Any) -> Tensor | None:
    return None if table is None else table.weight.detach().float().squeeze(-1)


def _columns(
    scores: Tensor, columns: np.ndarray, user_bias: Tensor | None, users: np.ndarray, glob: float
) -> Tensor:
    """The catalogue's columns of model-wide scores; items the model never saw get the
    global offset plus the user's bias."""
    known = torch.from_numpy(columns >= 0)
    picked = scores[:, torch.from_numpy(columns.clip(min=0))]
    fallback = torch.full((scores.shape[0], 1), glob)
    if user_bias is not None:
        fallback = fallback + user_bias[torch.from_numpy(users)].unsqueeze(1)
    return torch.where(known, picked, fallback)


# -- any recommender with a per-pair `score` ----------------------------------------------


class GridScorer:
    """A per-pair `score(user_ids, item_ids)` model scored block by block on a flattened grid."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def pair_bytes(self) -> int:
        return GRID_PAIR_BYTES

    def score_catalogue(self, user_ids: np.ndarray, catalogue: np.ndarray) -> Tensor:
        users = np.repeat(np.asarray(user_ids, dtype=np.int64), catalogue.size)
        items = np.tile(np.asarray(catalogue, dtype=np.int64), len(user_ids))
        scores = np.asarray(self.model.score(users, items), dtype=np.float64)
        return torch.from_numpy(scores.reshape(len(user_ids), catalogue.size))

    def score_candidates(self, user_ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        users = np.repeat(np.asarray(user_ids, dtype=np.int64), candidates.shape[1])
        scores = self.model.score(users, np.asarray(candidates).reshape(-1))
        return np.asarray(scores, dtype=np.float64).reshape(candidates.shape)


def catalogue_scorer(model: Any) -> CatalogueScorer:
    """How to rank with `model`: itself when it scores whole catalogues, its `catalogue()`
    when it has one (a fitted `NeuMFRecommender`), else a per-pair `GridScorer` of it."""
    if isinstance(model, CatalogueScorer):
        return model
    catalogue = getattr(model, "catalogue", None)
    if callable(catalogue):
        found = catalogue()
        if isinstance(found, CatalogueScorer):
            return found
    return GridScorer(model)
