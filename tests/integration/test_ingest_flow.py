"""The `ingest` Prefect flow and `recolab ingest`, against real SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from recolab.adapters.sql import schema as s
from recolab.adapters.sql.engine import make_engine

SMALL_DEMO = [
    "pipeline.demo.n_users=60",
    "pipeline.demo.n_movies=120",
    "pipeline.demo.n_ratings=3000",
]
MOVIES = (
    "movieId,title,genres\n"
    "1,Heat (1995),Action|Crime\n"
    '2,"Amélie, The Fabulous (2001)",Comedy|Romance\n'
    "3,Alien (1979),Horror|Sci-Fi\n"
)
RATINGS = (
    "userId,movieId,rating,timestamp\n1,1,5.0,964982703\n1,2,4.0,964981247\n2,3,2.5,964982224\n"
)

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECOLAB_DATABASE_URL", db_url)
    return db_url


def counts(url: str) -> tuple[int, int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (s.users, s.movies, s.ratings)
            )
    finally:
        engine.dispose()


def write_release(folder: Path, ratings: str = RATINGS, movies: str = MOVIES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.csv").write_text(movies, encoding="utf-8")
    (folder / "ratings.csv").write_text(ratings, encoding="utf-8")
    return folder


def run(*args: str) -> tuple[int, str]:
    """Run the ingest flow as `recolab ingest` would, mapping failures to (1, message)."""
    from flows.ingest import ingest

    opts = dict(zip(args[::2], args[1::2], strict=True))
    try:
        result = ingest(dataset=opts["--dataset"], source=opts.get("--source"))
    except Exception as exc:
        return 1, f"{type(exc).__name__}: {exc}"
    return 0, str(result)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console script in a subprocess, pointed at the test Prefect server."""
    from prefect.settings import PREFECT_API_URL

    full_env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), **(env or {})}
    exe = Path(sys.executable).with_name("recolab")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=full_env, timeout=300, check=False
    )


def test_flow_loads_demo_idempotently_with_artifact(env: str) -> None:
    from prefect import get_client

    from flows.ingest import ingest

    first = ingest(dataset="demo", overrides=SMALL_DEMO)
    assert first["load"]["ratings_inserted"] == 3000
    assert first["statistics"]["ratings"] == 3000
    assert Path(first["report_dir"], "validation.json").exists()
    again = ingest(dataset="demo", overrides=SMALL_DEMO)
    assert again["load"]["ratings_inserted"] == 0
    assert again["load"]["ratings_unchanged"] == 3000
    assert counts(env) == (60, 120, 3000)

    async def artifact() -> str | None:
        async with get_client() as client:
            found = await client.read_latest_artifacts()
            return next((a.data for a in found if a.key == "ingest-demo"), None)

    import asyncio

    markdown = asyncio.run(artifact())
    assert markdown is not None and "expect_column_values_to_be_in_set" in markdown


def test_cli_ingests_a_local_release_and_updates_changed_ratings(env: str, tmp_path: Path) -> None:
    folder = write_release(tmp_path / "ml-latest-small")
    done = cli("ingest", "--dataset", "ml-latest-small", "--source", str(folder))
    assert done.returncode == 0, done.stderr
    # each phase's progress in the run's logs (the console), with its rows/s
    logs = done.stdout + done.stderr
    for line in ("read: 3 ratings and 3 movies in", "validate: passed in", "load: 3 ratings in"):
        assert line in logs, logs
    assert "load: merging ratings (" in logs and "rows/s" in logs, logs
    assert counts(env) == (2, 3, 3)
    write_release(folder, ratings=RATINGS.replace("1,2,4.0", "1,2,1.5"))
    code, out = run("--dataset", "ml-latest-small", "--source", str(folder))
    assert code == 0, out
    assert "'ratings_updated': 1" in out
    assert counts(env) == (2, 3, 3)
    bad = write_release(tmp_path / "bad" / "ml-latest-small", RATINGS.replace("5.0", "5.5"))
    failed = cli("ingest", "--dataset", "ml-latest-small", "--source", str(bad))
    assert failed.returncode == 1
    # Prefect logs the failed run; the CLI's own last word is the report, not a traceback
    message = failed.stderr[failed.stderr.rindex("error: dataset validation failed") :]
    assert "expect_column_values_to_be_in_set" in message
    assert "Traceback" not in message
    assert counts(env) == (2, 3, 3)


BAD_INPUTS = {
    "rating 0": (RATINGS.replace("1,1,5.0", "1,1,0"), MOVIES, "expect_column_values_to_be_in_set"),
    "rating 5.5": (
        RATINGS.replace("1,1,5.0", "1,1,5.5"),
        MOVIES,
        "expect_column_values_to_be_in_set",
    ),
    "rating abc": (RATINGS.replace("1,1,5.0", "1,1,abc"), MOVIES, "ratings.csv"),
    "duplicate pair": (
        RATINGS + "1,1,3.0,964982800\n",
        MOVIES,
        "expect_compound_columns_to_be_unique",
    ),
    "unknown movie": (RATINGS + "2,99,3.0,964982800\n", MOVIES, "movie_id"),
    "malformed line": (RATINGS + "2,3\n", MOVIES, "ratings.csv"),
    "empty file": ("", MOVIES, "ratings.csv"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_clearly_and_loads_nothing(env: str, tmp_path: Path, case: str) -> None:
    good = write_release(tmp_path / "good" / "ml-latest-small")
    assert run("--dataset", "ml-latest-small", "--source", str(good))[0] == 0
    before = counts(env)
    ratings, movies, expected = BAD_INPUTS[case]
    # new movie 4 alongside the defect: proves nothing at all was written
    bad = write_release(
        tmp_path / "bad" / "ml-latest-small", ratings, movies + "4,Up (2009),Animation\n"
    )
    code, out = run("--dataset", "ml-latest-small", "--source", str(bad))
    assert code != 0
    assert expected in out
    assert counts(env) == before


def test_wrong_encoding_missing_folder_unknown_layout(env: str, tmp_path: Path) -> None:
    folder = tmp_path / "utf16" / "ml-latest-small"
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text(MOVIES, encoding="utf-16")
    (folder / "ratings.csv").write_text(RATINGS, encoding="utf-16")
    cases = [
        (folder, "utf-16"),
        (tmp_path / "nowhere", "no such file"),
        (tmp_path, "layout"),
    ]
    (tmp_path / "stray.txt").write_text("not a dataset")
    for source, expected in cases:
        code, out = run("--dataset", "ml-latest-small", "--source", str(source))
        assert code == 1, out
        assert expected in out.lower() or expected in out


def test_truncated_zip_is_refused(env: str, tmp_path: Path) -> None:
    folder = write_release(tmp_path / "ml-latest-small")
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"ml-latest-small/{f.name}")
    archive.write_bytes(archive.read_bytes()[:-40])
    code, out = run("--dataset", "ml-latest-small", "--source", str(archive))
    assert code == 1 and "zip" in out.lower()
    assert not (Path(os.environ["RECOLAB_DATA_DIR"]) / "raw" / "ml-latest-small").exists()
