"""Prefect flow `pipeline`: ingest -> validate -> features -> train -> evaluate -> promote.

Each step is a subflow; a failed step stops the pipeline with its report, so nothing
downstream runs on bad data. A running service picks up a new champion on its own.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.features import features
from flows.ingest import ingest
from flows.train import train
from flows.tune import tuned_settings


@flow(name="pipeline", flow_run_name="pipeline-{dataset}", log_prints=True)
def pipeline(
    dataset: str = "demo",
    source: str | None = None,
    protocol: str = "B",
    max_epochs: int | None = None,
    overrides: list[str] | None = None,
    database_url: str | None = None,
    skip_ingest: bool = False,
    use_tuned: bool = False,
    challenger: bool = False,
) -> dict[str, Any]:
    """Ingest (unless `skip_ingest`: retrain on what the database holds), build features,
    train, evaluate, register and promote. `use_tuned`: train with the dataset's latest
    tuned settings (the `tune` flow), under `overrides`; the defaults when never tuned.
    `challenger`: a model that passes the promotion gate gets the `challenger` alias instead
    of `champion`, for an online experiment to decide."""
    loaded = (
        None
        if skip_ingest
        else ingest(dataset=dataset, source=source, database_url=database_url, overrides=overrides)
    )
    manifest = features(dataset=dataset, database_url=database_url, overrides=overrides)
    tuned = tuned_settings(dataset, protocol, database_url, overrides) if use_tuned else []
    trained = train(
        dataset=dataset,
        protocol=protocol,
        snapshot_id=manifest["id"],
        max_epochs=max_epochs,
        overrides=[*tuned, *(overrides or [])],
        database_url=database_url,
        challenger=challenger,
    )
    return {"ingest": loaded, "snapshot": manifest["id"], "train": trained}
