"""Prefect flow `train`: fit + evaluate NeuMF on a snapshot, register, promote if better."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import platform_for
from recolab.application.training import TrainedModel, register_and_promote
from recolab.bootstrap import Platform, metric_name, progress_logged_to


@task(name="fit-and-evaluate", cache_policy=NO_CACHE)
def fit_and_evaluate(
    platform: Platform, protocol: str, snapshot_id: str | None, overrides: list[str]
) -> TrainedModel:
    """Fit under the protocol and evaluate, then refit the model to register on all the
    snapshot's ratings (`trainer.refit`); each epoch and the evaluation's progress logged."""
    logger = get_run_logger()
    with progress_logged_to(logger):
        run = platform.train(protocol, snapshot_id, overrides, refit=True)
    logger.info(
        "NeuMF %s = %.4f under protocol %s on snapshot %s (its split's fit); registering the "
        "model fitted on %s rows",
        run.primary_metric,
        run.primary_value,
        protocol,
        run.snapshot_id,
        run.registered_fit.train_rows,
    )
    return run


@task(name="register-and-promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register(platform: Platform, run: TrainedModel, challenger: bool = False) -> dict[str, Any]:
    registry = platform.model_registry()
    with progress_logged_to(get_run_logger()):  # the champion re-scored on the same data
        outcome = register_and_promote(
            run,
            registry,
            platform.bus,
            min_comparable_rows=platform.pipeline_config.promotion.min_comparable_rows,
            as_challenger=challenger,
        )
    get_run_logger().info("version %s: %s", outcome.version, outcome.decision.reason)
    decision = outcome.decision
    return {
        "run_id": outcome.run_id,
        "version": outcome.version,
        "promoted": decision.promote and not challenger,
        "challenger": challenger and registry.is_challenger(outcome.version),
        "reason": decision.reason,
        "previous_champion": outcome.previous_champion,
        "comparison": {
            "candidate": decision.candidate,
            "baseline": decision.baseline,
            "candidate_same_data": decision.candidate_same_data,
            "champion_same_data": decision.champion,
            **outcome.details,
        },
        "run_url": registry.run_url(outcome.run_id),
    }


@flow(name="train", flow_run_name="train-{dataset}-{protocol}", log_prints=True)
def train(
    dataset: str = "demo",
    protocol: str = "B",
    snapshot_id: str | None = None,
    max_epochs: int | None = None,
    overrides: list[str] | None = None,
    database_url: str | None = None,
    challenger: bool = False,
) -> dict[str, Any]:
    """Train NeuMF under protocol A (ratings, RMSE), B (top-10, nDCG@10) or C (leave-one-out,
    HR@10) on a feature snapshot, log it to MLflow, register it and move the champion alias
    only when it beats the popularity baseline under that protocol and the current champion
    re-scored on the same test split (whatever snapshot or protocol it was trained under).
    `challenger`: a model that passes that gate gets the `challenger` alias instead, for an
    online experiment to decide (`recolab experiment start`)."""
    changes = list(overrides or [])
    if max_epochs is not None:
        changes.append(f"max_epochs={max_epochs}")
    platform = platform_for(database_url, changes)
    try:
        run = fit_and_evaluate(platform, protocol, snapshot_id, changes)
        result = register(platform, run, challenger)
    finally:
        platform.close()
    rows = "\n".join(
        f"| {metric_name(name)} | {value:.4f} |"  # the name MLflow shows
        for name, value in sorted(run.metrics.items())
        if not name.startswith("tier_")
    )
    verdict = (
        "promoted to **champion**"
        if result["promoted"]
        else "given the **challenger** alias (for an online experiment)"
        if result["challenger"]
        else "kept as challenger"
    )
    comparison = "\n".join(f"| {name} | {value} |" for name, value in result["comparison"].items())
    create_markdown_artifact(
        markdown=(
            f"# NeuMF on `{dataset}` (protocol {protocol})\n\n"
            f"Model version **{result['version']}**: {verdict} — {result['reason']}.\n\n"
            f"MLflow run: {result['run_url']}\n\n"
            f"## Promotion\n\n| | |\n| --- | --- |\n{comparison}\n\n"
            f"## Metrics\n\n| metric | value |\n| --- | ---: |\n{rows}\n"
        ),
        key=f"train-{dataset}".lower().replace("_", "-"),
        description=f"training on {dataset}",
    )
    return {**result, "metrics": dict(run.metrics), "snapshot": run.snapshot_id}
