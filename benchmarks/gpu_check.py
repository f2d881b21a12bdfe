"""A short GPU check: one training epoch of the demo dataset on CUDA in bf16-mixed.

Generates the demo dataset (default 1M ratings with ml-32m's proportions: 6,300 users,
2,700 movies), trains the default implicit NeuMF for one epoch on the GPU (batches built on
the device, `precision: bf16-mixed`) and, for the ratio, `--cpu-batches` batches of the same
epoch on the CPU, with one thread and with the threads a CPU fit would use (`trainer.num_threads`,
auto: every usable core at this size). Pairs/s counts scored pairs (a positive and its sampled
negatives). Writes benchmarks/results/gpu_check.json with the device's name.

Without a CUDA GPU it says so, writes nothing and exits 0.

Usage: python benchmarks/gpu_check.py [--ratings N] [--batch-size B] [--cpu-batches N]
(issue 16's figure: --ratings 32000000, one epoch of the 32M-rating demo)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from recolab.adapters.ingest.demo import generate_demo
from recolab.adapters.ingest.movielens import read_movielens
from recolab.ml.datamodule import InteractionDataModule
from recolab.ml.fitting import (
    TrainConfig,
    build_model,
    build_system,
    encode,
    fit_threads,
    load_train_config,
    with_overrides,
)
from recolab.ml.hardware import build_trainer

ROOT = Path(__file__).resolve().parents[1]


class _EpochClock(pl.Callback):
    """Seconds of the training epoch itself (setup and the device copy excluded)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0
        self.batches = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.started = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.started


def one_epoch(ratings: Any, config: TrainConfig, batches: int | float) -> dict[str, Any]:
    data, users, items = encode(ratings, "implicit")
    pl.seed_everything(config.seed, verbose=False)
    system = build_system(config, build_model(config, len(users), len(items), 0.0))
    module = InteractionDataModule(
        data, len(items), batch_size=config.batch_size, num_negatives=config.num_negatives
    )
    clock = _EpochClock()
    trainer = build_trainer(
        config, [clock], max_epochs=1, limit_train_batches=batches, limit_val_batches=0
    )
    trainer.fit(system, datamodule=module)
    rows = min(clock.batches * config.batch_size, len(data))
    pairs = rows * (1 + config.num_negatives)
    return {
        "precision": str(trainer.precision),
        "batches": clock.batches,
        "seconds": round(clock.seconds, 3),
        "pairs": pairs,
        "pairs_per_s": round(pairs / clock.seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: trainer.yaml's")
    parser.add_argument("--cpu-batches", type=int, default=30)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"gpu": None, "note": "no CUDA GPU on this machine: nothing run"}))
        return 0
    config = load_train_config(
        ROOT / "configs" / "model.yaml", ROOT / "configs" / "trainer.yaml", mode="implicit"
    )
    if args.batch_size:
        config = with_overrides(config, batch_size=args.batch_size)
    n_users, n_movies = int(args.ratings * 6.3e-3), int(args.ratings * 2.7e-3)
    with tempfile.TemporaryDirectory() as tmp:
        generate_demo(Path(tmp), n_users=n_users, n_movies=n_movies, n_ratings=args.ratings)
        ratings = read_movielens(Path(tmp)).ratings
    gpu = with_overrides(
        config, accelerator="cuda", devices=1, precision="bf16-mixed", enable_progress_bar=False
    )
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "dataset": {"demo_ratings": len(ratings), "users": n_users, "movies": n_movies},
        "gpu": one_epoch(ratings, gpu, 1.0),
    }
    cpu = with_overrides(config, accelerator="cpu", precision="32-true", enable_progress_bar=False)
    shipped = fit_threads(cpu, len(ratings)) or torch.get_num_threads()
    for name, threads in (("cpu_one_thread", 1), ("cpu_shipped_threads", shipped)):
        torch.set_num_threads(threads)
        result[name] = {**one_epoch(ratings, cpu, args.cpu_batches), "threads": threads}
        result[f"gpu_over_{name}"] = round(
            result["gpu"]["pairs_per_s"] / result[name]["pairs_per_s"], 1
        )
    result["versions"] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    text = json.dumps(result, indent=2)
    print(text)
    (ROOT / "benchmarks" / "results" / "gpu_check.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
