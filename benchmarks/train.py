"""Training speed: the Lightning loop against a plain PyTorch loop, and one full default fit.

For each mode of the default config: the same NeuMF, optimiser, loss and index batches are
run by a hand-written loop and by `pl.Trainer` (no validation), alternating round by round so
that noise from other processes hits both; samples/s counts scored pairs, over the epochs
after the first (warm-up, and Lightning draws epoch 0's batches before its epoch starts).
The plain loop is also run with one torch thread and with one per core, side by side: the
thread count, not the model, is what made training slow on shared machines. Then one full
default training (`recolab.adapters.ml.training.fit`, early stopping included) runs in a
fresh subprocess for its wall time and peak RSS. Load averages are recorded throughout.

Usage: python benchmarks/train.py [--data DIR] [--epochs N] [--rounds N] [--note TEXT]
Prints one JSON object and writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from recolab.adapters.ml.datamodule import IndexBatches
from recolab.adapters.ml.system import NeuMFSystem
from recolab.adapters.ml.training import (
    MODES,
    TrainConfig,
    build_model,
    build_system,
    build_trainer,
    encode,
    fit,
    load_train_config,
)
from recolab.adapters.movielens import read_movielens

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("/work/shared/data/movielens/ml-latest-small")


def default_config(mode: str) -> TrainConfig:
    return load_train_config(
        ROOT / "configs" / "model.yaml",
        ROOT / "configs" / "trainer.yaml",
        mode=mode,  # type: ignore[arg-type]
    )


def _system(config: TrainConfig, ratings: pd.DataFrame) -> tuple[NeuMFSystem, IndexBatches]:
    data, users, items = encode(ratings, config.mode)
    pl.seed_everything(config.seed, verbose=False)
    model = build_model(config, len(users), len(items), float(data.targets.mean()))
    system = build_system(config, model)
    batches = IndexBatches(
        data,
        batch_size=config.batch_size,
        n_items=len(items),
        num_negatives=config.num_negatives if config.mode == "implicit" else 0,
        seed=config.seed,
    )
    return system, batches


def _pairs_per_epoch(batches: IndexBatches) -> int:
    return len(batches.users) * (1 + batches.num_negatives)


def _rate(batches: IndexBatches, epoch_seconds: list[float]) -> float:
    """Scored pairs per second over the epochs after the first."""
    timed = epoch_seconds[1:] or epoch_seconds
    return _pairs_per_epoch(batches) * len(timed) / sum(timed)


def _clocks() -> tuple[float, float]:
    """(wall, CPU of this process): CPU time leaves out the waits for a core that the other
    jobs on a shared machine cause, so it is the steadier basis for a ratio."""
    return time.perf_counter(), time.process_time()


Rates = tuple[float, float]  # pairs/s by wall time, by process CPU time


def plain_loop(config: TrainConfig, ratings: pd.DataFrame, epochs: int) -> Rates:
    """Samples/s of a hand-written loop over the same system, optimiser and batches."""
    system, batches = _system(config, ratings)
    configured = system.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
    system.train()
    seconds: list[float] = []
    cpu: list[float] = []
    for _ in range(epochs):
        wall0, cpu0 = _clocks()
        for batch in batches:
            loss = system.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        wall1, cpu1 = _clocks()
        seconds.append(wall1 - wall0)
        cpu.append(cpu1 - cpu0)
    return _rate(batches, seconds), _rate(batches, cpu)


class _EpochClock(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = _clocks()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        wall, cpu = _clocks()
        self.seconds.append(wall - self._start[0])
        self.cpu.append(cpu - self._start[1])


def lightning_loop(config: TrainConfig, ratings: pd.DataFrame, epochs: int) -> Rates:
    """Samples/s of `pl.Trainer.fit` over the same system and batches (no validation)."""
    system, batches = _system(config, ratings)
    clock = _EpochClock()
    trainer = build_trainer(
        config,
        [clock],
        max_epochs=epochs,
        min_epochs=epochs,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
        strategy="auto",
    )
    trainer.fit(system, train_dataloaders=batches)  # the same iterable as the plain loop
    return _rate(batches, clock.seconds), _rate(batches, clock.cpu)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def child(mode: str, data: Path) -> None:
    """One full default training (threads as the config says); prints wall, epochs, peak RSS."""
    ratings = read_movielens(data).ratings
    config = default_config(mode)
    start, cpu_start = _clocks()
    result = fit(ratings, config)
    end, cpu_end = _clocks()
    wall = end - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "wall_seconds": wall,
                "cpu_seconds": cpu_end - cpu_start,
                "epochs_run": len(result.history),
                "best_epoch": result.best_epoch,
                "best_" + config.monitor[0]: result.best_score,
                "peak_rss_mib": peak_kib / 1024,
                "torch_threads_in_fit": config.num_threads,
                "load_average_1min_after": _load(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3, help="per loop run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the loop runs")
    parser.add_argument("--note", default="", help="free text recorded in the JSON")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    torch.set_num_threads(args.threads)
    ratings = read_movielens(args.data).ratings
    report: dict[str, Any] = {
        "benchmark": "train",
        "dataset": {"name": args.data.name, "ratings": len(ratings)},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "load_average_at_start": os.getloadavg(),
            "note": "shared machine: other jobs ran at the same time (see the load averages)",
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "modes": {},
    }
    if args.note:
        report["note"] = args.note
    cores = os.cpu_count() or 1
    for mode in args.modes:
        config = default_config(mode)
        rounds: list[dict[str, float]] = []
        for _ in range(args.rounds):  # alternate so that background load hits both sides
            plain, plain_cpu = plain_loop(config, ratings, args.epochs)
            lightning, lightning_cpu = lightning_loop(config, ratings, args.epochs)
            rounds.append(
                {
                    "plain_pytorch": plain,
                    "lightning": lightning,
                    "ratio": lightning / plain,
                    "plain_pytorch_cpu": plain_cpu,
                    "lightning_cpu": lightning_cpu,
                    "ratio_cpu": lightning_cpu / plain_cpu,
                    "load_1min": _load(),
                }
            )
        threads: list[dict[str, float]] = []
        if mode == "explicit" and cores > 1:  # cheap enough to show the thread effect
            for _ in range(2):
                one = plain_loop(config, ratings, 2)[0]
                torch.set_num_threads(cores)
                many = plain_loop(config, ratings, 2)[0]
                torch.set_num_threads(args.threads)
                threads.append({"threads_1": one, f"threads_{cores}": many, "load_1min": _load()})
        proc = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--data", str(args.data)],
            capture_output=True,
            text=True,
            check=True,
        )
        full = json.loads(proc.stdout.strip().splitlines()[-1])
        best_plain = max(r["plain_pytorch"] for r in rounds)
        best_lightning = max(r["lightning"] for r in rounds)
        best_plain_cpu = max(r["plain_pytorch_cpu"] for r in rounds)
        best_lightning_cpu = max(r["lightning_cpu"] for r in rounds)
        ratio_cpu = best_lightning_cpu / best_plain_cpu
        report["modes"][mode] = {
            "config": config.to_dict(),
            "samples_per_second": {
                "plain_pytorch_best": best_plain,
                "lightning_best": best_lightning,
                "ratio_of_bests": best_lightning / best_plain,
                "ratio_median_of_rounds": float(np.median([r["ratio"] for r in rounds])),
                "plain_pytorch_best_cpu": best_plain_cpu,
                "lightning_best_cpu": best_lightning_cpu,
                "ratio_of_bests_cpu": ratio_cpu,
                "ratio_median_of_rounds_cpu": float(np.median([r["ratio_cpu"] for r in rounds])),
                "rounds": rounds,
                "note": (
                    "scored pairs/s after a warm-up epoch, by wall time and by process CPU "
                    "time (steadier under load); rounds alternate plain, lightning"
                ),
            },
            "plain_loop_by_torch_threads": threads,
            "full_default_training": full,
            "goals": {
                "ratio_lightning_over_plain_>=_0.9": best_lightning / best_plain >= 0.9,
                "ratio_lightning_over_plain_cpu_>=_0.9": ratio_cpu >= 0.9,
                "full_training_<=_30_s": full["wall_seconds"] <= 30.0,
            },
        }
    report["load_average_at_end"] = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
