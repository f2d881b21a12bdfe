"""The training use case's `ModelRegistry` port, on MLflow tracking + model registry."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from recolab.adapters import registry as mlf
from recolab.adapters.trainer import TrainingRun
from recolab.domain.promotion import PromotionDecision


class MlflowModelRegistry:
    def __init__(self, tracking_uri: str, model_name: str, artifact_root: Path) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_root = artifact_root
        self.client = mlf.mlflow_client(tracking_uri)

    def experiment_name(self, dataset: str) -> str:
        return f"recolab-{dataset}"

    def log_and_register(self, run: Any) -> tuple[str, str]:
        assert isinstance(run, TrainingRun)
        dataset = str(run.snapshot.manifest.get("dataset", "unknown"))
        experiment = mlf.ensure_experiment(
            self.tracking_uri, self.experiment_name(dataset), self.artifact_root
        )
        report = {"neumf": run.summary, "baselines": run.baselines}
        run_id = mlf.log_training_run(
            tracking_uri=self.tracking_uri,
            experiment_id=experiment,
            fit_result=run.fit_result,
            params={"protocol": run.protocol.name, "primary_metric": run.primary_metric},
            metrics=run.metrics,
            history=run.fit_result.history,
            report=report,
            artefacts=run.artefacts,
            snapshot=run.snapshot,
            protocol=run.protocol.name,
            run_name=f"neumf-{run.protocol.mode}-{run.protocol.name}",
        )
        version = mlf.register_model(
            tracking_uri=self.tracking_uri,
            run_id=run_id,
            fit_result=run.fit_result,
            model_name=self.model_name,
            movies=run.snapshot.movies,
        )
        return run_id, version

    def comparable_champion(
        self, metric: str, protocol: str, snapshot_id: str
    ) -> tuple[str, float] | None:
        return mlf.champion_metric(self.client, self.model_name, metric, protocol, snapshot_id)

    def promote(self, version: str, decision: PromotionDecision) -> None:
        mlf.set_champion(self.client, self.model_name, version)
        mlf.record_comparison(self.client, self.model_name, version, asdict(decision))

    def keep_as_challenger(self, version: str, decision: PromotionDecision) -> None:
        mlf.tag_challenger(self.client, self.model_name, version, decision.reason)
        mlf.record_comparison(self.client, self.model_name, version, asdict(decision))

    def run_url(self, run_id: str) -> str:
        run = self.client.get_run(run_id)
        base = (
            self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        )
        return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
