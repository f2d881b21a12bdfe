"""The champion the `monitor` flow compares recent data with: its version (the registry's
`champion` alias), the feature snapshot its training run names (run tag `snapshot`, with
`dataset`) and that snapshot's ratings from the feature store; and `monitor_sources`, the
monitor's collaborators wired (recolab.application.monitor).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from recolab.adapters.mlflow.tracking import TAG_DATASET, TAG_SNAPSHOT, mlflow_client
from recolab.application.monitor import Champion, MonitorSources, SnapshotData
from recolab.domain.services.drift import RatingSample

if TYPE_CHECKING:
    from sqlalchemy import Engine

CHAMPION_ALIAS = "champion"  # recolab.adapters.mlflow.registry's (that module loads torch)
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]


class MlflowChampions:
    """`Champions`: the version holding the `champion` alias of `model_name`."""

    def __init__(self, client: Any, model_name: str) -> None:
        self.client = client
        self.model_name = model_name

    def champion(self) -> Champion | None:
        try:
            version = self.client.get_model_version_by_alias(self.model_name, CHAMPION_ALIAS)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND:
                return None
            raise
        tags = self.client.get_run(version.run_id).data.tags if version.run_id else {}
        return Champion(
            model_name=self.model_name,
            version=str(version.version),
            snapshot_id=tags.get(TAG_SNAPSHOT) or None,
            dataset=tags.get(TAG_DATASET) or None,
        )


class FeatureStoreSnapshots:
    """`SnapshotRatings` from the feature store under `root` (recolab.ml.features): only
    the columns the figures need are read."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def load(self, snapshot_id: str) -> SnapshotData | None:
        from recolab.ml.features import FeaturesError, open_snapshot

        try:
            snapshot = open_snapshot(self.root, snapshot_id)
        except FeaturesError:
            return None
        ratings = pd.read_parquet(snapshot.path / "ratings.parquet", columns=_COLUMNS)
        return SnapshotData(
            snapshot_id=snapshot.id,
            dataset=str(snapshot.manifest.get("dataset", "unknown")),
            ratings=RatingSample(
                ratings["user_id"].to_numpy(np.int64),
                ratings["movie_id"].to_numpy(np.int64),
                ratings["rating"].to_numpy(np.float64),
            ),
            latest_timestamp=int(ratings["timestamp"].max()) if len(ratings) else 0,
        )


def monitor_sources(
    engine: Engine, tracking_uri: str, model_name: str, features_root: Path
) -> MonitorSources:
    """The monitor's collaborators: the champion from MLflow at `tracking_uri`, its snapshot
    from the feature store at `features_root`, recent data from the database."""
    from recolab.adapters.sql.monitor import SqlMonitorData

    return MonitorSources(
        champions=MlflowChampions(mlflow_client(tracking_uri), model_name),
        snapshots=FeatureStoreSnapshots(features_root),
        data=SqlMonitorData(engine),
    )
