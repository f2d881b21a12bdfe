"""MLflow records of a settings search: a parent run per search, a nested run per trial, the
best configuration as a versioned artefact, and a pointer to the latest one.

Layout, per dataset (experiment `recolab-<dataset>-tuning`):
- the parent run (tag `recolab.tuning=search`): the search's settings as params, the best
  value as metric `best/<metric>`, the best configuration as `tuning/best_config.yaml`;
- one nested run per trial (tag `mlflow.parentRunId`, `recolab.tuning=trial`): the trial's
  settings as params, the inner validation metric per epoch (steps), the final value as
  `objective`, `pruned` 0/1 and the tag `trial_state` (COMPLETE / PRUNED); pruned runs end
  KILLED. The MLflow UI compares them (parallel coordinates, metric vs. parameter);
- the experiment tags `recolab.tuned.<protocol>` (the parent run id of the latest best
  configuration) and `recolab.tuned.<protocol>.version` (1, 2, ...): what `train --tuned`
  and the nightly retrain read. A search that fails leaves the pointer where it was.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID

from recolab.adapters.mlflow import tracking as mlf

TAG_TUNING = "recolab.tuning"
BEST_CONFIG = "tuning/best_config.yaml"
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def experiment_name(dataset: str) -> str:
    return f"recolab-{dataset}-tuning"


def pointer_tag(protocol: str) -> str:
    return f"recolab.tuned.{protocol}"


class MlflowTuningLog:
    """The application's `TuningLog` and `TunedConfigs` ports on an MLflow tracking store."""

    def __init__(self, tracking_uri: str, artifact_root: Path) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.client = mlf.mlflow_client(tracking_uri)
        self._parent: str | None = None
        self._experiment: str | None = None
        self._protocol = ""

    # -- TuningLog
    def start(
        self, dataset: str, protocol: str, snapshot_id: str, settings: Mapping[str, Any]
    ) -> str:
        """Open the parent run of a search; its id."""
        self._experiment = mlf.ensure_experiment(
            self.tracking_uri, experiment_name(dataset), self.artifact_root
        )
        self._protocol = protocol
        commit = mlf.git_commit()
        tags = {
            TAG_TUNING: "search",
            mlf.TAG_DATASET: dataset,
            mlf.TAG_SNAPSHOT: snapshot_id,
            mlf.TAG_PROTOCOL: protocol,
            mlf.TAG_GIT_COMMIT: commit,
            MLFLOW_GIT_COMMIT: commit,
        }
        run = self.client.create_run(
            self._experiment, tags=tags, run_name=f"tune-{dataset}-{protocol}"
        )
        self._parent = str(run.info.run_id)
        params = mlf.flatten_params({k: v for k, v in settings.items() if k != "space"})
        params["space"] = json.dumps(settings.get("space", {}))[: mlf.MAX_VALUE]
        mlf.log_batched(self.client, self._parent, params=[Param(k, v) for k, v in params.items()])
        self.client.log_dict(self._parent, json.loads(json.dumps(settings)), "tuning/settings.yaml")
        return self._parent

    def log_trial(self, trial: Mapping[str, Any]) -> str:
        """One finished or pruned trial as a run nested under the search's parent run."""
        parent, experiment = self._open()
        state = str(trial["state"])
        tags = {
            MLFLOW_PARENT_RUN_ID: parent,
            TAG_TUNING: "trial",
            "trial_number": str(trial["number"]),
            "trial_state": state,
            mlf.TAG_PROTOCOL: self._protocol,
        }
        run = self.client.create_run(
            experiment, tags=tags, run_name=f"trial-{int(trial['number']):03d}"
        )
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        metrics = [Metric("pruned", float(state == "PRUNED"), now, 0)]
        metrics.append(Metric("seconds", float(trial["seconds"]), now, 0))
        if trial.get("value") is not None:
            metrics.append(Metric("objective", float(trial["value"]), now, 0))
        if trial.get("best_epoch") is not None:
            metrics.append(Metric("best_epoch", float(trial["best_epoch"]), now, 0))
        for position, row in enumerate(trial.get("history", ())):
            step = int(row.get("epoch", position))
            metrics.extend(
                Metric(mlf.metric_key(k), float(v), now, step)
                for k, v in row.items()
                if k != "epoch" and v is not None
            )
        params = mlf.flatten_params(dict(trial["params"]))
        mlf.log_batched(
            self.client,
            run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in params.items()],
        )
        self.client.set_terminated(run_id, "KILLED" if state == "PRUNED" else "FINISHED")
        return run_id

    def finish(self, best: Mapping[str, Any]) -> str:
        """Keep the best configuration on the parent run and point the dataset's latest at
        it; the new version number."""
        parent, experiment = self._open()
        version = self._next_version(experiment)
        record = json.loads(json.dumps({**best, "version": version, "run_id": parent}))
        self.client.log_dict(parent, record, BEST_CONFIG)
        now = int(time.time() * 1000)
        metric = mlf.metric_key(f"best/{best['metric']}")
        counts = [
            Metric(metric, float(best["best_value"]), now, 0),
            Metric("n_complete", float(best["n_complete"]), now, 0),
            Metric("n_pruned", float(best["n_pruned"]), now, 0),
        ]
        mlf.log_batched(
            self.client,
            parent,
            metrics=counts,
            tags=[RunTag("best_trial", str(best["best_trial"])), RunTag("version", version)],
        )
        self.client.set_experiment_tag(experiment, pointer_tag(self._protocol), parent)
        self.client.set_experiment_tag(
            experiment, f"{pointer_tag(self._protocol)}.version", version
        )
        self.client.set_terminated(parent, "FINISHED")
        return version

    def fail(self, reason: str) -> None:
        if self._parent is not None:
            self.client.set_tag(self._parent, "failure", reason[: mlf.MAX_VALUE])
            self.client.set_terminated(self._parent, "FAILED")

    def _open(self) -> tuple[str, str]:
        if self._parent is None or self._experiment is None:
            raise RuntimeError("start() the search first")
        return self._parent, self._experiment

    def _next_version(self, experiment: str) -> str:
        tags = self.client.get_experiment(experiment).tags
        current = tags.get(f"{pointer_tag(self._protocol)}.version", "0")
        return str(int(current) + 1 if current.isdigit() else 1)

    # -- TunedConfigs
    def latest(self, dataset: str, protocol: str) -> Mapping[str, Any] | None:
        """The latest best configuration for the dataset and protocol, or None."""
        found = self.client.get_experiment_by_name(experiment_name(dataset))
        if found is None or found.lifecycle_stage == "deleted":
            return None
        run_id = found.tags.get(pointer_tag(protocol))
        if not run_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, BEST_CONFIG, tmp)
            except MlflowException as exc:
                if exc.error_code in _NOT_FOUND:
                    return None
                raise
            data = yaml.safe_load(Path(path).read_text())
        return data if isinstance(data, dict) else None
