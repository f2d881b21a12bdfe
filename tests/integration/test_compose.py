"""docker-compose.yml and the Dockerfile hang together with the project (no Docker needed).

Every service has an image or a build and, where it is a long-running server, a health
check; every RECOLAB_* variable it sets is a field of Settings; every file it (or the
Dockerfile) names exists; every command it runs is one this project or the image has.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from recolab.cli import app
from recolab.config import PROJECT_ROOT, Settings

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
EXPECTED = {"postgres", "redis", "mlflow", "prefect-server", "flows", "serving"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_every_service_has_an_image_or_build_and_a_healthcheck(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == EXPECTED
    for name, service in services(compose).items():
        assert "image" in service or "build" in service, name
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name}: no healthcheck"


def test_dependencies_wait_for_healthy_services(compose: dict[str, Any]) -> None:
    all_services = services(compose)
    for name, service in all_services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, name
    assert {"postgres", "mlflow", "prefect-server"} <= set(all_services["flows"]["depends_on"])
    assert {"postgres", "redis", "mlflow"} <= set(all_services["serving"]["depends_on"])


def test_recolab_variables_are_settings_fields(compose: dict[str, Any]) -> None:
    fields = {f"RECOLAB_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for name, service in services(compose).items():
        for var in environment(service):
            if var.startswith("RECOLAB_"):
                assert var in fields, f"{name}: {var} is not a Settings field"
                used.add(var)
    for var in re.findall(r"\$\{(RECOLAB_\w+)", COMPOSE.read_text()):
        assert var in fields, f"${{{var}}} is not a Settings field"
    # the app containers are wired to the real services by the names Settings reads
    for name in ("flows", "serving"):
        env = environment(services(compose)[name])
        assert {"RECOLAB_DATABASE_URL", "RECOLAB_REDIS_URL", "MLFLOW_TRACKING_URI"} <= set(env)
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert used >= {"RECOLAB_DATABASE_URL", "RECOLAB_REDIS_URL", "RECOLAB_NIGHTLY_RETRAIN"}


def test_named_files_exist(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        build = service.get("build")
        if build is not None:
            context = PROJECT_ROOT / (build if isinstance(build, str) else build["context"])
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (context / (dockerfile or "Dockerfile")).is_file(), name
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (PROJECT_ROOT / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in (compose.get("volumes") or {}), f"{name}: volume {source}"


def test_commands_are_this_projects(compose: dict[str, Any]) -> None:
    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    all_services = services(compose)
    for name, subcommand in (("flows", "deploy"), ("serving", "serve")):
        assert all_services[name]["command"][:2] == ["recolab", subcommand]
        assert subcommand in commands
    assert all_services["mlflow"]["command"][:2] == ["mlflow", "server"]
    assert all_services["prefect-server"]["command"][:3] == ["prefect", "server", "start"]


def test_dockerfile_copies_what_exists_and_runs_the_service() -> None:
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            for source in sources:
                assert (PROJECT_ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert "torch==2.13.0" in text and "-c constraints.txt" in text
    assert 'CMD ["recolab", "serve"' in text
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignored)


def test_postgres_init_creates_the_mlflow_and_prefect_databases(compose: dict[str, Any]) -> None:
    mounts = services(compose)["postgres"]["volumes"]
    (init,) = [m.split(":")[0] for m in mounts if "docker-entrypoint-initdb.d" in m]
    sql = (PROJECT_ROOT / init).read_text()
    for db in ("mlflow", "prefect"):
        assert f"CREATE DATABASE {db}" in sql
        assert any(f"/{db}" in part for part in _urls(compose)), db


def _urls(compose: dict[str, Any]) -> list[str]:
    found = []
    for service in services(compose).values():
        found += list(environment(service).values())
        command = service.get("command") or []
        found += command if isinstance(command, list) else [command]
    return found


def test_bentofile_and_prefect_yaml_name_real_entrypoints() -> None:
    prefect = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    entrypoints = {d["entrypoint"] for d in prefect["deployments"]}
    flows = ("ingest", "features", "train", "pipeline", "tune", "monitor")
    assert entrypoints == {f"flows/{n}.py:{n}" for n in flows} | {
        "flows/online_report.py:online_report"
    }
    for entry in entrypoints:
        path, func = entry.split(":")
        assert f"def {func}(" in Path(PROJECT_ROOT / path).read_text()
    bento = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    module, cls = bento["service"].split(":")
    assert f"class {cls}" in (PROJECT_ROOT / (module.replace(".", "/") + ".py")).read_text()
