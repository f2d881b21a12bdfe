"""Ingest throughput: read -> validate (Great Expectations) -> load (incl. statistics), end to end.

Datasets: ml-latest-small (a local copy, never downloaded) and the generated demo at 1M and 10M
ratings (generated once into a cache folder outside the repo). Backends: SQLite (a fresh file)
and PostgreSQL (a fresh, uniquely named database created on the server and dropped afterwards).
The steps are those of ``recolab.application.ingest.ingest``: read_movielens, validate_dataset
(JSON report written; Data Docs only for a failed batch, as the flow does), load_dataset (one
transaction, statistics included) and the tier counts the flow reports; migrating the fresh
database is not counted.

Each case runs in its own child process, so its peak memory (``getrusage`` ``ru_maxrss``: the
resident-set high-water mark of that process, Python and a warmed-up GX included) is its own.
GX is imported and its suites built before the clock starts; those one-off costs are reported
separately. Beside each load is the floor: a bare COPY (SQLite: executemany) of the same rows
into an empty temporary table (``copy_floor``). These machines are shared and noisy: compare
figures of one run with each other (ratios), and see the load averages recorded with them.

    .venv/bin/python benchmarks/ingest.py [--quick] [--sizes small 1m 10m]
        [--backends sqlite postgresql] [--no-sqlite-10m] [--out benchmarks/results/ingest.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ingest.json"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "recolab-bench-cache"
DEFAULT_MOVIELENS = ROOT.parent / "shared" / "data" / "movielens" / "ml-latest-small"
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_ADMIN_ENV = "RECOLAB_BENCH_POSTGRES_URL"
CASE_TIMEOUT_S = 1800
SEED = 42

# Goals from the data-platform issue.
PG_RATE_GOAL = 300_000  # ratings/s end to end, PostgreSQL, 10M ratings
VALIDATION_SHARE_GOAL = 0.25
SMALL_SECONDS_GOAL = 5.0


@dataclass(frozen=True)
class Demo:
    n_users: int
    n_movies: int
    n_ratings: int

    @property
    def folder_name(self) -> str:
        return f"demo-{self.n_users}u-{self.n_movies}m-{self.n_ratings}r-s{SEED}"


DEMOS = {
    "1m": Demo(n_users=10_000, n_movies=10_000, n_ratings=1_000_000),
    "10m": Demo(n_users=100_000, n_movies=50_000, n_ratings=10_000_000),
}
SIZES = ("small", "1m", "10m")
BACKENDS = ("sqlite", "postgresql")


# --- one case, in a child process -------------------------------------------------------


def run_case(dataset: str, folder: Path, backend: str, pg_admin: str) -> dict[str, Any]:
    """Ingest ``folder`` into a fresh database of ``backend``; figures for that one run."""
    one_off = _warm_up()
    rss_warm_mb = _peak_rss_mb()
    with _fresh_database(backend, pg_admin) as url, tempfile.TemporaryDirectory() as reports:
        from recolab.adapters.ingest.movielens import read_movielens
        from recolab.adapters.ingest.steps import SqlLoader
        from recolab.adapters.ingest.validation import raise_for_failures, validate_dataset
        from recolab.adapters.sql.engine import make_engine
        from recolab.adapters.sql.loading import copy_floor, load_dataset
        from recolab.adapters.sql.migrate import upgrade

        start = time.perf_counter()
        upgrade(url)
        setup_s = time.perf_counter() - start
        engine = make_engine(url)
        try:
            steps: dict[str, float] = {}
            with _step(steps, "read"):
                data = read_movielens(folder)
            with _step(steps, "validate"):
                report = validate_dataset(data.ratings, data.movies, report_dir=Path(reports))
                raise_for_failures(report)
            with _step(steps, "load"):
                loaded = load_dataset(
                    engine, data.ratings, data.movies, dataset=dataset, source=str(folder)
                )
            with _step(steps, "report"):
                tiers = SqlLoader(engine).refresh_statistics({})
            server = _server_version(engine)
        finally:
            engine.dispose()
        # After the load, so that it does not warm the caches the load reads.
        floor_s = copy_floor(url, data.ratings)
    n = len(data.ratings)
    total = sum(steps.values())
    return {
        "dataset": dataset,
        "backend": backend,
        "n_ratings": n,
        "n_movies": len(data.movies),
        "n_users": int(data.ratings["user_id"].nunique()),
        "end_to_end_s": round(total, 3),
        "ratings_per_s": round(n / total),
        "steps_s": _rounded(steps),
        "validation_share": round(steps["validate"] / total, 3),
        "validation_timings_s": _rounded(report.timings),
        "load_phases_s": _rounded(loaded.phases),
        "bulk_load": loaded.bulk,
        "floor_copy_s": round(floor_s, 3),
        "ratio_load_to_floor": round(steps["load"] / floor_s, 2),
        "ratio_end_to_end_to_floor": round(total / floor_s, 2),
        "floor_ratings_per_s": round(n / floor_s),
        "gx_warm": True,
        "one_off_s": one_off,
        "end_to_end_cold_s": round(total + sum(one_off.values()), 3),
        "migrate_fresh_database_s": round(setup_s, 3),
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_warm_up_mb": rss_warm_mb,
        "users_by_tier": {k: v for k, v in tiers.items() if k.startswith("tier_")},
        "server_version": server,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _warm_up() -> dict[str, float]:
    """Import GX and build the validation suites once; return what that cost."""
    import numpy as np
    import pandas as pd

    start = time.perf_counter()
    import great_expectations  # noqa: F401

    import_s = time.perf_counter() - start
    from recolab.adapters.ingest.validation import validate_dataset

    ratings = pd.DataFrame(
        {"user_id": [1], "movie_id": [1], "rating": [4.0], "timestamp": [1_000_000_000]}
    )
    movies = pd.DataFrame(
        {"movie_id": [1], "title": ["A"], "year": pd.array([2000], "Int64"), "genres": ["Drama"]}
    )
    ratings = ratings.astype({"user_id": np.int64, "movie_id": np.int64})
    start = time.perf_counter()
    validate_dataset(ratings, movies)
    return {
        "gx_import_s": round(import_s, 3),
        "gx_suite_setup_s": round(time.perf_counter() - start, 3),
    }


@contextmanager
def _fresh_database(backend: str, pg_admin: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    from recolab.adapters.sql.engine import scratch_postgres_database

    with scratch_postgres_database(pg_admin, "recolab_bench") as url:
        yield url


@contextmanager
def _step(steps: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    steps[name] = time.perf_counter() - start


def _server_version(engine: Any) -> str:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            return str(conn.exec_driver_sql("SHOW server_version").scalar_one())
    return f"SQLite {sqlite3.sqlite_version}"


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in values.items()}


# --- the parent: datasets, cases, summary ------------------------------------------------


def dataset_folder(size: str, cache: Path, movielens: Path) -> Path | None:
    """The folder of a dataset, generating the demo into ``cache`` on first use."""
    if size == "small":
        return movielens if (movielens / "ratings.csv").exists() else None
    from recolab.adapters.ingest.demo import generate_demo

    demo = DEMOS[size]
    folder = cache / demo.folder_name
    if not (folder / "ratings.csv").exists():
        generate_demo(
            folder,
            n_users=demo.n_users,
            n_movies=demo.n_movies,
            n_ratings=demo.n_ratings,
            seed=SEED,
        )
    return folder


def run_child(dataset: str, folder: Path, backend: str, pg_admin: str) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its last stdout line is the case's JSON."""
    spec = json.dumps({"dataset": dataset, "folder": str(folder), "backend": backend})
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        spec,
        "--pg-admin",
        pg_admin,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CASE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"dataset": dataset, "backend": backend, "error": f"timeout {CASE_TIMEOUT_S}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-5:]
        return {"dataset": dataset, "backend": backend, "error": " | ".join(tail)}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def goals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    pg_10m = [r for r in ok if r["backend"] == "postgresql" and r["dataset"] == "demo-10m"]
    small = [r for r in ok if r["dataset"] == "ml-latest-small"]
    shares = {f"{r['dataset']}/{r['backend']}": r["validation_share"] for r in ok}
    return {
        "postgresql_10m_ratings_per_s": {
            "goal": PG_RATE_GOAL,
            "measured": pg_10m[0]["ratings_per_s"] if pg_10m else None,
            "met": bool(pg_10m) and pg_10m[0]["ratings_per_s"] >= PG_RATE_GOAL,
        },
        "validation_share": {
            "goal": VALIDATION_SHARE_GOAL,
            "measured": shares,
            "met": bool(shares) and max(shares.values()) <= VALIDATION_SHARE_GOAL,
        },
        "ml_latest_small_seconds": {
            "goal": SMALL_SECONDS_GOAL,
            "measured_warm": {r["backend"]: r["end_to_end_s"] for r in small},
            "measured_cold_incl_gx_import": {r["backend"]: r["end_to_end_cold_s"] for r in small},
            "met_warm": bool(small) and max(r["end_to_end_s"] for r in small) <= SMALL_SECONDS_GOAL,
            "met_cold": bool(small)
            and max(r["end_to_end_cold_s"] for r in small) <= SMALL_SECONDS_GOAL,
        },
    }


def versions() -> dict[str, str]:
    names = ("pandas", "numpy", "sqlalchemy", "psycopg", "great-expectations", "pyarrow")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def server_versions(runs: list[dict[str, Any]]) -> dict[str, str]:
    found = {"sqlite": sqlite3.sqlite_version}
    for run in runs:
        if run.get("backend") == "postgresql" and "server_version" in run:
            found["postgresql_server"] = run["server_version"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--quick", action="store_true", help="ml-latest-small and 1M only")
    parser.add_argument(
        "--no-sqlite-10m", action="store_true", help="skip 10M into SQLite (minutes)"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="demo data folder")
    parser.add_argument("--movielens", type=Path, default=DEFAULT_MOVIELENS)
    parser.add_argument("--pg-admin", default=os.environ.get(PG_ADMIN_ENV, DEFAULT_PG_ADMIN))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(args.child)
        figures = run_case(spec["dataset"], Path(spec["folder"]), spec["backend"], args.pg_admin)
        print(json.dumps(figures))
        return

    sizes = ["small", "1m"] if args.quick else args.sizes
    skipped: list[str] = []
    runs: list[dict[str, Any]] = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    for size in sizes:
        folder = dataset_folder(size, args.cache, args.movielens)
        name = "ml-latest-small" if size == "small" else f"demo-{size}"
        if folder is None:
            skipped.append(f"{name}: no copy at {args.movielens}")
            continue
        for backend in args.backends:
            if backend == "sqlite" and size == "10m" and args.no_sqlite_10m:
                skipped.append(f"{name}/sqlite: skipped (--no-sqlite-10m)")
                continue
            print(f"running {name} into {backend}", file=sys.stderr, flush=True)
            runs.append(run_child(name, folder, backend, args.pg_admin))
    result = {
        "benchmark": "ingest",
        "steps": "read_movielens -> validate_dataset (+JSON report; Data Docs on failure only, "
        "as the flow does) -> load_dataset "
        "(one transaction incl. statistics) -> tier counts; fresh database per run",
        "peak_memory": "getrusage ru_maxrss of the child process running the case",
        "floor": "copy_floor: the same rows moved the loader's way (PostgreSQL binary COPY, "
        "SQLite executemany) into an empty temporary table: no WAL, no index, no commit",
        "datasets": {
            "ml-latest-small": str(args.movielens),
            **{f"demo-{k}": {**vars(v), "seed": SEED} for k, v in DEMOS.items()},
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {**versions(), **server_versions(runs)},
        "runs": runs,
        "skipped": skipped,
        "goals": goals(runs),
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
