"""Training speed: the Lightning loop against a plain PyTorch loop, and one full default fit.

For each mode of the default config: the same NeuMF, optimiser, loss and index batches are
run by a hand-written loop and by `pl.Trainer` (no validation), paired epoch by epoch: right
before each Lightning epoch, in the same process, the plain loop runs one epoch of its own
copy. This machine's speed drifts by 20% within minutes, so only epochs run seconds apart are
compared; the ratio is the median over the paired epochs after the first (warm-up) of
plain time / Lightning time. Samples/s counts scored pairs.
The plain loop is also run with one torch thread and with one per core, side by side: the
thread count, not the model, is what made training slow on shared machines. Then one full
default training (`recolab.ml.fitting.fit`, early stopping included) runs in a
fresh subprocess for its wall time and peak RSS. Load averages are recorded throughout.

Usage: python benchmarks/train.py [--data DIR] [--epochs N] [--explicit-epochs N] [--rounds N]
    [--note TEXT]
--data defaults to ml-latest-small in the shared folder (RECOLAB_SHARED_DIR, by default
../shared beside the repository).
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

from recolab.adapters.ingest.movielens import read_movielens
from recolab.config import Settings
from recolab.ml.datamodule import IndexBatches, StepGroups
from recolab.ml.fitting import (
    MODES,
    TrainConfig,
    build_model,
    build_system,
    encode,
    fit,
    load_train_config,
)
from recolab.ml.hardware import build_trainer
from recolab.ml.system import NeuMFSystem

ROOT = Path(__file__).resolve().parents[1]


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


class _PlainEpochs:
    """A hand-written loop over its own system, optimiser and batches, one epoch per call."""

    def __init__(self, config: TrainConfig, ratings: pd.DataFrame) -> None:
        self.system, self.batches = _system(config, ratings)
        configured = self.system.configure_optimizers()
        self.optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        self.scheduler = (
            configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
        )
        self.system.train()

    def epoch(self) -> tuple[float, float]:
        """(wall, CPU) seconds of one epoch."""
        wall0, cpu0 = _clocks()
        for batch in self.batches:
            loss = self.system.loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        wall1, cpu1 = _clocks()
        return wall1 - wall0, cpu1 - cpu0


def plain_loop(config: TrainConfig, ratings: pd.DataFrame, epochs: int) -> Rates:
    """Samples/s of the hand-written loop alone."""
    plain = _PlainEpochs(config, ratings)
    seconds, cpu = zip(*(plain.epoch() for _ in range(epochs)), strict=True)
    return _rate(plain.batches, list(seconds)), _rate(plain.batches, list(cpu))


class _PairedClock(pl.Callback):
    """Runs and times one plain-loop epoch, then times the Lightning epoch that follows.

    A Lightning epoch is timed from its start hook to the next one's (or the end of
    training), so its epoch-end work (loss mean, logging, scheduler) counts as the plain
    loop's scheduler step does.
    """

    def __init__(self, plain: _PlainEpochs) -> None:
        self.plain = plain
        self.lightning_times: list[tuple[float, float]] = []
        self.plain_times: list[tuple[float, float]] = []
        self._start: tuple[float, float] | None = None

    def _stop(self) -> None:
        if self._start is not None:
            wall, cpu = _clocks()
            self.lightning_times.append((wall - self._start[0], cpu - self._start[1]))
            self._start = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()
        self.plain_times.append(self.plain.epoch())
        self._start = _clocks()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()


def paired_loops(config: TrainConfig, ratings: pd.DataFrame, epochs: int) -> dict[str, Any]:
    """`pl.Trainer.fit` and the plain loop, epoch for epoch, over the same batches.

    Both sides get identical batches (same seed), and Lightning gets them
    `steps_per_execution` to a loop iteration, as `fit` hands them over on one device.
    """
    plain = _PlainEpochs(config, ratings)
    system, batches = _system(config, ratings)
    clock = _PairedClock(plain)
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
    trainer.fit(system, train_dataloaders=StepGroups(batches, config.steps_per_execution))
    pairs = _pairs_per_epoch(batches)
    timed = slice(1, None)  # epoch 0 warms up
    out: dict[str, Any] = {}
    for index, clock_name in ((0, ""), (1, "_cpu")):
        lightning = [t[index] for t in clock.lightning_times[timed]]
        plain_s = [t[index] for t in clock.plain_times[timed]]
        out["plain_pytorch" + clock_name] = pairs * len(plain_s) / sum(plain_s)
        out["lightning" + clock_name] = pairs * len(lightning) / sum(lightning)
        out["ratio" + clock_name] = sum(plain_s) / sum(lightning)
        out["epoch_ratios" + clock_name] = [
            round(p / q, 4) for p, q in zip(plain_s, lightning, strict=True)
        ]
    return out


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
    parser.add_argument("--data", type=Path, default=None, help="a MovieLens folder")
    parser.add_argument(
        "--epochs", type=int, default=6, help="implicit mode, per round; the first is warm-up"
    )
    parser.add_argument(
        "--explicit-epochs", type=int, default=30, help="explicit epochs are ~0.1 s: more pairs"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the loop runs")
    parser.add_argument("--note", default="", help="free text recorded in the JSON")
    args = parser.parse_args()
    if min(args.epochs, args.explicit_epochs) < 2:
        parser.error("--epochs and --explicit-epochs must be >= 2 (the first is warm-up)")
    args.data = args.data or Settings().shared_movielens("ml-latest-small")
    if not args.data.is_dir():
        parser.error(
            f"no MovieLens data at {args.data}: pass --data DIR, or set RECOLAB_SHARED_DIR "
            "to the shared folder (it holds data/movielens/ml-latest-small)"
        )
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
        rounds: list[dict[str, Any]] = []
        for _ in range(args.rounds):
            epochs = args.explicit_epochs if mode == "explicit" else args.epochs
            rounds.append({**paired_loops(config, ratings, epochs), "load_1min": _load()})
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
        epoch_ratios = [r for round_ in rounds for r in round_["epoch_ratios"]]
        epoch_ratios_cpu = [r for round_ in rounds for r in round_["epoch_ratios_cpu"]]
        ratio = float(np.median(epoch_ratios))
        ratio_cpu = float(np.median(epoch_ratios_cpu))
        report["modes"][mode] = {
            "config": config.to_dict(),
            "samples_per_second": {
                "ratio_median_of_paired_epochs": ratio,
                "ratio_quartiles_of_paired_epochs": np.percentile(epoch_ratios, [25, 75]).tolist(),
                "ratio_median_of_paired_epochs_cpu": ratio_cpu,
                "paired_epochs": len(epoch_ratios),
                "plain_pytorch_best": max(r["plain_pytorch"] for r in rounds),
                "lightning_best": max(r["lightning"] for r in rounds),
                "rounds": rounds,
                "note": (
                    "scored pairs/s; each Lightning epoch is preceded by one plain-loop epoch "
                    "in the same process, and a ratio is plain time / Lightning time of such a "
                    "pair (epoch 0 of each round is warm-up); by wall and by process CPU time"
                ),
            },
            "plain_loop_by_torch_threads": threads,
            "full_default_training": full,
            "goals": {
                "ratio_lightning_over_plain_>=_0.9": ratio >= 0.9,
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
