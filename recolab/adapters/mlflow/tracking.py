"""MLflow tracking for NeuMF training runs: experiments, params, per-epoch metrics, artefacts,
the feature snapshot as the run's dataset.

Every function takes the tracking URI or a client explicitly: nothing here relies on
MLflow's process-wide defaults except `use_tracking_uri`, which sets and restores them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from recolab.ml.evaluation.metrics import metric_key as metric_key

if TYPE_CHECKING:
    from recolab.ml.features import FeatureSnapshot
    from recolab.ml.fitting import FitResult

# Run tags that make two runs comparable (same protocol on the same feature snapshot).
TAG_DATASET = "dataset"
TAG_SNAPSHOT = "snapshot"
TAG_PROTOCOL = "protocol"
TAG_GIT_COMMIT = "git_commit"
# What the registered model was fitted on (recolab.ml.rescoring.FITTED_ON_*), and what the
# run's metrics were measured on: they differ when the model was refitted on all ratings.
TAG_FITTED_ON = "model.fitted_on"
TAG_MEASURED_ON = "metrics.measured_on"

# MLflow 3 marks an experiment's kind with this tag; "custom_model_development" is the UI's
# "Machine learning" kind (training runs), as opposed to "genai_development" (traces).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_BATCH_METRICS = 1000  # MLflow's per-request limits for log_batch
_BATCH_PARAMS_TAGS = 100
MAX_VALUE = 6000


def mlflow_client(tracking_uri: str) -> mlflow.MlflowClient:
    """A client whose tracking and registry are both `tracking_uri`."""
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in ("http", "https", "databricks")


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path) -> str:
    """The id of experiment `name`, created (or restored) if needed, marked as a model
    training experiment (`EXPERIMENT_KIND_TAG`) unless it already names a kind.

    A local store (SQLite, file, database URL) gets an explicit artifact location
    `artifact_root/<name>`, else MLflow would write under the current directory; a
    tracking server chooses its own.
    """
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        _mark_training_kind(client, found)
        return str(found.experiment_id)
    location = None
    if not _is_server(tracking_uri):
        folder = re.sub(r"[^\w.\-]", "_", name)
        location = (Path(artifact_root) / folder).resolve().as_uri()
    try:
        return str(
            client.create_experiment(
                name,
                artifact_location=location,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_TRAINING},
            )
        )
    except MlflowException as exc:
        # Another process created it between our lookup and our create.
        again = client.get_experiment_by_name(name)
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or again is None:
            raise
        _mark_training_kind(client, again)
        return str(again.experiment_id)


def _mark_training_kind(client: mlflow.MlflowClient, experiment: Any) -> None:
    # An experiment created before this tag existed gets it; a kind someone chose is kept.
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING
        )


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as flat `a.b` params; sequences as JSON, values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
            continue
        text = json.dumps(list(value)) if isinstance(value, list | tuple) else str(value)
        out[metric_key(name)] = text[:MAX_VALUE]
    return out


def git_commit(cwd: Path | None = None) -> str:
    """The commit of the code being run, or "unknown" outside a git checkout."""
    from recolab.config import PROJECT_ROOT

    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def log_batched(
    client: mlflow.MlflowClient,
    run_id: str,
    *,
    metrics: Sequence[Metric] = (),
    params: Sequence[Param] = (),
    tags: Sequence[RunTag] = (),
) -> None:
    for chunk in _chunks(metrics, _BATCH_METRICS):
        client.log_batch(run_id, metrics=chunk)
    for chunk in _chunks(params, _BATCH_PARAMS_TAGS):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(tags, _BATCH_PARAMS_TAGS):
        client.log_batch(run_id, tags=chunk)


def _epoch_metrics(history: Sequence[Mapping[str, float]], now_ms: int) -> list[Metric]:
    out = []
    for position, row in enumerate(history):
        step = int(row.get("epoch", position))
        for key, value in row.items():
            if key != "epoch" and value is not None:
                out.append(Metric(metric_key(key), float(value), now_ms, step))
    return out


def _prefixed(history: Sequence[Mapping[str, float]], prefix: str) -> list[dict[str, float]]:
    return [{k if k == "epoch" else f"{prefix}{k}": v for k, v in row.items()} for row in history]


def _snapshot_input(snapshot: FeatureSnapshot) -> DatasetInput:
    """The feature snapshot as a dataset: its folder as source, its content hash as digest."""
    import pyarrow.parquet as pq
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    ratings = snapshot.path / "ratings.parquet"
    digest = str(snapshot.manifest.get("content_hash", snapshot.id))[:36]
    # MLflow warns about integer columns (a hint for model inputs) and about its file source
    # being registered twice; neither applies to a dataset record.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        schema = None
        if ratings.exists():
            empty = pq.read_schema(ratings).empty_table().to_pandas()
            schema = infer_signature(empty).inputs
        source = resolve_dataset_source(snapshot.path.resolve().as_uri())
    dataset = MetaDataset(  # type: ignore[abstract]  # concrete at runtime
        source=source, name=snapshot.id, digest=digest, schema=schema
    )
    return DatasetInput(
        dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")]
    )


def _id_maps(fit_result: FitResult, folder: Path) -> None:
    for name, index, column in (
        ("users", fit_result.users, "user_id"),
        ("items", fit_result.items, "movie_id"),
    ):
        frame = pd.DataFrame({"index": np.arange(len(index)), column: index.ids})
        frame.to_csv(folder / f"{name}.csv", index=False)


def log_training_run(
    *,
    tracking_uri: str,
    experiment_id: str,
    fit_result: FitResult,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    history: Sequence[Mapping[str, float]],
    report: Mapping[str, Any],
    artefacts: Mapping[str, Path],
    snapshot: FeatureSnapshot,
    protocol: str,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    registered: FitResult | None = None,
) -> str:
    """Record one training run and return its id.

    `fit_result` is the fit the metrics measure; `registered`, when given, is another fit of
    the model to register (a refit on all ratings): its id maps are the ones logged, its
    config goes to config/refit_config.yaml and its per-epoch metrics are `refit/<name>`.

    Params: the training config plus `params` (flattened). Metrics: `metrics` as final
    values and `history` rows as per-epoch steps, sent in batches. Artefacts: the report
    (evaluation/report.json), the id maps (id_maps/*.csv), the config (config/*.yaml), the
    snapshot manifest, and each `artefacts` entry: a file or folder logged under the run
    folder named by its key (e.g. {"plots": Path("curves.png")}). The snapshot is the run's
    training dataset input; tags name dataset, snapshot, protocol and git commit.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    client = mlflow_client(tracking_uri)
    commit = git_commit()
    run_tags = {
        **(tags or {}),
        TAG_DATASET: str(snapshot.manifest.get("dataset", "unknown")),
        TAG_SNAPSHOT: snapshot.id,
        TAG_PROTOCOL: protocol,
        TAG_GIT_COMMIT: commit,
        MLFLOW_GIT_COMMIT: commit,
    }
    run = client.create_run(experiment_id, tags=run_tags, run_name=run_name)
    run_id = run.info.run_id
    try:
        config = fit_result.config.to_dict()
        now_ms = int(time.time() * 1000)
        final = [Metric(metric_key(k), float(v), now_ms, 0) for k, v in metrics.items()]
        flat = flatten_params({**config, **params})
        log_batched(
            client,
            run_id,
            metrics=final
            + _epoch_metrics(history, now_ms)
            + _epoch_metrics(_prefixed(registered.history if registered else (), "refit/"), now_ms),
            params=[Param(k, v) for k, v in flat.items()],
        )
        client.log_inputs(run_id, datasets=[_snapshot_input(snapshot)])
        client.log_dict(run_id, dict(report), "evaluation/report.json")
        client.log_dict(run_id, config, "config/train_config.yaml")
        if registered is not None:
            client.log_dict(run_id, registered.config.to_dict(), "config/refit_config.yaml")
        client.log_dict(run_id, json.loads(json.dumps(params, default=str)), "config/params.yaml")
        client.log_dict(run_id, snapshot.manifest, "dataset/manifest.json")
        with tempfile.TemporaryDirectory() as tmp:
            _id_maps(registered or fit_result, Path(tmp))
            client.log_artifacts(run_id, tmp, "id_maps")
        for folder, path in artefacts.items():
            if Path(path).is_dir():
                client.log_artifacts(run_id, str(path), folder)
            else:
                client.log_artifact(run_id, str(path), folder)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)


@contextmanager
def use_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `tracking_uri` for a block, then restore it exactly.

    `mlflow.set_tracking_uri` also writes MLFLOW_TRACKING_URI into the environment, which
    `Settings` reads: the previous globals and variables are put back as they were.
    Not thread-safe (MLflow's fluent state is process-wide).
    """
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    saved_env = {name: os.environ.get(name) for name in _URI_VARIABLES}
    # The explicitly set URIs (None when unset) are private state in MLflow 3.x.
    saved_tracking: Any = getattr(tracking_state, "_tracking_uri", None)
    saved_registry: Any = getattr(registry_state, "_registry_uri", None)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        # None (never set) is accepted at runtime and means "back to the defaults".
        mlflow.set_tracking_uri(saved_tracking)
        mlflow.set_registry_uri(saved_registry)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
