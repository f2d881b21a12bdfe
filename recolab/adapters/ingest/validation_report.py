"""What a validation found: one result per expectation, the report, and its exception."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExpectationResult:
    """Outcome of one GX expectation, mapped back to rows of the input frames.

    ``unexpected_count`` is the number of input rows that fail; it is None for column- and
    table-level expectations (dtype, column set), which have no per-row verdict, and ``observed``
    then holds what GX saw. ``unexpected_percent`` is relative to all rows of ``table``.
    ``sample`` holds up to ``sample_size`` failing input rows, ``row`` being the row's position.
    ``batch`` names the GX data asset the expectation ran on (as in the Data Docs).
    """

    expectation: str
    table: str
    columns: list[str]
    success: bool
    unexpected_count: int | None
    unexpected_percent: float | None
    sample: list[dict[str, Any]]
    description: str
    batch: str
    observed: str | None = None

    def summary(self) -> str:
        """One line: expectation, where, how many, what it means."""
        where = f"{self.table}.{'+'.join(self.columns)}" if self.columns else self.table
        if self.unexpected_count is None:
            found = f"observed {self.observed}"
        else:
            found = f"{self.unexpected_count} bad rows ({self.unexpected_percent or 0:.4g}%)"
        return f"{self.expectation} on {where}: {found} - {self.description}"


@dataclass
class ValidationReport:
    """Every expectation run on a batch (passed and failed), with sizes and timings."""

    success: bool
    n_ratings: int
    n_movies: int
    duration_s: float
    results: list[ExpectationResult]
    timings: dict[str, float] = field(default_factory=dict)
    data_docs: str | None = None

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        results = [ExpectationResult(**r) for r in data["results"]]
        return cls(**{**data, "results": results})

    @classmethod
    def from_json(cls, text: str) -> ValidationReport:
        return cls.from_dict(json.loads(text))


class ValidationFailed(Exception):
    """A batch failed validation; ``report`` holds every result."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report)
        self.report = report

    def __str__(self) -> str:
        failures = self.report.failures
        lines = [
            f"dataset validation failed: {len(failures)} of {len(self.report.results)} "
            f"expectations ({self.report.n_ratings} ratings, {self.report.n_movies} movies)"
        ]
        for failure in failures:
            lines.append(f"- {failure.summary()}")
            lines.extend(f"    {row}" for row in failure.sample)
        return "\n".join(lines)


def raise_for_failures(report: ValidationReport) -> None:
    """Raise ValidationFailed when any expectation of ``report`` failed."""
    if not report.success:
        raise ValidationFailed(report)
