"""No slowdown from a restructuring: training and in-process serving at two git refs, side by side.

Each ref is checked out into a temporary git worktree and run from there (PYTHONPATH points
at it, so the installed environment is shared and only the code differs). One workspace is
built first with the BASE ref's code (`recolab pipeline` on the generated demo: a database
and an MLflow store with a champion; models registered by older code load in newer code,
not the other way round). Then, for each round, each ref runs in a fresh process, in
alternating order (A B, B A, ...), because this machine's speed drifts within minutes:

- `recommend`: `Recommender.recommend` in process (the same database, cache and champion;
  torch on one thread, as a serving worker), uncached (force_refresh) and cached, p50 and
  mean in ms over the same seeded sequence of users;
- `fit`: the default NeuMF fit on ml-latest-small, `--epochs` epochs per mode, wall seconds.

The figure per ref is the median over rounds, and the ratio head / base (< 1: head faster).

Usage: python benchmarks/layout.py [--base REF] [--head REF] [--rounds N] [--epochs N]
    [--requests N] [--data DIR]
Prints one JSON object and writes benchmarks/results/layout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "layout.json"

# Runs inside each ref's worktree, whose layout decides the imports.
RECOMMEND = r"""
import json, random, statistics, sys, time
import recolab
assert recolab.__file__.startswith(sys.argv[2]), recolab.__file__
import torch
from threadpoolctl import threadpool_limits
torch.set_num_threads(1)  # as a serving worker: torch and numpy's BLAS on one thread
threadpool_limits(limits=1, user_api="blas")
from sqlalchemy import text
from recolab.application.recommend import RecommendRequest
from recolab.bootstrap import bootstrap
n = int(sys.argv[1])
platform_ = bootstrap(migrate=False)
platform_.champion.check()
recommender = platform_.recommender(platform_.champion.current)
with platform_.engine.connect() as conn:
    rows = conn.execute(text("SELECT id FROM users WHERE n_ratings > 0 ORDER BY id"))
    users = [r[0] for r in rows]
rng = random.Random(0)
seq = [rng.choice(users) for _ in range(n)]
for user in seq[:20]:  # warm-up: first-call costs are not what is compared
    recommender.recommend(RecommendRequest(user_id=user, n=10, force_refresh=True))
out = {}
for kind, refresh in (("uncached", True), ("cached", False)):
    times = []
    for user in seq:
        started = time.perf_counter()
        recommender.recommend(RecommendRequest(user_id=user, n=10, force_refresh=refresh))
        times.append((time.perf_counter() - started) * 1000)
    out[kind] = {"p50_ms": statistics.median(times), "mean_ms": statistics.fmean(times)}
platform_.close()
print(json.dumps(out))
"""

FIT = r"""
import json, sys, time
from pathlib import Path
data, epochs, root = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
# By the files of this tree: the installed package's finder would also find the other layout.
if (root / "recolab" / "ml" / "fitting.py").exists():
    from recolab.ml.fitting import fit, load_train_config, with_overrides
    from recolab.adapters.ingest.movielens import read_movielens
else:
    from recolab.adapters.ml.training import fit, load_train_config, with_overrides
    from recolab.adapters.movielens import read_movielens
ratings = read_movielens(data).ratings
out = {}
for mode in ("explicit", "implicit"):
    files = (root / "configs" / "model.yaml", root / "configs" / "trainer.yaml")
    config = load_train_config(*files, mode=mode)
    config = with_overrides(config, max_epochs=epochs, patience=epochs + 1)
    started = time.perf_counter()
    fit(ratings, config)
    out[mode] = {"fit_s": time.perf_counter() - started}
print(json.dumps(out))
"""


def default_data() -> Path:
    shared = Path(os.environ.get("RECOLAB_SHARED_DIR", ROOT.parent / "shared"))
    return shared / "data" / "movielens" / "ml-latest-small"


def worktree(ref: str, parent: Path) -> Path:
    path = parent / ref.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), ref],
        check=True,
        capture_output=True,
    )
    return path


def run(code: str, tree: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree.name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def workspace(tree: Path, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "recolab.cli", "pipeline", "--max-epochs", "2"]
    subprocess.run(
        command, cwd=tree, env={**env, "PYTHONPATH": str(tree)}, check=True, capture_output=True
    )


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of every leaf figure."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        if isinstance(samples[0][key], dict):
            out[key] = summarise([s[key] for s in samples])
        else:
            out[key] = round(statistics.median(s[key] for s in samples), 3)
    return out


def ratios(head: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ratios(v, base[k]) if isinstance(v, dict) else round(v / base[k], 3)
        for k, v in head.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="e0ba9b6")
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data = args.data or default_data()
    if not (data / "ratings.csv").exists():
        sys.exit(f"no MovieLens ratings under {data}: pass --data or set RECOLAB_SHARED_DIR")
    with tempfile.TemporaryDirectory(prefix="recolab-layout-") as tmp:
        trees = {"base": worktree(args.base, Path(tmp)), "head": worktree(args.head, Path(tmp))}
        env = {
            **os.environ,
            "RECOLAB_DATA_DIR": str(Path(tmp) / "data"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "GX_ANALYTICS_ENABLED": "false",
        }
        env.pop("RECOLAB_DATABASE_URL", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("RECOLAB_REDIS_URL", None)
        workspace(trees["base"], env)
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {"recommend": [], "fit": []} for name in trees
        }
        for round_ in range(args.rounds):
            order = ["base", "head"] if round_ % 2 == 0 else ["head", "base"]
            for name in order:
                tree = trees[name]
                rec = run(RECOMMEND, tree, env, str(args.requests), str(tree))
                fit = run(FIT, tree, env, str(data), str(args.epochs), str(tree))
                samples[name]["recommend"].append(rec)
                samples[name]["fit"].append(fit)
                print(name, json.dumps({"recommend": rec, "fit": fit}), file=sys.stderr)
        for tree in trees.values():
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
        commits = {
            name: subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for name, ref in (("base", args.base), ("head", args.head))
        }
    summary = {name: {k: summarise(v) for k, v in s.items()} for name, s in samples.items()}
    result = {
        "benchmark": "layout",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "commits": commits,
        "dataset": {
            "recommend": "demo (generated, recolab pipeline --max-epochs 2)",
            "fit": str(data.name),
        },
        "rounds": args.rounds,
        "epochs_per_fit": args.epochs,
        "requests_per_kind": args.requests,
        "median_over_rounds": summary,
        "head_over_base": ratios(summary["head"], summary["base"]),
        "samples": samples,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "loadavg_end": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
