"""The whole pipeline at scale: the demo generator at ml-32m's proportions, PostgreSQL, one epoch.

For each size (1M and 5M ratings by default; 32M with `--sizes 32000000`, documented but not
run by default: hours on two cores) the demo dataset is generated with ml-32m's proportions
(users ~6.3 and movies ~2.7 per 1,000 ratings: 200,948 users and 87,585 movies per 32,000,204
ratings), then the pipeline runs as three CLI commands, each a subprocess of its own, against
a PostgreSQL database created for the run (`recolab_scale_bench`, dropped afterwards), with a
fresh data folder (feature snapshots, MLflow store):

    recolab ingest --dataset demo --set pipeline.demo.n_ratings=N ...    read, validate, load,
                                                                        statistics
    recolab features --dataset demo                                      features
    recolab train --dataset demo --max-epochs 1                          prepare, fit, evaluate,
                                                                        refit, register

Per stage: seconds, from the time each log line of the command reached this script (the flow's
task-completion lines and the progress lines mark the stage boundaries; `startup` is the
command's start until its first stage begins: imports, Prefect's temporary server, bootstrap),
and peak memory: the resident set of the command's whole process tree (the CLI and the
children it starts), sampled every 0.1 s with psutil, the high-water mark of the samples
taken while the stage ran. The refit (the registered model refitted on all the snapshot's
ratings, `trainer.refit`, on by default) is its own stage: the same one epoch again. Each
stage's growth exponent is the slope of log(seconds) against log(ratings) between
consecutive sizes (1 = linear).

The issue's goals (issue 16), at 5M ratings: end to end (the stages' sum, startup included)
<= 8 minutes, peak memory <= 4 GiB, evaluation <= 1 minute; at 32M peak memory <= 16 GiB and
every exponent <= 1.15 between 5M and 32M.

Usage: python benchmarks/scale.py [--sizes 1000000 5000000] [--no-refit] [--keep] [--set K=V]
    [--commands ingest features train | --commands pipeline]
    [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--out PATH]
Prints one JSON object and writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "scale.json"
USERS_PER_RATING, MOVIES_PER_RATING = 200_948 / 32_000_204, 87_585 / 32_000_204  # ml-32m
DATABASE = "recolab_scale_bench"
DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SEED = 42
SAMPLE_S = 0.1
TRACE_S = 30.0
GOALS_5M = {"end_to_end_s": 480, "peak_gib": 4.0, "evaluate_s": 60}

# Stage boundaries: a stage ends at the first line matching its pattern (in this order within
# a command); it begins where the previous one ended (the first at the first line that
# matches `BEGIN`).
BEGIN = re.compile(r"Beginning flow run|Created flow run|flow run '")
COMMANDS: dict[str, list[tuple[str, str]]] = {
    "ingest": [
        ("read", r"Task run 'read-.*Finished"),
        ("validate", r"Task run 'validate-.*Finished"),
        ("load", r"Task run 'load-.*Finished"),
        ("statistics", r"Task run 'statistics-.*Finished"),
    ],
    "features": [("features", r"Task run 'build-snapshot-.*Finished")],
    "train": [
        ("prepare", r"GPU available"),  # the snapshot read and encoded; the trainer built
        ("fit", r"(?<!re)fit epoch \d+/\d+:"),
        # the refit's trainer starting, or the task's end with trainer.refit=false
        ("evaluate", r"GPU available|Task run 'fit-and-evaluate-.*Finished"),
        ("refit", r"refit(?: \d+/\d+)? epoch \d+/\d+:"),
        ("register", r"Task run 'register-and-promote-.*Finished"),
    ],
}
# `recolab pipeline` (--commands pipeline): the three commands' stages in one process, which
# starts up (imports, Prefect's temporary server) once.
COMMANDS["pipeline"] = [*COMMANDS["ingest"], *COMMANDS["features"], *COMMANDS["train"]]
SEPARATE = ["ingest", "features", "train"]


def shape(n_ratings: int) -> dict[str, int]:
    return {
        "n_ratings": n_ratings,
        "n_users": max(1, round(n_ratings * USERS_PER_RATING)),
        "n_movies": max(1, round(n_ratings * MOVIES_PER_RATING)),
    }


# One process of a command's tree: pid, name, RSS MiB, and the MiB of it backed by a file or
# shared memory (reclaimable, or counted in another process too).
Proc = tuple[int, str, int, int]


@dataclass
class Watched:
    """A command's output lines with their arrival times, and its process tree's RSS."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)
    # The tree's processes every TRACE_S (trace) and at the high-water mark (peak_tree), so
    # that a peak can be told apart (one process, or a forked child whose shared pages the
    # sum counts twice).
    trace: list[tuple[float, list[Proc]]] = field(default_factory=list)
    peak_tree: list[Proc] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    returncode: int = 0


def run_watched(cmd: list[str], env: dict[str, str], log_path: Path) -> Watched:
    watched = Watched(start=time.monotonic())
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        highest, traced = 0, -math.inf
        while not done.is_set():
            rss = 0
            tree: list[Proc] = []
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        info = p.memory_info()
                        rss += info.rss
                        rss_mib, shared_mib = round(info.rss / 2**20), round(info.shared / 2**20)
                        tree.append((p.pid, p.name(), rss_mib, shared_mib))
            except psutil.Error:
                pass
            now = time.monotonic()
            watched.samples.append((now, rss))
            if rss > highest:
                highest, watched.peak_tree = rss, tree
            if now - traced >= TRACE_S:
                watched.trace.append((round(now - watched.start, 1), tree))
                traced = now
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        for line in proc.stdout:
            now = time.monotonic()
            watched.lines.append((now, line.rstrip("\n")))
            log.write(f"{now - watched.start:9.2f} {line}")
            log.flush()  # to follow a long run with `tail -f`
    watched.returncode = proc.wait()
    watched.end = time.monotonic()
    done.set()
    sampler.join()
    return watched


def stages(watched: Watched, command: str) -> dict[str, dict[str, float]]:
    """Per stage: seconds and the peak RSS (MiB) of the samples taken while it ran."""
    bounds: list[tuple[str, float]] = []
    began = next((t for t, line in watched.lines if BEGIN.search(line)), watched.start)
    bounds.append(("startup", began))
    pos = 0
    for name, pattern in COMMANDS[command]:
        regex = re.compile(pattern)
        for k in range(pos, len(watched.lines)):
            if regex.search(watched.lines[k][1]):
                bounds.append((name, watched.lines[k][0]))
                pos = k + 1
                break
    bounds.append(("exit", watched.end))
    out: dict[str, dict[str, float]] = {}
    previous = watched.start
    for name, end in bounds:
        if name == "exit":
            name = "exit"  # the command's end after its last stage: artefacts, shutdown
        peak = max((rss for t, rss in watched.samples if previous <= t <= end), default=0)
        out[name] = {"s": round(end - previous, 2), "peak_mib": round(peak / 2**20)}
        previous = end
    return out


def psql(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def run_size(n_ratings: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    dims = shape(n_ratings)
    data = work / f"data-{n_ratings}"
    data.mkdir(parents=True)
    db_url = args.admin_url.rsplit("/", 1)[0] + f"/{DATABASE}"
    psql(args.admin_url, f"DROP DATABASE IF EXISTS {DATABASE}")
    psql(args.admin_url, f"CREATE DATABASE {DATABASE}")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "RECOLAB_DATA_DIR": str(data),
        "RECOLAB_DATABASE_URL": db_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}",
        "RECOLAB_OVERRIDES": "[]",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
    }
    env.pop("RECOLAB_MLFLOW_TRACKING_URI", None)
    demo = [f"--set=pipeline.demo.{key}={value}" for key, value in dims.items()]
    cli = [sys.executable, "-m", "recolab.cli"]
    log_path = work / f"scale-{n_ratings}.log"
    result: dict[str, Any] = {**dims, "log": str(log_path)}
    try:
        start = time.monotonic()
        gen = subprocess.run(
            [
                *cli,
                "data",
                "demo",
                "--out",
                str(
                    data / "raw" / f"demo-{dims['n_users']}u-{dims['n_movies']}m-"
                    f"{n_ratings}r-s{SEED}"
                ),
                f"--n-users={dims['n_users']}",
                f"--n-movies={dims['n_movies']}",
                f"--n-ratings={n_ratings}",
                f"--seed={SEED}",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if gen.returncode:
            raise RuntimeError(f"demo generation failed: {gen.stderr[-2000:]}")
        result["generate_demo_s"] = round(time.monotonic() - start, 2)
        refit = [] if args.refit else ["--set=trainer.refit=false"]
        refit += [f"--set={setting}" for setting in args.settings]
        commands = {
            "ingest": [*cli, "ingest", "--dataset", "demo", *demo],
            "features": [*cli, "features", "--dataset", "demo"],
            "train": [*cli, "train", "--dataset", "demo", "--max-epochs", "1", *refit],
            "pipeline": [*cli, "pipeline", "--dataset", "demo", "--max-epochs", "1", *demo, *refit],
        }
        per_stage: dict[str, dict[str, float]] = {}
        for command, cmd in commands.items():
            if command not in args.commands:
                continue
            watched = run_watched(cmd, env, log_path)
            if watched.returncode:
                tail = "\n".join(line for _, line in watched.lines[-30:])
                raise RuntimeError(f"{command} exited with {watched.returncode}:\n{tail}")
            for name, figures in stages(watched, command).items():
                key = name if name not in ("startup", "exit") else f"{command}_{name}"
                per_stage[key] = figures
            # Per command: the process tree (pid, name, RSS MiB) at its high-water mark, and
            # every 30 s (seconds since the command began, the tree).
            result.setdefault("peak_processes", {})[command] = watched.peak_tree
            result.setdefault("memory_trace", {})[command] = watched.trace
            print(f"{n_ratings:,} ratings: {command} done", file=sys.stderr, flush=True)
        result["stages"] = per_stage
        result["end_to_end_s"] = round(sum(f["s"] for f in per_stage.values()), 1)
        # Without each command's start-up and exit (Prefect's temporary server, imports):
        # `recolab pipeline` pays them once, not three times.
        result["stages_only_s"] = round(
            sum(f["s"] for k, f in per_stage.items() if not k.endswith(("_startup", "_exit"))), 1
        )
        result["peak_mib"] = max(f["peak_mib"] for f in per_stage.values())
    finally:
        if not args.keep:
            psql(args.admin_url, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return result


def exponents(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per pair of consecutive sizes, each stage's slope of log(seconds) on log(ratings)."""
    out: dict[str, dict[str, float | None]] = {}
    for small, big in itertools.pairwise(results):
        ratio = math.log(big["n_ratings"] / small["n_ratings"])
        slopes: dict[str, float | None] = {}
        for name, figures in big["stages"].items():
            before = small["stages"].get(name, {}).get("s", 0.0)
            ok = before > 0.05 and figures["s"] > 0.05
            slopes[name] = round(math.log(figures["s"] / before) / ratio, 2) if ok else None
        out[f"{small['n_ratings']}->{big['n_ratings']}"] = slopes
    return out


def _commit() -> str | None:
    """The checkout's commit (the code measured), with '+dirty' when it has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return f"{head}+dirty" if head and dirty else head or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--no-refit", dest="refit", action="store_false")
    parser.add_argument(
        "--commands",
        nargs="+",
        choices=list(COMMANDS),
        default=SEPARATE,
        help="run only these (in order; train needs features' snapshot, features ingest's "
        "data); pipeline: `recolab pipeline`, every stage in one command",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and data folder")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the train and pipeline commands, said in the results "
        "(e.g. trainer.eval_sample_users=20000 at 32M)",
    )
    parser.add_argument(
        "--admin-url", default=os.environ.get("RECOLAB_BENCH_POSTGRES_URL", DEFAULT_ADMIN)
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if "pipeline" in args.commands and len(args.commands) > 1:
        parser.error("--commands pipeline runs every stage: name it alone")

    import torch

    work = Path(tempfile.mkdtemp(prefix="recolab-scale-"))
    results: list[dict[str, Any]] = []
    for n in sorted(args.sizes):
        load_before = os.getloadavg()
        figures = run_size(n, args, work)
        figures["load_average_before"] = [round(x, 2) for x in load_before]
        figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        results.append(figures)
        # Written after every size, so that a run stopped during a long size keeps the others.
        text = json.dumps(report(args, results, torch.__version__), indent=2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


def report(
    args: argparse.Namespace, results: list[dict[str, Any]], torch_version: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "benchmark": "scale",
        "what": "recolab ingest, features and train (1 epoch) on the demo at ml-32m's "
        "proportions, PostgreSQL; per stage seconds and peak RSS of the command's process tree",
        "complete": len(results) == len(args.sizes),
        "sizes_asked": sorted(args.sizes),
        "refit": args.refit,
        "settings": args.settings,
        "commands": args.commands,
        "sizes": results,
        "growth_exponents": exponents(results),
        "goals_at_5m": GOALS_5M,
        "commit": _commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch_version,
        },
        "note": "shared 2-core machine: compare sizes within one run",
    }
    at_5m = next((r for r in results if r["n_ratings"] == 5_000_000), None)
    if at_5m is not None:
        out["goals_met_at_5m"] = {
            "end_to_end": at_5m["end_to_end_s"] <= GOALS_5M["end_to_end_s"],
            "peak_memory": at_5m["peak_mib"] / 1024 <= GOALS_5M["peak_gib"],
            "evaluation": at_5m["stages"].get("evaluate", {}).get("s", math.inf)
            <= GOALS_5M["evaluate_s"],
        }
    return out


if __name__ == "__main__":
    main()
