"""Prefect flow `monitor`: recent data against the champion's training snapshot; past a
threshold (configs/monitor.yaml), one retrain asked for with a Prefect event.

The event, `recolab.retrain.requested` on resource `recolab.model.<model name>`, carries the
reasons, the champion's version, snapshot and dataset; the `pipeline` deployment's trigger
(flows/deploy.py, prefect.yaml) runs it then with the last tuned settings, on what the
database holds. Event, automation and run all show in the Prefect UI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from flows.common import platform_for, retry_if_transient
from recolab.application.monitor import (
    Champion,
    DriftReport,
    MonitorOutcome,
    MonitorSources,
    RetrainRequest,
    check_drift,
)
from recolab.bootstrap import Platform
from recolab.config import MonitorConfig, load_section

RETRAIN_EVENT = "recolab.retrain.requested"


def model_resource(model_name: str) -> str:
    """The Prefect resource id of a registered model (the event's and the trigger's)."""
    return f"recolab.model.{model_name}"


class RetrainNotSent(RuntimeError):
    """Prefect did not take the retrain event (no API to send it to)."""


class PrefectRetrainEvent:
    """`RetrainTrigger`: emit `RETRAIN_EVENT`; the pipeline deployment's trigger runs it."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config

    def request_retrain(
        self, request: RetrainRequest, report: DriftReport, champion: Champion
    ) -> str:
        event = emit_event(
            RETRAIN_EVENT,
            resource={
                "prefect.resource.id": model_resource(champion.model_name),
                "prefect.resource.name": champion.model_name,
            },
            related=[
                {
                    "prefect.resource.id": (
                        f"recolab.model-version.{champion.model_name}.{champion.version}"
                    ),
                    "prefect.resource.role": "champion",
                    "prefect.resource.name": f"{champion.model_name} v{champion.version}",
                }
            ],
            payload={
                "reason": request.reason,
                "model_version": champion.version,
                "snapshot_id": request.snapshot_id,
                "dataset": champion.dataset,
                "new_ratings": request.new_ratings,
                "request_id": request.id,
                "deployment": self.config.deployment,
                "parameters": dict(self.config.parameters),
            },
        )
        if event is None:
            raise RetrainNotSent(f"Prefect did not take the {RETRAIN_EVENT} event (no API?)")
        return str(event.id)


def sources(platform: Platform) -> MonitorSources:
    """The monitor's collaborators on the platform's database, MLflow store, feature store."""
    return platform.monitor_sources()


@task(
    name="check-drift",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_if_transient,
)
def check(platform: Platform, dry_run: bool) -> MonitorOutcome:
    from prefect.runtime import flow_run

    config = load_section(
        MonitorConfig,
        "monitor",
        config_dir=platform.settings.config_dir,
        overrides=platform.overrides,
    )
    outcome = check_drift(
        sources(platform),
        config,
        PrefectRetrainEvent(config),
        now=datetime.now(UTC),
        dry_run=dry_run,
        requested_by=flow_run.id,
    )
    logger = get_run_logger()
    logger.info(outcome.message)
    if outcome.triggered:
        logger.info("retrain request %s sent as event %s", outcome.request, outcome.trigger_id)
    return outcome


@flow(name="monitor", log_prints=True)
def monitor(
    database_url: str | None = None,
    overrides: list[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Compare the ratings since the champion's training snapshot and the recent answers
    with that snapshot (rating and popularity PSI, unseen users and movies, fallbacks,
    cold starts, new ratings); past a threshold of configs/monitor.yaml, record one retrain
    request and emit `recolab.retrain.requested`, which runs the `pipeline` deployment.
    Never twice for one champion and snapshot. `dry_run`: report only."""
    platform = platform_for(database_url, overrides)
    try:
        outcome = check(platform, dry_run)
    finally:
        platform.close()
    create_markdown_artifact(
        markdown=report_markdown(outcome),
        key="drift-monitor",
        description="drift against the champion's training snapshot; the retrain decision",
    )
    return outcome.to_dict()


def report_markdown(outcome: MonitorOutcome) -> str:
    """The artefact: each figure against its threshold, then the decision."""
    result = outcome.to_dict()
    lines = [f"# Drift monitor: {_title(outcome)}", ""]
    if outcome.report is not None:
        report = outcome.report
        lines += [
            f"Champion version **{report.model_version}**, trained on snapshot "
            f"`{report.snapshot_id}` ({report.snapshot_ratings:,} ratings): "
            f"**{report.new_ratings:,}** ratings since (retrain at "
            f"{outcome.thresholds.new_ratings:,}); {report.answers:,} answers in the last "
            f"{outcome.recent_hours:g} hours.",
            "",
            "| figure | value | threshold | on | status |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for f in result["figures"]:
            value = "n/a" if f["value"] is None else f"{f['value']:.3f}"
            lines.append(
                f"| {f['name']} | {value} | {f['threshold']:.3f} | {f['observations']:,} "
                f"| {_status(f)} |"
            )
        lines.append("")
    lines.append(f"**Decision:** {outcome.message}")
    if outcome.triggered and outcome.request is not None:
        lines += [
            "",
            f"Retrain request {outcome.request.id} recorded; event `{RETRAIN_EVENT}` "
            f"`{outcome.trigger_id}` sent: the pipeline deployment's trigger runs it.",
        ]
    if outcome.dry_run and result["retrain"]:
        lines += ["", "Dry run: nothing recorded, no event sent."]
    return "\n".join(lines) + "\n"


def _status(figure: dict[str, Any]) -> str:
    if figure["value"] is None:
        return "no data"
    if not figure["judged"]:
        return "not judged (too few)"
    return "**over**" if figure["over"] else "within"


def _title(outcome: MonitorOutcome) -> str:
    decision = outcome.decision
    if outcome.report is None or decision is None:
        return "nothing to compare"
    if outcome.triggered:
        return "retrain requested"
    if decision.retrain:
        return "retrain due (dry run)"
    if decision.already_requested is not None:
        return "no retrain (already asked)"
    return "no retrain"
