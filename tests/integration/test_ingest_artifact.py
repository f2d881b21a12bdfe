"""The `ingest` flow's Prefect artifact, as the Prefect UI renders it: its "step | seconds"
table has a row per step that ran, with the seconds it took.

The Markdown is read back from the Prefect API (a `prefect_test_harness` server) and parsed
as GitHub-flavoured Markdown, so a table without rows (or without its separator line, which
would not render as a table at all) fails here as it shows in the UI.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

SMALL_DEMO = [
    "pipeline.demo.n_users=40",
    "pipeline.demo.n_movies=80",
    "pipeline.demo.n_ratings=1500",
]
MOVIES = "movieId,title,genres\n1,Heat (1995),Action|Crime\n2,Alien (1979),Horror|Sci-Fi\n"
RATINGS = "userId,movieId,rating,timestamp\n1,1,5.0,964982703\n2,2,5.5,964982224\n"  # 5.5: bad

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECOLAB_DATABASE_URL", sqlite_url)


def tables(markdown: str) -> list[list[list[str]]]:
    """Every table of `markdown` as rendered (GFM): rows of cell texts, the header first."""
    found: list[list[list[str]]] = []
    row: list[str] | None = None
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        if token.type == "table_open":
            found.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append(token.content)
        elif token.type == "tr_close" and row is not None:
            found[-1].append(row)
            row = None
    return found


def step_seconds(markdown: str) -> dict[str, float]:
    """The body of the "step | seconds" table, as the UI shows it."""
    table = next((t for t in tables(markdown) if t[0] == ["step", "seconds"]), None)
    assert table is not None, f"no rendered 'step | seconds' table in:\n{markdown}"
    return {step: float(seconds) for step, seconds in table[1:]}


def latest_markdown(key: str) -> str:
    from prefect import get_client

    async def read() -> str | None:
        async with get_client() as client:
            found = await client.read_latest_artifacts()
            return next((str(a.data) for a in found if a.key == key), None)

    markdown = asyncio.run(read())
    assert markdown is not None, f"no artifact {key!r}"
    return markdown


def test_tables_reads_rendered_rows_only() -> None:
    assert tables("| a | b |\n| --- | ---: |\n| x | 1.5 |\n") == [[["a", "b"], ["x", "1.5"]]]
    assert tables("| a | b |\n| x | 1.5 |\n") == []  # no separator line: not a table


def test_artifact_times_every_step_of_a_load(env: None) -> None:
    from flows.ingest import ingest

    start = time.perf_counter()
    ingest(dataset="demo", overrides=SMALL_DEMO)
    elapsed = time.perf_counter() - start

    seconds = step_seconds(latest_markdown("ingest-demo"))
    assert list(seconds) == ["read", "validate", "load", "statistics"]
    assert all(value >= 0 for value in seconds.values()), seconds
    assert seconds["validate"] > 0  # Great Expectations never takes no time
    assert sum(seconds.values()) <= elapsed


def test_artifact_of_a_failed_validation_times_the_steps_that_ran(
    env: None, tmp_path: Path
) -> None:
    from flows.ingest import ingest

    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "movies.csv").write_text(MOVIES, encoding="utf-8")
    (folder / "ratings.csv").write_text(RATINGS, encoding="utf-8")
    with pytest.raises(Exception, match="expect_column_values_to_be_in_set"):
        ingest(dataset="ml-latest-small", source=str(folder))

    markdown = latest_markdown("ingest-ml-latest-small")
    assert "nothing was loaded" in markdown
    assert list(step_seconds(markdown)) == ["read", "validate"]
