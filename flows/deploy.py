"""Serve every flow as a Prefect deployment (`recolab deploy`), with the nightly retrain.

One long-running process registers `ingest/recolab`, `features/recolab`, `train/recolab`
and `pipeline/recolab` with the Prefect server at `PREFECT_API_URL`, then polls for their
runs and executes them in subprocesses: trigger them with parameters from the UI, with
`prefect deployment run pipeline/recolab -p max_epochs=3`, or through the API
(`run_deployment`). Names, default parameters and the nightly cron come from
configs/deployments.yaml. For a work pool instead of a serving process, see prefect.yaml.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.features import features
from flows.ingest import ingest
from flows.pipeline import pipeline
from flows.train import train
from recolab.bootstrap import environment_settings
from recolab.config import ConfigError, DeploymentsConfig, Settings, load_section

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

FLOWS: dict[str, Any] = {
    "ingest": ingest,
    "features": features,
    "train": train,
    "pipeline": pipeline,
}
NIGHTLY_SLUG = "nightly-retrain"


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
    """One deployment per flow; the nightly retrain cron on the configured one.

    The schedule is always attached, so the UI shows it; it is active only when enabled
    (`nightly`, else RECOLAB_NIGHTLY_RETRAIN, else the config file, else RECOLAB_ENV=prod).
    """
    settings = settings or environment_settings()
    config = deployments_config(settings, overrides)
    schedule = config.nightly_retrain
    active = schedule.active(settings) if nightly is None else nightly
    unknown = set(schedule.parameters) - set(_parameter_names(FLOWS[schedule.flow]))
    if unknown:
        raise ConfigError(
            f"deployments.nightly_retrain.parameters: {sorted(unknown)} are not parameters "
            f"of the {schedule.flow} flow"
        )
    built = []
    for name, flow in FLOWS.items():
        schedules = None
        if name == schedule.flow:
            try:
                cron = Cron(
                    schedule.cron,
                    timezone=schedule.timezone,
                    active=active,
                    parameters=schedule.parameters,
                    slug=NIGHTLY_SLUG,
                )
            except ValueError as exc:
                raise ConfigError(f"deployments.nightly_retrain: {exc}") from None
            schedules = [cron]
        built.append(
            flow.to_deployment(
                name=config.name,
                tags=list(config.tags),
                parameters=dict(config.parameters.get(name, {})),  # type: ignore[call-overload]
                schedules=schedules,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return built


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
