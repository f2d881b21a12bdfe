"""Online serving speed against the framework's floor: a live service under `wrk`.

Method (issue 14, "Speed: measured against the framework's floor"):

- every server on one core: `bentoml serve` (RecoLab, or the floor) and its redis-server
  under `taskset -c 0` (PostgreSQL, when used, is the machine's own and not pinned);
- the load generator `wrk` (a C program, one thread) under `taskset -c 1`, closed loop at
  each concurrency, a Lua script making each request's body (random user and `n`);
  p50/p99 come from wrk's latency distribution, 4xx and 5xx are counted per status;
- in the same run, `benchmarks/floor_service.py` (a bare BentoML service mounting one
  FastAPI route that answers a 10-item JSON of `/recommend`'s shape; no auth, no database),
  measured before and after RecoLab, minutes apart: every RecoLab figure is also given as a
  ratio to the floor at the same concurrency (absolute numbers drift on shared machines);
- scenarios: `recommend_uncached` (force_refresh), `recommend_cached` (users whose answers
  were cached beforehand), `ratings` (a write and a cache invalidation); c=1 and c=32;
- beside it, the in-process floor of one recommendation (`Recommender.recommend`, same
  database, Redis and champion, no HTTP), on the server's core.

The workspace (a database and an MLflow store with a `champion`) exists already, e.g. from
`recolab pipeline`, or is built with `--catalogue N`: the demo dataset with N movies
(issue 14 uses 60000) run through the pipeline into `--database-url` / `--tracking-uri`.
Run once per database (SQLite, PostgreSQL) with its own `--label`.

wrk: the Debian package `wrk` (`apt-get install -y wrk`); when it is missing the benchmark
installs it that way if it runs as root with apt-get, and otherwise says so and stops.

Usage: python benchmarks/serve.py --database-url URL --tracking-uri URI [--label NAME]
       [--catalogue 60000] [--duration 10] [--concurrency 1,32]
Prints one JSON object and writes benchmarks/results/serve.json (runs are merged by label).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/serve.py` finds its sibling module
from benchmarks.wrk_load import N_CHOICES, ensure_wrk, lua_script, pinned, run_wrk  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "serve.json"
SECRET = "bench-secret-0123456789-abcdefghijklmnopq"
STARTUP_TIMEOUT_S = 300
SERVER_CORE, CLIENT_CORE = "0", "1"
SCENARIOS = ("recommend_uncached", "recommend_cached", "ratings")
# Issue 14's goals, as ratios to the floor at c=32 (and p99 within 3x p50).
GOALS = {"recommend_uncached": 0.5, "recommend_cached": 0.9, "ratings": 0.5}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    if not ms:
        return {}

    def pick(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 3)

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "max_ms": pick(1.0)}


@contextmanager
def bentoml_serve(
    target: str, env: dict[str, str], log: Path, ready_path: str = "/readyz"
) -> Iterator[str]:
    """`bentoml serve TARGET` pinned to the server core, on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", target]
    command += ["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(ROOT)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            pinned(SERVER_CORE, command),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{target} exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def measure_floor(
    wrk: str, env: dict[str, str], tmp: Path, users: list[int], levels: list[int], args: Any
) -> dict[str, Any]:
    """The bare BentoML + FastAPI service under the same load as `recommend_uncached`."""
    script = lua_script(tmp, "floor", users, [], admin_token())
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with bentoml_serve("benchmarks.floor_service:Floor", env, tmp / "floor.log") as url:
        runs = [run_wrk(wrk, url, script, c, args.duration, args.warmup) for c in levels]
    for run in runs:
        print("floor", json.dumps(run), file=sys.stderr, flush=True)
    return {"measured_at": started, "runs": runs}


def build_catalogue(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """The demo dataset with `args.catalogue` movies through the whole pipeline (ingest,
    features, a short training run, promotion) into the benchmark's database and store."""
    env = {
        **os.environ,
        "RECOLAB_DATABASE_URL": args.database_url,
        "MLFLOW_TRACKING_URI": args.tracking_uri,
        "RECOLAB_DATA_DIR": str(data_dir),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "GX_ANALYTICS_ENABLED": "false",
    }
    command = [sys.executable, "-m", "recolab.cli", "pipeline", "--dataset", "demo"]
    command += ["--max-epochs", str(args.catalogue_epochs)]
    command += ["--set", f"pipeline.demo.n_movies={args.catalogue}"]
    started = time.perf_counter()
    # its output on stderr: stdout carries only this benchmark's JSON
    subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=sys.stderr)
    return {
        "demo_n_movies": args.catalogue,
        "max_epochs": args.catalogue_epochs,
        "built_in_s": round(time.perf_counter() - started, 1),
    }


@contextmanager
def own_redis() -> Iterator[str]:
    """A redis-server of this run's own on a free port (the shared one is left alone)."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def workspace_env(args: argparse.Namespace, redis_url: str, config_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RECOLAB_ENV": "test",
        "RECOLAB_JWT_SECRET": SECRET,
        "RECOLAB_DATABASE_URL": args.database_url,
        "RECOLAB_DATA_DIR": args.data_dir or tempfile.gettempdir(),
        "RECOLAB_CONFIG_DIR": str(config_dir),
        "MLFLOW_TRACKING_URI": args.tracking_uri,
        "RECOLAB_REDIS_URL": redis_url,
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "MLFLOW_ENABLE_TELEMETRY": "false",
    }


def config_dir(root: Path) -> Path:
    """The project's configs with a rate limit that a load test does not hit."""
    target = root / "configs"
    shutil.copytree(ROOT / "configs", target)
    serving = target / "serving.yaml"
    lines = [
        "rate_limit_per_minute: 100000000" if line.startswith("rate_limit_per_minute") else line
        for line in serving.read_text().splitlines()
    ]
    serving.write_text("\n".join(lines) + "\n")
    return target


def sample_ids(database_url: str, n_users: int) -> tuple[list[int], list[int]]:
    """Users with ratings (spread over tiers) and movies, from the workspace's database."""
    from sqlalchemy import text

    from recolab.adapters.sql.engine import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            users = [
                int(u)
                for u in conn.execute(text("SELECT id FROM users WHERE n_ratings > 0 ORDER BY id"))
                .scalars()
                .all()
            ]
            movies = [int(m) for m in conn.execute(text("SELECT id FROM movies")).scalars().all()]
    finally:
        engine.dispose()
    rng = random.Random(0)
    return rng.sample(users, min(n_users, len(users))), movies


def admin_token() -> str:
    from recolab.adapters.runtime.security import issue_token

    return issue_token("bench", "admin", SECRET, 3600)


def in_process_floor(env: dict[str, str], users: list[int], rounds: int) -> dict[str, Any]:
    """The same recommendations without HTTP: bootstrap, champion, Recommender, timed."""
    from recolab.application.recommend import RecommendRequest
    from recolab.bootstrap import bootstrap, configure_torch_threads
    from recolab.config import Settings

    configure_torch_threads({"RECOLAB_TORCH_THREADS": "1"})  # torch and BLAS, as a worker
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        platform_ = bootstrap(Settings(), migrate=False)
        platform_.champion.check()
        scorer = platform_.champion.current()
        recommender = platform_.recommender(platform_.champion.current)
        # Warm-up, discarded (as wrk's): every sampled user's first answer reads their
        # ratings from the database and keeps their profile in the cache; the timed rounds
        # measure the steady state a running service is in.
        for user in users:
            recommender.recommend(RecommendRequest(user_id=user, n=10, force_refresh=True))
        rng = random.Random(0)
        timings: dict[str, list[float]] = {"uncached": [], "cached": []}
        for _ in range(rounds):
            user = rng.choice(users)
            for kind, refresh in (("uncached", True), ("cached", False)):
                request = RecommendRequest(user_id=user, n=10, force_refresh=refresh)
                started = time.perf_counter()
                recommender.recommend(request)
                timings[kind].append(time.perf_counter() - started)
        platform_.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {
        "model_version": scorer.version if scorer else None,
        "rounds": rounds,
        "warm_up": "one uncached answer per sampled user first, discarded",
        "loadavg": loadavg(),
        **{kind: percentiles(samples) for kind, samples in timings.items()},
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("bentoml", "torch", "httpx", "redis", "psycopg")}


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def floor_rps(floors: list[dict[str, Any]], concurrency: int) -> float | None:
    """The floor's throughput at `concurrency`: the mean of its measurements in this run."""
    values = [
        r["requests_per_s"] for f in floors for r in f["runs"] if r["concurrency"] == concurrency
    ]
    return round(sum(values) / len(values), 1) if values else None


def with_ratios(runs: dict[str, list[dict[str, Any]]], floors: list[dict[str, Any]]) -> None:
    for results in runs.values():
        for r in results:
            floor = floor_rps(floors, r["concurrency"])
            r["floor_requests_per_s"] = floor
            r["ratio_to_floor"] = round(r["requests_per_s"] / floor, 3) if floor else None


def goals(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Issue 14's goals at c=32: ratios to the floor, p99 within 3x p50, ratings 0 5xx."""
    met: dict[str, bool | None] = {}
    for name, target in GOALS.items():
        at32 = next((r for r in runs.get(name, []) if r["concurrency"] == 32), None)
        if at32 is None:
            continue
        met[f"{name}_ratio_at_32>={target}"] = (at32["ratio_to_floor"] or 0) >= target
        met[f"{name}_p99<=3xp50_at_32"] = at32["p99_ms"] <= 3 * at32["p50_ms"]
    ratings = runs.get("ratings", [])
    if ratings:
        met["ratings_no_5xx"] = all(r["status"]["5xx"] == 0 for r in ratings)
    return {"ratios_to_floor_at_32": GOALS, "met": met}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--label", default="demo")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before each, discarded")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--cached-users", type=int, default=50)
    parser.add_argument("--torch-threads", type=int, default=1, help="0: torch's default")
    parser.add_argument("--floor-rounds", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument(
        "--catalogue",
        type=int,
        default=0,
        help="build the workspace first: the demo dataset with this many movies (60000 in "
        "issue 14) through the pipeline into --database-url and --tracking-uri",
    )
    parser.add_argument("--catalogue-epochs", type=int, default=2)
    parser.add_argument("--note", default="", help="a remark kept with the figures")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    wrk = ensure_wrk()
    levels = [int(c) for c in args.concurrency.split(",")]
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="recolab-serve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        catalogue = build_catalogue(args, tmp / "data") if args.catalogue else None
        users, movies = sample_ids(args.database_url, args.users)
        cached_users = users[: args.cached_users]
        with own_redis() as redis_url:
            env = workspace_env(args, redis_url, config_dir(tmp))
            env["RECOLAB_TORCH_THREADS"] = str(args.torch_threads)
            affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {int(SERVER_CORE)})  # the in-process floor: server's core
            try:
                in_process = in_process_floor(env, users, args.floor_rounds)
            finally:
                os.sched_setaffinity(0, affinity)
            floors = [measure_floor(wrk, env, tmp, users, levels, args)]
            runs: dict[str, list[dict[str, Any]]] = {}
            with bentoml_serve("serving.service:RecoLab", env, tmp / "serve.log") as url:
                status = httpx.get(f"{url}/status", timeout=10).json()
                token = admin_token()
                auth = {"Authorization": f"Bearer {token}"}
                for user in cached_users:  # every (user, n) the cached scenario asks for
                    for n in N_CHOICES:
                        body = {"user_id": user, "n": n}
                        httpx.post(f"{url}/recommend", json=body, headers=auth, timeout=60)
                for name in chosen:
                    who = cached_users if name == "recommend_cached" else users
                    script = lua_script(tmp, name, who, movies, token)
                    for level in levels:
                        result = run_wrk(wrk, url, script, level, args.duration, args.warmup)
                        runs.setdefault(name, []).append(result)
                        print(name, json.dumps(result), file=sys.stderr, flush=True)
            floors.append(measure_floor(wrk, env, tmp, users, levels, args))
    with_ratios(runs, floors)
    report = {
        "benchmark": "serve",
        "label": args.label,
        "note": args.note,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {
            "database": _redacted(args.database_url),
            "users_sampled": len(users),
            "movies": len(movies),
            "built_catalogue": catalogue,
        },
        "model": status.get("model"),
        "service": {
            "workers": 1,
            "torch_threads": args.torch_threads or "torch default",
            "cache": "redis (own redis-server on loopback, on the server's core)",
            "database": status.get("database", {}).get("backend"),
        },
        "method": {
            "server": f"bentoml serve under taskset -c {SERVER_CORE}",
            "load": f"wrk -t1 under taskset -c {CLIENT_CORE}, closed loop, Lua bodies "
            f"(random user, n in {list(N_CHOICES)}); latency from wrk's distribution",
            "floor": "benchmarks/floor_service.py (BentoML + one FastAPI route, 10-item "
            "JSON of /recommend's shape), measured before and after; ratios use the mean",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        },
        "in_process_floor": in_process,
        "floor": floors,
        "http": runs,
        "goals": goals(runs),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_end": loadavg(),
            "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[
                0
            ],
        },
        "versions": versions(),
    }
    print(json.dumps(report, indent=2))
    if not args.no_write:
        merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
        merged.setdefault("runs", {})[args.label] = report
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    main()
