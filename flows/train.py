"""Prefect flow `train`: fit + evaluate NeuMF on a snapshot, register, promote if better."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import platform_for
from recolab.application.training import TrainedModel, register_and_promote
from recolab.bootstrap import Platform


@task(name="fit-and-evaluate", cache_policy=NO_CACHE)
def fit_and_evaluate(
    platform: Platform, protocol: str, snapshot_id: str | None, overrides: list[str]
) -> TrainedModel:
    run = platform.train(protocol, snapshot_id, overrides)
    get_run_logger().info(
        "NeuMF %s = %.4f under protocol %s on snapshot %s",
        run.primary_metric,
        run.primary_value,
        protocol,
        run.snapshot_id,
    )
    return run


@task(name="register-and-promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register(platform: Platform, run: TrainedModel) -> dict[str, Any]:
    registry = platform.model_registry()
    outcome = register_and_promote(run, registry, platform.bus)
    get_run_logger().info("version %s: %s", outcome.version, outcome.decision.reason)
    return {
        "run_id": outcome.run_id,
        "version": outcome.version,
        "promoted": outcome.decision.promote,
        "reason": outcome.decision.reason,
        "previous_champion": outcome.previous_champion,
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
) -> dict[str, Any]:
    """Train NeuMF under protocol A (ratings, RMSE), B (top-10, nDCG@10) or C (leave-one-out,
    HR@10) on a feature snapshot, log it to MLflow, register it and move the champion alias
    only when it beats the current champion under the same protocol and snapshot."""
    changes = list(overrides or [])
    if max_epochs is not None:
        changes.append(f"max_epochs={max_epochs}")
    platform = platform_for(database_url, changes)
    try:
        run = fit_and_evaluate(platform, protocol, snapshot_id, changes)
        result = register(platform, run)
    finally:
        platform.close()
    rows = "\n".join(
        f"| {name} | {value:.4f} |"
        for name, value in sorted(run.metrics.items())
        if not name.startswith("tier_")
    )
    verdict = "promoted to **champion**" if result["promoted"] else "kept as challenger"
    create_markdown_artifact(
        markdown=(
            f"# NeuMF on `{dataset}` (protocol {protocol})\n\n"
            f"Model version **{result['version']}**: {verdict} — {result['reason']}.\n\n"
            f"MLflow run: {result['run_url']}\n\n| metric | value |\n| --- | ---: |\n{rows}\n"
        ),
        key=f"train-{dataset}".lower().replace("_", "-"),
        description=f"training on {dataset}",
    )
    return {**result, "metrics": dict(run.metrics), "snapshot": run.snapshot_id}
