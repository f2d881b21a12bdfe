"""Choose between model settings on inner splits only: the protocols run inside their own
training splits, never on a test split that quality.py reports.

For each outer split quality.py evaluates (protocol A's folds, protocol B's seeds, protocol
C's leave-latest-out), this takes the outer split's TRAINING rows alone and applies the same
protocol to them again (A: an inner k-fold CV; B: an inner per-user 75/25 split, seeded
100 + seed; C: each user's latest training rating held out, 100 sampled negatives, seeds
100-102 as quality.py's C runs seeds 0-2). Every variant (a set of `--set` overrides over
the shipped configs) is fitted and scored there, as quality.py fits NeuMF (early-stopped,
then refitted). The report gives each variant's inner figure per split and its paired
difference from the first variant, with the number of splits it wins: what a design
decision (a default, a model change) may be judged on. The outer test rows are dropped
before anything is fitted.

Usage: python benchmarks/inner_choice.py --label ensemble --variant base \
         --variant ens3:trainer.ensemble=3 [--protocols A B C] [--inner-folds 5]
Writes benchmarks/results/inner_choice_LABEL.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as Q  # type: ignore[import-not-found]

from recolab.adapters.ingest.movielens import read_movielens
from recolab.ml.evaluation import protocols as P
from recolab.ml.evaluation.splits import kfold_splits, leave_latest_out, stratified_user_split

METRIC = {"A": ("rmse", "min"), "B": ("ndcg@10", "max"), "C": ("hr@10", "max")}


def outer_training_splits(ratings: pd.DataFrame, protocol: str) -> list[tuple[str, pd.DataFrame]]:
    """The training rows of each outer split quality.py reports (folds of seed 0 / seeds 0-2)."""
    if protocol == "A":
        return [(f"fold{f}", train) for f, (train, _) in enumerate(kfold_splits(ratings, 5, 0))]
    if protocol == "B":
        return [(f"seed{s}", stratified_user_split(ratings, 0.25, s)[0]) for s in (0, 1, 2)]
    # quality.py runs C once per seed on the one leave-latest-out split (the seed draws the
    # negatives and the model's initialisation): so does the inner C, seeded 100 + index.
    train = leave_latest_out(ratings)[0]
    return [(f"latest/seed{s}", train) for s in (0, 1, 2)]


def inner_figure(
    protocol: str, sets: list[str], train: pd.DataFrame, index: int, args: argparse.Namespace
) -> tuple[float, dict[str, float]]:
    """The protocol applied inside `train` (an outer split's training rows): its figure, and
    the same figure per user tier (B and C; tiers without users left out)."""
    metric = METRIC[protocol][0]
    if protocol == "A":
        factory = Q.factories("explicit", tuned=sets)["neumf"]
        result = P.run_rating_cv(factory, train, n_folds=args.inner_folds, seed=100 + index)
        return float(result.summary[metric]["mean"]), {}
    factory = Q.factories("implicit", tuned=sets)["neumf"]
    if protocol == "B":
        result = P.run_topk(factory, train, k=10, seed=100 + index)
    else:
        result = P.run_leave_one_out(factory, train, k=10, n_negatives=100, seed=100 + index)
    tiers = result.summary.get("by_tier", {})
    per_tier = {t: float(v[metric]) for t, v in tiers.items() if v.get("n_users") and metric in v}
    return float(result.summary[metric]), per_tier


def compare(
    protocol: str, runs: dict[str, list[float]], tiers: dict[str, list[dict[str, float]]]
) -> dict[str, Any]:
    """Each variant's mean and its paired difference from the first (better > 0), and its
    mean per user tier over the splits."""
    names = list(runs)
    sign = -1.0 if METRIC[protocol][1] == "min" else 1.0
    base = np.array(runs[names[0]])
    out: dict[str, Any] = {}
    for name in names:
        values = np.array(runs[name])
        gain = sign * (values - base)
        out[name] = {
            "per_split": values.tolist(),
            "mean": float(values.mean()),
            "gain_vs_first": float(gain.mean()),
            "gain_std": float(gain.std(ddof=1)) if gain.size > 1 else 0.0,
            "splits_won": int((gain > 0).sum()),
            "splits": int(gain.size),
        }
        names_seen = sorted({t for row in tiers[name] for t in row})
        if names_seen:
            out[name]["by_tier"] = {
                t: float(np.mean([row[t] for row in tiers[name] if t in row])) for t in names_seen
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", required=True)
    parser.add_argument("--variant", action="append", required=True, help="NAME[:SET,SET...]")
    parser.add_argument("--protocols", nargs="+", default=["A", "B", "C"])
    parser.add_argument("--inner-folds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    variants = {}
    for spec in args.variant:
        name, _, sets = spec.partition(":")
        # a comma before the next KEY= separates settings; others belong to a value ([64,32])
        variants[name] = [s for s in re.split(r",(?=[\w.]+=)", sets) if s]
    args.data = args.data or Q.default_data()
    data = read_movielens(args.data)
    torch.set_num_threads(1)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "inner_choice",
        "label": args.label,
        "dataset": args.data.name,
        "variants": variants,
        "inner_folds": args.inner_folds,
        "protocols": {},
    }
    for protocol in args.protocols:
        runs: dict[str, list[float]] = {name: [] for name in variants}
        tiers: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for index, (split, train) in enumerate(outer_training_splits(data.ratings, protocol)):
            for name, sets in variants.items():
                start = time.perf_counter()
                value, per_tier = inner_figure(protocol, sets, train, index, args)
                runs[name].append(value)
                tiers[name].append(per_tier)
                row = {"protocol": protocol, "split": split, "variant": name, "inner": value}
                row["by_tier"] = {t: round(v, 4) for t, v in per_tier.items()}
                print(json.dumps({**row, "wall_s": round(time.perf_counter() - start, 1)}))
        report["protocols"][protocol] = compare(protocol, runs, tiers)
    report["elapsed_seconds"] = time.perf_counter() - started
    out = args.out or Q.ROOT / "benchmarks" / "results" / f"inner_choice_{args.label}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["protocols"], indent=1))


if __name__ == "__main__":
    main()
