"""The ingest use case's ports, implemented with the MovieLens readers, GX and SQL loading."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, case, func, select

from recolab.adapters.ingest.demo import generate_demo
from recolab.adapters.ingest.download import RELEASES, download_dataset
from recolab.adapters.ingest.movielens import DatasetError, MovieLensData, read_movielens
from recolab.adapters.ingest.validation import (
    ValidationReport,
    raise_for_failures,
    validate_dataset,
)
from recolab.adapters.sql import schema as s
from recolab.adapters.sql.loading import load_dataset
from recolab.config import DemoConfig
from recolab.domain.model import TIER_UPPER_BOUNDS, UserClassification

# Progress lines (each phase's start, its end with rows/s): a flow forwards this logger's
# parent, `recolab.progress`, to its run logs (`bootstrap.progress_logged_to`).
progress = logging.getLogger("recolab.progress.ingest")


def rate(rows: int, seconds: float) -> str:
    """`1,234,567 rows/s`; `-` when too quick to measure."""
    return f"{rows / seconds:,.0f} rows/s" if seconds > 1e-3 else "- rows/s"


def since(start: float) -> float:
    return time.perf_counter() - start


@dataclass(frozen=True)
class MovieLensBatch:
    data: MovieLensData

    @property
    def layout(self) -> str:
        return self.data.layout

    @property
    def n_ratings(self) -> int:
        return len(self.data.ratings)

    @property
    def n_movies(self) -> int:
        return len(self.data.movies)


class MovieLensSource:
    """Finds a dataset: the generated demo, a local folder or zip, or a (cached) download."""

    def __init__(self, data_dir: Path, demo: DemoConfig) -> None:
        self.data_dir = data_dir
        self.demo = demo

    def locate(self, dataset: str, source: Path | None) -> Path:
        if dataset == "demo" and source is None:
            d = self.demo
            folder = (
                self.data_dir / "raw" / f"demo-{d.n_users}u-{d.n_movies}m-{d.n_ratings}r-s{d.seed}"
            )
            if not (folder / "ratings.csv").exists():
                progress.info("read: generating the demo dataset into %s", folder)
                generate_demo(
                    folder,
                    n_users=d.n_users,
                    n_movies=d.n_movies,
                    n_ratings=d.n_ratings,
                    seed=d.seed,
                )
            return folder
        if source is not None:
            if not source.exists():
                raise DatasetError(f"{source}: no such file or folder")
            if source.is_dir():
                return source
            return download_dataset(dataset, self.data_dir, source=source)
        if dataset not in RELEASES:
            known = ", ".join(["demo", *RELEASES])
            raise DatasetError(f"unknown dataset {dataset!r}: expected one of {known}")
        return download_dataset(dataset, self.data_dir)

    def read(self, dataset: str, source: Path | None) -> MovieLensBatch:
        folder = self.locate(dataset, source)
        progress.info("read: reading %s from %s", dataset, folder)
        start = time.perf_counter()
        batch = MovieLensBatch(read_movielens(folder))
        seconds = since(start)
        progress.info(
            "read: %s ratings and %s movies in %.1f s (%s)",
            f"{batch.n_ratings:,}",
            f"{batch.n_movies:,}",
            seconds,
            rate(batch.n_ratings, seconds),
        )
        return batch


@dataclass(frozen=True)
class GxOutcome:
    report: ValidationReport

    @property
    def success(self) -> bool:
        return self.report.success

    @property
    def duration_s(self) -> float:
        return self.report.duration_s

    def summary_rows(self) -> list[tuple[str, str, bool, int]]:
        return [
            (
                r.expectation,
                f"{r.table}.{'+'.join(r.columns)}" if r.columns else r.table,
                r.success,
                r.unexpected_count or 0,
            )
            for r in self.report.results
        ]


class GxValidator:
    def __init__(self, sample_size: int = 5, data_docs: str = "on_failure") -> None:
        self.sample_size = sample_size
        self.data_docs = data_docs

    def validate(self, batch: Any, report_dir: Path | None) -> GxOutcome:
        data: MovieLensData = batch.data
        progress.info(
            "validate: %s ratings and %s movies against the Great Expectations suites",
            f"{len(data.ratings):,}",
            f"{len(data.movies):,}",
        )
        start = time.perf_counter()
        report = validate_dataset(
            data.ratings,
            data.movies,
            report_dir=report_dir,
            sample_size=self.sample_size,
            data_docs=self.data_docs,
        )
        seconds = since(start)
        progress.info(
            "validate: %s in %.1f s (%s)",
            "passed" if report.success else "FAILED",
            seconds,
            rate(len(data.ratings), seconds),
        )
        return GxOutcome(report)

    def raise_for_failures(self, outcome: Any) -> None:
        raise_for_failures(outcome.report)


class SqlLoader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, batch: Any, dataset: str, source: str) -> Mapping[str, Any]:
        data: MovieLensData = batch.data
        start = time.perf_counter()

        def phase(message: str) -> None:
            progress.info("load: %s (%.1f s so far)", message, since(start))

        result = load_dataset(
            self.engine,
            data.ratings,
            data.movies,
            dataset=dataset,
            source=source,
            progress=phase,
        )
        progress.info(
            "load: %s ratings in %.1f s (%s; %s)",
            f"{len(data.ratings):,}",
            result.seconds,
            rate(len(data.ratings), result.seconds),
            ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases.items()),
        )
        return {
            "movies_inserted": result.movies.inserted,
            "movies_updated": result.movies.updated,
            "users_inserted": result.users.inserted,
            "ratings_inserted": result.ratings.inserted,
            "ratings_updated": result.ratings.updated,
            "ratings_unchanged": result.ratings.unchanged,
            "content_hash": result.content_hash,
            "seconds": round(result.seconds, 3),
        }

    def refresh_statistics(self, load: Mapping[str, Any]) -> Mapping[str, Any]:
        """Statistics are recounted inside the load's transaction; report the user tiers."""
        n = s.users.c.n_ratings
        # The domain's tiers: the last has no upper bound.
        bounded = zip(UserClassification, TIER_UPPER_BOUNDS, strict=False)
        tier = case(
            *((n <= upper, t.value) for t, upper in bounded),
            else_=UserClassification.POWER_USER.value,
        )
        with self.engine.connect() as conn:
            rows = conn.execute(select(tier.label("tier"), func.count()).group_by(tier)).all()
            totals = {
                "users": conn.execute(select(func.count()).select_from(s.users)).scalar_one(),
                "movies": conn.execute(select(func.count()).select_from(s.movies)).scalar_one(),
                "ratings": conn.execute(select(func.count()).select_from(s.ratings)).scalar_one(),
            }
        return {**totals, **{f"tier_{t}": int(c) for t, c in rows}}
