"""Training and ranking at scale: negative sampling, training pairs/s, full-catalogue ranking.

1. Negative sampling on synthetic ratings with ml-32m's proportions (users ~6.3 and movies
   ~2.7 per 1,000 ratings; popular movies rated more, Zipf-like): the known-pairs check's
   memory and build time, and `sample_negatives` samples/s through the bit filter + sorted
   keys (`KnownPairs`) against sorted keys searched alone (the previous fallback beyond the
   dense bitmap's 32M cells).
2. Training throughput: the default implicit config trained by `pl.Trainer` for
   `--batches` batches of an epoch on the same synthetic data; pairs/s counts scored pairs
   (a positive and its negatives); the epoch's time is extrapolated from it.
3. Protocol B's ranking on ml-latest-small (when present): one 1-epoch implicit model, its
   test users ranked against the catalogue through the per-pair path (the flattened
   user x item grid, as before) and through the factorised blocks; seconds, and whether the
   top-10 lists agree.

Usage: python benchmarks/train_scale.py [--sizes 1000000 5000000] [--batches N] [--data DIR]
Prints one JSON object and writes benchmarks/results/train_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from recolab.ml.datamodule import (
    InteractionDataModule,
    KnownPairs,
    known_pairs,
    pair_keys,
    sample_negatives,
)
from recolab.ml.evaluation import protocols as P
from recolab.ml.fitting import (
    NeuMFRecommender,
    build_model,
    build_system,
    encode,
    load_train_config,
    with_overrides,
)
from recolab.ml.hardware import build_trainer

ROOT = Path(__file__).resolve().parents[1]
USERS_PER_RATING, MOVIES_PER_RATING = 6.3e-3, 2.7e-3  # ml-32m: 200,948 / 87,585 per 32M


def synthetic(n_ratings: int, seed: int = 0) -> pd.DataFrame:
    """Ratings with ml-32m's shape: distinct (user, movie) pairs, popular movies favoured."""
    rng = np.random.default_rng(seed)
    n_users = int(n_ratings * USERS_PER_RATING)
    n_movies = int(n_ratings * MOVIES_PER_RATING)
    weights = 1.0 / np.arange(1, n_movies + 1) ** 0.8
    draw = int(n_ratings * 1.6)  # repeats of a pair are dropped
    users = rng.integers(0, n_users, draw)
    movies = rng.choice(n_movies, draw, p=weights / weights.sum())
    keys = np.unique(users * n_movies + movies)
    keys = keys[rng.permutation(keys.size)[:n_ratings]]
    return pd.DataFrame(
        {
            "user_id": keys // n_movies + 1,
            "movie_id": keys % n_movies + 1,
            "rating": 4.0,
            "timestamp": 0,
        }
    )


class _SortedOnly(KnownPairs):
    """The previous fallback: a binary search of every probe in the sorted keys."""

    def contains(self, keys: torch.Tensor) -> torch.Tensor:
        assert self.sorted is not None
        pos = torch.searchsorted(self.sorted, keys).clamp_(max=self.sorted.numel() - 1)
        return self.sorted[pos] == keys


def sampling(ratings: pd.DataFrame, negatives: int) -> dict[str, Any]:
    data, users, items = encode(ratings, "implicit")
    u, i = torch.from_numpy(data.users), torch.from_numpy(data.items)
    start = time.perf_counter()
    known = known_pairs(u, i, len(items))
    build_s = time.perf_counter() - start
    draws = u[: 1 << 17].repeat_interleave(negatives)  # one chunk of an epoch
    out: dict[str, Any] = {
        "n_ratings": len(ratings),
        "n_users": len(users),
        "n_movies": len(items),
        "grid_cells": len(users) * len(items),
        "path": "dense bitmap" if known.dense is not None else "bit filter + sorted keys",
        "known_pairs_mb": round(known.nbytes() / 2**20, 1),
        "known_pairs_build_s": round(build_s, 3),
    }
    checks = {"samples_per_s": known}
    if known.sorted is not None:
        plain = _SortedOnly(pair_keys(u, i, len(items)), 0)
        checks["samples_per_s_sorted_keys_only"] = plain
    for name, check in checks.items():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            sample_negatives(draws, len(items), check, torch.Generator().manual_seed(0))
            best = min(best, time.perf_counter() - t)
        out[name] = round(draws.numel() / best)
    return out


def training(ratings: pd.DataFrame, batches: int) -> dict[str, Any]:
    config = load_train_config(
        ROOT / "configs" / "model.yaml", ROOT / "configs" / "trainer.yaml", mode="implicit"
    )
    config = with_overrides(config, accelerator="cpu", enable_progress_bar=False)
    data, users, items = encode(ratings, "implicit")
    pl.seed_everything(config.seed, verbose=False)
    model = build_model(config, len(users), len(items), 0.0)
    system = build_system(config, model)
    module = InteractionDataModule(
        data,
        len(items),
        batch_size=config.batch_size,
        num_negatives=config.num_negatives,
        seed=config.seed,
        steps_per_execution=1,
    )
    trainer = build_trainer(
        config, [], max_epochs=1, limit_train_batches=batches, limit_val_batches=0
    )
    start = time.perf_counter()
    trainer.fit(system, datamodule=module)
    seconds = time.perf_counter() - start
    pairs = batches * config.batch_size * (1 + config.num_negatives)
    epoch_pairs = len(data) * (1 + config.num_negatives)
    return {
        "batches": batches,
        "batch_size": config.batch_size,
        "num_negatives": config.num_negatives,
        "seconds": round(seconds, 2),
        "pairs_per_s": round(pairs / seconds),
        "epoch_pairs": epoch_pairs,
        "epoch_seconds_estimate": round(epoch_pairs / (pairs / seconds), 1),
    }


def ranking(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / "ratings.csv"
    if not path.exists():
        return None
    ratings = pd.read_csv(path).rename(columns={"userId": "user_id", "movieId": "movie_id"})
    train, test = P.stratified_user_split(ratings, 0.25, seed=0)
    config = load_train_config(
        ROOT / "configs" / "model.yaml", ROOT / "configs" / "trainer.yaml", mode="implicit"
    )
    model = NeuMFRecommender(
        with_overrides(config, max_epochs=1, val_negatives=0, enable_progress_bar=False)
    ).fit(train)
    catalogue = np.unique(train["movie_id"].to_numpy(np.int64))
    users = np.unique(test["user_id"].to_numpy(np.int64))
    seen = train[train["user_id"].isin(users)]
    rows = pd.Series(np.arange(users.size), index=users)[seen["user_id"]].to_numpy()
    cols = np.searchsorted(catalogue, seen["movie_id"].to_numpy())

    class PairsOnly:  # the model seen through its per-pair `score` only: the previous path
        def score(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
            return model.score(u, i)

    timings: dict[str, float] = {}
    tops = {}
    for name, scorer in (("per_pair_grid", PairsOnly()), ("factorised_blocks", model)):
        start = time.perf_counter()
        tops[name] = P.top_k_items(scorer, users, catalogue, rows, cols, 10)[0]
        timings[name] = round(time.perf_counter() - start, 2)
    return {
        "dataset": "ml-latest-small",
        "users_ranked": int(users.size),
        "catalogue": int(catalogue.size),
        "seconds": timings,
        "speedup": round(timings["per_pair_grid"] / timings["factorised_blocks"], 1),
        "same_top10_lists": bool((tops["per_pair_grid"] == tops["factorised_blocks"]).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--batches", type=int, default=100)
    shared = Path(os.environ.get("RECOLAB_SHARED_DIR", ROOT.parent / "shared"))
    parser.add_argument("--data", type=Path, default=shared / "data/movielens/ml-latest-small")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict[str, Any] = {"sizes": []}
    for size in args.sizes:
        ratings = synthetic(size)
        row = {"sampling": sampling(ratings, negatives=24)}
        row["training"] = training(ratings, args.batches)
        result["sizes"].append(row)
        del ratings
    result["protocol_b_ranking"] = ranking(args.data)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = ROOT / "benchmarks" / "results" / "train_scale.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
