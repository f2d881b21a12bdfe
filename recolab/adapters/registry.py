"""Kept for models registered before the MLflow adapters moved: their model file runs
`from recolab.adapters.registry import NeuMFPyfunc`. New code imports
`recolab.adapters.mlflow.model_format`."""

from recolab.adapters.mlflow.model_format import NeuMFPyfunc

__all__ = ["NeuMFPyfunc"]
