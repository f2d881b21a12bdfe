"""The Prefect deployments `recolab deploy` serves: names, parameters, the nightly schedule,
the hourly drift monitor and the pipeline's retrain trigger."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows.deploy import (
    MONITOR_SLUG,
    NIGHTLY_SLUG,
    RETUNE_SLUG,
    build_deployments,
    deployments_config,
)
from recolab.cli import app
from recolab.config import PROJECT_ROOT, ConfigError, Settings


def settings(**changes: object) -> Settings:
    return Settings().model_copy(update={"nightly_retrain": None, "env": "dev", **changes})


def by_flow(**kwargs: Any) -> dict[str, Any]:
    return {str(d.flow_name): d for d in build_deployments(**kwargs)}


def test_every_flow_is_a_deployment_with_the_configured_defaults() -> None:
    deployments = by_flow(settings=settings())
    assert sorted(deployments) == [
        "features",
        "ingest",
        "monitor",
        "online-report",
        "pipeline",
        "train",
        "tune",
    ]
    defaults: dict[str, Any] = {
        str(k): v for k, v in deployments_config(settings()).parameters.items()
    }
    for name, deployment in deployments.items():
        assert deployment.name == "recolab"
        module = name.replace("-", "_")
        assert deployment.entrypoint == f"flows.{module}.{module}"
        assert deployment.parameters == defaults.get(name, {})
        assert "recolab" in deployment.tags
    # typed parameters: the UI renders a form and the API validates what it is sent
    schema = deployments["pipeline"]._parameter_openapi_schema
    assert {"dataset", "protocol", "max_epochs", "skip_ingest"} <= set(schema.properties)


def nightly(**kwargs: Any) -> tuple[bool, str, dict[str, object]]:
    pipeline = by_flow(**kwargs)["pipeline"]
    (schedule,) = pipeline.schedules
    assert schedule.slug == NIGHTLY_SLUG
    return schedule.active, schedule.schedule.cron, schedule.parameters


def test_nightly_retrain_is_off_in_dev_and_on_in_prod() -> None:
    active, cron, parameters = nightly(settings=settings())
    assert not active
    assert (
        cron
        == yaml.safe_load((PROJECT_ROOT / "configs/deployments.yaml").read_text())[
            "nightly_retrain"
        ]["cron"]
    )
    assert parameters == {"skip_ingest": True, "use_tuned": True}
    assert nightly(settings=settings(env="prod"))[0]
    for name in ("ingest", "features", "train", "online-report"):
        assert not by_flow(settings=settings())[name].schedules
        assert not by_flow(settings=settings())[name].triggers


def test_settings_are_retuned_weekly_on_a_schedule_of_their_own() -> None:
    deployments = by_flow(settings=settings())
    (schedule,) = deployments["tune"].schedules
    assert schedule.slug == RETUNE_SLUG
    shipped = yaml.safe_load((PROJECT_ROOT / "configs/deployments.yaml").read_text())["retune"]
    assert schedule.schedule.cron == shipped["cron"] and len(shipped["cron"].split()) == 5
    assert shipped["cron"].split()[2:] == ["*", "*", "0"]  # once a week
    assert [s.slug for s in deployments["pipeline"].schedules] == [NIGHTLY_SLUG]
    assert not schedule.active
    assert by_flow(settings=settings(env="prod"))["tune"].schedules[0].active
    off = by_flow(settings=settings(env="prod"), overrides=["deployments.retune.enabled=false"])
    assert not off["tune"].schedules[0].active and off["pipeline"].schedules[0].active
    with pytest.raises(ConfigError, match=r"deployments\.retune\.parameters"):
        build_deployments(settings=settings(), overrides=["deployments.retune.parameters={x: 1}"])


def test_the_setting_and_the_flag_turn_the_schedule_on_or_off() -> None:
    assert nightly(settings=settings(nightly_retrain=True))[0]
    assert not nightly(settings=settings(env="prod", nightly_retrain=False))[0]
    assert nightly(settings=settings(), nightly=True)[0]
    assert not nightly(settings=settings(nightly_retrain=True), nightly=False)[0]
    on = ["deployments.nightly_retrain.enabled=true", "deployments.nightly_retrain.cron=30 1 * * *"]
    assert nightly(settings=settings(), overrides=on)[:2] == (True, "30 1 * * *")


def test_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOLAB_NIGHTLY_RETRAIN", "true")
    assert Settings().nightly_retrain is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("deployments.nightly_retrain.cron=every night", "five fields"),
        ("deployments.nightly_retrain.cron=99 3 * * *", "nightly_retrain"),
        ("deployments.nightly_retrain.flow=serve", "flow"),
        ("deployments.nightly_retrain.parameters={epochs: 3}", "epochs"),
        ("deployments.limit=0", "limit"),
    ],
)
def test_bad_deployment_config_is_a_clear_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_deployments(settings=settings(), overrides=[override])


def test_deploy_needs_a_prefect_server(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, ["deploy"])
    assert result.exit_code == 2
    assert "PREFECT_API_URL" in result.output


def test_the_drift_monitor_runs_hourly_under_the_nightly_rule() -> None:
    (schedule,) = by_flow(settings=settings())["monitor"].schedules
    shipped = yaml.safe_load((PROJECT_ROOT / "configs/deployments.yaml").read_text())["monitor"]
    assert schedule.slug == MONITOR_SLUG
    assert schedule.schedule.cron == shipped["cron"] == "0 * * * *"
    assert not schedule.active
    assert by_flow(settings=settings(env="prod"))["monitor"].schedules[0].active
    assert by_flow(settings=settings(), nightly=True)["monitor"].schedules[0].active
    off = by_flow(settings=settings(env="prod"), overrides=["deployments.monitor.enabled=false"])
    assert not off["monitor"].schedules[0].active and off["pipeline"].schedules[0].active
    schema = by_flow(settings=settings())["monitor"]._parameter_openapi_schema
    assert {"database_url", "overrides", "dry_run"} <= set(schema.properties)


def test_the_pipeline_retrains_on_the_monitors_event_with_the_tuned_parameters() -> None:
    from flows.monitor import RETRAIN_EVENT

    deployments = by_flow(settings=settings(model_name="my-model"))
    (trigger,) = deployments["pipeline"].triggers
    assert trigger.expect == {RETRAIN_EVENT} == {"recolab.retrain.requested"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "recolab.model.my-model"}
    assert trigger.enabled and trigger.posture == "Reactive" and trigger.threshold == 1
    # configs/monitor.yaml's parameters; the dataset is the champion's, from the event
    assert trigger.parameters == {
        "dataset": "{{ event.payload.dataset }}",
        "skip_ingest": True,
        "use_tuned": True,
    }
    assert all(not d.triggers for name, d in deployments.items() if name != "pipeline")
    named = by_flow(settings=settings(), overrides=["monitor.parameters.dataset=ml-1m"])
    assert named["pipeline"].triggers[0].parameters == {
        "dataset": "ml-1m",
        "skip_ingest": True,
        "use_tuned": True,
    }
    # the automation Prefect creates from it runs this deployment with those parameters
    deployment_id = uuid.uuid4()
    trigger.set_deployment_id(deployment_id)
    (action,) = trigger.as_automation().actions
    assert action.type == "run-deployment" and action.deployment_id == deployment_id
    assert action.parameters == trigger.parameters
    with pytest.raises(ConfigError, match=r"monitor\.parameters.*epochs"):
        build_deployments(settings=settings(), overrides=["monitor.parameters={epochs: 3}"])
    with pytest.raises(ConfigError, match=r"monitor\.deployment"):
        build_deployments(settings=settings(), overrides=["monitor.deployment=serve/recolab"])


def test_prefect_yaml_declares_the_monitor_and_the_retrain_trigger() -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    shipped = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]
    by_entry = {d["entrypoint"]: d for d in shipped}
    (monitor_schedule,) = by_entry["flows/monitor.py:monitor"]["schedules"]
    assert monitor_schedule["cron"] == "0 * * * *" and monitor_schedule["slug"] == MONITOR_SLUG
    (raw,) = by_entry["flows/pipeline.py:pipeline"]["triggers"]
    trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(raw)
    assert trigger.expect == {"recolab.retrain.requested"}
    assert trigger.parameters == {
        "dataset": "{{ event.payload.dataset }}",
        "skip_ingest": True,
        "use_tuned": True,
    }
