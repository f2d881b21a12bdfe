"""What an online experiment costs the champion's answers: throughput with no experiment,
with a canary and with shadow scoring, in one service process, interleaved.

Method (issue 17, goal "canary or shadow costs at most 10% of throughput"): the online-path
benchmark's set-up (`benchmarks/serve.py`: `bentoml serve` and its redis-server under
`taskset -c 0`, `wrk` under `taskset -c 1`, Lua bodies with random users, `force_refresh`
answers so that every request runs the model). A challenger is registered as a second
version of the champion's own model (same weights and size: what is measured is the cost of
routing and shadow scoring, not of a bigger model). The experiment is changed in the registry
between measurements (`recolab.adapters.mlflow.experiments`), and the service follows it at
its next poll (1 s here), so every mode runs on the same process, warm, in rounds with no
experiment before and after each measurement (off, canary, off, shadow, off, ...): on this
shared machine throughput drifts by 20-40% over minutes, so each measurement is divided by
the mean of the two `off` measurements around it, and each mode's ratio is the median of
those.

Usage: python benchmarks/experiments_serve.py --database-url URL --tracking-uri URI
       [--catalogue 60000] [--rounds 3] [--duration 10] [--share 0.5] [--label NAME]
Prints one JSON object and writes benchmarks/results/experiments_serve.json (merged by label).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serve import (  # noqa: E402
    SERVER_CORE,
    _redacted,
    admin_token,
    bentoml_serve,
    build_catalogue,
    config_dir,
    loadavg,
    own_redis,
    sample_ids,
    versions,
    workspace_env,
)
from benchmarks.wrk_load import ensure_wrk, lua_script, run_wrk  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "experiments_serve.json"
MODEL = "recolab-neumf"
MODES = ("off", "canary", "shadow")
GOAL = 0.9  # each mode's throughput at least 90% of no experiment's


def register_copy_of_champion(client: Any, model: str) -> tuple[str, str]:
    """A second version of the champion's model (same artefacts): (champion, challenger)."""
    champion = client.get_model_version_by_alias(model, "champion")
    source = client.get_model_version_download_uri(model, champion.version)  # same weights
    copy = client.create_model_version(
        model, source, run_id=champion.run_id, description="benchmark challenger"
    )
    for _ in range(120):  # the file store registers at once; a server may take a moment
        if client.get_model_version(model, copy.version).status == "READY":
            break
        time.sleep(0.5)
    return str(champion.version), str(copy.version)


def set_mode(client: Any, model: str, mode: str, share: float, version: str) -> None:
    from recolab.adapters.mlflow.experiments import start_experiment, stop_experiment
    from recolab.domain.experiments import Experiment

    if mode == "off":
        stop_experiment(client, model)
    else:
        start_experiment(client, model, Experiment(f"bench-{mode}", mode, share), version)  # type: ignore[arg-type]


def wait_for(url: str, mode: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Until the service runs `mode` (its /status says so)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = httpx.get(f"{url}/status", timeout=10).json()
        experiment = status.get("experiment")
        if (mode == "off" and experiment is None) or (
            experiment is not None and experiment["mode"] == mode and experiment["running"]
        ):
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not switch to {mode}: {status}")
        time.sleep(0.25)


def shadow_counters(url: str) -> dict[str, float]:
    """The service's shadow and answer counters from /metrics (Prometheus text)."""
    counters: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(("recolab_shadow", "recolab_experiment_answers")) and " " in line:
            name, value = line.rsplit(" ", 1)
            counters[name] = float(value)
    return counters


def sequence(modes: list[str], rounds: int) -> list[str]:
    """`off` before and after every experiment measurement: off, canary, off, shadow, off."""
    others = [m for m in modes if m != "off"]
    steps = ["off"]
    for _ in range(rounds):
        for mode in others:
            steps += [mode, "off"]
    return steps if others else ["off"] * (rounds + 1)


def bracketed_ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[float]]:
    """Each experiment measurement over the mean of the `off` ones just before and after."""
    by_step = {r["step"]: (mode, r["requests_per_s"]) for mode, rs in runs.items() for r in rs}
    ratios: dict[str, list[float]] = {}
    for step, (mode, rps) in sorted(by_step.items()):
        before, after = by_step.get(step - 1), by_step.get(step + 1)
        if mode == "off" or before is None or after is None:
            continue
        ratios.setdefault(mode, []).append(rps / ((before[1] + after[1]) / 2))
    return ratios


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--label", default="demo")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="off/canary/shadow rounds")
    parser.add_argument("--share", type=float, default=0.5, help="of users in the experiment")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--catalogue", type=int, default=0, help="as benchmarks/serve.py")
    parser.add_argument("--catalogue-epochs", type=int, default=2)
    parser.add_argument(
        "--modes", default=",".join(MODES), help="the modes of a round, in order (off first)"
    )
    parser.add_argument("--note", default="")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args()


def main() -> None:
    import mlflow

    args = parse_args()
    wrk = ensure_wrk()
    client = mlflow.MlflowClient(tracking_uri=args.tracking_uri, registry_uri=args.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="recolab-experiments-bench-") as tmp_name:
        tmp = Path(tmp_name)
        catalogue = build_catalogue(args, tmp / "data") if args.catalogue else None
        champion, challenger = register_copy_of_champion(client, MODEL)
        users, _ = sample_ids(args.database_url, args.users)
        configs = config_dir(tmp)
        serving = configs / "serving.yaml"
        serving.write_text(
            serving.read_text().replace(
                "champion_poll_interval_s: 30", "champion_poll_interval_s: 1"
            )
        )
        modes = args.modes.split(",")
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        counters: dict[str, dict[str, float]] = {}
        with own_redis() as redis_url:
            env = workspace_env(args, redis_url, configs)
            env["RECOLAB_TORCH_THREADS"] = "1"
            set_mode(client, MODEL, "off", args.share, challenger)
            with bentoml_serve("serving.service:RecoLab", env, tmp / "serve.log") as url:
                script = lua_script(tmp, "recommend_uncached", users, [], admin_token())
                try:
                    for step, mode in enumerate(sequence(modes, args.rounds)):
                        set_mode(client, MODEL, mode, args.share, challenger)
                        wait_for(url, mode)
                        result = run_wrk(
                            wrk, url, script, args.concurrency, args.duration, args.warmup
                        )
                        result["step"] = step
                        runs[mode].append(result)
                        print(mode, json.dumps(result), file=sys.stderr, flush=True)
                    counters = {"end": shadow_counters(url)}
                finally:
                    set_mode(client, MODEL, "off", args.share, challenger)
    medians = {
        mode: statistics.median(r["requests_per_s"] for r in results)
        for mode, results in runs.items()
    }
    bracketed = bracketed_ratios(runs)
    ratios = {mode: round(statistics.median(values), 3) for mode, values in bracketed.items()}
    report = {
        "benchmark": "experiments_serve",
        "label": args.label,
        "note": args.note,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {
            "database": _redacted(args.database_url),
            "users_sampled": len(users),
            "built_catalogue": catalogue,
        },
        "models": {"champion": champion, "challenger": challenger, "same_weights": True},
        "method": {
            "server": f"bentoml serve under taskset -c {SERVER_CORE}, 1 worker, torch 1 thread",
            "load": f"wrk -t1 -c{args.concurrency}, recommend_uncached (force_refresh)",
            "share": args.share,
            "rounds": args.rounds,
            "order": "off, canary, off, shadow, ..., off: every experiment measurement "
            "between two of no experiment",
            "ratio": "each measurement over the mean of the off measurements just before and "
            "after it (a drift of the machine cancels); the median of those per mode",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        },
        "requests_per_s_median": medians,
        "ratio_to_off": ratios,
        "ratios_per_measurement": {m: [round(v, 3) for v in vs] for m, vs in bracketed.items()},
        "goal": {
            "ratio_to_off>=": GOAL,
            "met": {m: ratios[m] >= GOAL for m in ("canary", "shadow") if m in ratios},
        },
        "runs": runs,
        "counters": counters,
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
        RESULTS.write_text(json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    main()
