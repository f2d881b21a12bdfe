"""Great Expectations validation of a normalised MovieLens batch, run before anything is loaded.

Every check is a real GX expectation that GX evaluates. GX 1.x is slow on large pandas batches
for reasons measured in benchmarks/validation_cost.py: it fingerprints every batch by hashing
the whole frame, its compound-uniqueness check calls ``DataFrame.duplicated`` over two columns,
and an expectation with a large ``value_set`` re-serialises it dozens of times per run. So GX
gets small batches, with exact row counts kept:

- user_id, movie_id and rating as their distinct values with row counts: the verdict depends
  only on the value, so the rows behind a failure are those holding a value GX rejected;
- timestamps and movies row by row (distinct values would not be fewer);
- compound uniqueness on the rows whose (user_id, movie_id) occurs more than once, found with
  one sort; GX then finds and counts the duplicated rows itself;
- referential integrity as "rated movie_id equals its match in the catalogue" over the distinct
  rated ids joined to the movie ids, instead of an in-set check with a huge value set.

The context, suites and validation definitions are built once per process and reused (building
them costs more than validating 100k ratings). A first pass runs with the BASIC result format;
only failed expectations are rerun (SUMMARY / COMPLETE) to fetch the rows behind them.

The suites are defined in :mod:`~recolab.adapters.ingest.expectations`, run by
:mod:`~recolab.adapters.ingest.gx_suites` and reported with
:mod:`~recolab.adapters.ingest.validation_report`.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recolab.adapters.ingest.expectations import CATALOG_ID, COUNT
from recolab.adapters.ingest.gx_suites import Frame, Outcome, shared_suites
from recolab.adapters.ingest.validation_report import (
    ExpectationResult,
    ValidationFailed,
    ValidationReport,
    raise_for_failures,
)

__all__ = [
    "DATA_DOCS_MODES",
    "ExpectationResult",
    "ValidationFailed",
    "ValidationReport",
    "raise_for_failures",
    "validate_dataset",
]

DATA_DOCS_MODES = ("on_failure", "always", "never")
_DAY = 86_400


def validate_dataset(
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    *,
    report_dir: Path | None = None,
    sample_size: int = 5,
    now: int | None = None,
    data_docs: str = "on_failure",
) -> ValidationReport:
    """Validate normalised ratings and movies with Great Expectations before loading them.

    Runs every expectation and returns a report listing each one; it does not raise on
    failures (call ``raise_for_failures``). Only when the column sets do not match the schema
    are the other expectations not run. ``now`` (unix seconds, default: the clock) bounds
    timestamps (now + 1 day) and years (its year + 5). With ``report_dir``, writes
    ``validation.json`` there and GX Data Docs under ``report_dir/data_docs``: for a failed
    batch only (``data_docs="on_failure"``, the default: rendering the HTML costs more than
    running the checks on small datasets), for every batch (``"always"``) or never.
    """
    if data_docs not in DATA_DOCS_MODES:
        raise ValueError(f"data_docs must be one of {DATA_DOCS_MODES}, not {data_docs!r}")
    started = time.perf_counter()
    now = int(time.time()) if now is None else now
    parameters = {
        "max_timestamp": now + _DAY,
        "max_year": dt.datetime.fromtimestamp(now, tz=dt.UTC).year + 5,
    }
    timings = {"prepare_s": 0.0, "gx_s": 0.0}
    with shared_suites().session() as suites:
        tick = time.perf_counter()
        outcomes = suites.run(_schema_frames(ratings, movies), parameters, sample_size)
        timings["gx_s"] += time.perf_counter() - tick
        if all(o.result.success for o in outcomes):
            tick = time.perf_counter()
            frames = _data_frames(ratings, movies)
            timings["prepare_s"] += time.perf_counter() - tick
            tick = time.perf_counter()
            outcomes += suites.run(frames, parameters, sample_size)
            timings["gx_s"] += time.perf_counter() - tick
        tick = time.perf_counter()
        sources = {"ratings": ratings, "movies": movies}
        results = [_to_result(o, sources[o.spec.table], sample_size) for o in outcomes]
        timings["samples_s"] = time.perf_counter() - tick
        index_html = None
        failed = not all(r.success for r in results)
        if report_dir is not None and (data_docs == "always" or (failed and data_docs != "never")):
            tick = time.perf_counter()
            index_html = str(suites.build_data_docs(report_dir / "data_docs"))
            timings["data_docs_s"] = time.perf_counter() - tick
    report = ValidationReport(
        success=all(r.success for r in results),
        n_ratings=len(ratings),
        n_movies=len(movies),
        duration_s=time.perf_counter() - started,
        results=results,
        timings=timings,
        data_docs=index_html,
    )
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "validation.json").write_text(report.to_json(), encoding="utf-8")
    return report


def _schema_frames(ratings: pd.DataFrame, movies: pd.DataFrame) -> list[Frame]:
    # The column set is all a table-level schema check reads: hand GX zero rows.
    return [Frame("ratings_columns", ratings.head(0)), Frame("movies_columns", movies.head(0))]


def _data_frames(ratings: pd.DataFrame, movies: pd.DataFrame) -> list[Frame]:
    movie_ids = _value_counts(ratings, "movie_id")
    catalog = movies["movie_id"].dropna().unique()
    movie_ids[CATALOG_ID] = movie_ids["movie_id"].where(movie_ids["movie_id"].isin(catalog))
    repeated = _repeated_pair_positions(ratings)
    return [
        Frame("ratings_user_ids", _value_counts(ratings, "user_id")),
        Frame("ratings_movie_ids", movie_ids),
        Frame("ratings_rating_values", _value_counts(ratings, "rating")),
        Frame("ratings_timestamps", ratings[["timestamp"]].reset_index(drop=True)),
        Frame(
            "ratings_repeated_pairs",
            ratings.iloc[repeated].reset_index(drop=True),
            rows=repeated,
        ),
        Frame("movies", movies.reset_index(drop=True)),
    ]


def _value_counts(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Distinct values of ``column`` (nulls included) with their row counts, in its dtype.

    Ids that are small non-negative integers (as MovieLens ids are) are counted with
    ``np.bincount``, several times faster than hashing them.
    """
    values = frame[column]
    if len(values) and _packable(values):
        ids = values.to_numpy(np.int64)
        if int(ids.max()) <= 4 * len(ids) + 1_000_000:  # bounds the bincount's memory
            counts = np.bincount(ids)
            present = np.flatnonzero(counts)
            distinct = pd.Series(present, name=column).astype(values.dtype)
            return pd.DataFrame({column: distinct, COUNT: counts[present]})
    counts = values.value_counts(dropna=False, sort=False)
    return counts.rename_axis(column).reset_index(name=COUNT)


def _repeated_pair_positions(ratings: pd.DataFrame) -> np.ndarray:
    """Positions of the rows whose (user_id, movie_id) occurs more than once.

    One sort of a packed int64 key instead of ``DataFrame.duplicated`` (several times faster
    at 10M rows; a batch already sorted by user and movie costs one pass). Columns the key
    cannot hold (nulls, negative or huge ids, floats) take pandas' exact path.
    """
    users, movies = ratings["user_id"], ratings["movie_id"]
    if len(ratings) < 2 or not (_packable(users) and _packable(movies)):
        duplicated = ratings.duplicated(["user_id", "movie_id"], keep=False)
        return np.flatnonzero(duplicated.to_numpy())
    u, m = users.to_numpy(np.int64), movies.to_numpy(np.int64)
    width = int(m.max()) + 1
    if int(u.max()) >= (2**62) // width:
        duplicated = ratings.duplicated(["user_id", "movie_id"], keep=False)
        return np.flatnonzero(duplicated.to_numpy())
    key = u * width + m
    if bool(np.all(key[1:] > key[:-1])):
        return np.empty(0, dtype=np.int64)
    ordered = np.sort(key)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.isin(key, np.unique(repeated)))


def _packable(column: pd.Series) -> bool:
    return (
        pd.api.types.is_integer_dtype(column.dtype)
        and not column.hasnans
        and int(column.min()) >= 0
    )


def _to_result(outcome: Outcome, source: pd.DataFrame, sample_size: int) -> ExpectationResult:
    result = outcome.result
    details: dict[str, Any] = dict(result.result or {})
    count: int | None = None
    observed: str | None = None
    sample: list[dict[str, Any]] = []
    error = _exception_message(result.exception_info or {})
    if error:
        observed = f"error: {error}"
    elif "unexpected_count" not in details:
        observed = str(details.get("observed_value"))
    elif result.success:
        count = 0
    elif outcome.spec.key is not None:
        count, sample = _value_failures(outcome, source, sample_size)
    else:
        count = int(details["unexpected_count"])
        sample = _row_failures(outcome, source, sample_size)
    percent = None if count is None else (100.0 * count / len(source) if len(source) else 0.0)
    assert result.expectation_config is not None
    return ExpectationResult(
        expectation=str(result.expectation_config.type),
        table=outcome.spec.table,
        columns=list(outcome.check.columns),
        success=bool(result.success),
        unexpected_count=count,
        unexpected_percent=percent,
        sample=sample,
        description=outcome.check.description.format(**outcome.parameters),
        batch=outcome.spec.name,
        observed=observed,
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX's error message, whether at the top level or keyed by the metric that raised."""
    for entry in (info, *info.values()):
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def _value_failures(
    outcome: Outcome, source: pd.DataFrame, sample_size: int
) -> tuple[int, list[dict[str, Any]]]:
    """Input rows holding a distinct value GX rejected: how many, and a sample of them."""
    key = outcome.spec.key
    assert key is not None
    details = outcome.rerun(outcome.expectation, {"result_format": "COMPLETE"})
    rejected = outcome.frame.frame.loc[list(details.get("unexpected_index_list") or [])]
    values = rejected[key]
    column = source[key]
    mask = column.isin(values.dropna().to_numpy())
    if values.isna().any():
        mask |= column.isna()
    positions = np.flatnonzero(mask.to_numpy())[:sample_size]
    return int(rejected[COUNT].sum()), _records(source, positions)


def _row_failures(outcome: Outcome, source: pd.DataFrame, sample_size: int) -> list[dict[str, Any]]:
    details = outcome.rerun(
        outcome.expectation,
        {"result_format": "SUMMARY", "partial_unexpected_count": sample_size},
    )
    positions = np.asarray(details.get("partial_unexpected_index_list") or [], dtype=np.int64)
    if outcome.frame.rows is not None:
        positions = outcome.frame.rows[positions]
    return _records(source, positions[:sample_size])


def _records(source: pd.DataFrame, positions: np.ndarray) -> list[dict[str, Any]]:
    """JSON-safe input rows, with their position as ``row``."""
    rows = source.iloc[positions].to_dict("records")
    return [
        {"row": int(p), **{str(k): _plain(v) for k, v in r.items()}}
        for p, r in zip(positions, rows, strict=True)
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float | str | bool):
        return value
    return str(value)
