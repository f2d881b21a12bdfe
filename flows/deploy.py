"""Serve every flow as a Prefect deployment (`recolab deploy`), with the nightly retrain.

One long-running process registers `ingest/recolab`, `features/recolab`, `train/recolab`,
`pipeline/recolab`, `tune/recolab`, `monitor/recolab` and `online-report/recolab` (no
schedule: run it when an experiment has had its traffic) with the Prefect server at
`PREFECT_API_URL`, then polls for their runs and executes them in subprocesses: trigger them
with parameters from the UI, with `prefect deployment run pipeline/recolab -p max_epochs=3`,
or through the API (`run_deployment`). Names, default parameters, the nightly retrain's cron,
the weekly re-tune's (the `tune` flow, whose best settings the nightly retrain applies) and
the hourly drift monitor's come from configs/deployments.yaml.

The pipeline deployment also carries an event trigger (an automation in the UI): when the
monitor emits `recolab.retrain.requested` for this model, it runs with configs/monitor.yaml's
`parameters` (by default on what the database holds, with the last tuned settings) and the
champion's dataset. For a work pool instead of a serving process, see prefect.yaml.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Schedule
from prefect.types.entrypoint import EntrypointType

from flows.features import features
from flows.ingest import ingest
from flows.monitor import RETRAIN_EVENT, model_resource, monitor
from flows.online_report import online_report
from flows.pipeline import pipeline
from flows.train import train
from flows.tune import tune
from recolab.bootstrap import environment_settings
from recolab.config import (
    ConfigError,
    DeploymentsConfig,
    MonitorConfig,
    ScheduleConfig,
    Settings,
    load_section,
)

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

FLOWS: dict[str, Any] = {
    "ingest": ingest,
    "features": features,
    "train": train,
    "pipeline": pipeline,
    "tune": tune,
    "monitor": monitor,
    "online-report": online_report,
}
NIGHTLY_SLUG = "nightly-retrain"
RETUNE_SLUG = "weekly-retune"
MONITOR_SLUG = "hourly-monitor"
SCHEDULES = (("nightly_retrain", NIGHTLY_SLUG), ("retune", RETUNE_SLUG), ("monitor", MONITOR_SLUG))
# The retrained run's dataset: the champion's (the event's payload), unless configs/monitor.yaml
# `parameters` names one. A Jinja template that Prefect renders from the triggering event.
EVENT_DATASET = "{{ event.payload.dataset }}"


def deployments_config(
    settings: Settings | None = None, overrides: Iterable[str] = ()
) -> DeploymentsConfig:
    """configs/deployments.yaml with `deployments.key=value` overrides applied."""
    settings = settings or environment_settings()
    return load_section(
        DeploymentsConfig, "deployments", config_dir=settings.config_dir, overrides=overrides
    )


def build_deployments(
    settings: Settings | None = None,
    overrides: Iterable[str] = (),
    nightly: bool | None = None,
) -> list[RunnerDeployment]:
    """One deployment per flow; the nightly retrain, the weekly re-tune and the hourly drift
    monitor crons on theirs; the retrain trigger on the deployment the monitor names.

    The schedules are always attached, so the UI shows them; they are active only when
    enabled (`nightly`, else RECOLAB_NIGHTLY_RETRAIN, else the config file, else
    RECOLAB_ENV=prod): one switch for scheduled retraining, each schedule's `enabled` apart.
    """
    settings = settings or environment_settings()
    config = deployments_config(settings, overrides)
    crons: dict[str, list[Schedule]] = {}
    for key, slug in SCHEDULES:
        schedule: ScheduleConfig = getattr(config, key)
        unknown = set(schedule.parameters) - set(_parameter_names(FLOWS[schedule.flow]))
        if unknown:
            raise ConfigError(
                f"deployments.{key}.parameters: {sorted(unknown)} are not parameters "
                f"of the {schedule.flow} flow"
            )
        try:
            cron = Cron(
                schedule.cron,
                timezone=schedule.timezone,
                active=schedule.active(settings) if nightly is None else nightly,
                parameters=schedule.parameters,
                slug=slug,
            )
        except ValueError as exc:
            raise ConfigError(f"deployments.{key}: {exc}") from None
        crons.setdefault(schedule.flow, []).append(cron)
    retrained, trigger = retrain_trigger(settings, overrides)
    return [
        flow.to_deployment(
            name=config.name,
            tags=list(config.tags),
            parameters=dict(config.parameters.get(name, {})),  # type: ignore[call-overload]
            schedules=crons.get(name),
            triggers=[trigger] if name == retrained else None,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for name, flow in FLOWS.items()
    ]


def retrain_trigger(
    settings: Settings, overrides: Iterable[str] = ()
) -> tuple[str, DeploymentEventTrigger]:
    """The flow whose deployment retrains (configs/monitor.yaml `deployment`, <flow>/<name>)
    and its trigger: on the monitor's `recolab.retrain.requested` event for this model, run
    with the monitor's `parameters` and the champion's dataset."""
    config = load_section(
        MonitorConfig, "monitor", config_dir=settings.config_dir, overrides=overrides
    )
    flow_name = config.deployment.partition("/")[0]
    if flow_name not in FLOWS:
        raise ConfigError(
            f"monitor.deployment = {config.deployment!r}: expected <flow>/<name> with flow "
            f"in {', '.join(FLOWS)}"
        )
    known = _parameter_names(FLOWS[flow_name])
    parameters = {**({"dataset": EVENT_DATASET} if "dataset" in known else {}), **config.parameters}
    unknown = set(parameters) - set(known)
    if unknown:
        raise ConfigError(
            f"monitor.parameters: {sorted(unknown)} are not parameters of the {flow_name} flow"
        )
    return flow_name, DeploymentEventTrigger(
        name=f"retrain {settings.model_name} on drift",
        description=(
            f"Runs {flow_name} when the monitor flow asks for a retrain of "
            f"{settings.model_name} (drift or new ratings past configs/monitor.yaml)."
        ),
        expect={RETRAIN_EVENT},
        match={"prefect.resource.id": model_resource(settings.model_name)},
        parameters=parameters,
    )


def serve_deployments(
    settings: Settings | None = None,
    overrides: Iterable[str] = (),
    nightly: bool | None = None,
    limit: int | None = None,
) -> None:
    """Register the deployments and run their flow runs until interrupted."""
    from prefect import serve

    settings = settings or environment_settings()
    config = deployments_config(settings, overrides)
    deployments = build_deployments(settings, overrides, nightly)
    serve(*deployments, limit=limit or config.limit)


def _parameter_names(flow: Any) -> list[str]:
    return list(flow.parameters.properties)
