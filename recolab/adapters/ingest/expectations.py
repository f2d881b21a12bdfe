"""The expectation suites a MovieLens batch must meet, as data: one spec per GX data asset.

Each spec names a GX batch (a frame built in :mod:`recolab.adapters.ingest.validation`) and the
checks run on it; expectations are made lazily, so importing this costs no GX import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recolab.adapters.ingest.movielens import MOVIE_COLUMNS, RATING_COLUMNS
from recolab.domain.values import RATING_VALUES

if TYPE_CHECKING:
    from great_expectations.expectations.expectation import Expectation

MIN_TIMESTAMP = 788_918_400  # 1995-01-01 UTC: MovieLens started collecting ratings in 1995
MIN_YEAR = 1874  # the oldest film in MovieLens (Passage de Venus) is from 1874
INTEGER_TYPES = ("int32", "int64", "Int32Dtype", "Int64Dtype")
COUNT = "n_rows"  # row-count column of the distinct-value batches
CATALOG_ID = "catalog_movie_id"


@dataclass(frozen=True)
class Check:
    make: Callable[[], Expectation]
    columns: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Spec:
    """A GX data asset with its suite. ``key`` marks a distinct-value batch of that column."""

    name: str
    table: str
    checks: tuple[Check, ...]
    key: str | None = None


def specs() -> list[Spec]:
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

    def columns_match(names: tuple[str, ...], table: str) -> Check:
        return Check(
            lambda: ExpectTableColumnsToMatchSet(column_set=list(names), exact_match=True),
            (),
            f"{table} has exactly the columns {', '.join(names)}",
        )

    def positive_ids(column: str) -> list[Check]:
        return [
            Check(
                lambda: ExpectColumnValuesToBeInTypeList(
                    column=column, type_list=list(INTEGER_TYPES)
                ),
                (column,),
                f"{column} has an integer dtype",
            ),
            Check(
                lambda: ExpectColumnValuesToNotBeNull(column=column),
                (column,),
                f"{column} is set",
            ),
            Check(
                lambda: ExpectColumnValuesToBeBetween(column=column, min_value=1),
                (column,),
                f"{column} is a positive integer (>= 1)",
            ),
        ]

    def not_null(column: str) -> Check:
        return Check(
            lambda: ExpectColumnValuesToNotBeNull(column=column), (column,), f"{column} is set"
        )

    return [
        Spec("ratings_columns", "ratings", (columns_match(RATING_COLUMNS, "ratings"),)),
        Spec("movies_columns", "movies", (columns_match(MOVIE_COLUMNS, "movies"),)),
        Spec("ratings_user_ids", "ratings", tuple(positive_ids("user_id")), key="user_id"),
        Spec("ratings_movie_ids", "ratings", (
            *positive_ids("movie_id"),
            Check(
                lambda: ExpectColumnPairValuesToBeEqual(column_A="movie_id",
                                                            column_B=CATALOG_ID),
                ("movie_id",),
                "every rated movie_id exists in movies (it equals its match in the catalogue)",
            ),
        ), key="movie_id"),
        Spec("ratings_rating_values", "ratings", (
            not_null("rating"),
            Check(
                lambda: ExpectColumnValuesToBeInSet(column="rating",
                                                        value_set=list(RATING_VALUES)),
                ("rating",),
                "rating is one of 0.5, 1.0, ..., 5.0",
            ),
        ), key="rating"),
        Spec("ratings_timestamps", "ratings", (
            not_null("timestamp"),
            Check(
                lambda: ExpectColumnValuesToBeBetween(
                    column="timestamp", min_value=MIN_TIMESTAMP,
                    max_value={"$PARAMETER": "max_timestamp"},
                ),
                ("timestamp",),
                f"timestamp is plausible: from 1995-01-01 ({MIN_TIMESTAMP}) to now + 1 day "
                "({max_timestamp})",
            ),
        )),
        Spec("ratings_repeated_pairs", "ratings", (
            Check(
                lambda: ExpectCompoundColumnsToBeUnique(column_list=["user_id", "movie_id"]),
                ("user_id", "movie_id"),
                "a user rates a movie at most once",
            ),
        )),
        Spec("movies", "movies", (
            *positive_ids("movie_id"),
            Check(
                lambda: ExpectColumnValuesToBeUnique(column="movie_id"),
                ("movie_id",),
                "movie_id is unique",
            ),
            not_null("title"),
            Check(
                lambda: ExpectColumnValuesToMatchRegex(column="title", regex=r"\S"),
                ("title",),
                "title is not empty or blank",
            ),
            Check(
                lambda: ExpectColumnValuesToBeBetween(
                    column="year", min_value=MIN_YEAR, max_value={"$PARAMETER": "max_year"}
                ),
                ("year",),
                f"year is missing or within {MIN_YEAR}..{{max_year}} (current year + 5)",
            ),
            not_null("genres"),
        )),
    ]  # fmt: skip
