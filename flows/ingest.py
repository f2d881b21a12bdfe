"""Prefect flow `ingest`: read -> validate -> load -> statistics, each a task."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import platform_for, retry_if_transient
from recolab.application.ingest import DatasetBatch, IngestReport, ValidationOutcome
from recolab.bootstrap import Platform, progress_logged_to


@task(name="read", cache_policy=NO_CACHE)
def read(platform: Platform, dataset: str, source: str | None) -> DatasetBatch:
    with progress_logged_to(get_run_logger()):  # each phase's lines, with rows/s
        batch = platform.dataset_source().read(dataset, Path(source) if source else None)
    get_run_logger().info(
        "read %s ratings and %s movies (%s)", batch.n_ratings, batch.n_movies, batch.layout
    )
    return batch


@task(name="validate", cache_policy=NO_CACHE)
def validate(platform: Platform, batch: DatasetBatch, report_dir: Path) -> ValidationOutcome:
    validator = platform.validator()
    with progress_logged_to(get_run_logger()):
        outcome = validator.validate(batch, report_dir)
    get_run_logger().info(
        "validation %s in %.2fs; report in %s",
        "passed" if outcome.success else "FAILED",
        outcome.duration_s,
        report_dir,
    )
    return outcome


@task(
    name="load",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_if_transient,
)
def load(platform: Platform, batch: DatasetBatch, dataset: str, source: str) -> dict[str, Any]:
    with progress_logged_to(get_run_logger()):
        result = dict(platform.loader().load(batch, dataset, source))
    get_run_logger().info("loaded: %s", result)
    return result


@task(
    name="statistics",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_if_transient,
)
def statistics(platform: Platform, load_result: dict[str, Any]) -> dict[str, Any]:
    stats = dict(platform.loader().refresh_statistics(load_result))
    get_run_logger().info("database now holds: %s", stats)
    return stats


@flow(name="ingest", flow_run_name="ingest-{dataset}", log_prints=True)
def ingest(
    dataset: str = "demo",
    source: str | None = None,
    database_url: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Load a MovieLens release (or the generated demo) into the database, validated first.

    A batch that fails any expectation loads nothing: the flow fails with the report (also
    saved as JSON and GX Data Docs under data/reports/ and as a Prefect artifact; a batch that
    passes gets the JSON report only).
    """
    platform = platform_for(database_url, overrides)
    report = IngestReport(dataset=dataset, source=source or dataset)
    report_dir = platform.report_dir("ingest", dataset)
    try:
        with _timed(report, "read"):
            batch = read(platform, dataset, source)
        report.layout, report.n_ratings_read = batch.layout, batch.n_ratings
        report.n_movies_read = batch.n_movies
        with _timed(report, "validate"):
            outcome = validate(platform, batch, report_dir)
        report.validation, report.validation_s = outcome.summary_rows(), outcome.duration_s
        if not outcome.success:
            _publish(report, dataset, failed=True)
            platform.validator().raise_for_failures(outcome)
        with _timed(report, "load"):
            report.load = load(platform, batch, dataset, report.source)
        with _timed(report, "statistics"):
            report.statistics = statistics(platform, report.load)
        _publish(report, dataset, failed=False)
        return {"load": report.load, "statistics": report.statistics, "report_dir": str(report_dir)}
    finally:
        platform.close()


@contextmanager
def _timed(report: IngestReport, step: str) -> Iterator[None]:
    """Record the seconds a step's task took (its retries included) in the report's
    "step | seconds" table, as the `ingest` use case does for callers without Prefect."""
    start = time.perf_counter()
    yield
    report.timings[step] = time.perf_counter() - start


def _publish(report: IngestReport, dataset: str, *, failed: bool) -> None:
    header = "**Validation failed: nothing was loaded.**\n\n" if failed else ""
    create_markdown_artifact(
        markdown=header + report.to_markdown(),
        key=f"ingest-{dataset}".lower().replace("_", "-"),
        description=f"ingest of {dataset}",
    )
