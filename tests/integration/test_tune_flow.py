"""The `tune` flow on a temp database, feature store and MLflow store, under a Prefect test
server: nested trial runs, the best configuration as a versioned artefact, and `train --tuned`
and the nightly pipeline (`use_tuned`) training with it."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from recolab.config import Settings
from tests.integration.workspace import demo_snapshot, temp_workspace

# Every process of the test reads these (RECOLAB_OVERRIDES): tiny, fast training.
FAST = ["batch_size=256", "val_negatives=20", "steps_per_execution=1", "patience=5"]
TINY_SEARCH = [
    "tune.max_epochs=2",
    "tune.pruner.kind=median",
    "tune.pruner.n_startup_trials=1",
    "tune.pruner.n_warmup_steps=0",
    "tune.space={lr: {type: float, low: 0.001, high: 0.05, log: true}, "
    "gmf_dim: {type: categorical, choices: [8, 16]}, "
    "mlp_layers: {type: categorical, choices: [[16, 8], [8]]}}",
]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A demo snapshot in a temp data folder; the environment points every process at it."""
    temp_workspace(tmp_path, monkeypatch, FAST)
    return demo_snapshot(tmp_path, "demo", n_users=120, n_movies=150, n_ratings=6000, seed=5)[0]


def client(settings: Settings) -> mlflow.MlflowClient:
    uri = settings.resolved_tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def training_params(settings: Settings) -> list[dict[str, str]]:
    mlf = client(settings)
    experiment = mlf.get_experiment_by_name("recolab-demo")
    assert experiment is not None
    runs = mlf.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [dict(r.data.params) for r in runs]


def test_tune_records_trials_and_training_applies_the_best(settings: Settings) -> None:
    from flows.tune import tune
    from recolab.cli import app

    result = tune(dataset="demo", protocol="B", n_trials=3, overrides=TINY_SEARCH)
    mlf = client(settings)
    experiment = mlf.get_experiment_by_name("recolab-demo-tuning")
    assert experiment is not None
    runs = mlf.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("recolab.tuning") == "search"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_id == result["run_id"] and parent.info.status == "FINISHED"
    assert len(trials) == 3

    # every trial: its settings, its inner validation metric per epoch, final value, state
    complete = []
    for run in trials:
        assert {"lr", "gmf_dim", "mlp_layers"} <= set(run.data.params)
        history = mlf.get_metric_history(run.info.run_id, "val/ndcg_at_10")
        assert [m.step for m in history] == list(range(len(history))) and 1 <= len(history) <= 2
        state = run.data.tags["trial_state"]
        assert run.data.metrics["pruned"] == float(state == "PRUNED")
        assert run.info.status == ("KILLED" if state == "PRUNED" else "FINISHED")
        if state == "COMPLETE":
            complete.append(run)
    assert len(complete) == result["n_complete"] >= 1
    best = max(complete, key=lambda r: r.data.metrics["objective"])
    assert result["best_value"] == pytest.approx(best.data.metrics["objective"])
    assert parent.data.metrics["best/val/ndcg_at_10"] == pytest.approx(result["best_value"])

    # the best configuration: a versioned artefact of the parent run, pointed at by the dataset
    path = mlf.download_artifacts(parent.info.run_id, "tuning/best_config.yaml")
    saved = yaml.safe_load(Path(path).read_text())
    assert saved["version"] == result["version"] == "1"
    assert saved["overrides"] == result["overrides"]
    assert saved["params"]["gmf_dim"] == int(best.data.params["gmf_dim"])
    assert experiment.tags["recolab.tuned.B"] == parent.info.run_id

    # `recolab train --tuned` trains with it ...
    done = CliRunner().invoke(app, ["train", "--tuned", "--protocol", "B"])
    assert done.exit_code == 0, done.output
    params = training_params(settings)[-1]
    expected = saved["params"]
    assert params["gmf_dim"] == str(expected["gmf_dim"])
    assert float(params["lr"]) == pytest.approx(expected["lr"])
    assert json.loads(params["mlp_layers"]) == expected["mlp_layers"]
    assert params["max_epochs"] == str(saved["epochs"])

    # ... and so does the nightly retrain (pipeline, use_tuned), the user's overrides on top
    from flows.pipeline import pipeline

    pipeline(dataset="demo", skip_ingest=True, use_tuned=True, overrides=["trainer.lr=0.002"])
    nightly = training_params(settings)[-1]
    assert nightly["gmf_dim"] == str(expected["gmf_dim"])
    assert float(nightly["lr"]) == pytest.approx(0.002)


def test_train_tuned_without_a_tuning_is_a_clear_error(settings: Settings) -> None:
    from recolab.cli import app

    done = CliRunner().invoke(app, ["train", "--tuned", "--protocol", "C"])
    assert done.exit_code == 1
    assert "no tuned configuration for dataset 'demo' under protocol C" in done.output
    assert "recolab tune" in done.output


def test_a_bad_search_space_fails_before_any_trial(settings: Settings) -> None:
    from recolab.cli import app

    done = CliRunner().invoke(app, ["tune", "--set", "tune.space.lr={type: float, low: 1}"])
    assert done.exit_code == 1
    assert "tune.space.lr: high must be a float" in done.output
    mlf = client(settings)
    assert mlf.get_experiment_by_name("recolab-demo-tuning") is None
