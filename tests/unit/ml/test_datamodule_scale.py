"""Negative sampling in bounded memory: the known-pairs filter beyond the dense bitmap and
epochs whose negatives are drawn a chunk at a time."""

import numpy as np
import pytest
import torch

from recolab.ml import datamodule as D
from recolab.ml.datamodule import IndexBatches, Interactions, KnownPairs, pair_keys


def test_known_pairs_beyond_the_dense_grid_are_exact_in_about_ten_bytes_a_pair() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 3_000, 20_000  # 60M cells: past the dense bitmap's 32M
    users = torch.from_numpy(rng.integers(0, n_users, 200_000))
    items = torch.from_numpy(rng.zipf(1.3, 200_000) % n_items)  # popular items repeat
    keys = pair_keys(users, items, n_items)
    known = KnownPairs(keys, n_users * n_items)
    assert known.dense is None and known.filter is not None
    assert known.nbytes() <= 11 * keys.unique().numel()
    probe = torch.cat([keys, torch.from_numpy(rng.integers(0, n_users * n_items, 500_000))])
    expected = torch.from_numpy(np.isin(probe.numpy(), keys.numpy()))
    assert torch.equal(known.contains(probe), expected)
    assert not KnownPairs(torch.empty(0, dtype=torch.int64), 10**9).contains(probe).any()


def test_implicit_epochs_drawn_in_chunks_cover_every_row_with_unrated_negatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(D, "_CHUNK_ROWS", 20)  # 3 chunks of 14 rows (2 batches of 7 each)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(8), 5)
    items = np.concatenate([rng.choice(15, 5, replace=False) for _ in range(8)])
    data = Interactions(users, items, np.ones(40, np.float32))
    batches = IndexBatches(data, batch_size=7, n_items=15, num_negatives=4, seed=2, device="cpu")
    epoch = list(batches)
    assert [len(b[0]) for b in epoch] == [7, 7, 7, 7, 7, 5] == [len(b[2]) for b in epoch]
    got_users = torch.cat([b[0] for b in epoch])
    got_items = torch.cat([b[1] for b in epoch])
    targets = torch.cat([b[2] for b in epoch])
    assert (targets[:, 0] == 1).all() and (targets[:, 1:] == 0).all()
    positives = set(pair_keys(torch.from_numpy(users), torch.from_numpy(items), 15).tolist())
    assert sorted(pair_keys(got_users, got_items[:, 0], 15).tolist()) == sorted(positives)
    negatives = pair_keys(got_users.repeat_interleave(4), got_items[:, 1:].reshape(-1), 15)
    assert not set(negatives.tolist()) & positives
    replay = IndexBatches(data, batch_size=7, n_items=15, num_negatives=4, seed=2)
    assert torch.equal(torch.cat([b[1] for b in replay]), got_items)
