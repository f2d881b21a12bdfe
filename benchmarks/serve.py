"""Online serving speed: a live `bentoml serve` under load, beside the in-process floor.

Starts a redis-server of its own and `bentoml serve serving.service:RecoLab` on free
loopback ports over an existing workspace (a database and an MLflow store with a
`champion`, e.g. from `recolab pipeline`), then drives it with a bounded load generator
(httpx, asyncio) at each concurrency for a fixed time per scenario:

- `recommend_uncached`: POST /recommend with force_refresh (model, domain rules, history);
- `recommend_cached`:   POST /recommend for users whose answer is already in Redis;
- `ratings`:            POST /ratings (a write on the database and a cache invalidation).

Beside it, the same recommendation in-process (`Recommender.recommend`, same database,
Redis and champion, no HTTP): the floor, and the ratio of the HTTP p50 at concurrency 1 to it.
The load generator shares the machine's cores with the server: figures are conservative.

Usage: python benchmarks/serve.py --database-url URL --tracking-uri URI [--label NAME]
Prints one JSON object and writes benchmarks/results/serve.json (runs are merged by label).
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve.json"
SECRET = "bench-secret-0123456789-abcdefghijklmnopq"
STARTUP_TIMEOUT_S = 300
GOALS = {
    "uncached_p50_ms_at_32": 15.0,
    "uncached_p99_ms_at_32": 60.0,
    "cached_p50_ms": 5.0,
    "recommend_rps": 300.0,
    "ratings_rps_postgres": 300.0,
}


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


@contextmanager
def live_service(env: dict[str, str], log: Path, workers: int) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:RecoLab"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(ROOT)]
    env = {**env, "BENTOML_CONFIG_OPTIONS": f"services.recolab.workers={workers}"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not ready after {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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


RequestMaker = Callable[[random.Random], tuple[str, dict[str, Any]]]


async def drive(
    url: str, make: RequestMaker, concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """`concurrency` clients, each sending its next request when the last one answered."""
    headers = {"Authorization": f"Bearer {admin_token()}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    codes: dict[int | str, int] = {}
    cached = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:

        async def client(seed: int, until: float, record: bool) -> None:
            nonlocal cached
            rng = random.Random(seed)
            while time.perf_counter() < until:
                path, body = make(rng)
                started = time.perf_counter()
                response = await _post(http, path, body)
                elapsed = time.perf_counter() - started
                if record:
                    latencies.append(elapsed)
                    code = _code(response)
                    codes[code] = codes.get(code, 0) + 1
                    ok = isinstance(response, httpx.Response) and code == 200
                    if path == "/recommend" and ok:
                        cached += bool(response.json().get("cached"))

        warm_until = time.perf_counter() + warmup_s
        await asyncio.gather(*(client(1000 + i, warm_until, False) for i in range(concurrency)))
        load_before = loadavg()
        started = time.perf_counter()
        until = started + duration_s
        await asyncio.gather(*(client(i, until, True) for i in range(concurrency)))
        wall = time.perf_counter() - started
    ok = sum(n for code, n in codes.items() if isinstance(code, int) and 200 <= code < 300)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "status_codes": {str(k): v for k, v in sorted(codes.items(), key=str)},
        "cached_answers": cached,
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 1),
        **percentiles(latencies),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


async def _post(
    http: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> httpx.Response | httpx.TransportError:
    """The response, or the transport error (counted by its name, never retried)."""
    try:
        return await http.post(path, json=body)
    except httpx.TransportError as exc:
        return exc


def _code(response: httpx.Response | httpx.TransportError) -> int | str:
    return response.status_code if isinstance(response, httpx.Response) else type(response).__name__


async def drive_open(
    url: str,
    make: RequestMaker,
    rate: float,
    max_in_flight: int,
    duration_s: float,
    warmup_s: float,
    seed: int = 7,
) -> dict[str, Any]:
    """Open loop, as MLPerf's server scenario: Poisson arrivals at `rate` per second, at
    most `max_in_flight` answered at once. Latency runs from the scheduled arrival, so
    time spent waiting for a free slot (the service falling behind) counts."""
    headers = {"Authorization": f"Bearer {admin_token()}"}
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    slots = asyncio.Semaphore(max_in_flight)
    latencies: list[float] = []
    codes: dict[int | str, int] = {}
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:

        async def one(due: float, record: bool) -> None:
            async with slots:
                path, body = make(rng)
                response = await _post(http, path, body)
            if record:
                latencies.append(time.perf_counter() - due)
                code = _code(response)
                codes[code] = codes.get(code, 0) + 1

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        load_before = loadavg()
        due = start
        while due < start + warmup_s + duration_s:
            due += rng.expovariate(rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, due >= start + warmup_s)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start - warmup_s
    ok = sum(n for code, n in codes.items() if isinstance(code, int) and 200 <= code < 300)
    return {
        "offered_per_s": rate,
        "max_in_flight": max_in_flight,
        "requests": len(latencies),
        "status_codes": {str(k): v for k, v in sorted(codes.items(), key=str)},
        "wall_s": round(wall, 3),
        "answered_per_s": round(ok / wall, 1),
        **percentiles(latencies),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


def admin_token() -> str:
    from recolab.adapters.runtime.security import issue_token

    return issue_token("bench", "admin", SECRET, 3600)


def in_process_floor(env: dict[str, str], users: list[int], rounds: int) -> dict[str, Any]:
    """The same recommendations without HTTP: bootstrap, champion, Recommender, timed."""
    import torch

    from recolab.application.recommend import RecommendRequest
    from recolab.bootstrap import bootstrap
    from recolab.config import Settings

    torch.set_num_threads(1)  # as a serving worker does
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        platform_ = bootstrap(Settings(), migrate=False)
        platform_.champion.check()
        scorer = platform_.champion.current()
        recommender = platform_.recommender(platform_.champion.current)
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
        "loadavg": loadavg(),
        **{kind: percentiles(samples) for kind, samples in timings.items()},
    }


def scenarios(users: list[int], movies: list[int], cached_users: list[int]) -> dict[str, Any]:
    def uncached(rng: random.Random) -> tuple[str, dict[str, Any]]:
        return "/recommend", {"user_id": rng.choice(users), "n": 10, "force_refresh": True}

    def cached(rng: random.Random) -> tuple[str, dict[str, Any]]:
        return "/recommend", {"user_id": rng.choice(cached_users), "n": 10}

    def rate(rng: random.Random) -> tuple[str, dict[str, Any]]:
        score = rng.randint(1, 10) / 2
        return "/ratings", {
            "user_id": rng.choice(users),
            "movie_id": rng.choice(movies),
            "score": score,
        }

    return {"recommend_uncached": uncached, "recommend_cached": cached, "ratings": rate}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("bentoml", "torch", "httpx", "redis", "psycopg")}


def goals(runs: dict[str, list[dict[str, Any]]], floor: dict[str, Any]) -> dict[str, Any]:
    def at(name: str, c: int) -> dict[str, Any]:
        return next((r for r in runs.get(name, []) if r["concurrency"] == c), {})

    best_rps = max((r["requests_per_s"] for r in runs.get("recommend_uncached", [])), default=0)
    best_cached_rps = max(
        (r["requests_per_s"] for r in runs.get("recommend_cached", [])), default=0
    )
    best_ratings = max((r["requests_per_s"] for r in runs.get("ratings", [])), default=0)
    u32, cached1 = at("recommend_uncached", 32), at("recommend_cached", 1)
    figures = {
        "uncached_p50_ms_at_32": u32.get("p50_ms"),
        "uncached_p99_ms_at_32": u32.get("p99_ms"),
        "cached_p50_ms": cached1.get("p50_ms"),
        "recommend_rps": best_rps,
        "recommend_rps_cached": best_cached_rps,
        "ratings_rps_postgres": best_ratings,
    }
    met = {
        "uncached_p50_ms_at_32": _le(figures["uncached_p50_ms_at_32"], 15.0),
        "uncached_p99_ms_at_32": _le(figures["uncached_p99_ms_at_32"], 60.0),
        "cached_p50_ms": _le(figures["cached_p50_ms"], 5.0),
        "recommend_rps (uncached)": best_rps >= 300,
        "ratings_rps_postgres": best_ratings >= 300,
    }
    return {"targets": GOALS, "figures": figures, "met": met}


def _le(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--label", default="demo")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=1, help="0: torch's default")
    parser.add_argument("--floor-rounds", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument(
        "--open-rates",
        default="",
        help="comma-separated arrival rates (per s) for an open-loop run of uncached "
        "recommends with at most 32 in flight (MLPerf server scenario); empty: skip",
    )
    parser.add_argument("--note", default="", help="a remark kept with the figures")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    users, movies = sample_ids(args.database_url, args.users)
    cached_users = users[:50]
    with tempfile.TemporaryDirectory(prefix="recolab-serve-bench-") as tmp, own_redis() as rurl:
        env = workspace_env(args, rurl, config_dir(Path(tmp)))
        env["RECOLAB_TORCH_THREADS"] = str(args.torch_threads)
        floor = in_process_floor(env, users, args.floor_rounds)
        runs: dict[str, list[dict[str, Any]]] = {}
        open_loop: list[dict[str, Any]] = []
        log = Path(tmp) / "serve.log"
        with live_service(env, log, args.workers) as url:
            status = httpx.get(f"{url}/status", timeout=10).json()
            token = {"Authorization": f"Bearer {admin_token()}"}
            for user in cached_users:  # warm the cache for the cached scenario
                body = {"user_id": user, "n": 10}
                httpx.post(f"{url}/recommend", json=body, headers=token, timeout=30)
            chosen = [s for s in args.only.split(",") if s]
            for name, make in scenarios(users, movies, cached_users).items():
                if chosen and name not in chosen:
                    continue
                for level in levels:
                    result = asyncio.run(drive(url, make, level, args.duration, args.warmup))
                    runs.setdefault(name, []).append(result)
                    print(name, json.dumps(result), file=sys.stderr, flush=True)
            uncached = scenarios(users, movies, cached_users)["recommend_uncached"]
            for rate in [float(r) for r in args.open_rates.split(",") if r]:
                result = asyncio.run(
                    drive_open(url, uncached, rate, 32, args.duration, args.warmup)
                )
                open_loop.append(result)
                print("open_loop", json.dumps(result), file=sys.stderr, flush=True)
            failed = [
                r
                for r in [*open_loop, *(r for rs in runs.values() for r in rs)]
                if any(not code.isdigit() for code in r["status_codes"])
            ]
            if failed:  # transport errors: show what the service said about them
                print("transport errors; service log tail:", file=sys.stderr)
                print(log.read_text()[-4000:], file=sys.stderr)
    uncached_c1 = next((r for r in runs.get("recommend_uncached", []) if r["concurrency"] == 1), {})
    cached_c1 = next((r for r in runs.get("recommend_cached", []) if r["concurrency"] == 1), {})
    ratio = {
        "uncached_http_p50_over_in_process_p50": _ratio(
            uncached_c1.get("p50_ms"), floor["uncached"].get("p50_ms")
        ),
        "cached_http_p50_over_in_process_p50": _ratio(
            cached_c1.get("p50_ms"), floor["cached"].get("p50_ms")
        ),
    }
    report = {
        "benchmark": "serve",
        "label": args.label,
        "note": args.note,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {"database": _redacted(args.database_url), "users_sampled": len(users)},
        "model": status.get("model"),
        "service": {
            "workers": args.workers,
            "torch_threads": args.torch_threads or "torch default",
            "cache": "redis (own redis-server on loopback)",
            "database": status.get("database", {}).get("backend"),
        },
        "load": {
            "generator": "httpx.AsyncClient on the same machine: closed loop per concurrency "
            "(http), and open loop with Poisson arrivals, at most 32 in flight "
            "(open_loop_uncached)",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        },
        "in_process_floor": floor,
        "http": runs,
        "open_loop_uncached": open_loop,
        "open_loop_best_rate_within_15_60_ms": max(
            (
                r["offered_per_s"]
                for r in open_loop
                if _le(r.get("p50_ms"), 15.0)
                and _le(r.get("p99_ms"), 60.0)
                and r["answered_per_s"] >= 0.95 * r["offered_per_s"]
            ),
            default=None,
        ),
        "ratio": ratio,
        "goals": goals(runs, floor),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_end": loadavg(),
        },
        "versions": versions(),
    }
    print(json.dumps(report, indent=2))
    if not args.no_write:
        merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
        merged.setdefault("runs", {})[args.label] = report
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(merged, indent=2) + "\n")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    main()
