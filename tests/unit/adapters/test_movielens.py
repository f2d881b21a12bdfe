"""MovieLens readers: every layout, the normalised contract, and every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from recolab.adapters.ingest.movielens import (
    DatasetError,
    MovieLensData,
    detect_layout,
    normalise_genres,
    read_movielens,
    split_titles,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "movielens"
REAL_SMALL = Path(__file__).parents[4] / "shared" / "data" / "movielens" / "ml-latest-small"

RATING_DTYPES = {"user_id": "int64", "movie_id": "int64", "rating": "float64", "timestamp": "int64"}


def assert_contract(data: MovieLensData) -> None:
    assert list(data.ratings.columns) == list(RATING_DTYPES)
    assert {c: str(t) for c, t in data.ratings.dtypes.items()} == RATING_DTYPES
    assert list(data.movies.columns) == ["movie_id", "title", "year", "genres"]
    assert str(data.movies["movie_id"].dtype) == "int64"
    assert str(data.movies["year"].dtype) == "Int64"
    assert pd.api.types.is_string_dtype(data.movies["title"])
    assert pd.api.types.is_string_dtype(data.movies["genres"])
    assert not data.movies["genres"].isna().any()
    assert not data.movies["title"].isna().any()


def copy_fixture(layout: str, tmp_path: Path) -> Path:
    target = tmp_path / layout
    shutil.copytree(FIXTURES / layout, target)
    return target


def movie(data: MovieLensData, movie_id: int) -> dict[str, object]:
    row = data.movies.set_index("movie_id").loc[movie_id]
    return {"title": row["title"], "year": row["year"], "genres": row["genres"]}


# --- layouts -----------------------------------------------------------------------------


def test_ml100k_tab_ratings_and_latin1_pipe_items() -> None:
    data = read_movielens(FIXTURES / "ml-100k")

    assert data.layout == "ml-100k"
    assert_contract(data)
    assert len(data.ratings) == 7
    assert data.ratings.iloc[0].tolist() == [1, 1, 5.0, 881250949]
    assert movie(data, 1) == {
        "title": "Paper Lanterns",
        "year": 1994,
        "genres": "Animation|Children|Comedy",
    }
    assert movie(data, 2)["title"] == "Café Noir"
    assert movie(data, 4)["title"] == "Misérables à Paris, Les"
    unknown = movie(data, 3)
    assert unknown["genres"] == "Unknown" and pd.isna(unknown["year"])
    # No year in the title: the release date gives it.
    assert movie(data, 5) == {"title": "Night Harbor", "year": 1997, "genres": "Thriller"}


def test_ml1m_double_colon_latin1() -> None:
    data = read_movielens(FIXTURES / "ml-1m")

    assert data.layout == "ml-1m"
    assert_contract(data)
    assert data.ratings["rating"].tolist() == [5.0, 3.0, 4.0, 1.0, 2.0]
    assert data.ratings["timestamp"].tolist()[0] == 978300760
    assert movie(data, 10) == {"title": "Été Sauvage", "year": 1999, "genres": "Drama|Romance"}
    assert movie(data, 20) == {
        "title": "Children's Crusade, The",
        "year": 1987,
        "genres": "Adventure|Children",
    }
    assert movie(data, 30)["title"] == "Señor Kilómetro: El Regreso"


def test_ml10m_double_colon_utf8_half_stars() -> None:
    data = read_movielens(FIXTURES / "ml-10m")

    assert data.layout == "ml-10m"
    assert_contract(data)
    assert data.ratings["rating"].tolist() == [4.5, 3.0, 0.5, 5.0, 2.5]
    assert movie(data, 100) == {
        "title": "Space: Odyssey Beyond",
        "year": 2001,
        "genres": "Sci-Fi|Adventure",
    }
    assert movie(data, 200)["title"] == "Žena na mostě"
    assert movie(data, 300)["genres"] == "Unknown"


def test_ml_latest_small_csv_quoting_and_year_variants() -> None:
    data = read_movielens(FIXTURES / "ml-latest-small")

    assert data.layout == "ml-latest-small"
    assert_contract(data)
    assert data.ratings["rating"].tolist() == [4.0, 3.5, 5.0, 0.5, 2.0, 4.5, 3.0]
    assert data.ratings["user_id"].tolist() == [1, 1, 2, 2, 3, 3, 3]
    assert movie(data, 1) == {"title": "Lighthouse, The", "year": 1999, "genres": "Drama|Mystery"}
    assert movie(data, 2)["year"] == 2007  # "(2007-2013)"
    assert movie(data, 3) == {"title": "Midnight Train", "year": 1995, "genres": "Thriller"}
    untitled = movie(data, 4)
    assert untitled["title"] == "Untitled Project" and pd.isna(untitled["year"])
    assert untitled["genres"] == "Unknown"
    assert movie(data, 5)["title"] == '"Big" Night Out'
    assert movie(data, 6) == {"title": "Ça Ira", "year": 2003, "genres": "Documentary|Children"}


@pytest.mark.parametrize("release", ["ml-latest", "ml-20m", "ml-25m", "ml-32m"])
def test_csv_layout_named_after_release_folder(release: str, tmp_path: Path) -> None:
    folder = tmp_path / release
    shutil.copytree(FIXTURES / "ml-latest-small", folder)
    assert read_movielens(folder).layout == release


def test_csv_layout_in_other_folder_is_ml_csv_and_demo_marker_wins(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    renamed = folder.rename(tmp_path / "my-data")
    assert detect_layout(renamed).name == "ml-csv"
    (renamed / "DEMO.txt").write_text("synthetic\n")
    assert read_movielens(renamed).layout == "demo"


def test_release_unzipped_one_level_deeper_is_found(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "ml-1m", tmp_path / "outer" / "ml-1m")
    layout = detect_layout(tmp_path / "outer")
    assert layout.name == "ml-1m"
    assert layout.folder == tmp_path / "outer" / "ml-1m"
    assert len(read_movielens(tmp_path / "outer").ratings) == 5


def test_dat_without_users_file_is_ml10m(tmp_path: Path) -> None:
    folder = copy_fixture("ml-1m", tmp_path)
    (folder / "users.dat").unlink()
    assert detect_layout(folder).name == "ml-10m"


def test_crlf_line_endings(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    for name in ("ratings.csv", "movies.csv"):
        path = folder / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    data = read_movielens(folder)
    assert data.ratings["timestamp"].iloc[-1] == 1306463611
    assert movie(data, 6)["genres"] == "Documentary|Children"


@pytest.mark.skipif(not REAL_SMALL.is_dir(), reason="real ml-latest-small not available")
def test_real_ml_latest_small() -> None:
    data = read_movielens(REAL_SMALL)

    assert data.layout == "ml-latest-small"
    assert_contract(data)
    assert len(data.ratings) == 100_836
    assert data.ratings["user_id"].nunique() == 610
    assert len(data.movies) == 9_742
    assert set(data.ratings["rating"].unique()) == {x / 2 for x in range(1, 11)}
    toy_story = movie(data, 1)
    assert toy_story == {
        "title": "Toy Story",
        "year": 1995,
        "genres": "Adventure|Animation|Children|Comedy|Fantasy",
    }
    assert not data.movies["genres"].str.contains("no genres", regex=False).any()
    assert data.movies["year"].notna().mean() > 0.99


# --- normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("Babylon 5 (1994 )", "Babylon 5", 1994),
        ("Series, The (2007-2013)", "Series, The", 2007),
        ("Open Show (2016-)", "Open Show", 2016),
        ("Trailing (2001)  ", "Trailing", 2001),
        ("(500) Days of Something (2009)", "(500) Days of Something", 2009),
        ("1984 (1984)", "1984", 1984),
        ("No Year Here", "No Year Here", None),
        ("Blade Number 2049", "Blade Number 2049", None),
        ("(1995)", "(1995)", 1995),
    ],
)
def test_split_titles(raw: str, title: str, year: int | None) -> None:
    titles, years = split_titles(pd.Series([raw], dtype="str"))
    assert titles.iloc[0] == title
    assert (pd.isna(years.iloc[0]) and year is None) or years.iloc[0] == year
    assert str(years.dtype) == "Int64"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Action|Drama", "Action|Drama"),
        ("(no genres listed)", "Unknown"),
        ("", "Unknown"),
        ("Animation|Children's", "Animation|Children"),
        ("unknown", "Unknown"),
        ("unknown|Drama", "Drama"),
        (" Comedy | Romance ", "Comedy|Romance"),
        ("Drama|Drama", "Drama"),
    ],
)
def test_normalise_genres(raw: str, expected: str) -> None:
    assert normalise_genres([raw]).tolist() == [expected]


# --- bad input ---------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist") as err:
        read_movielens(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_path_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DatasetError, match="not a folder"):
        read_movielens(path)


def test_unknown_layout_lists_expected_files(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n")
    with pytest.raises(DatasetError) as err:
        read_movielens(tmp_path)
    message = str(err.value)
    for expected in ("u.data", "ratings.dat", "movies.csv", "Found: ratings.csv"):
        assert expected in message


RATINGS_FILE = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-latest-small": "ratings.csv"}
SEP = {"ml-100k": "\t", "ml-1m": "::", "ml-latest-small": ","}


def append_line(path: Path, line: str) -> int:
    """Append ``line`` and return its 1-based line number."""
    text = path.read_text(encoding="latin-1")
    path.write_text(text + line + "\n", encoding="latin-1")
    return text.count("\n") + 1


@pytest.mark.parametrize("layout", list(RATINGS_FILE))
@pytest.mark.parametrize("fields", [["7", "1", "4", "9", "99"], ["7", "1", "4"]])
def test_ratings_wrong_field_count(layout: str, fields: list[str], tmp_path: Path) -> None:
    folder = copy_fixture(layout, tmp_path)
    path = folder / RATINGS_FILE[layout]
    number = append_line(path, SEP[layout].join(fields))
    with pytest.raises(DatasetError, match=rf"line {number}: expected 4 fields") as err:
        read_movielens(folder)
    assert RATINGS_FILE[layout] in str(err.value)


@pytest.mark.parametrize("layout", list(RATINGS_FILE))
def test_ratings_non_numeric_rating(layout: str, tmp_path: Path) -> None:
    folder = copy_fixture(layout, tmp_path)
    path = folder / RATINGS_FILE[layout]
    number = append_line(path, SEP[layout].join(["7", "1", "abc", "964982703"]))
    with pytest.raises(DatasetError, match=rf"line {number}: rating is not a number: 'abc'"):
        read_movielens(folder)


@pytest.mark.parametrize("layout", list(RATINGS_FILE))
def test_ratings_empty_rating_field(layout: str, tmp_path: Path) -> None:
    folder = copy_fixture(layout, tmp_path)
    path = folder / RATINGS_FILE[layout]
    number = append_line(path, SEP[layout].join(["7", "1", "", "964982703"]))
    with pytest.raises(DatasetError, match=rf"line {number}: rating is not a number"):
        read_movielens(folder)


def test_ratings_non_integer_user(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    number = append_line(folder / "ratings.csv", "7.5,1,4.0,964982703")
    with pytest.raises(DatasetError, match=rf"line {number}: user_id is not an integer: '7.5'"):
        read_movielens(folder)


def test_dat_single_colon_separators_rejected(tmp_path: Path) -> None:
    folder = copy_fixture("ml-1m", tmp_path)
    number = append_line(folder / "ratings.dat", "7:1:4:9:5:6:7")
    with pytest.raises(DatasetError, match=rf"ratings.dat: line {number}: expected 4 fields"):
        read_movielens(folder)


@pytest.mark.parametrize("layout", list(RATINGS_FILE))
def test_zero_byte_ratings_file(layout: str, tmp_path: Path) -> None:
    folder = copy_fixture(layout, tmp_path)
    (folder / RATINGS_FILE[layout]).write_bytes(b"")
    with pytest.raises(DatasetError, match=rf"{RATINGS_FILE[layout]}: empty file \(0 bytes\)"):
        read_movielens(folder)


def test_header_only_ratings_csv(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DatasetError, match=r"ratings.csv: empty ratings file \(only a header\)"):
        read_movielens(folder)


def test_blank_lines_only_ratings_dat(tmp_path: Path) -> None:
    folder = copy_fixture("ml-1m", tmp_path)
    (folder / "ratings.dat").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"ratings\.dat: empty ratings file"):
        read_movielens(folder)


def test_header_only_movies_csv(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    (folder / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(DatasetError, match=r"movies\.csv: empty movies file"):
        read_movielens(folder)


def test_wrong_ratings_header(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    path = folder / "ratings.csv"
    path.write_text(path.read_text().replace("timestamp", "time"))
    with pytest.raises(DatasetError, match=r"ratings\.csv: line 1: expected header"):
        read_movielens(folder)


@pytest.mark.parametrize(
    ("layout", "name"),
    [
        ("ml-latest-small", "ratings.csv"),
        ("ml-latest-small", "movies.csv"),
        ("ml-1m", "movies.dat"),
    ],
)
def test_utf16_file_rejected(layout: str, name: str, tmp_path: Path) -> None:
    folder = copy_fixture(layout, tmp_path)
    path = folder / name
    path.write_bytes(path.read_bytes().decode("latin-1").encode("utf-16"))
    with pytest.raises(DatasetError, match=rf"{name}: file is UTF-16"):
        read_movielens(folder)


def test_utf16_without_bom_rejected(tmp_path: Path) -> None:
    folder = copy_fixture("ml-100k", tmp_path)
    path = folder / "u.data"
    path.write_bytes(path.read_bytes().decode("ascii").encode("utf-16-le"))
    with pytest.raises(DatasetError, match=r"u.data: file contains NUL bytes"):
        read_movielens(folder)


def test_binary_file_rejected(tmp_path: Path) -> None:
    folder = copy_fixture("ml-10m", tmp_path)
    (folder / "movies.dat").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DatasetError, match=r"movies.dat: file contains NUL bytes"):
        read_movielens(folder)


def test_movies_csv_wrong_field_count(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    number = append_line(folder / "movies.csv", "7,Loose, Comma (2000),Drama")
    with pytest.raises(DatasetError, match=rf"movies.csv: line {number}: expected 3 fields"):
        read_movielens(folder)


def test_movies_dat_missing_separator(tmp_path: Path) -> None:
    folder = copy_fixture("ml-10m", tmp_path)
    number = append_line(folder / "movies.dat", "400::No Genres Field (2000)")
    with pytest.raises(DatasetError, match=rf"movies.dat: line {number}: expected 3 fields"):
        read_movielens(folder)


def test_u_item_wrong_field_count(tmp_path: Path) -> None:
    folder = copy_fixture("ml-100k", tmp_path)
    number = append_line(folder / "u.item", "6|Short Line (1990)|01-Jan-1990||url|0|1")
    with pytest.raises(DatasetError, match=rf"u.item: line {number}: expected 24 fields"):
        read_movielens(folder)


def test_movie_id_not_integer(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    number = append_line(folder / "movies.csv", "x7,Some Film (2000),Drama")
    with pytest.raises(DatasetError, match=rf"movies.csv: line {number}: movie id is not an"):
        read_movielens(folder)


def test_movies_wrong_header(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    path = folder / "movies.csv"
    path.write_text(path.read_text().replace("movieId,title,genres", "id,name,genres"))
    with pytest.raises(DatasetError, match=r"movies\.csv: line 1: expected header"):
        read_movielens(folder)


def test_value_rules_are_not_the_readers_job(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    path = folder / "ratings.csv"
    # Out-of-range ratings, a duplicate pair and an unknown movie all parse (GX checks them).
    path.write_text(path.read_text() + "1,1,0,1\n1,1,5.5,2\n9,999,3.0,3\n")
    ratings = read_movielens(folder).ratings
    assert ratings["rating"].tolist()[-3:] == [0.0, 5.5, 3.0]
