"""Cost of Great Expectations validation of ratings: a straightforward GX setup against
recolab.adapters.ingest.validation, on synthetic valid frames of 100k, 1M and 10M ratings.

Straightforward: one ephemeral context, the whole ratings frame as one batch carrying every
ratings expectation (the referential check as expect_column_values_to_be_in_set over the movie
ids), the movies frame as another, BASIC result format. Both sides run in the same process, one
after the other, so compare their ratio rather than absolute seconds. Prints one JSON object.

    .venv/bin/python benchmarks/validation_cost.py [--sizes 100000 1000000 10000000] [--out F]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NOW = 1_700_000_000
INGEST_RATE = 300_000  # ratings/s end to end: the ingest goal
VALIDATION_SHARE = 0.25  # validation may take at most this share of the ingest


def synthetic(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Valid frames shaped like MovieLens: ~1 user per 140 ratings, ~10k movies, no pair twice."""
    rng = np.random.default_rng(seed)
    n_movies = 9_742 if n <= 100_000 else 10_681
    n_users = max(610, n // 140)
    keys = np.unique(rng.integers(0, n_users * n_movies, size=int(n * 1.05)))
    keys = rng.permutation(keys)[:n]  # shuffled: the worst case for the duplicate sort
    ratings = pd.DataFrame(
        {
            "user_id": keys // n_movies + 1,
            "movie_id": keys % n_movies + 1,
            "rating": rng.integers(1, 11, size=n) * 0.5,
            "timestamp": rng.integers(788_918_400, NOW, size=n),
        }
    )
    movies = pd.DataFrame(
        {
            "movie_id": np.arange(1, n_movies + 1, dtype=np.int64),
            "title": [f"Movie {i}" for i in range(1, n_movies + 1)],
            "year": pd.array(rng.integers(1900, 2024, size=n_movies), dtype="Int64"),
            "genres": "Drama",
        }
    )
    return ratings, movies


def _expectations() -> Any:
    # Any: mypy does not count great_expectations.expectations' re-exports as exported.
    return importlib.import_module("great_expectations.expectations")


def _config() -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    return DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )


class Straightforward:
    """The GX setup one writes first: whole frames, one suite each, built once."""

    def __init__(self, movie_ids: list[int]) -> None:
        import great_expectations as gx

        gxe = _expectations()
        context = gx.get_context(mode="ephemeral", project_config=_config())
        source = context.data_sources.add_pandas("plain")
        ratings = [
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "movie_id")),
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("rating", "timestamp")),
            gxe.ExpectColumnValuesToBeBetween(column="user_id", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="movie_id", min_value=1),
            gxe.ExpectColumnValuesToBeInSet(
                column="rating", value_set=[k / 2 for k in range(1, 11)]
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="timestamp", min_value=788_918_400, max_value=NOW + 86_400
            ),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "movie_id"]),
            gxe.ExpectColumnValuesToBeInSet(column="movie_id", value_set=movie_ids),
        ]
        movies = [
            gxe.ExpectColumnValuesToNotBeNull(column="movie_id"),
            gxe.ExpectColumnValuesToBeBetween(column="movie_id", min_value=1),
            gxe.ExpectColumnValuesToBeUnique(column="movie_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="title"),
            gxe.ExpectColumnValuesToMatchRegex(column="title", regex=r"\S"),
            gxe.ExpectColumnValuesToBeBetween(column="year", min_value=1874, max_value=2030),
            gxe.ExpectColumnValuesToNotBeNull(column="genres"),
        ]
        self.validations = {}
        for name, expectations in (("ratings", ratings), ("movies", movies)):
            suite = context.suites.add(gx.ExpectationSuite(name=name))
            for expectation in expectations:
                suite.add_expectation(expectation)
            definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(
                "all"
            )
            self.validations[name] = context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=definition, suite=suite)
            )

    def run(self, ratings: pd.DataFrame, movies: pd.DataFrame) -> bool:
        ok = True
        for name, frame in (("ratings", ratings), ("movies", movies)):
            result = self.validations[name].run(
                batch_parameters={"dataframe": frame}, result_format="BASIC"
            )
            ok = ok and bool(result.success)
        return ok


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def in_set_cost(movie_ids: list[int]) -> float:
    """One expect_column_values_to_be_in_set over the movie ids, on 1k distinct rated ids."""
    import great_expectations as gx

    gxe = _expectations()
    context = gx.get_context(mode="ephemeral", project_config=_config())
    batch = (
        context.data_sources.add_pandas("probe")
        .add_dataframe_asset("ids")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": pd.DataFrame({"movie_id": movie_ids[:1000]})})
    )
    expectation = gxe.ExpectColumnValuesToBeInSet(column="movie_id", value_set=movie_ids)
    start = time.perf_counter()
    batch.validate(expectation, result_format="BASIC")
    return time.perf_counter() - start


def measure(n: int, plain: bool) -> dict[str, Any]:
    from recolab.adapters.ingest.validation import validate_dataset

    ratings, movies = synthetic(n)
    repeat = 3 if n <= 1_000_000 else 1
    ours_s, report = timed(lambda: validate_dataset(ratings, movies, now=NOW), repeat)
    assert report.success, [f.summary() for f in report.failures]
    ordered = ratings.sort_values(["user_id", "movie_id"], ignore_index=True)
    sorted_s, _ = timed(lambda: validate_dataset(ordered, movies, now=NOW), repeat)
    bad = ratings.copy()
    bad.loc[bad.index[:: max(1, n // 100)], "rating"] = 0.0  # 100 bad rows spread out
    failing_s, failing = timed(lambda: validate_dataset(bad, movies, now=NOW), 1)
    counted = {f.expectation: f.unexpected_count for f in failing.failures}
    figures: dict[str, Any] = {
        "n_ratings": n,
        "n_movies": len(movies),
        "recolab_s": round(ours_s, 3),
        "recolab_timings_s": {k: round(v, 3) for k, v in report.timings.items()},
        "recolab_gx_share": round(report.timings["gx_s"] / report.duration_s, 3),
        "recolab_ratings_per_s": round(n / ours_s),
        "recolab_sorted_input_s": round(sorted_s, 3),  # as MovieLens files come
        "recolab_with_100_bad_rows_s": round(failing_s, 3),
        "bad_rows_counted": counted,
        "budget_s": round(n / INGEST_RATE * VALIDATION_SHARE, 3),
    }
    if plain:
        start = time.perf_counter()
        straightforward = Straightforward(movies["movie_id"].tolist())
        figures["straightforward_setup_s"] = round(time.perf_counter() - start, 3)
        plain_s, ok = timed(lambda: straightforward.run(ratings, movies), 1)
        assert ok
        figures["straightforward_s"] = round(plain_s, 3)
        figures["speedup"] = round(plain_s / ours_s, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--no-straightforward", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    start = time.perf_counter()
    import great_expectations as gx

    import_s = time.perf_counter() - start
    from recolab.adapters.ingest.validation import validate_dataset

    tiny_ratings, tiny_movies = synthetic(1_000)
    start = time.perf_counter()
    validate_dataset(tiny_ratings, tiny_movies, now=NOW)  # builds the reusable suites
    first_call_s = time.perf_counter() - start
    steady_s, _ = timed(lambda: validate_dataset(tiny_ratings, tiny_movies, now=NOW), 3)
    movie_ids = list(range(1, 10_682))
    result = {
        "benchmark": "validation_cost",
        "dataset": "synthetic valid MovieLens-shaped frames (shuffled rows), seed 0",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "versions": {"great_expectations": gx.__version__, "pandas": pd.__version__},
        "gx_import_s": round(import_s, 3),
        "first_call_setup_s": round(first_call_s - steady_s, 3),
        "fixed_cost_per_call_s": round(steady_s, 3),
        "referential_in_set_10681_ids_s": round(in_set_cost(movie_ids), 3),
        "sizes": [measure(n, not args.no_straightforward) for n in args.sizes],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
