"""Does the inner validation figure order settings as the test split does?

Selection (early stopping, `recolab tune`) judges settings by the validation figure a fit
measures on a slice of its own training rows; it is only as good as that figure's agreement
with what the settings do on unseen data. For each variant (a set of `--set` overrides over
the shipped implicit config) and each split (protocol B seeds, protocol C), this fits NeuMF as
quality.py does (early-stopped, then refitted on the training split), and records the fit's
best inner validation nDCG@10 beside the test figure (B nDCG@10, C HR@10). It reports, per
split, the Spearman correlation of inner and test figures over the variants, and over all
splits the share of variant pairs that inner and test order the same way.

The test figures are never used to choose anything here: this measures the selector itself.

Usage: python benchmarks/selection_signal.py --label auto [--set trainer.val_per_user=1]
       --variant base --variant neg32:trainer.implicit.num_negatives=32 ... [--out FILE]
       python benchmarks/selection_signal.py --analyse FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as Q  # type: ignore[import-not-found]

from recolab.adapters.ingest.movielens import read_movielens
from recolab.ml.evaluation import protocols as P

SPLITS = [("B", 0), ("B", 1), ("B", 2), ("C", 0)]


def run_variant(name: str, sets: list[str], data: Any) -> dict[str, Any]:
    """`sets` (after every variant's `base` overrides) over the shipped config, each split."""
    items = P.ItemFeatures.from_movies(data.movies)
    rows = []
    for protocol, seed in SPLITS:
        made: list[Any] = []
        factory = Q.factories("implicit", made, tuned=sets)["neumf"]
        start = time.perf_counter()
        if protocol == "B":
            result = P.run_topk(factory, data.ratings, k=10, seed=seed, items=items)
            test = result.summary["ndcg@10"]
        else:
            result = P.run_leave_one_out(factory, data.ratings, k=10, n_negatives=100, seed=seed)
            test = result.summary["hr@10"]
        first = made[-1].protocol_fit
        row = {
            "protocol": protocol,
            "seed": seed,
            "inner": first.best_score,
            "best_epoch": first.best_epoch,
            "test": test,
            "wall_s": time.perf_counter() - start,
        }
        rows.append(row)
        print(json.dumps({"variant": name, **row}), flush=True)
    return {"sets": sets, "runs": rows}


def _spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation, ties given their mean rank (two variants can fit the same model)."""
    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def agreement(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per split, Spearman(inner, test) over the variants; over all splits, the pairs of
    variants whose test figures differ that the inner figures order the same way."""
    names = sorted(v for v, d in variants.items() if len(d["runs"]) == len(SPLITS))
    per_split, same, pairs = {}, 0, 0
    for i, (protocol, seed) in enumerate(SPLITS):
        inner = [variants[v]["runs"][i]["inner"] for v in names]
        test = [variants[v]["runs"][i]["test"] for v in names]
        per_split[f"{protocol}{seed}"] = round(_spearman(inner, test), 3)
        for a, b in combinations(range(len(names)), 2):
            if test[a] != test[b]:
                pairs += 1
                same += (inner[a] - inner[b]) * (test[a] - test[b]) > 0
    return {"variants": names, "spearman": per_split, "pairs_alike": [int(same), pairs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default="run", help="name of this validation setting")
    parser.add_argument("--set", action="append", default=[], help="override for every variant")
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME[:OVERRIDE,OVERRIDE...]"
    )
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--analyse", nargs="+", type=Path, default=None, help="result files")
    args = parser.parse_args()
    if args.analyse:
        report = {}
        for path in args.analyse:
            result = json.loads(path.read_text())
            report[result["label"]] = agreement(result["variants"])
        print(json.dumps(report, indent=2))
        return
    data = read_movielens(args.data or Q.default_data())
    torch.set_num_threads(1)
    variants = {}
    for spec in args.variant or ["base"]:
        name, _, sets = spec.partition(":")
        variants[name] = run_variant(name, [*args.set, *(s for s in sets.split(",") if s)], data)
    result = {"label": args.label, "base_sets": args.set, "variants": variants}
    result["agreement"] = agreement(variants)
    out = args.out or Q.ROOT / "benchmarks" / "results" / f"selection_signal_{args.label}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["agreement"]))


if __name__ == "__main__":
    main()
