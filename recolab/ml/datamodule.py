"""Tensor batching for NeuMF: whole epochs are sliced from index tensors, never per sample.

A per-sample `Dataset` + `DataLoader` spends most of its time in Python for 100k+ ratings;
here an epoch is one permutation and a batch is one slice, and implicit negatives are
resampled for the whole epoch in a few vectorised calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor

TensorBatch = tuple[Tensor, Tensor, Tensor]
# Several consecutive batches handed to Lightning as one loop step (see `StepGroups`).
BatchGroup = tuple[TensorBatch, ...]

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
class HeldOut:
    """Held-out positives, one per row (a user may have several rows: recolab.ml.holdout).

    Each is ranked against the whole catalogue, or, when `candidates` is given ([n, 1 + c],
    column 0 the held-out item), against those sampled items only.
    """

    users: np.ndarray  # [n] user indices
    items: np.ndarray  # [n] the held-out item of each row
    candidates: np.ndarray | None = None


def pair_keys(users: Tensor, items: Tensor, n_items: int) -> Tensor:
    return users.to(torch.int64) * n_items + items.to(torch.int64)


# A user x item grid up to this many cells is kept as a dense bitmap of the rated pairs
# (one byte a cell, 32 MiB at most): a lookup is then one gather instead of a binary search
# (ml-latest-small: 0.6 s of a 30 s implicit fit went to the search).
_DENSE_PAIRS_MAX = 1 << 25
# Beyond it (ml-32m: 17.6 billion cells) the rated pairs are sorted keys behind a one-hash
# bit filter of this many bits per key (2 bytes a rating; ~6% false positives): most sampled
# pairs are unrated and are settled by the filter's one gather, the binary search runs only
# for the few the filter lets through.
_FILTER_BITS_PER_KEY = 16
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64 (Fibonacci hashing)


class KnownPairs:
    """Membership of (user, item) pair keys (see `pair_keys`): the rated pairs.

    Memory: one byte per grid cell up to 2**25 cells, else 10 bytes per rated pair.
    """

    def __init__(self, keys: Tensor, n_cells: int) -> None:
        """`keys` of the rated pairs; `n_cells` bounds them (users x items), 0 if unknown."""
        self.dense: Tensor | None = None
        self.sorted: Tensor | None = None
        self.filter: Tensor | None = None
        self._shift = 0
        if 0 < n_cells <= _DENSE_PAIRS_MAX:
            self.dense = torch.zeros(n_cells, dtype=torch.bool, device=keys.device)
            self.dense[keys] = True
            return
        self.sorted = torch.unique(keys)  # sorted
        log2 = max(16, int(self.sorted.numel() * _FILTER_BITS_PER_KEY - 1).bit_length())
        self._shift = 64 - log2
        bits = torch.unique(self._hash(self.sorted))
        packed = torch.zeros(1 << (log2 - 3), dtype=torch.int32, device=keys.device)
        # Distinct bits of one byte sum to their OR.
        packed.index_add_(0, bits >> 3, (1 << (bits & 7)).to(torch.int32))
        self.filter = packed.to(torch.uint8)

    def _hash(self, keys: Tensor) -> Tensor:
        # The top bits of key * golden ratio; `& mask` undoes the sign of the shift.
        return ((keys * _GOLDEN) >> self._shift) & ((1 << (64 - self._shift)) - 1)

    def contains(self, keys: Tensor) -> Tensor:
        if self.dense is not None:
            return self.dense[keys]
        assert self.sorted is not None and self.filter is not None
        out = torch.zeros_like(keys, dtype=torch.bool)
        if self.sorted.numel() == 0:
            return out
        bits = self._hash(keys)
        maybe = (self.filter[bits >> 3] >> (bits & 7).to(torch.uint8)) & 1
        where = maybe.nonzero().squeeze(1)
        probe = keys[where]
        pos = torch.searchsorted(self.sorted, probe).clamp_(max=self.sorted.numel() - 1)
        out[where] = self.sorted[pos] == probe
        return out

    def nbytes(self) -> int:
        held = (t for t in (self.dense, self.sorted, self.filter) if t is not None)
        return sum(t.numel() * t.element_size() for t in held)


def known_pairs(users: Tensor, items: Tensor, n_items: int) -> KnownPairs:
    """The rated (user, item) pairs of index tensors `users` and `items`."""
    n_users = int(users.max()) + 1 if users.numel() else 0
    return KnownPairs(pair_keys(users, items, n_items), n_users * n_items)


def sample_negatives(
    users: Tensor,
    n_items: int,
    known: KnownPairs,
    generator: torch.Generator,
) -> Tensor:
    """One uniformly drawn item per entry of `users`, redrawn where the pair is `known`."""
    items = torch.randint(0, n_items, users.shape, generator=generator, device=users.device)
    todo = torch.arange(users.numel(), device=users.device)
    for _ in range(_REJECTION_ROUNDS):
        clash = known.contains(pair_keys(users[todo], items[todo], n_items))
        todo = todo[clash]
        if todo.numel() == 0:
            break
        items[todo] = torch.randint(
            0, n_items, (todo.numel(),), generator=generator, device=users.device
        )
    return items


class IndexBatches:
    """An epoch-aware iterable of (users, items, targets) batches.

    Each `iter()` starts a new epoch with a fresh permutation seeded by (seed, epoch). With
    `num_negatives > 0` (implicit feedback) a row is a positive plus freshly sampled
    negatives: items and targets are [b, 1 + num_negatives], column 0 the positive.
    Negatives are drawn a chunk of rows at a time (about `_CHUNK_ROWS`), so an epoch's
    memory does not grow with the number of ratings times negatives. `batch_size` counts
    rows. Under DDP every rank takes an equal-length shard of the same permutation. With
    `device` (e.g. CUDA) the index tensors live there and batches are built there: nothing
    is copied per step.
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
        device: torch.device | str | None = None,
    ) -> None:
        self.device = torch.device(device or "cpu")
        self.users = torch.as_tensor(np.asarray(data.users, dtype=np.int64), device=self.device)
        self.items = torch.as_tensor(np.asarray(data.items, dtype=np.int64), device=self.device)
        targets = np.asarray(data.targets, dtype=np.float32)
        self.targets = torch.as_tensor(targets, device=self.device)
        self.batch_size = batch_size
        self.n_items = n_items
        self.shuffle = shuffle
        self.num_negatives = num_negatives
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._known = known_pairs(self.users, self.items, n_items) if num_negatives > 0 else None

    def _epoch_rows(self) -> int:
        return len(self.users) // self.world_size

    def __len__(self) -> int:
        return -(-self._epoch_rows() // self.batch_size)

    def _order(self, generator: torch.Generator) -> Tensor | None:
        """This rank's rows of the epoch, in order; None for every row as stored."""
        n, total = self._epoch_rows(), len(self.users)
        if self.shuffle:
            perm = torch.randperm(total, generator=generator, device=self.device)
            return perm[self.rank :: self.world_size][:n]
        if self.world_size > 1:
            return torch.arange(total, device=self.device)[self.rank :: self.world_size][:n]
        return None

    def __iter__(self) -> Iterator[TensorBatch]:
        generator = torch.Generator(device=self.device).manual_seed(
            self.seed * 1_000_003 + self.epoch
        )
        self.epoch += 1
        order, n, k = self._order(generator), self._epoch_rows(), self.num_negatives
        if k == 0:
            for start in range(0, n, self.batch_size):
                rows = _rows(order, start, start + self.batch_size)
                yield self.users[rows], self.items[rows], self.targets[rows]
            return
        assert self._known is not None
        targets = torch.zeros((self.batch_size, 1 + k), device=self.device)
        targets[:, 0] = 1.0
        chunk = max(1, _CHUNK_ROWS // self.batch_size) * self.batch_size
        for first in range(0, n, chunk):
            rows = _rows(order, first, min(first + chunk, n))
            users = self.users[rows]
            negatives = sample_negatives(
                users.repeat_interleave(k), self.n_items, self._known, generator
            )
            items = torch.cat([self.items[rows].unsqueeze(1), negatives.view(-1, k)], dim=1)
            for start in range(0, len(users), self.batch_size):
                stop = start + self.batch_size
                batch_items = items[start:stop]
                yield users[start:stop], batch_items, targets[: len(batch_items)]


# Rows of an implicit epoch whose negatives are drawn at once (~50 MB with 24 negatives).
_CHUNK_ROWS = 1 << 18


def _rows(order: Tensor | None, start: int, stop: int) -> Tensor | slice:
    return slice(start, stop) if order is None else order[start:stop]


class StepGroups:
    """`batches` handed on `steps` at a time: one Lightning loop iteration, `steps` optimiser steps.

    Lightning's loop costs about 0.25 ms per iteration on CPU (hook dispatch, the fetcher,
    batch transfer, progress tracking), an eighth of an explicit-mode NeuMF step; grouping
    spreads it over several steps, as Keras' `steps_per_execution` does. The batches, their
    order and the updates are unchanged (`NeuMFSystem.training_step` steps once per batch).
    """

    def __init__(self, batches: Iterable[TensorBatch], steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.batches = batches
        self.steps = steps

    def __len__(self) -> int:
        if not isinstance(self.batches, Sized):
            raise TypeError("the wrapped batches have no length")
        return -(-len(self.batches) // self.steps)

    def __iter__(self) -> Iterator[BatchGroup]:
        batches = iter(self.batches)
        while group := tuple(itertools.islice(batches, self.steps)):
            yield group


class HeldOutBatches:
    """Batches of (users [b], held-out items [b], exclusions [2, m]) for full-ranking validation.

    Exclusions are (row in batch, item) pairs, never ranked: the user's training items and
    the user's other held-out items (each row ranks its own item alone). With sampled
    candidates a batch is (users [b], candidates [b, 1 + c], empty) instead.
    """

    def __init__(
        self, held_out: HeldOut, train: Interactions, batch_size: int, *, pin_memory: bool = False
    ) -> None:
        self.users = torch.as_tensor(np.asarray(held_out.users, dtype=np.int64))
        self.items = torch.as_tensor(np.asarray(held_out.items, dtype=np.int64))
        self.candidates = (
            None
            if held_out.candidates is None
            else torch.as_tensor(np.asarray(held_out.candidates, dtype=np.int64))
        )
        self._held_items = np.asarray(held_out.items, dtype=np.int64)
        known_users = np.concatenate([train.users, held_out.users])
        order = np.argsort(known_users, kind="stable")
        known_items = np.concatenate([np.asarray(train.items, dtype=np.int64), self._held_items])
        self._train_items = known_items[order]
        counts = np.bincount(known_users, minlength=int(held_out.users.max(initial=0)) + 1)
        self._indptr = np.r_[0, np.cumsum(counts)]
        self.batch_size = batch_size
        self.pin_memory = pin_memory
        if pin_memory:
            self.users, self.items = self.users.pin_memory(), self.items.pin_memory()

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def _exclusions(self, users: np.ndarray, held: np.ndarray) -> Tensor:
        n_users = self._indptr.size - 1
        safe = np.minimum(users, n_users - 1)
        starts = np.where(users < n_users, self._indptr[safe], 0)
        lengths = np.where(users < n_users, self._indptr[safe + 1] - starts, 0)
        rows = np.repeat(np.arange(users.size), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        items = self._train_items[np.repeat(starts, lengths) + offsets]
        own = items == held[rows]  # the row's own held-out item is what it ranks
        out = torch.as_tensor(np.stack([rows[~own], items[~own]]))
        return out.pin_memory() if self.pin_memory else out

    def __iter__(self) -> Iterator[TensorBatch]:
        for start in range(0, len(self.users), self.batch_size):
            stop = start + self.batch_size
            users = self.users[start:stop]
            if self.candidates is not None:
                yield users, self.candidates[start:stop], torch.empty(0)
            else:
                held = self._held_items[start:stop]
                yield users, self.items[start:stop], self._exclusions(users.cpu().numpy(), held)


class InteractionDataModule(pl.LightningDataModule):
    """Train batches from `train` (explicit targets, or positives plus sampled negatives).

    Validation is either explicit pairs (`val`) or held-out positives ranked against the
    whole catalogue (`val_ranking`).
    """

    def __init__(
        self,
        train: Interactions,
        n_items: int,
        *,
        batch_size: int = 2048,
        num_negatives: int = 0,
        val: Interactions | None = None,
        val_ranking: HeldOut | None = None,
        eval_batch_size: int = 8192,
        seed: int = 0,
        steps_per_execution: int = 1,
        ranking_rows: int | None = None,
    ) -> None:
        """`ranking_rows`: users per full-catalogue validation block (see
        `recolab.ml.ranking.rows_per_block`); None keeps ~512k scored pairs per block."""
        super().__init__()
        self.train = train
        self.val = val
        self.val_ranking = val_ranking
        self.n_items = n_items
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_negatives = num_negatives
        self.seed = seed
        self.steps_per_execution = steps_per_execution
        self.ranking_rows = ranking_rows
        self._train_batches: IndexBatches | StepGroups | None = None

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _can_group(self) -> bool:
        """Grouped steps only on one device (DDP expects one backward per forward), and not
        when the run is counted in steps or batches (`max_steps`, `fast_dev_run`), which
        Lightning checks between loop iterations."""
        trainer = self.trainer
        if trainer is None:
            return True
        return (
            isinstance(trainer.strategy, SingleDeviceStrategy)
            and trainer.max_steps == -1
            and not getattr(trainer, "fast_dev_run", False)
        )

    def _batch_device(self) -> torch.device | None:
        """The accelerator's device when it is a GPU: batches are then built there."""
        trainer = self.trainer
        device = None if trainer is None else trainer.strategy.root_device
        return device if device is not None and device.type == "cuda" else None

    def train_dataloader(self) -> IndexBatches | StepGroups:
        # Built once so that the epoch counter (and so the negatives) advances across epochs.
        if self._train_batches is None:
            rank, world = self._rank_world()
            batches = IndexBatches(
                self.train,
                batch_size=self.batch_size,
                n_items=self.n_items,
                num_negatives=self.num_negatives,
                seed=self.seed,
                rank=rank,
                world_size=world,
                device=self._batch_device(),
            )
            steps = self.steps_per_execution if self._can_group() else 1
            self._train_batches = batches if steps == 1 else StepGroups(batches, steps)
        return self._train_batches

    def val_dataloader(self) -> IndexBatches | HeldOutBatches | list[TensorBatch]:
        if self.val_ranking is not None:
            # Each row scores the whole catalogue (or its candidates): bound the block size.
            width = (
                self.n_items
                if self.val_ranking.candidates is None
                else self.val_ranking.candidates.shape[1]
            )
            rows = max(1, self.eval_batch_size * 64 // max(width, 1))
            if self.val_ranking.candidates is None and self.ranking_rows is not None:
                rows = self.ranking_rows
            pin = self._batch_device() is not None  # host to GPU copies without a staging copy
            return HeldOutBatches(self.val_ranking, self.train, rows, pin_memory=pin)
        if self.val is not None:
            return IndexBatches(
                self.val, batch_size=self.eval_batch_size, n_items=self.n_items, shuffle=False
            )
        return []
