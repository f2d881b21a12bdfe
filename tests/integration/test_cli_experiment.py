"""`recolab experiment start|stop|status` on a temporary MLflow store: bad input is one line
and exit status 2; a started experiment is what the registry holds; a new share keeps the
experiment's name (users keep their variant); stop ends it, and can drop the challenger."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from recolab.adapters.mlflow.experiments import read_state
from recolab.adapters.mlflow.registry import set_champion
from recolab.adapters.mlflow.tracking import mlflow_client
from recolab.cli_experiment import experiment_app

MODEL = "recolab-neumf"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> mlflow.MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("RECOLAB_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = mlflow_client(uri)
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=(tmp_path / "model").as_uri())
    return client


def run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(experiment_app, list(args))
    return done.exit_code, done.output


def refused(*args: str) -> str:
    code, output = run(*args)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_bad_input_is_one_line_and_exit_status_2(client: mlflow.MlflowClient) -> None:
    assert "has no champion" in refused("start", "--share", "0.1", "--version", "2")
    set_champion(client, MODEL, "1")
    assert "--share must be between 0 and 1, got 1.5" in refused("start", "--share", "1.5")
    assert "got -0.1" in refused("start", "--share", "-0.1", "--version", "2")
    assert "got nan" in refused("start", "--share", "nan", "--version", "2")
    assert "mode must be one of canary, shadow" in refused(
        "start", "--share", "0.1", "--mode", "blue", "--version", "2"
    )
    unknown = refused("start", "--share", "0.1", "--version", "9")
    assert "9" in unknown and "recolab-neumf" in unknown
    assert "version 1 is the champion" in refused("start", "--share", "0.1", "--version", "1")
    assert "no `challenger` alias: give --version" in refused("start", "--share", "0.1")
    assert "1 to 64 characters" in refused(
        "start", "--share", "0.1", "--version", "2", "--name", "x" * 65
    )
    assert read_state(client, MODEL).experiment is None  # nothing was started


def test_start_change_and_stop_an_experiment(client: mlflow.MlflowClient) -> None:
    set_champion(client, MODEL, "1")
    code, output = run("status")
    assert code == 0 and "experiment: none running" in output and "champion: 1" in output

    code, output = run("start", "--share", "0.2", "--version", "2")
    assert code == 0, output
    assert "experiment 'v2-vs-v1' (canary): 20% of users -> challenger version 2" in output
    state = read_state(client, MODEL)
    assert state.experiment is not None and state.challenger_version == "2"
    assert (state.experiment.name, state.experiment.share) == ("v2-vs-v1", 0.2)

    code, output = run("start", "--share", "0.5", "--mode", "shadow")  # same challenger
    assert code == 0, output
    state = read_state(client, MODEL)
    assert state.experiment is not None
    assert (state.experiment.name, state.experiment.mode, state.experiment.share) == (
        "v2-vs-v1",
        "shadow",
        0.5,
    )
    code, output = run("status")
    assert "experiment: v2-vs-v1 (shadow, share 0.5, started 20" in output
    assert "challenger: 2" in output

    code, output = run("stop")
    assert code == 0 and output.startswith("stopped"), output
    state = read_state(client, MODEL)
    assert state.experiment is None and state.challenger_version == "2"  # alias kept
    code, output = run("stop", "--drop-challenger")
    assert code == 0 and "no experiment was running" in output
    assert "`challenger` alias removed" in output
    assert read_state(client, MODEL).challenger_version is None
