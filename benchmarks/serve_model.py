"""The service's model at scale: load a registered NeuMF as serving does, its memory and the
model's part of one uncached recommendation.

`load_scorer` (what the service runs when a champion appears) reads the model from an MLflow
store; the process's resident memory is read before and after (psutil), and the load timed.
Then, with one torch thread (serving's default per request), for `--users` users the model
knows, one top-10 over the whole catalogue each (`NeuMFScorer.top_k_ids`, the collaborative
strategy's call, nothing cached), and for as many users it never saw, the fold-in path
(`fold_in_top_k_ids` from 20 rated movies): the median and 95th percentile of each call.
The rest of a recommendation (the database reads, the policy, the answer) is not included:
`benchmarks/serve.py` measures the whole request over HTTP.

Usage: python benchmarks/serve_model.py --tracking-uri URI [--model NAME]
    [--alias champion | --version N] [--users 200] [--out PATH]
Prints one JSON object (and writes it to --out when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from recolab.domain.model import RatedMovies
from recolab.domain.values import UserId


def _mib() -> float:
    return round(float(psutil.Process().memory_info().rss) / 2**20, 1)


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "calls": len(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model", default="recolab-neumf")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--version", default=None, help="a version number instead of --alias")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from recolab.adapters.mlflow.model_format import load_scorer

    torch.set_num_threads(1)
    before = _mib()
    start = time.perf_counter()
    ref = f"{args.model}/{args.version}" if args.version else f"{args.model}@{args.alias}"
    scorer = load_scorer(f"models:/{ref}", args.tracking_uri, args.version or args.alias)
    load_s = time.perf_counter() - start
    after = _mib()

    rng = np.random.default_rng(0)
    known = scorer._user_ids  # the users the model knows (a private table, read only)
    users = rng.choice(known, min(args.users, known.size), replace=False)
    empty = np.empty(0, dtype=np.int64)
    for user in users[:5]:  # warm-up
        scorer.top_k_ids(UserId(int(user)), 10, empty)
    seen: list[float] = []
    for user in users:
        t = time.perf_counter()
        scorer.top_k_ids(UserId(int(user)), 10, empty)
        seen.append(time.perf_counter() - t)
    items = scorer._item_ids
    unseen: list[float] = []
    for _ in range(len(users)):
        rated = RatedMovies(
            rng.choice(items, 20, replace=False),
            rng.choice(np.arange(1, 11) / 2, 20),
            np.full(20, 1_700_000_000, dtype=np.int64),
        )
        t = time.perf_counter()
        scorer.fold_in_top_k_ids(rated, 10, empty)
        unseen.append(time.perf_counter() - t)
    report: dict[str, Any] = {
        "benchmark": "serve_model",
        "model": ref,
        "n_users": int(known.size),
        "n_movies": int(items.size),
        "load_s": round(load_s, 2),
        "rss_before_mib": before,
        "rss_after_load_mib": after,
        "rss_end_mib": _mib(),
        "known_user_top10": _summary(seen),
        "unseen_user_fold_in_top10": _summary(unseen),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
