"""The MLflow model format of a trained NeuMF: a pyfunc over a checkpoint and movie metadata,
and loading a registered version back as the serving scorer.

Models are logged "from code": the model file names `NeuMFPyfunc` by its import path, so
that path is a contract with every model already registered. Models registered before this
module existed name `recolab.adapters.registry.NeuMFPyfunc`, which stays importable.
"""

from __future__ import annotations

import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema

from recolab.ml.scorer import NeuMFScorer

if TYPE_CHECKING:
    from recolab.ml.fitting import FitResult

MODEL_ARTIFACT = "model"
CHECKPOINT = "checkpoint"
MOVIES = "movies"

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("long", "user_id"), ColSpec("long", "movie_id")]),
    outputs=Schema([ColSpec("double", "score")]),
)
# What the pyfunc imports at load time besides RecoLab itself (installed where it is served).
_RUNTIME_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pyarrow")
MODEL_CODE = """import mlflow

from recolab.adapters.mlflow.model_format import NeuMFPyfunc

mlflow.models.set_model(NeuMFPyfunc())
"""


class NeuMFPyfunc(PythonModel):
    """A NeuMF checkpoint + movie metadata as an MLflow pyfunc.

    `predict` takes a DataFrame of (user_id, movie_id) pairs and returns relevance in [0, 1]
    (`NeuMFScorer.score_pairs`). The serving side unwraps it (`unwrap_python_model()`) and
    reads `.checkpoint` (a `FitResult.checkpoint()` dict) and `.movies`; `.fit_result`
    rebuilds the training-side object on demand (it imports Lightning, serving does not).
    """

    def __init__(self) -> None:
        # Nothing heavy lives on the instance when MLflow records it: weights are artefacts.
        self.checkpoint: dict[str, Any] | None = None
        self.movies: pd.DataFrame | None = None
        self._scorer: NeuMFScorer | None = None
        self._fit_result: FitResult | None = None

    @classmethod
    def from_fit_result(cls, fit_result: FitResult, movies: pd.DataFrame) -> NeuMFPyfunc:
        """The in-memory equivalent of a loaded model (same `predict`)."""
        model = cls()
        model.checkpoint, model.movies = fit_result.checkpoint(), movies
        model._fit_result = fit_result
        return model

    def load_context(self, context: PythonModelContext) -> None:
        self.checkpoint = load_checkpoint(Path(context.artifacts[CHECKPOINT]))
        self.movies = pd.read_parquet(context.artifacts[MOVIES])

    @property
    def fit_result(self) -> FitResult:
        if self._fit_result is None:
            from recolab.ml.fitting import FitResult

            self._fit_result = FitResult.from_checkpoint(self._loaded())
        return self._fit_result

    @property
    def scorer(self) -> NeuMFScorer:
        if self._scorer is None:
            self._scorer = NeuMFScorer.from_checkpoint(self._loaded(), self.movies)
        return self._scorer

    def _loaded(self) -> dict[str, Any]:
        if self.checkpoint is None:
            raise RuntimeError("the model is not loaded")
        return self.checkpoint

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        return self.scorer.score_pairs(
            model_input["user_id"].to_numpy(np.int64), model_input["movie_id"].to_numpy(np.int64)
        )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `torch.save(fit_result.checkpoint())`, onto the CPU."""
    data: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return data


def requirements() -> list[str]:
    pins = []
    for package in _RUNTIME_PACKAGES:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def example_input(fit_result: FitResult, n: int = 3) -> pd.DataFrame:
    """A few known (user, movie) pairs, the registered model's input example."""
    users, items = fit_result.users.ids, fit_result.items.ids
    return pd.DataFrame(
        {
            "user_id": users[np.arange(n) % len(users)].astype(np.int64),
            "movie_id": items[np.arange(n) % len(items)].astype(np.int64),
        }
    )


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")


def _artifact_uri(client: mlflow.MlflowClient, model_uri: str) -> str:
    """Where a registered version's files are, resolved with our client.

    MLflow's own `models:/` resolution reads the process-wide registry URI, which the
    serving process does not set, so name/version and name@alias are resolved here.
    """
    match = _MODELS_URI.match(model_uri)
    if match is None:
        return model_uri
    name = match["name"]
    version = match["version"]
    if version is None:
        version = client.get_model_version_by_alias(name, match["alias"]).version
    return str(client.get_model_version_download_uri(name, version))


def load_scorer(model_uri: str, tracking_uri: str, version: str) -> NeuMFScorer:
    """Load a registered NeuMF pyfunc (e.g. ``models:/recolab-neumf/3``) on CPU as a scorer.

    Uses `tracking_uri` for both tracking and registry without touching MLflow's global
    state, and needs no training data: weights, id maps and movie metadata are artefacts.
    Models registered before the popularity prior existed load with the prior off.
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    source = _artifact_uri(client, model_uri)
    with tempfile.TemporaryDirectory(prefix="recolab-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri
        )
        # The installed-package scan behind the requirement-mismatch warning costs seconds.
        wrapper = mlflow.pyfunc.load_model(local, suppress_warnings=True).unwrap_python_model()
    if not isinstance(wrapper, NeuMFPyfunc) or wrapper.checkpoint is None:
        raise TypeError(f"{model_uri} is not a RecoLab NeuMF model ({type(wrapper).__name__})")
    return NeuMFScorer.from_checkpoint(wrapper.checkpoint, wrapper.movies, version=version)
