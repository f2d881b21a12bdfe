"""Prefect flow `tune`: choose NeuMF settings for a dataset with Optuna, recorded in MLflow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import platform_for
from recolab.application.tuning import TuningOutcome
from recolab.bootstrap import Platform


@task(name="search-settings", cache_policy=NO_CACHE)
def search(
    platform: Platform,
    dataset: str | None,
    protocol: str | None,
    snapshot_id: str | None,
    n_trials: int | None,
    timeout_minutes: float | None,
) -> TuningOutcome:
    logger = get_run_logger()

    def progress(trial: Mapping[str, Any]) -> None:
        value = trial["value"]
        logger.info(
            "trial %s %s after %s epoch(s) in %.1fs: %s = %s; %s",
            trial["number"],
            str(trial["state"]).lower(),
            len(trial["history"]),
            trial["seconds"],
            trial["metric"],
            "n/a" if value is None else f"{value:.4f}",
            trial["params"],
        )

    outcome = platform.tune(
        protocol,
        snapshot_id,
        dataset=dataset,
        n_trials=n_trials,
        timeout_minutes=timeout_minutes,
        progress=progress,
    )
    best = outcome.best
    logger.info(
        "best %s = %.4f (trial %s of %s complete, %s pruned): version %s",
        best["metric"],
        best["best_value"],
        best["best_trial"],
        best["n_complete"],
        best["n_pruned"],
        outcome.version,
    )
    return outcome


def _run_name() -> str:
    from prefect.runtime import flow_run

    given = flow_run.parameters
    return f"tune-{given.get('dataset') or 'latest'}-{given.get('protocol') or 'configured'}"


@flow(name="tune", flow_run_name=_run_name, log_prints=True)
def tune(
    dataset: str | None = None,
    protocol: str | None = None,
    snapshot_id: str | None = None,
    n_trials: int | None = None,
    timeout_minutes: float | None = None,
    overrides: list[str] | None = None,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Search training settings with Optuna (configs/tune.yaml: space, pruner, budget) on a
    feature snapshot (the latest by default; `dataset`, when given, must be its dataset),
    seeing only the protocol's training split. Every trial is a nested MLflow run; the best
    configuration becomes the dataset's latest, which `train --tuned` and the nightly
    retrain apply. `n_trials` / `timeout_minutes` replace the file's budget."""
    platform = platform_for(database_url, overrides)
    try:
        outcome = search(platform, dataset, protocol, snapshot_id, n_trials, timeout_minutes)
    finally:
        platform.close()
    best = outcome.best
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in best["params"].items())
    create_markdown_artifact(
        markdown=(
            f"# Tuned settings, protocol {best['protocol']} (version {outcome.version})\n\n"
            f"Best inner-validation {best['metric']} **{best['best_value']:.4f}** (trial "
            f"{best['best_trial']}; {best['n_complete']} complete, {best['n_pruned']} pruned; "
            f"{best['epochs']} epochs). MLflow parent run `{outcome.run_id}`.\n\n"
            f"| setting | value |\n| --- | --- |\n{rows}\n"
        ),
        key=f"tune-{best['protocol']}".lower(),
        description="settings chosen by the tune flow",
    )
    return {
        "run_id": outcome.run_id,
        "version": outcome.version,
        "metric": best["metric"],
        "best_value": best["best_value"],
        "params": dict(best["params"]),
        "overrides": outcome.overrides,
        "n_complete": best["n_complete"],
        "n_pruned": best["n_pruned"],
    }


@task(name="tuned-settings", cache_policy=NO_CACHE)
def tuned_settings(
    dataset: str,
    protocol: str,
    database_url: str | None = None,
    overrides: list[str] | None = None,
) -> list[str]:
    """The dataset's latest tuned configuration under `protocol` as overrides; none (the
    shipped defaults, with a warning) when it was never tuned."""
    platform = platform_for(database_url, overrides)
    try:
        found = platform.tuned_overrides(dataset, protocol, required=False)
    finally:
        platform.close()
    logger = get_run_logger()
    if found:
        logger.info("training with the tuned settings of %s: %s", dataset, found)
    else:
        logger.warning(
            "no tuned settings for %s under protocol %s yet (run the tune flow): defaults",
            dataset,
            protocol,
        )
    return found
