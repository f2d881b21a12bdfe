"""Tensor batching for NeuMF: whole epochs are sliced from index tensors, never per sample.

A per-sample `Dataset` + `DataLoader` spends most of its time in Python for 100k+ ratings;
here an epoch is one permutation and a batch is one slice, and implicit negatives are
resampled for the whole epoch in a few vectorised calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor, Tensor]

# A sampled negative that hits a rated item is redrawn; after this many rounds the few
# remaining collisions are kept (they are vanishingly rare on sparse data).
_REJECTION_ROUNDS = 8


class IdIndex:
    """Maps raw ids to contiguous indices; unknown ids map to -1."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.unique(np.asarray(ids, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.ids.size)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        raw = np.asarray(ids, dtype=np.int64)
        if self.ids.size == 0:
            return np.full(raw.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.ids, raw).clip(max=self.ids.size - 1)
        return np.where(self.ids[pos] == raw, pos, -1)


@dataclass(frozen=True)
class Interactions:
    """Contiguous indices (0..n-1) of users and items, with a target per pair."""

    users: np.ndarray
    items: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass(frozen=True)
class RankingCandidates:
    """For each user, column 0 is a held-out positive and the other columns sampled negatives."""

    users: np.ndarray  # [n]
    items: np.ndarray  # [n, 1 + n_negatives]


def pair_keys(users: Tensor, items: Tensor, n_items: int) -> Tensor:
    return users.to(torch.int64) * n_items + items.to(torch.int64)


def sample_negatives(
    users: Tensor,
    n_items: int,
    known_keys: Tensor,
    generator: torch.Generator,
) -> Tensor:
    """One uniformly drawn item per entry of `users`, redrawn where the pair is in `known_keys`.

    `known_keys` must be sorted (see `pair_keys`).
    """
    items = torch.randint(0, n_items, users.shape, generator=generator)
    todo = torch.arange(users.numel())
    for _ in range(_REJECTION_ROUNDS):
        keys = pair_keys(users[todo], items[todo], n_items)
        pos = torch.searchsorted(known_keys, keys).clamp_(max=max(known_keys.numel() - 1, 0))
        clash = (
            known_keys[pos] == keys
            if known_keys.numel()
            else torch.zeros_like(keys, dtype=torch.bool)
        )
        todo = todo[clash]
        if todo.numel() == 0:
            break
        items[todo] = torch.randint(0, n_items, (todo.numel(),), generator=generator)
    return items


class IndexBatches:
    """An epoch-aware iterable of (users, items, targets) batches.

    Each `iter()` starts a new epoch with a fresh permutation seeded by (seed, epoch). With
    `num_negatives > 0` (implicit feedback) a row is a positive plus freshly sampled
    negatives: items and targets are [b, 1 + num_negatives], column 0 the positive.
    `batch_size` counts rows. Under DDP every rank takes an equal-length shard of the
    same permutation.
    """

    def __init__(
        self,
        data: Interactions,
        *,
        batch_size: int,
        n_items: int,
        shuffle: bool = True,
        num_negatives: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.users = torch.tensor(np.asarray(data.users), dtype=torch.int64)
        self.items = torch.tensor(np.asarray(data.items), dtype=torch.int64)
        self.targets = torch.tensor(np.asarray(data.targets), dtype=torch.float32)
        self.batch_size = batch_size
        self.n_items = n_items
        self.shuffle = shuffle
        self.num_negatives = num_negatives
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._known = (
            torch.sort(pair_keys(self.users, self.items, n_items)).values
            if num_negatives > 0
            else torch.empty(0, dtype=torch.int64)
        )

    def _epoch_rows(self) -> int:
        return len(self.users) // self.world_size

    def __len__(self) -> int:
        return -(-self._epoch_rows() // self.batch_size)

    def _epoch_tensors(self, generator: torch.Generator) -> Batch:
        if self.num_negatives == 0:
            return self.users, self.items, self.targets
        k = self.num_negatives
        negatives = sample_negatives(
            self.users.repeat_interleave(k), self.n_items, self._known, generator
        )
        items = torch.cat([self.items.unsqueeze(1), negatives.view(-1, k)], dim=1)
        targets = torch.zeros(items.shape)
        targets[:, 0] = 1.0
        return self.users, items, targets

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        users, items, targets = self._epoch_tensors(generator)
        n = self._epoch_rows()
        if self.shuffle:
            order = torch.randperm(len(users), generator=generator)[self.rank :: self.world_size][
                :n
            ]
            users, items, targets = users[order], items[order], targets[order]
        elif self.world_size > 1:
            users, items, targets = (
                t[self.rank :: self.world_size][:n] for t in (users, items, targets)
            )
        for start in range(0, n, self.batch_size):
            stop = start + self.batch_size
            yield users[start:stop], items[start:stop], targets[start:stop]


class CandidateBatches:
    """Batches of (users, candidate items [b, c], unused) for sampled ranking validation."""

    def __init__(self, candidates: RankingCandidates, batch_size: int) -> None:
        self.users = torch.as_tensor(candidates.users, dtype=torch.int64)
        self.items = torch.as_tensor(candidates.items, dtype=torch.int64)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.users), self.batch_size):
            stop = start + self.batch_size
            users = self.users[start:stop]
            yield users, self.items[start:stop], torch.empty(0)


class InteractionDataModule(pl.LightningDataModule):
    """Train batches from `train` (explicit targets, or positives plus sampled negatives).

    Validation is either explicit pairs (`val`) or sampled ranking candidates (`val_ranking`).
    """

    def __init__(
        self,
        train: Interactions,
        n_items: int,
        *,
        batch_size: int = 2048,
        num_negatives: int = 0,
        val: Interactions | None = None,
        val_ranking: RankingCandidates | None = None,
        eval_batch_size: int = 8192,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train = train
        self.val = val
        self.val_ranking = val_ranking
        self.n_items = n_items
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_negatives = num_negatives
        self.seed = seed
        self._train_batches: IndexBatches | None = None

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> IndexBatches:
        # Built once so that the epoch counter (and so the negatives) advances across epochs.
        if self._train_batches is None:
            rank, world = self._rank_world()
            self._train_batches = IndexBatches(
                self.train,
                batch_size=self.batch_size,
                n_items=self.n_items,
                num_negatives=self.num_negatives,
                seed=self.seed,
                rank=rank,
                world_size=world,
            )
        return self._train_batches

    def val_dataloader(self) -> IndexBatches | CandidateBatches | list[Batch]:
        if self.val_ranking is not None:
            return CandidateBatches(self.val_ranking, max(1, self.eval_batch_size // 128))
        if self.val is not None:
            return IndexBatches(
                self.val, batch_size=self.eval_batch_size, n_items=self.n_items, shuffle=False
            )
        return []
