"""The online-experiment loop on a small demo, in one process: a weak champion and a better
challenger trained on the same data, a canary, simulated users (scripts/simulate_traffic.py)
answered by the service's runtime, and the `online-report` flow with `--promote`.

    .venv/bin/python scripts/online_demo.py --data-dir /tmp/recolab-online

leaves a database, an MLflow store (the report run with its plot) and the flow's artefact
under that folder; `mlflow ui --backend-store-uri sqlite:///<dir>/mlflow.db` shows the run.
The end-to-end test tests/e2e/test_online_loop.py drives the same steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recolab.adapters.ingest.demo import planted_preferences  # noqa: E402
from recolab.application.recommend import RecommendRequest  # noqa: E402
from recolab.application.training import register_and_promote  # noqa: E402
from recolab.application.users import RateMovie  # noqa: E402
from recolab.bootstrap import bootstrap  # noqa: E402
from recolab.config import PROJECT_ROOT, Settings  # noqa: E402
from recolab.domain import EventBus  # noqa: E402
from scripts.simulate_traffic import Behaviour, simulate  # noqa: E402

MODEL = "recolab-neumf"
DEMO = {"n_users": 300, "n_movies": 300, "seed": 42}
N_RATINGS = 12_000
FAST = ["batch_size=128", "refit=false"]
WEAK = [*FAST, "max_epochs=1"]  # barely trained (made champion by hand)
BETTER = [*FAST, "max_epochs=6"]
# Users rate the best-liked movie shown with probability sigmoid(2 (liking - 1.5)).
BEHAVIOUR = Behaviour(threshold=1.5, sharpness=2.0)


def workspace(root: Path) -> Settings:
    """Settings on SQLite and a local MLflow store under `root`, the demo ingested and one
    feature snapshot built."""
    config_dir = root / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", config_dir, dirs_exist_ok=True)
    settings = Settings(
        env="dev",
        data_dir=root / "data",
        config_dir=config_dir,
        database_url=f"sqlite:///{root / 'db.sqlite'}",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        model_name=MODEL,
        overrides=[
            f"pipeline.demo.n_users={DEMO['n_users']}",
            f"pipeline.demo.n_movies={DEMO['n_movies']}",
            f"pipeline.demo.n_ratings={N_RATINGS}",
            "serving.champion_poll_interval_s=3600",
        ],
    )
    platform = bootstrap(settings)
    try:
        platform.ingest("demo", None)
        platform.build_features("demo")
    finally:
        platform.close()
    return settings


def mlflow_client(settings: Settings) -> Any:
    import mlflow

    uri = settings.resolved_tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def train_pair(settings: Settings) -> dict[str, Any]:
    """A weak champion and a better model registered as the challenger (`--challenger`)."""
    platform = bootstrap(settings)
    registry, bus = platform.model_registry(), EventBus()
    try:
        weak = register_and_promote(platform.train("B", overrides=WEAK), registry, bus)
        mlflow_client(settings).set_registered_model_alias(MODEL, "champion", weak.version)
        better = register_and_promote(
            platform.train("B", overrides=BETTER), registry, bus, as_challenger=True
        )
    finally:
        platform.close()
    return {"champion": weak, "challenger": better}


def traffic(settings: Settings, *, rounds: int, seed: int) -> dict[str, Any]:
    """Simulated demo users against the service's runtime (as `bentoml serve` builds it);
    closed after, so every answer is in the history."""
    platform = bootstrap(settings, serving=True)
    runtime = platform.serving_runtime()
    preferences = planted_preferences(**DEMO)

    def recommend(user_id: int, n: int) -> tuple[list[int], str | None]:
        result = runtime.recommend(RecommendRequest(user_id=user_id, n=n))
        return [item.movie_id for item in result.items], result.variant

    def rate(user_id: int, movie_id: int, stars: float) -> None:
        runtime.rate(RateMovie(user_id, movie_id, stars))

    try:
        users = preferences.user_ids.tolist()
        summary = simulate(
            recommend, rate, preferences, users, rounds=rounds, seed=seed, behaviour=BEHAVIOUR
        )
    finally:
        runtime.close()
    return summary.to_dict()


def report(settings: Settings, *, promote: bool, seed: int = 0) -> Any:
    """The online report and decision (the use case the `online-report` flow runs)."""
    platform = bootstrap(settings)
    try:
        config = platform.experiments_config
        return platform.online_reporting().run(
            config,
            promote=promote,
            seed=seed,
            bus=EventBus(),
            min_rows=platform.pipeline_config.promotion.min_comparable_rows,
        )
    finally:
        platform.close()


def main() -> int:
    import os

    from recolab.adapters.mlflow.experiments import start_experiment
    from recolab.domain.experiments import Experiment

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    settings = workspace(args.data_dir)
    pair = train_pair(settings)
    print(f"champion v{pair['champion'].version}, challenger v{pair['challenger'].version}")
    client = mlflow_client(settings)
    start_experiment(client, MODEL, Experiment("demo-canary", "canary", args.share))
    print(json.dumps(traffic(settings, rounds=args.rounds, seed=0), indent=2))
    # The flow, as `recolab online-report --promote` runs it (its Prefect artefact too).
    os.environ.update(
        {
            "RECOLAB_DATABASE_URL": settings.resolved_database_url,
            "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
            "RECOLAB_DATA_DIR": str(settings.data_dir),
            "RECOLAB_CONFIG_DIR": str(settings.config_dir),
            "RECOLAB_OVERRIDES": json.dumps(settings.overrides),
        }
    )
    from flows.online_report import online_report

    result = online_report(promote=True)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
