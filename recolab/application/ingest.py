"""Use case: ingest a dataset — read, validate, load, refresh statistics.

The steps are separate so that an orchestrator (the Prefect flow) can run each as a task
with its own retries; `ingest` runs them in order for callers without one. A batch that
fails validation is never loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class DatasetBatch(Protocol):
    """A dataset read into memory, in the normalised schema (opaque to this layer)."""

    @property
    def layout(self) -> str: ...
    @property
    def n_ratings(self) -> int: ...
    @property
    def n_movies(self) -> int: ...


class ValidationOutcome(Protocol):
    @property
    def success(self) -> bool: ...
    @property
    def duration_s(self) -> float: ...
    def summary_rows(self) -> list[tuple[str, str, bool, int]]:
        """(expectation, table/column, success, unexpected count) per expectation."""
        ...


class DatasetReader(Protocol):
    def read(self, dataset: str, source: Path | None) -> DatasetBatch: ...


class BatchValidator(Protocol):
    def validate(self, batch: DatasetBatch, report_dir: Path | None) -> ValidationOutcome: ...
    def raise_for_failures(self, outcome: ValidationOutcome) -> None: ...


class BatchLoader(Protocol):
    def load(self, batch: DatasetBatch, dataset: str, source: str) -> Mapping[str, Any]: ...
    def refresh_statistics(self, load: Mapping[str, Any]) -> Mapping[str, Any]: ...


@dataclass
class IngestReport:
    dataset: str
    source: str
    layout: str = ""
    n_ratings_read: int = 0
    n_movies_read: int = 0
    validation: list[tuple[str, str, bool, int]] = field(default_factory=list)
    validation_s: float = 0.0
    load: Mapping[str, Any] = field(default_factory=dict)
    statistics: Mapping[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_markdown(self) -> str:
        lines = [
            f"# Ingest `{self.dataset}`",
            "",
            f"Source: `{self.source}` (layout `{self.layout}`)",
            "",
            "| step | seconds |",
            "| --- | ---: |",
            *(f"| {step} | {secs:.2f} |" for step, secs in self.timings.items()),
            "",
            f"Read {self.n_ratings_read:,} ratings and {self.n_movies_read:,} movies.",
            "",
            "| expectation | column | result | unexpected |",
            "| --- | --- | --- | ---: |",
            *(
                f"| {name} | {col} | {'pass' if ok else '**FAIL**'} | {bad:,} |"
                for name, col, ok, bad in self.validation
            ),
        ]
        if self.load:
            lines += ["", "| loaded | count |", "| --- | ---: |"]
            lines += [f"| {k} | {v} |" for k, v in self.load.items() if isinstance(v, int)]
        return "\n".join(lines) + "\n"


def ingest(
    dataset: str,
    source: Path | None,
    reader: DatasetReader,
    validator: BatchValidator,
    loader: BatchLoader,
    *,
    report_dir: Path | None = None,
    clock: Callable[[], float],
) -> IngestReport:
    """Read, validate (raising on any failed expectation), load and refresh statistics."""
    report = IngestReport(dataset=dataset, source=str(source or dataset))
    start = clock()
    batch = reader.read(dataset, source)
    report.layout, report.n_ratings_read = batch.layout, batch.n_ratings
    report.n_movies_read = batch.n_movies
    report.timings["read"] = clock() - start
    start = clock()
    outcome = validator.validate(batch, report_dir)
    report.validation, report.validation_s = outcome.summary_rows(), outcome.duration_s
    report.timings["validate"] = clock() - start
    validator.raise_for_failures(outcome)
    start = clock()
    report.load = loader.load(batch, dataset, report.source)
    report.timings["load"] = clock() - start
    start = clock()
    report.statistics = loader.refresh_statistics(report.load)
    report.timings["statistics"] = clock() - start
    return report
