"""validate_dataset against real Great Expectations: valid frames pass, each kind of bad row
fails the right expectation with the exact count and the real rows as sample."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recolab.adapters.ingest.validation import (
    ValidationFailed,
    ValidationReport,
    raise_for_failures,
    validate_dataset,
)
from tests.conftest import require_shared_movielens

NOW = 1_700_000_000  # 2023-11-14: years up to 2028 are plausible

EXPECTED = {
    ("expect_table_columns_to_match_set", "ratings", ()),
    ("expect_table_columns_to_match_set", "movies", ()),
    ("expect_column_values_to_be_in_type_list", "ratings", ("user_id",)),
    ("expect_column_values_to_not_be_null", "ratings", ("user_id",)),
    ("expect_column_values_to_be_between", "ratings", ("user_id",)),
    ("expect_column_values_to_be_in_type_list", "ratings", ("movie_id",)),
    ("expect_column_values_to_not_be_null", "ratings", ("movie_id",)),
    ("expect_column_values_to_be_between", "ratings", ("movie_id",)),
    ("expect_column_pair_values_to_be_equal", "ratings", ("movie_id",)),
    ("expect_column_values_to_not_be_null", "ratings", ("rating",)),
    ("expect_column_values_to_be_in_set", "ratings", ("rating",)),
    ("expect_column_values_to_not_be_null", "ratings", ("timestamp",)),
    ("expect_column_values_to_be_between", "ratings", ("timestamp",)),
    ("expect_compound_columns_to_be_unique", "ratings", ("user_id", "movie_id")),
    ("expect_column_values_to_be_in_type_list", "movies", ("movie_id",)),
    ("expect_column_values_to_not_be_null", "movies", ("movie_id",)),
    ("expect_column_values_to_be_between", "movies", ("movie_id",)),
    ("expect_column_values_to_be_unique", "movies", ("movie_id",)),
    ("expect_column_values_to_not_be_null", "movies", ("title",)),
    ("expect_column_values_to_match_regex", "movies", ("title",)),
    ("expect_column_values_to_be_between", "movies", ("year",)),
    ("expect_column_values_to_not_be_null", "movies", ("genres",)),
}


def make_ratings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.array([1, 1, 1, 2, 2, 3, 3, 4], dtype=np.int64),
            "movie_id": np.array([1, 2, 3, 1, 4, 2, 3, 4], dtype=np.int64),
            "rating": [4.0, 3.5, 0.5, 5.0, 2.0, 1.0, 4.5, 3.0],
            # 881250949 is a real ml-100k timestamp (1997-12-04)
            "timestamp": np.array(
                [881250949, 891350000, 964982703, 964981247, 1_100_000_000, 1_300_000_000,
                 1_600_000_000, NOW + 3_600],
                dtype=np.int64,
            ),
        }
    )  # fmt: skip


def make_movies() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "movie_id": np.array([1, 2, 3, 4], dtype=np.int64),
            "title": ["Toy Story", "Jumanji", "Passage de Venus", "Untitled"],
            "year": pd.array([1995, 1995, 1874, None], dtype="Int64"),
            "genres": ["Adventure|Animation", "Adventure", "Documentary", "Unknown"],
        }
    )


def keys(
    report: ValidationReport, failed_only: bool = False
) -> set[tuple[str, str, tuple[str, ...]]]:
    results = report.failures if failed_only else report.results
    return {(r.expectation, r.table, tuple(r.columns)) for r in results}


def test_valid_frames_pass_with_every_expectation_listed() -> None:
    report = validate_dataset(make_ratings(), make_movies(), now=NOW)

    assert report.success, [f.summary() for f in report.failures]
    assert report.failures == []
    assert keys(report) == EXPECTED
    assert len(report.results) == len(EXPECTED)
    assert (report.n_ratings, report.n_movies) == (8, 4)
    assert all(r.success for r in report.results)
    assert all(r.unexpected_count in (0, None) for r in report.results)
    assert report.duration_s > 0
    raise_for_failures(report)  # does not raise


def set_rating(value: float) -> Callable[[pd.DataFrame, pd.DataFrame], None]:
    def change(ratings: pd.DataFrame, movies: pd.DataFrame) -> None:
        ratings.loc[3, "rating"] = value

    return change


def set_user(value: int) -> Callable[[pd.DataFrame, pd.DataFrame], None]:
    def change(ratings: pd.DataFrame, movies: pd.DataFrame) -> None:
        ratings.loc[5, "user_id"] = value

    return change


def set_timestamp(value: int) -> Callable[[pd.DataFrame, pd.DataFrame], None]:
    def change(ratings: pd.DataFrame, movies: pd.DataFrame) -> None:
        ratings.loc[6, "timestamp"] = value

    return change


def duplicate_pair(ratings: pd.DataFrame, movies: pd.DataFrame) -> None:
    ratings.loc[4, "movie_id"] = 1  # user 2 now rates movie 1 in rows 3 and 4


def unknown_movie(ratings: pd.DataFrame, movies: pd.DataFrame) -> None:
    ratings.loc[[2, 7], "movie_id"] = 99  # two users rate movie 99, absent from movies


def blank_titles(movies_: pd.DataFrame) -> None:
    movies_.loc[1, "title"] = ""
    movies_.loc[3, "title"] = "   "


def on_movies(change: Callable[[pd.DataFrame], None]) -> Callable[..., None]:
    return lambda ratings, movies: change(movies)


def implausible_years(movies: pd.DataFrame) -> None:
    movies.loc[0, "year"] = 1800
    movies.loc[2, "year"] = 2100


def duplicate_movie(movies: pd.DataFrame) -> None:
    movies.loc[4] = [2, "Jumanji (again)", 1996, "Comedy"]  # appends a row


CASES = [
    # (id, change, failed expectation, table, columns, count, positions of the bad rows)
    ("rating-0", set_rating(0.0), "expect_column_values_to_be_in_set", "ratings", ("rating",),
     1, [3]),
    ("rating-5.5", set_rating(5.5), "expect_column_values_to_be_in_set", "ratings", ("rating",),
     1, [3]),
    ("rating-nan", set_rating(np.nan), "expect_column_values_to_not_be_null", "ratings",
     ("rating",), 1, [3]),
    ("user-0", set_user(0), "expect_column_values_to_be_between", "ratings", ("user_id",), 1, [5]),
    ("user-negative", set_user(-7), "expect_column_values_to_be_between", "ratings",
     ("user_id",), 1, [5]),
    ("duplicate-pair", duplicate_pair, "expect_compound_columns_to_be_unique", "ratings",
     ("user_id", "movie_id"), 2, [3, 4]),
    ("unknown-movie", unknown_movie, "expect_column_pair_values_to_be_equal", "ratings",
     ("movie_id",), 2, [2, 7]),
    ("timestamp-future", set_timestamp(NOW + 2 * 86_400), "expect_column_values_to_be_between",
     "ratings", ("timestamp",), 1, [6]),
    ("timestamp-before-1995", set_timestamp(788_918_399), "expect_column_values_to_be_between",
     "ratings", ("timestamp",), 1, [6]),
    ("empty-title", on_movies(blank_titles), "expect_column_values_to_match_regex", "movies",
     ("title",), 2, [1, 3]),
    ("implausible-year", on_movies(implausible_years), "expect_column_values_to_be_between",
     "movies", ("year",), 2, [0, 2]),
    ("duplicate-movie-id", on_movies(duplicate_movie), "expect_column_values_to_be_unique",
     "movies", ("movie_id",), 2, [1, 4]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expectation", "table", "columns", "count", "rows"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_fails_the_right_expectation_with_count_and_rows(
    change: Callable[[pd.DataFrame, pd.DataFrame], None],
    expectation: str,
    table: str,
    columns: tuple[str, ...],
    count: int,
    rows: list[int],
) -> None:
    ratings, movies = make_ratings(), make_movies()
    change(ratings, movies)

    report = validate_dataset(ratings, movies, now=NOW)

    assert not report.success
    assert keys(report, failed_only=True) == {(expectation, table, columns)}
    assert keys(report) == EXPECTED  # the passing ones are still listed
    (failure,) = report.failures
    assert failure.unexpected_count == count
    source = ratings if table == "ratings" else movies
    assert failure.unexpected_percent == pytest.approx(100 * count / len(source))
    assert [row["row"] for row in failure.sample] == rows
    for row in failure.sample:  # the sample shows the input rows themselves
        expected = source.iloc[row["row"]]
        for column in source.columns:
            value = expected[column]
            assert row[column] == (None if pd.isna(value) else value)


def test_counts_and_samples_are_exact_on_a_larger_shuffled_batch() -> None:
    rng = np.random.default_rng(7)
    n, n_movies = 20_000, 500
    pairs = rng.permutation(np.unique(rng.integers(0, 400 * n_movies, size=n + 2_000)))[:n]
    ratings = pd.DataFrame(
        {
            "user_id": pairs // n_movies + 1,
            "movie_id": pairs % n_movies + 1,
            "rating": rng.integers(1, 11, size=n) * 0.5,
            "timestamp": rng.integers(900_000_000, NOW, size=n),
        }
    )
    movies = pd.DataFrame(
        {
            "movie_id": np.arange(1, n_movies + 1),
            "title": [f"Movie {i}" for i in range(n_movies)],
            "year": pd.array([2000] * n_movies, dtype="Int64"),
            "genres": "Drama",
        }
    )
    bad_rating = rng.choice(n, size=37, replace=False)
    ratings.loc[bad_rating, "rating"] = rng.choice([0.0, 5.5, 3.3], size=37)
    ratings.loc[rng.choice(n, size=11, replace=False), "movie_id"] = n_movies + 1
    copied = rng.choice(n, size=6, replace=False)
    ratings = pd.concat([ratings, ratings.iloc[copied]], ignore_index=True)
    ratings = ratings.sample(frac=1.0, random_state=3).reset_index(drop=True)

    report = validate_dataset(ratings, movies, now=NOW, sample_size=4)

    by_name = {r.expectation: r for r in report.failures}
    assert set(by_name) == {
        "expect_column_values_to_be_in_set",
        "expect_column_pair_values_to_be_equal",
        "expect_compound_columns_to_be_unique",
    }
    truth = {
        "expect_column_values_to_be_in_set": ~ratings["rating"].isin([k / 2 for k in range(1, 11)]),
        "expect_column_pair_values_to_be_equal": ~ratings["movie_id"].isin(movies["movie_id"]),
        "expect_compound_columns_to_be_unique": ratings.duplicated(
            ["user_id", "movie_id"], keep=False
        ),
    }
    for name, bad in truth.items():
        result = by_name[name]
        assert result.unexpected_count == int(bad.sum())
        assert len(result.sample) == 4
        assert all(bad.iloc[row["row"]] for row in result.sample)


def test_schema_mismatch_reports_the_columns_and_stops() -> None:
    ratings = make_ratings().drop(columns=["timestamp"])

    report = validate_dataset(ratings, make_movies(), now=NOW)

    assert not report.success
    assert keys(report, failed_only=True) == {("expect_table_columns_to_match_set", "ratings", ())}
    assert len(report.results) == 2
    assert "timestamp" not in (report.failures[0].observed or "")


def test_non_integer_and_null_ids() -> None:
    ratings = make_ratings()
    ratings["user_id"] = ratings["user_id"].astype(float)
    ratings.loc[1, "user_id"] = 1.5
    movies = make_movies()
    movies["movie_id"] = movies["movie_id"].astype("Int64")
    movies.loc[2, "movie_id"] = pd.NA

    report = validate_dataset(ratings, movies, now=NOW)

    failed = {(r.expectation, r.table): r for r in report.failures}
    assert set(failed) == {
        ("expect_column_values_to_be_in_type_list", "ratings"),
        ("expect_column_values_to_not_be_null", "movies"),
        ("expect_column_pair_values_to_be_equal", "ratings"),  # movie 3 lost its row
    }
    assert failed["expect_column_values_to_be_in_type_list", "ratings"].observed == "float64"
    assert failed["expect_column_values_to_not_be_null", "movies"].unexpected_count == 1
    assert failed["expect_column_pair_values_to_be_equal", "ratings"].unexpected_count == 2


def test_an_expectation_gx_cannot_evaluate_fails_with_its_error() -> None:
    ratings = make_ratings()
    ratings["timestamp"] = "2020-01-01"  # text, not unix seconds

    report = validate_dataset(ratings, make_movies(), now=NOW)

    (failure,) = report.failures
    assert (failure.expectation, failure.columns) == (
        "expect_column_values_to_be_between",
        ["timestamp"],
    )
    assert failure.unexpected_count is None
    assert (failure.observed or "").startswith("error: ")


def test_report_json_round_trips_and_is_strict_json() -> None:
    ratings = make_ratings()
    ratings.loc[3, "rating"] = np.nan
    report = validate_dataset(ratings, make_movies(), now=NOW)

    text = report.to_json()

    assert ValidationReport.from_json(text) == report
    assert json.loads(text)["results"][0]["expectation"] == report.results[0].expectation
    assert report.failures[0].sample[0]["rating"] is None  # NaN becomes null, not NaN


def test_report_dir_gets_json_and_gx_data_docs(tmp_path: Path) -> None:
    ratings = make_ratings()
    ratings.loc[0, "rating"] = 7.0

    report = validate_dataset(ratings, make_movies(), now=NOW, report_dir=tmp_path)

    written = ValidationReport.from_json((tmp_path / "validation.json").read_text())
    assert written == report
    index = tmp_path / "data_docs" / "index.html"
    assert report.data_docs == str(index)
    assert index.is_file()
    pages = list((tmp_path / "data_docs" / "validations").rglob("*.html"))
    assert {p.name.removeprefix("recolab-") for p in pages} >= {
        "ratings_rating_values.html",
        "movies.html",
    }
    assert "ratings_rating_values" in index.read_text()


def test_data_docs_show_only_their_own_run(tmp_path: Path) -> None:
    for run in ("first", "second"):
        validate_dataset(
            make_ratings(), make_movies(), now=NOW, report_dir=tmp_path / run, data_docs="always"
        )

    pages = list((tmp_path / "second" / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 8  # one per suite, none left over from the first run


def test_a_passing_batch_gets_the_json_report_but_data_docs_only_when_asked(
    tmp_path: Path,
) -> None:
    report = validate_dataset(make_ratings(), make_movies(), now=NOW, report_dir=tmp_path)

    assert report.success
    assert ValidationReport.from_json((tmp_path / "validation.json").read_text()) == report
    assert report.data_docs is None
    assert "data_docs_s" not in report.timings
    assert not (tmp_path / "data_docs").exists()


def test_data_docs_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="data_docs must be one of"):
        validate_dataset(make_ratings(), make_movies(), now=NOW, data_docs="sometimes")


def test_validation_failed_names_each_failure_with_count_and_rows() -> None:
    ratings = make_ratings()
    ratings.loc[[0, 2], "rating"] = 0.0
    ratings.loc[4, "user_id"] = -1
    report = validate_dataset(ratings, make_movies(), now=NOW, sample_size=1)

    with pytest.raises(ValidationFailed) as caught:
        raise_for_failures(report)

    message = str(caught.value)
    assert caught.value.report is report
    assert "2 of 22 expectations" in message
    assert re.search(r"expect_column_values_to_be_in_set on ratings\.rating: 2 bad rows", message)
    assert re.search(r"expect_column_values_to_be_between on ratings\.user_id: 1 bad rows", message)
    assert "'row': 0, 'user_id': 1, 'movie_id': 1, 'rating': 0.0" in message
    assert "'row': 2," not in message  # sample_size=1


def test_real_ml_latest_small_passes() -> None:
    root = require_shared_movielens("ml-latest-small")
    raw = pd.read_csv(root / "ratings.csv")
    ratings = raw.set_axis(list(("user_id", "movie_id", "rating", "timestamp")), axis=1)
    items = pd.read_csv(root / "movies.csv")
    parts = items["title"].str.strip().str.extract(r"^(.*?)(?:\s*\((\d{4})\))?$")
    movies = pd.DataFrame(
        {
            "movie_id": items["movieId"],
            "title": parts[0],
            "year": pd.to_numeric(parts[1]).astype("Int64"),
            "genres": items["genres"].replace("(no genres listed)", "Unknown"),
        }
    )

    report = validate_dataset(ratings, movies)

    assert report.success, [f.summary() for f in report.failures]
    assert report.n_ratings == 100_836
