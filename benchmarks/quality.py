"""Recommendation quality of the default NeuMF config against baselines, protocols A, B and C.

A: 5-fold random CV, RMSE/MAE in stars (explicit mode of the default config).
B: per-user random 75/25 split, top-10 over unrated training items, every test item relevant
   (implicit mode); nDCG/MAP/P/R@10, coverage, novelty, intra-list diversity.
C: latest rating per user against 100 sampled unrated items, HR@10 / NDCG@10 (implicit mode).
Every figure is also broken down by user tier (n_ratings in training). B and C are repeated
over `--seeds` (split seeds) and reported as mean and std; A over its folds.

What the pipeline ships is evaluated: NeuMF with configs/model.yaml + trainer.yaml (the
pipeline's default; `--tune-trials N` runs the Optuna selection of configs/tune.yaml inside
each B/C training split first, as `recolab pipeline --tuned` would, judged on its inner
validation split), fitted as the train flow registers it: early-stopped on a validation
slice of the training split, then refitted on all of that split for the epochs kept
(`trainer.refit`, on by default; `--set trainer.refit=false` measures the early-stopped fit
alone), averaged with more refits where `trainer.ensemble` says so (explicit mode: 5
networks); and, under B and C, the served policy (`protocols.B.policy`,
`protocols.C.policy`): the service's own Recommender with configs/serving.yaml's knobs, fed
from each training split and the NeuMF fitted on it, beside the model alone, popularity and
content-based alone, per tier (recolab.ml.evaluation.policy). `--select-policy` also reports
which policy knobs an inner split of each training split would choose (never the test split).

Usage: python benchmarks/quality.py [--data DIR] [--protocols A B C] [--seeds 0 1 2]
       [--models neumf popularity bias_only] [--export DIR] [--set trainer.KEY=VALUE]
       [--policy-users N] [--no-policy] [--select-policy] [--tune-trials N]
--data defaults to ../shared/data/movielens/ml-latest-small, relative to the repository
(RECOLAB_SHARED_DIR replaces ../shared).
Prints one JSON object and writes benchmarks/results/quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from policy_bench import PolicyBench  # type: ignore[import-not-found]

from recolab.adapters.ingest.movielens import read_movielens
from recolab.config import ConfigError, training_overrides
from recolab.ml.baselines import BiasOnlyRecommender, PopularityRecommender
from recolab.ml.evaluation import protocols as P
from recolab.ml.experiment import RefittedRecommender
from recolab.ml.fitting import NeuMFRecommender, TrainConfig, load_train_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("data") / "movielens" / "ml-latest-small"  # under the shared folder

# The best classic peers measured under exactly these protocols, and our goals.
PEERS = {
    "A": {"surprise_svdpp_rmse": 0.862, "surprise_svd_rmse": 0.873, "baseline_only_rmse": 0.873},
    "B": {"implicit_als": {"ndcg@10": 0.331, "map@10": 0.091, "precision@10": 0.291,
                           "recall@10": 0.144}, "popularity_ndcg@10": 0.207},
    "C": {"cornac_bpr": {"hr@10": 0.739, "ndcg@10": 0.491},
          "popularity": {"hr@10": 0.616, "ndcg@10": 0.361}},
}  # fmt: skip
# Issue 15's goals on ml-latest-small (seeds 0-2).
GOALS = {"A": ("rmse", "<=", 0.845), "B": ("ndcg@10", ">=", 0.36), "C": ("hr@10", ">=", 0.78)}


# `--set` overrides for experiments, as the CLI's (the shipped result uses none):
# `trainer.KEY=VALUE` for both modes, `trainer.implicit.KEY=VALUE` for one.
OVERRIDES: list[str] = []


def default_data() -> Path:
    """ml-latest-small in the shared folder beside the repository (RECOLAB_SHARED_DIR
    replaces ../shared)."""
    shared = os.environ.get("RECOLAB_SHARED_DIR")
    return (Path(shared) if shared else ROOT / ".." / "shared") / DEFAULT_DATA


def neumf_config(mode: str, tuned: list[str] | None = None) -> TrainConfig:
    """The shipped config of `mode`, under `tuned` overrides (a selection's), then `--set`."""
    return load_train_config(
        ROOT / "configs" / "model.yaml",
        ROOT / "configs" / "trainer.yaml",
        mode=mode,  # type: ignore[arg-type]
        overrides=training_overrides([*(tuned or []), *OVERRIDES]),
    )


def factories(
    mode: str, made: list[NeuMFRecommender] | None = None, tuned: list[str] | None = None
) -> dict[str, Callable[[], P.OfflineRecommender]]:
    config = neumf_config(mode, tuned)

    def neumf() -> NeuMFRecommender:
        model = RefittedRecommender(config)
        if made is not None:
            made.append(model)
        return model

    return {
        "neumf": neumf,
        "popularity": PopularityRecommender,
        "bias_only": BiasOnlyRecommender,
    }


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (ddof=1) over seeds of every number; tier figures averaged."""
    out: dict[str, Any] = {}
    for key, value in summaries[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seed":
            values = np.array([s[key] for s in summaries], dtype=np.float64)
            std = float(values.std(ddof=1)) if values.size > 1 else 0.0
            out[key] = {"mean": float(values.mean()), "std": std}
        elif key == "by_tier":
            out[key] = {
                tier: {
                    name: float(np.mean([s[key][tier][name] for s in summaries])) for name in row
                }
                for tier, row in value.items()
            }
        elif key != "seed":
            out[key] = value
    out["seeds"] = [s["seed"] for s in summaries]
    return out


def _goal(protocol: str, summary: dict[str, Any]) -> dict[str, Any]:
    metric, op, target = GOALS[protocol]
    value = summary[metric]["mean"]
    met = value <= target if op == "<=" else value >= target
    return {"metric": metric, "goal": f"{op} {target}", "value": value, "met": bool(met)}


def run(
    protocol: str,
    model: str,
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    seeds: list[int],
    export: Path | None,
    bench: PolicyBench | None = None,
) -> dict[str, Any]:
    if protocol == "A":
        result = P.run_rating_cv(factories("explicit")[model], ratings, n_folds=5, seed=seeds[0])
        if export:
            result.export_scores(export / f"A_{model}_predictions.csv")
        return result.summary
    items = P.ItemFeatures.from_movies(movies)
    summaries = []
    for seed in seeds:
        made: list[NeuMFRecommender] = []
        tuned = bench.tuned(protocol, seed) if bench and model == "neumf" else None
        factory = factories("implicit", made, tuned)[model]
        if protocol == "B":
            result = P.run_topk(factory, ratings, k=10, seed=seed, items=items)
        else:
            result = P.run_leave_one_out(factory, ratings, k=10, n_negatives=100, seed=seed)
        if export and seed == seeds[0]:
            result.export_scores(export / f"{protocol}_{model}_scores.csv")
        if tuned:
            result.summary["tuned_overrides"] = tuned
        summaries.append(result.summary)
        if bench is not None and made and made[-1].result is not None:
            bench.evaluate(
                protocol,
                seed,
                made[-1].result,
                lambda t=tuned: factories("implicit", None, t)["neumf"](),  # type: ignore[misc]
            )
    out = aggregate(summaries)
    if tuned is not None:
        out["tuned_overrides"] = [s.get("tuned_overrides") for s in summaries]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=None, help="a MovieLens folder")
    parser.add_argument("--protocols", nargs="+", default=["A", "B", "C"])
    parser.add_argument("--models", nargs="+", default=["neumf", "popularity", "bias_only"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--export", type=Path, default=None, help="folder for CSV exports")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see train.py)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results)")
    parser.add_argument("--note", default="", help="free text recorded in the JSON")
    parser.add_argument(
        "--set", action="append", default=[], help="trainer.[MODE.]KEY=VALUE override"
    )
    parser.add_argument(
        "--no-policy", action="store_true", help="skip the served-policy table (B and C)"
    )
    parser.add_argument(
        "--policy-users", type=int, default=None, help="policy table: a sample of N test users"
    )
    parser.add_argument(
        "--select-policy",
        action="store_true",
        help="also report the policy knobs an inner split of each training split chooses",
    )
    parser.add_argument(
        "--tune-trials",
        type=int,
        default=0,
        help="Optuna trials (configs/tune.yaml) inside each B/C training split before the "
        "NeuMF fit; 0 (default): the shipped defaults, as the pipeline without --tuned",
    )
    args = parser.parse_args()
    args.data = args.data or default_data()
    if not args.data.is_dir():
        parser.error(
            f"no MovieLens data at {args.data}: pass --data DIR, or set RECOLAB_SHARED_DIR "
            "to the shared folder (it holds data/movielens/ml-latest-small)"
        )
    OVERRIDES.extend(args.set)
    try:
        for mode in ("explicit", "implicit"):
            neumf_config(mode)
    except (ConfigError, ValueError) as exc:
        parser.error(f"--set: {exc}")
    if args.tune_trials < 0 or (args.policy_users is not None and args.policy_users < 1):
        parser.error("--tune-trials must be >= 0 and --policy-users >= 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = read_movielens(args.data)  # the project's own reader, as ingest uses
    ratings, movies = data.ratings, data.movies
    bench = PolicyBench(
        ROOT / "configs",
        ratings,
        movies,
        policy=not args.no_policy,
        max_users=args.policy_users,
        select=args.select_policy,
        tune_trials=args.tune_trials,
        base=neumf_config("implicit"),
    )
    report: dict[str, Any] = {
        "benchmark": "quality",
        "dataset": {
            "name": args.data.name,
            "ratings": len(ratings),
            "users": int(ratings["user_id"].nunique()),
            "movies": int(ratings["movie_id"].nunique()),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "config": {mode: neumf_config(mode).to_dict() for mode in ("explicit", "implicit")},
        "overrides": OVERRIDES,
        "serving_knobs": bench.knobs_record(),
        "tune_trials": args.tune_trials,
        "note": args.note,
        "seeds": args.seeds,
        "peers": PEERS,
        "protocols": {},
    }
    for protocol in args.protocols:
        rows: dict[str, Any] = {}
        for model in args.models:
            start = time.perf_counter()
            summary = run(protocol, model, ratings, movies, args.seeds, args.export, bench)
            summary["wall_seconds"] = time.perf_counter() - start
            rows[model] = summary
        if "neumf" in rows:
            rows["goal"] = _goal(protocol, rows["neumf"])
        rows.update(bench.report(protocol))
        report["protocols"][protocol] = rows
    report["load_average_at_end"] = os.getloadavg()
    report["elapsed_seconds"] = time.perf_counter() - started
    out = args.out or ROOT / "benchmarks" / "results" / "quality.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
