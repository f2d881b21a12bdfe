"""MLflow: the model format, run tracking, the model registry and its aliases."""
