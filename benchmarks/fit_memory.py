"""A fit's resident memory and speed over its steps, under the C heap settings.

NeuMF's default implicit fit (configs: 2,048 rows of a positive and 24 negatives a step, 16
steps a batch) on synthetic ratings with the tables of ml-32m (200,948 users, 87,585 movies:
the user tables train lazily, `sparse_rows: auto`) or of the 5M demo at ml-32m's proportions
(31,500 users, 13,500 movies: every table dense), for `--batches` batches of one epoch, no
validation. Each run is a process of its own (glibc's settings are process-wide), under one
of three settings, alternated `--repeats` times in one invocation:

- `none`: `trainer.release_memory: false`, glibc as it is;
- `trim`: `release_memory: true`, `heap_reuse_mb: null` (glibc's `malloc_trim` once the
  process grew by 256 MiB since the last trim, `recolab.ml.hardware.ReleaseFreedMemory`);
- `trim+reuse`: the defaults, the trims and glibc's mmap and trim thresholds raised to
  1,024 MB, so that a step's big blocks (an item table's dense gradient) stay in the heap.

Per run: the process's RSS after the first batch (the optimisers' moments allocated) and
every 10 batches, its growth per 1,000 steps (least-squares slope from the first batch's
end), steps/s from the first batch's end, and the trims made during the batches.

Usage: python benchmarks/fit_memory.py [--shapes 32m 5m] [--ratings 8000000] [--batches 100]
    [--repeats 2] [--settings none trim trim+reuse] [--note TEXT] [--out FILE]
Prints one JSON object and writes benchmarks/results/fit_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "fit_memory.json"
# (users, movies): ml-32m's, and the 5M demo's at its proportions (benchmarks/scale.py)
SHAPES = {"32m": (200_948, 87_585), "5m": (31_500, 13_500)}
SETTINGS = {  # trainer overrides
    "none": {"release_memory": False},
    "trim": {"release_memory": True, "heap_reuse_mb": None},
    "trim+reuse": {"release_memory": True, "heap_reuse_mb": 1024},
}
EVERY = 10  # batches between RSS samples


def ratings(n: int, n_users: int, n_movies: int, seed: int = 0) -> Any:
    """`n` draws of (user, movie), users uniform, popular movies favoured; repeats dropped."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_movies + 1) ** 0.8
    users = rng.integers(0, n_users, n)
    movies = rng.choice(n_movies, n, p=weights / weights.sum())
    keys = np.unique(users * n_movies + movies)
    return pd.DataFrame(
        {"user_id": keys // n_movies + 1, "movie_id": keys % n_movies + 1, "rating": 4.0}
    ).assign(timestamp=0)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One fit in this process: RSS every EVERY batches, then the figures."""
    import psutil
    import pytorch_lightning as pl

    from recolab.ml.fitting import fit, load_train_config
    from recolab.ml.hardware import ReleaseFreedMemory

    data = ratings(args.ratings, *SHAPES[args.shape])
    proc = psutil.Process()
    # (batches done, perf_counter, RSS MiB) after the first batch (the optimiser's moments
    # allocated) and every EVERY batches
    samples: list[tuple[int, float, int]] = []

    trims: list[int] = []  # malloc_trim calls during the training batches

    class Sample(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *rest: Any) -> None:
            done = rest[-1] + 1  # batch_idx + 1
            if done == 1 or done % EVERY == 0:
                samples.append((done, time.perf_counter(), proc.memory_info().rss >> 20))
            trims[:] = [c.trims for c in trainer.callbacks if isinstance(c, ReleaseFreedMemory)]

    config = load_train_config(
        ROOT / "configs" / "model.yaml",
        ROOT / "configs" / "trainer.yaml",
        mode="implicit",
        overrides={"max_epochs": 1, "val_negatives": 0, **SETTINGS[args.setting]},
    )
    fit(
        data,
        config,
        limit_train_batches=args.batches,
        callbacks=[Sample()],
        enable_progress_bar=False,
    )
    batches = np.array([s[0] for s in samples], dtype=float)
    rss = np.array([s[2] for s in samples], dtype=float)
    steps = batches * config.steps_per_execution
    slope = float(np.polyfit(steps, rss, 1)[0]) if len(samples) > 2 else float("nan")
    seconds = samples[-1][1] - samples[0][1]  # from the first batch's end
    return {
        "shape": args.shape,
        "setting": args.setting,
        "ratings": len(data),
        "steps": int(steps[-1]),
        "rss_after_first_batch_mib": int(rss[0]),
        "rss_at_end_mib": int(rss[-1]),
        "growth_mib_per_1000_steps": round(slope * 1000, 1),
        "steps_per_s": round((steps[-1] - steps[0]) / seconds, 2),
        "trims": trims[0] if trims else 0,
        "rss_trace": [[int(b), int(r)] for b, r in zip(batches, rss, strict=True)],
    }


def commit() -> str:
    """The checked-out commit, `+dirty` when a tracked file has changes."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--ratings", type=int, default=8_000_000, help="draws before repeats")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--note", default="", help="what else ran meanwhile, said in the results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=list(SHAPES), help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    runs: list[dict[str, Any]] = []
    for shape in args.shapes:
        for _ in range(args.repeats):
            for setting in args.settings:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        f"--shape={shape}",
                        f"--setting={setting}",
                        f"--ratings={args.ratings}",
                        f"--batches={args.batches}",
                    ],
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print({k: v for k, v in runs[-1].items() if k != "rss_trace"}, file=sys.stderr)
    import torch

    summary = {
        shape: {
            setting: {
                key: [r[key] for r in runs if (r["shape"], r["setting"]) == (shape, setting)]
                for key in ("steps_per_s", "growth_mib_per_1000_steps", "rss_at_end_mib")
            }
            for setting in args.settings
        }
        for shape in args.shapes
    }
    result = {
        "benchmark": "fit_memory",
        "what": "RSS and steps/s of a default implicit fit at ml-32m's and the 5M demo's table "
        "shapes over its steps, under the C heap settings none (glibc as it is), trim "
        "(malloc_trim whenever the process grew by 256 MiB) and trim+reuse (the trims, and "
        "glibc's mmap and trim thresholds at 1,024 MB), alternated, each run a process of its own",
        "shapes": {s: {"users": SHAPES[s][0], "movies": SHAPES[s][1]} for s in args.shapes},
        "settings": {s: SETTINGS[s] for s in args.settings},
        "batches": args.batches,
        "summary": summary,
        "runs": runs,
        "commit": commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "note": "shared 2-core machine: compare the settings within one run. " + args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
