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
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.core.validation_definition import ValidationDefinition
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )
    from great_expectations.expectations.expectation import Expectation

RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
MOVIE_COLUMNS = ("movie_id", "title", "year", "genres")
RATING_VALUES = tuple(k / 2 for k in range(1, 11))
MIN_TIMESTAMP = 788_918_400  # 1995-01-01 UTC: MovieLens started collecting ratings in 1995
MIN_YEAR = 1874  # the oldest film in MovieLens (Passage de Venus) is from 1874
INTEGER_TYPES = ("int32", "int64", "Int32Dtype", "Int64Dtype")
COUNT = "n_rows"  # row-count column of the distinct-value batches
CATALOG_ID = "catalog_movie_id"
_DAY = 86_400


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


DATA_DOCS_MODES = ("on_failure", "always", "never")


def raise_for_failures(report: ValidationReport) -> None:
    """Raise ValidationFailed when any expectation of ``report`` failed."""
    if not report.success:
        raise ValidationFailed(report)


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
    with _suites().session() as suites:
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


@dataclass(frozen=True)
class _Check:
    make: Callable[[], Expectation]
    columns: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class _Spec:
    """A GX data asset with its suite. ``key`` marks a distinct-value batch of that column."""

    name: str
    table: str
    checks: tuple[_Check, ...]
    key: str | None = None


@dataclass(frozen=True)
class _Frame:
    """The frame handed to GX for one spec; ``rows[i]`` is the input position of its row i."""

    name: str
    frame: pd.DataFrame
    rows: np.ndarray | None = None


@dataclass
class _Outcome:
    spec: _Spec
    check: _Check
    expectation: Expectation
    result: ExpectationValidationResult
    frame: _Frame
    parameters: dict[str, Any]
    rerun: Callable[[Expectation, dict[str, Any]], dict[str, Any]]


def _specs() -> list[_Spec]:
    # Imported from their defining modules: mypy does not count the re-exports of
    # great_expectations.expectations as exported.
    from great_expectations.expectations.core.expect_column_pair_values_to_be_equal import (
        ExpectColumnPairValuesToBeEqual,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_between import (
        ExpectColumnValuesToBeBetween,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
        ExpectColumnValuesToBeInSet,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_in_type_list import (
        ExpectColumnValuesToBeInTypeList,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_unique import (
        ExpectColumnValuesToBeUnique,
    )
    from great_expectations.expectations.core.expect_column_values_to_match_regex import (
        ExpectColumnValuesToMatchRegex,
    )
    from great_expectations.expectations.core.expect_column_values_to_not_be_null import (
        ExpectColumnValuesToNotBeNull,
    )
    from great_expectations.expectations.core.expect_compound_columns_to_be_unique import (
        ExpectCompoundColumnsToBeUnique,
    )
    from great_expectations.expectations.core.expect_table_columns_to_match_set import (
        ExpectTableColumnsToMatchSet,
    )

    def columns_match(names: tuple[str, ...], table: str) -> _Check:
        return _Check(
            lambda: ExpectTableColumnsToMatchSet(column_set=list(names), exact_match=True),
            (),
            f"{table} has exactly the columns {', '.join(names)}",
        )

    def positive_ids(column: str) -> list[_Check]:
        return [
            _Check(
                lambda: ExpectColumnValuesToBeInTypeList(
                    column=column, type_list=list(INTEGER_TYPES)
                ),
                (column,),
                f"{column} has an integer dtype",
            ),
            _Check(
                lambda: ExpectColumnValuesToNotBeNull(column=column),
                (column,),
                f"{column} is set",
            ),
            _Check(
                lambda: ExpectColumnValuesToBeBetween(column=column, min_value=1),
                (column,),
                f"{column} is a positive integer (>= 1)",
            ),
        ]

    def not_null(column: str) -> _Check:
        return _Check(
            lambda: ExpectColumnValuesToNotBeNull(column=column), (column,), f"{column} is set"
        )

    return [
        _Spec("ratings_columns", "ratings", (columns_match(RATING_COLUMNS, "ratings"),)),
        _Spec("movies_columns", "movies", (columns_match(MOVIE_COLUMNS, "movies"),)),
        _Spec("ratings_user_ids", "ratings", tuple(positive_ids("user_id")), key="user_id"),
        _Spec("ratings_movie_ids", "ratings", (
            *positive_ids("movie_id"),
            _Check(
                lambda: ExpectColumnPairValuesToBeEqual(column_A="movie_id",
                                                            column_B=CATALOG_ID),
                ("movie_id",),
                "every rated movie_id exists in movies (it equals its match in the catalogue)",
            ),
        ), key="movie_id"),
        _Spec("ratings_rating_values", "ratings", (
            not_null("rating"),
            _Check(
                lambda: ExpectColumnValuesToBeInSet(column="rating",
                                                        value_set=list(RATING_VALUES)),
                ("rating",),
                "rating is one of 0.5, 1.0, ..., 5.0",
            ),
        ), key="rating"),
        _Spec("ratings_timestamps", "ratings", (
            not_null("timestamp"),
            _Check(
                lambda: ExpectColumnValuesToBeBetween(
                    column="timestamp", min_value=MIN_TIMESTAMP,
                    max_value={"$PARAMETER": "max_timestamp"},
                ),
                ("timestamp",),
                f"timestamp is plausible: from 1995-01-01 ({MIN_TIMESTAMP}) to now + 1 day "
                "({max_timestamp})",
            ),
        )),
        _Spec("ratings_repeated_pairs", "ratings", (
            _Check(
                lambda: ExpectCompoundColumnsToBeUnique(column_list=["user_id", "movie_id"]),
                ("user_id", "movie_id"),
                "a user rates a movie at most once",
            ),
        )),
        _Spec("movies", "movies", (
            *positive_ids("movie_id"),
            _Check(
                lambda: ExpectColumnValuesToBeUnique(column="movie_id"),
                ("movie_id",),
                "movie_id is unique",
            ),
            not_null("title"),
            _Check(
                lambda: ExpectColumnValuesToMatchRegex(column="title", regex=r"\S"),
                ("title",),
                "title is not empty or blank",
            ),
            _Check(
                lambda: ExpectColumnValuesToBeBetween(
                    column="year", min_value=MIN_YEAR, max_value={"$PARAMETER": "max_year"}
                ),
                ("year",),
                f"year is missing or within {MIN_YEAR}..{{max_year}} (current year + 5)",
            ),
            not_null("genres"),
        )),
    ]  # fmt: skip


class _Suites:
    """An ephemeral GX context holding one validation definition per spec.

    Built once per process: creating the assets, suites and definitions costs more than
    validating 100k ratings. Runs are serialised by a lock, and the stored validation results
    are dropped after each run so that memory stays flat and Data Docs show one run.
    """

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            data_docs_sites={},
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context: AbstractDataContext = gx.get_context(mode="ephemeral", project_config=config)
        self.lock = threading.Lock()
        source = self.context.data_sources.add_pandas("recolab")
        self.specs = {spec.name: spec for spec in _specs()}
        self.definitions: dict[str, BatchDefinition[Any]] = {}
        self.validations: dict[str, ValidationDefinition] = {}
        self.checks: dict[str, dict[str, tuple[_Check, Expectation]]] = {}
        for spec in self.specs.values():
            asset = source.add_dataframe_asset(spec.name)
            definition = asset.add_batch_definition_whole_dataframe("whole")
            suite = self.context.suites.add(gx.ExpectationSuite(name=spec.name))
            by_id = {}
            for check in spec.checks:
                expectation = suite.add_expectation(check.make())
                by_id[str(expectation.id)] = (check, expectation)
            self.definitions[spec.name] = definition
            self.checks[spec.name] = by_id
            self.validations[spec.name] = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=spec.name, data=definition, suite=suite)
            )

    @contextmanager
    def session(self) -> Iterator[_Suites]:
        with self.lock:
            try:
                yield self
            finally:
                store = self.context.validation_results_store
                for key in store.list_keys():
                    store.remove_key(key)  # type: ignore[no-untyped-call]

    def run(
        self, frames: list[_Frame], parameters: dict[str, Any], sample_size: int
    ) -> list[_Outcome]:
        """Run each frame's suite with the BASIC result format, in the specs' check order."""
        result_format = {"result_format": "BASIC", "partial_unexpected_count": sample_size}
        outcomes: list[_Outcome] = []
        for frame in frames:
            run = self.validations[frame.name].run(
                batch_parameters={"dataframe": frame.frame},
                expectation_parameters=parameters,
                result_format=result_format,
            )
            checks = self.checks[frame.name]
            order = list(checks)
            for result in sorted(run.results, key=lambda r: order.index(_expectation_id(r))):
                check, expectation = checks[_expectation_id(result)]
                outcomes.append(
                    _Outcome(
                        spec=self.specs[frame.name],
                        check=check,
                        expectation=expectation,
                        result=result,
                        frame=frame,
                        parameters=parameters,
                        rerun=functools.partial(self._rerun, frame, parameters),
                    )
                )
        return outcomes

    def _rerun(
        self,
        frame: _Frame,
        parameters: dict[str, Any],
        expectation: Expectation,
        result_format: dict[str, Any],
    ) -> dict[str, Any]:
        """Validate one expectation again, with a richer result format, on the same frame."""
        batch = self.definitions[frame.name].get_batch(batch_parameters={"dataframe": frame.frame})
        result = batch.validate(
            expectation, result_format=result_format, expectation_parameters=parameters
        )
        return dict(result.result)

    def build_data_docs(self, directory: Path) -> Path:
        """GX Data Docs of the current session's runs, written to ``directory``."""
        site = f"recolab-{uuid.uuid4().hex}"
        self.context.add_data_docs_site(
            site,
            {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(directory),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        try:
            self.context.build_data_docs(site_names=[site])
        finally:
            self.context.delete_data_docs_site(site)
        return directory / "index.html"


def _expectation_id(result: ExpectationValidationResult) -> str:
    assert result.expectation_config is not None
    return str(result.expectation_config.id)


@functools.cache
def _suites() -> _Suites:
    return _Suites()


def _schema_frames(ratings: pd.DataFrame, movies: pd.DataFrame) -> list[_Frame]:
    # The column set is all a table-level schema check reads: hand GX zero rows.
    return [_Frame("ratings_columns", ratings.head(0)), _Frame("movies_columns", movies.head(0))]


def _data_frames(ratings: pd.DataFrame, movies: pd.DataFrame) -> list[_Frame]:
    movie_ids = _value_counts(ratings, "movie_id")
    catalog = movies["movie_id"].dropna().unique()
    movie_ids[CATALOG_ID] = movie_ids["movie_id"].where(movie_ids["movie_id"].isin(catalog))
    repeated = _repeated_pair_positions(ratings)
    return [
        _Frame("ratings_user_ids", _value_counts(ratings, "user_id")),
        _Frame("ratings_movie_ids", movie_ids),
        _Frame("ratings_rating_values", _value_counts(ratings, "rating")),
        _Frame("ratings_timestamps", ratings[["timestamp"]].reset_index(drop=True)),
        _Frame(
            "ratings_repeated_pairs",
            ratings.iloc[repeated].reset_index(drop=True),
            rows=repeated,
        ),
        _Frame("movies", movies.reset_index(drop=True)),
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


def _to_result(outcome: _Outcome, source: pd.DataFrame, sample_size: int) -> ExpectationResult:
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
    outcome: _Outcome, source: pd.DataFrame, sample_size: int
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


def _row_failures(
    outcome: _Outcome, source: pd.DataFrame, sample_size: int
) -> list[dict[str, Any]]:
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
