"""Serve every flow as a Prefect deployment (`recolab deploy`), with the nightly retrain.

One long-running process registers `ingest/recolab`, `features/recolab`, `train/recolab`,
`pipeline/recolab` and `tune/recolab` with the Prefect server at `PREFECT_API_URL`, then
polls for their runs and executes them in subprocesses: trigger them with parameters from the
UI, with `prefect deployment run pipeline/recolab -p max_epochs=3`, or through the API
(`run_deployment`). Names, default parameters, the nightly retrain's cron and the weekly
re-tune's (the `tune` flow, whose best settings the nightly retrain applies) come from
configs/deployments.yaml. For a work pool instead of a serving process, see prefect.yaml.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prefect.schedules import Cron, Schedule
from prefect.types.entrypoint import EntrypointType

from flows.features import features
from flows.ingest import ingest
from flows.pipeline import pipeline
from flows.train import train
from flows.tune import tune
from recolab.bootstrap import environment_settings
from recolab.config import (
    ConfigError,
    DeploymentsConfig,
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
}
NIGHTLY_SLUG = "nightly-retrain"
RETUNE_SLUG = "weekly-retune"


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
    """One deployment per flow; the nightly retrain and the weekly re-tune crons on theirs.

    The schedules are always attached, so the UI shows them; they are active only when
    enabled (`nightly`, else RECOLAB_NIGHTLY_RETRAIN, else the config file, else
    RECOLAB_ENV=prod): one switch for scheduled retraining, each schedule's `enabled` apart.
    """
    settings = settings or environment_settings()
    config = deployments_config(settings, overrides)
    crons: dict[str, list[Schedule]] = {}
    for key, slug in (("nightly_retrain", NIGHTLY_SLUG), ("retune", RETUNE_SLUG)):
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
    return [
        flow.to_deployment(
            name=config.name,
            tags=list(config.tags),
            parameters=dict(config.parameters.get(name, {})),  # type: ignore[call-overload]
            schedules=crons.get(name),
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for name, flow in FLOWS.items()
    ]


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
