"""Prefect flow `features`: the database's content -> a versioned feature snapshot."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import platform_for, retry_if_transient
from recolab.bootstrap import Platform


@task(
    name="build-snapshot",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_if_transient,
)
def build(platform: Platform, dataset: str) -> dict[str, Any]:
    snapshot = platform.build_features(dataset)
    get_run_logger().info("feature snapshot %s at %s", snapshot.id, snapshot.path)
    return dict(snapshot.manifest)


@flow(name="features", flow_run_name="features-{dataset}", log_prints=True)
def features(
    dataset: str = "demo", database_url: str | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Build id maps, statistics, genre vectors and evaluation splits; write a snapshot.

    The snapshot id is a content hash: the same database content gives the same id.
    """
    platform = platform_for(database_url, overrides)
    try:
        manifest = build(platform, dataset)
    finally:
        platform.close()
    rows = "\n".join(f"| {name} | {count:,} |" for name, count in manifest["rows"].items())
    create_markdown_artifact(
        markdown=(
            f"# Feature snapshot `{manifest['id']}`\n\nDataset `{dataset}`, "
            f"{manifest['n_users']:,} users x {manifest['n_items']:,} items.\n\n"
            f"| table | rows |\n| --- | ---: |\n{rows}\n\nSplits: `{manifest['splits']}`\n"
        ),
        key=f"features-{dataset}".lower().replace("_", "-"),
        description=f"feature snapshot of {dataset}",
    )
    return manifest
