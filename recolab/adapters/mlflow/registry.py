"""The MLflow model registry: register a trained NeuMF, read and move the `champion` alias,
and the training use case's `ModelRegistry` port on top of them.

These functions only read and write MLflow; whether a model deserves the `champion` alias is
decided in the domain (`recolab.domain.promotion`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
import torch
from mlflow.entities import RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from recolab.adapters.mlflow import model_format as fmt
from recolab.adapters.mlflow import tracking as mlf
from recolab.application.training import ChampionComparison
from recolab.domain.promotion import PromotionDecision

if TYPE_CHECKING:
    from recolab.ml.fitting import FitResult

CHAMPION_ALIAS = "champion"
# Model version tags.
TAG_CHALLENGER = "challenger"
COMPARISON_PREFIX = "promotion."
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
# Progress lines of a registration: a flow forwards this logger's parent, `recolab.progress`,
# to its run logs (`bootstrap.progress_logged_to`).
progress = logging.getLogger("recolab.progress.registry")


def register_model(
    *,
    tracking_uri: str,
    run_id: str,
    fit_result: FitResult,
    model_name: str,
    movies: pd.DataFrame,
    input_example: pd.DataFrame | None = None,
) -> str:
    """Log `fit_result` as a pyfunc in run `run_id`, register it as `model_name`; the version.

    The model holds everything serving needs (weights + id maps in checkpoint.pt, movie
    metadata in movies.parquet) and loads on CPU without the training data. Requirements
    are pinned explicitly, so MLflow does not infer them by importing the model again.
    """
    example = fmt.example_input(fit_result) if input_example is None else input_example
    with tempfile.TemporaryDirectory() as tmp, mlf.use_tracking_uri(tracking_uri):
        checkpoint = Path(tmp) / "checkpoint.pt"
        torch.save(fit_result.checkpoint(), checkpoint)
        movies_file = Path(tmp) / "movies.parquet"
        movies.to_parquet(movies_file, index=False)
        # Models from code: the model file names our class instead of pickling an instance.
        code = Path(tmp) / "neumf_model.py"
        code.write_text(fmt.MODEL_CODE)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=fmt.MODEL_ARTIFACT,
                python_model=str(code),
                artifacts={fmt.CHECKPOINT: str(checkpoint), fmt.MOVIES: str(movies_file)},
                signature=fmt.SIGNATURE,
                input_example=example,
                pip_requirements=fmt.requirements(),
                registered_model_name=model_name,
                metadata={"mode": fit_result.config.mode, "requires": "recolab"},
            )
    if info.registered_model_version is None:
        raise RuntimeError(f"MLflow did not register {model_name}")
    return str(info.registered_model_version)


# -- promotion: reads and writes only; the rule is recolab.domain.promotion ----------------


def champion_version(client: mlflow.MlflowClient, model_name: str) -> ModelVersion | None:
    """The model version holding the `champion` alias, or None when none does."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise


def champion_training_rows(
    client: mlflow.MlflowClient, version: ModelVersion, features_root: Path
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The (user_id, movie_id) pairs the champion was trained on, from its run's snapshot,
    protocol and `model.fitted_on` tags (a run without the last, from before refits, was
    fitted on its protocol's split) and that snapshot under `features_root`; None (with why)
    when they cannot be known. Also what the champion was measured on, for the record."""
    from recolab.ml.features import FeaturesError, open_snapshot
    from recolab.ml.rescoring import FITTED_ON_SPLIT, training_rows

    tags = client.get_run(version.run_id).data.tags if version.run_id else {}
    snapshot, protocol = tags.get(mlf.TAG_SNAPSHOT), tags.get(mlf.TAG_PROTOCOL)
    fitted_on = tags.get(mlf.TAG_FITTED_ON, FITTED_ON_SPLIT)
    about: dict[str, Any] = {
        "champion_snapshot": snapshot,
        "champion_protocol": protocol,
        "champion_fitted_on": fitted_on,
    }
    if not snapshot or not protocol:
        return None, {**about, "champion_training_rows": "unknown: its run has no tags"}
    try:
        rows = training_rows(open_snapshot(features_root, snapshot), protocol, fitted_on)
    except (FeaturesError, KeyError, ValueError) as exc:
        return None, {**about, "champion_training_rows": f"unknown: {exc}"}
    return rows, {**about, "champion_training_rows": len(rows)}


def set_champion(client: mlflow.MlflowClient, model_name: str, version: str) -> None:
    """Move the `champion` alias to `version` (serving follows it)."""
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)


def tag_challenger(client: mlflow.MlflowClient, model_name: str, version: str, reason: str) -> None:
    """Mark a version that did not replace the champion, with why."""
    client.set_model_version_tag(model_name, version, TAG_CHALLENGER, reason[: mlf.MAX_VALUE])


def record_comparison(
    client: mlflow.MlflowClient, model_name: str, version: str, details: Mapping[str, Any]
) -> None:
    """Keep the promotion comparison on the model version and on its run (tags + JSON)."""
    tags = {
        f"{COMPARISON_PREFIX}{mlf.metric_key(k)}": str(v)[: mlf.MAX_VALUE]
        for k, v in details.items()
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    run_id = client.get_model_version(model_name, version).run_id
    if run_id:
        mlf.log_batched(client, run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        payload = json.loads(json.dumps(dict(details), default=str))
        client.log_dict(run_id, payload, "promotion/comparison.json")


def mlflow_champion_version(
    client: Any, alias: str = CHAMPION_ALIAS
) -> Callable[[str], str | None]:
    """Resolve `alias` with an `mlflow.MlflowClient`; None when the model has no such alias."""

    def resolve(name: str) -> str | None:
        try:
            return str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND:
                return None
            raise

    return resolve


def fitted_and_measured(run: Any) -> dict[str, Any]:
    """What the registered model of `run` (a `TrainingRun`) was fitted on, and what its
    metrics were measured on: the keys are MLflow params and tags."""
    from recolab.ml.rescoring import FITTED_ON_ALL, FITTED_ON_SPLIT

    split, model = run.fit_result, run.registered_fit
    measured = (
        f"protocol {run.protocol_name} test split of snapshot {run.snapshot_id}, by the model "
        f"fitted on its training split ({split.train_rows} rows, {split.epochs_kept} epochs)"
    )
    members = model.config.ensemble if run.refitted is not None else 1
    if members > 1:
        measured += (
            f"; the registered model is the mean of that fit and {members - 1} refit(s) of its "
            "configuration on all ratings (trainer.ensemble)"
        )
    elif run.refitted is not None:
        measured += "; the registered model is that configuration refitted on all ratings"
    return {
        mlf.TAG_FITTED_ON: FITTED_ON_ALL if run.refitted is not None else FITTED_ON_SPLIT,
        "model.epochs": model.epochs_kept,
        "model.train_rows": model.train_rows,
        "model.ensemble": members,
        "split_fit.epochs": split.epochs_kept,
        "split_fit.train_rows": split.train_rows,
        mlf.TAG_MEASURED_ON: measured,
    }


class MlflowModelRegistry:
    def __init__(self, tracking_uri: str, model_name: str, artifact_root: Path) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_root = artifact_root
        self.client = mlf.mlflow_client(tracking_uri)

    def experiment_name(self, dataset: str) -> str:
        return f"recolab-{dataset}"

    def log_and_register(self, run: Any) -> tuple[str, str]:
        from recolab.ml.experiment import TrainingRun

        assert isinstance(run, TrainingRun)
        dataset = str(run.snapshot.manifest.get("dataset", "unknown"))
        experiment = mlf.ensure_experiment(
            self.tracking_uri, self.experiment_name(dataset), self.artifact_root
        )
        about = fitted_and_measured(run)
        report = {"neumf": run.summary, "baselines": run.baselines, "model": about}
        metrics = dict(run.metrics)
        start = time.perf_counter()
        progress.info(
            "register: logging the run to MLflow (%d metrics, %d epochs, artefacts)",
            len(metrics),
            len(run.fit_result.history),
        )
        if run.refitted is not None:
            metrics["refit_seconds"] = run.refitted.fit_seconds  # the refit's cost
        run_id = mlf.log_training_run(
            tracking_uri=self.tracking_uri,
            experiment_id=experiment,
            fit_result=run.fit_result,
            params={
                "protocol": run.protocol.name,
                "primary_metric": run.primary_metric,
                **{k: v for k, v in about.items() if k != mlf.TAG_MEASURED_ON},
            },
            metrics=metrics,
            history=run.fit_result.history,
            report=report,
            artefacts=run.artefacts,
            snapshot=run.snapshot,
            protocol=run.protocol.name,
            tags={
                mlf.TAG_FITTED_ON: str(about[mlf.TAG_FITTED_ON]),
                mlf.TAG_MEASURED_ON: str(about[mlf.TAG_MEASURED_ON]),
            },
            run_name=f"neumf-{run.protocol.mode}-{run.protocol.name}",
            registered=run.refitted,
        )
        logged = time.perf_counter()
        fit = run.registered_fit
        progress.info(
            "register: run %s logged in %.1f s; saving and registering the model (%s "
            "parameters, %s users x %s movies)",
            run_id,
            logged - start,
            f"{sum(p.numel() for p in fit.model.parameters()):,}",
            f"{len(fit.users.ids):,}",
            f"{len(fit.items.ids):,}",
        )
        version = register_model(
            tracking_uri=self.tracking_uri,
            run_id=run_id,
            fit_result=fit,
            model_name=self.model_name,
            movies=run.snapshot.movies,
        )
        progress.info(
            "register: version %s of %s in %.1f s (%.1f s in all)",
            version,
            self.model_name,
            time.perf_counter() - logged,
            time.perf_counter() - start,
        )
        return run_id, version

    def compare_with_champion(self, run: Any) -> ChampionComparison | None:
        """The champion (as served: loaded from the registry) and `run`'s model, both
        re-scored on `run`'s test split, leaving out the rows the champion was trained on
        when its snapshot is still in the feature store (`recolab.ml.rescoring`).

        `run`'s model here is its fit on the protocol's training split, whose test figures
        the run reports, even when a refit on all ratings is what was registered: the refit
        has seen those test rows."""
        from recolab.ml.experiment import TrainingRun
        from recolab.ml.rescoring import compare_on_split
        from recolab.ml.scorer import NeuMFScorer

        assert isinstance(run, TrainingRun)
        version = champion_version(self.client, self.model_name)
        if version is None:
            return None
        number = str(version.version)
        progress.info("register: loading champion version %s to re-score it", number)
        champion = fmt.load_scorer(f"models:/{self.model_name}/{number}", self.tracking_uri, number)
        trained_on, about = champion_training_rows(self.client, version, run.snapshot.path.parent)
        same = compare_on_split(
            NeuMFScorer.from_fit_result(run.fit_result),
            champion,
            run.snapshot,
            run.protocol_name,
            champion_trained_on=trained_on,
            max_pairs=run.config.eval_max_pairs,
        )
        return ChampionComparison(
            number,
            same.candidate,
            same.champion,
            {**same.rows, **about},
            rows=int(same.rows["test_rows_compared"]),
        )

    def promote(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None:
        set_champion(self.client, self.model_name, version)
        record_comparison(self.client, self.model_name, version, {**asdict(decision), **details})

    def keep_as_challenger(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None:
        tag_challenger(self.client, self.model_name, version, decision.reason)
        record_comparison(self.client, self.model_name, version, {**asdict(decision), **details})

    def make_challenger(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None:
        """The `challenger` alias on `version`, for an online experiment to try it."""
        from recolab.adapters.mlflow.experiments import CHALLENGER_ALIAS

        self.client.set_registered_model_alias(self.model_name, CHALLENGER_ALIAS, version)
        tag_challenger(self.client, self.model_name, version, decision.reason)
        record_comparison(self.client, self.model_name, version, {**asdict(decision), **details})

    def is_challenger(self, version: str) -> bool:
        """Whether `version` holds the `challenger` alias."""
        from recolab.adapters.mlflow.experiments import read_state

        return read_state(self.client, self.model_name).challenger_version == str(version)

    def run_url(self, run_id: str) -> str:
        run = self.client.get_run(run_id)
        base = (
            self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        )
        return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
