"""Dataset download against a real local HTTP server serving fixture zips (no internet)."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recolab.adapters.ingest.download import GROUPLENS_URL, RELEASES, Release, download_dataset
from recolab.adapters.ingest.movielens import DatasetError, read_movielens

FIXTURES = Path(__file__).parents[1] / "fixtures" / "movielens"
SMALL = Release("ml-latest-small", "ml-latest-small.zip", "ml-latest-small")
UNPINNED = {SMALL.name: SMALL}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class ShortBodyHandler(QuietHandler):
    """Announces the full length of a zip but hangs up half-way through it."""

    def do_GET(self) -> None:
        if not self.path.endswith(".zip"):
            super().do_GET()
            return
        data = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True


@contextmanager
def serving(root: Path, handler: type[SimpleHTTPRequestHandler]) -> Iterator[str]:
    """Run a real http.server on a free 127.0.0.1 port; yield its MovieLens base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/datasets/movielens"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, the folder the server serves)."""
    root = tmp_path / "www"
    root.mkdir()
    with serving(root, QuietHandler) as base_url:
        yield base_url, root


def make_zip(path: Path, fixture: str, folder: str) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for file in sorted((FIXTURES / fixture).iterdir()):
            bundle.write(file, f"{folder}/{file.name}")
    return path.read_bytes()


def publish(root: Path, release: Release, data: bytes, md5: str | None = None) -> None:
    folder = root / "datasets" / "movielens"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / release.zip_name).write_bytes(data)
    digest = md5 or hashlib.md5(data).hexdigest()
    (folder / f"{release.zip_name}.md5").write_text(f"{digest}  {release.zip_name}\n")


def assert_nothing_installed(dest: Path) -> None:
    raw = dest / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []


def test_registry_covers_the_official_releases() -> None:
    assert set(RELEASES) == {
        "ml-100k",
        "ml-1m",
        "ml-10m",
        "ml-latest-small",
        "ml-latest",
        "ml-20m",
        "ml-25m",
        "ml-32m",
    }
    assert RELEASES["ml-10m"].zip_name == "ml-10m.zip"
    assert RELEASES["ml-10m"].folder == "ml-10M100K"
    assert GROUPLENS_URL == "https://files.grouplens.org/datasets/movielens"
    for release in RELEASES.values():
        assert release.sha256 is None or len(bytes.fromhex(release.sha256)) == 32


def test_download_verifies_md5_and_installs(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    data = make_zip(tmp_path / "src.zip", "ml-latest-small", "ml-latest-small")
    publish(root, SMALL, data)
    seen: list[tuple[int, int | None]] = []

    target = download_dataset(
        "ml-latest-small",
        tmp_path / "data",
        base_url=base_url,
        releases=UNPINNED,
        progress=lambda done, total: seen.append((done, total)),
    )

    assert target == tmp_path / "data" / "raw" / "ml-latest-small"
    assert sorted(p.name for p in target.iterdir()) == ["movies.csv", "ratings.csv"]
    assert read_movielens(target).layout == "ml-latest-small"
    assert seen[-1] == (len(data), len(data))
    assert [p.name for p in target.parent.iterdir()] == ["ml-latest-small"]  # no temp left


def test_pinned_sha256_is_checked_too(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    data = make_zip(tmp_path / "src.zip", "ml-latest-small", "ml-latest-small")
    publish(root, SMALL, data)  # the md5 matches, but this is not the real release
    with pytest.raises(DatasetError, match="SHA-256 mismatch with the pinned value"):
        download_dataset("ml-latest-small", tmp_path / "data", base_url=base_url)
    assert_nothing_installed(tmp_path / "data")

    pinned = Release(SMALL.name, SMALL.zip_name, SMALL.folder, hashlib.sha256(data).hexdigest())
    target = download_dataset(
        "ml-latest-small", tmp_path / "data", base_url=base_url, releases={SMALL.name: pinned}
    )
    assert (target / "ratings.csv").is_file()


def test_wrong_md5_installs_nothing(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    data = make_zip(tmp_path / "src.zip", "ml-latest-small", "ml-latest-small")
    publish(root, SMALL, data, md5="0" * 32)
    with pytest.raises(DatasetError, match="MD5 mismatch"):
        download_dataset("ml-latest-small", tmp_path / "data", base_url=base_url, releases=UNPINNED)
    assert_nothing_installed(tmp_path / "data")


def test_truncated_zip_installs_nothing(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    data = make_zip(tmp_path / "src.zip", "ml-latest-small", "ml-latest-small")
    publish(root, SMALL, data[: len(data) // 2])  # md5 of what is served: only unzip can tell
    with pytest.raises(DatasetError, match="not a valid zip") as err:
        download_dataset("ml-latest-small", tmp_path / "data", base_url=base_url, releases=UNPINNED)
    assert "truncated or corrupt" in str(err.value)
    assert_nothing_installed(tmp_path / "data")


def test_truncated_download_fails_md5(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    data = make_zip(tmp_path / "src.zip", "ml-latest-small", "ml-latest-small")
    publish(root, SMALL, data[:-100], md5=hashlib.md5(data).hexdigest())
    with pytest.raises(DatasetError, match="MD5 mismatch"):
        download_dataset("ml-latest-small", tmp_path / "data", base_url=base_url, releases=UNPINNED)
    assert_nothing_installed(tmp_path / "data")


def test_connection_lost_mid_download(tmp_path: Path) -> None:
    root = tmp_path / "www"
    data = make_zip(tmp_path / "src.zip", "ml-latest-small", "ml-latest-small")
    publish(root, SMALL, data)
    with serving(root, ShortBodyHandler) as base_url, pytest.raises(DatasetError) as err:
        download_dataset("ml-latest-small", tmp_path / "data", base_url=base_url, releases=UNPINNED)
    assert "ml-latest-small.zip: download" in str(err.value)
    assert_nothing_installed(tmp_path / "data")


def test_missing_checksum_refused_without_pin(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    data = make_zip(tmp_path / "src.zip", "ml-latest-small", "ml-latest-small")
    publish(root, SMALL, data)
    (root / "datasets" / "movielens" / "ml-latest-small.zip.md5").unlink()
    with pytest.raises(DatasetError, match=r"cannot fetch the checksum \(HTTP 404\)"):
        download_dataset("ml-latest-small", tmp_path / "data", base_url=base_url, releases=UNPINNED)
    assert_nothing_installed(tmp_path / "data")


def test_missing_zip(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    publish(root, SMALL, b"")
    (root / "datasets" / "movielens" / "ml-latest-small.zip").unlink()
    with pytest.raises(DatasetError, match=r"ml-latest-small.zip: download failed \(HTTP 404\)"):
        download_dataset("ml-latest-small", tmp_path / "data", base_url=base_url, releases=UNPINNED)
    assert_nothing_installed(tmp_path / "data")


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="download failed"):
        download_dataset(
            "ml-latest-small",
            tmp_path / "data",
            base_url="http://127.0.0.1:9/datasets",
            releases=UNPINNED,
            timeout=2.0,
        )
    assert_nothing_installed(tmp_path / "data")


def test_release_folder_renamed_and_unwrapped(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    ml10m = Release("ml-10m", "ml-10m.zip", "ml-10M100K")
    publish(root, ml10m, make_zip(tmp_path / "src.zip", "ml-10m", "ml-10M100K"))
    target = download_dataset(
        "ml-10m", tmp_path / "data", base_url=base_url, releases={"ml-10m": ml10m}
    )
    assert target == tmp_path / "data" / "raw" / "ml-10m"
    assert (target / "ratings.dat").is_file()
    assert read_movielens(target).layout == "ml-10m"


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'ml-5k'; known: ml-100k"):
        download_dataset("ml-5k", tmp_path)
    with pytest.raises(DatasetError, match="'demo' is generated"):
        download_dataset("demo", tmp_path)
    assert not (tmp_path / "raw").exists()


def test_source_folder(tmp_path: Path) -> None:
    target = download_dataset("ml-1m", tmp_path / "data", source=FIXTURES / "ml-1m")
    assert sorted(p.name for p in target.iterdir()) == ["movies.dat", "ratings.dat", "users.dat"]
    assert read_movielens(target).layout == "ml-1m"


def test_source_folder_without_release_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        download_dataset("ml-1m", tmp_path / "data", source=tmp_path / "empty")
    assert_nothing_installed(tmp_path / "data")


def test_source_zip_with_and_without_md5(tmp_path: Path) -> None:
    archive = tmp_path / "downloads" / "ml-latest-small.zip"
    archive.parent.mkdir()
    data = make_zip(archive, "ml-latest-small", "ml-latest-small")
    md5_file = archive.with_name("ml-latest-small.zip.md5")
    md5_file.write_text(f"MD5 (ml-latest-small.zip) = {'f' * 32}\n")
    with pytest.raises(DatasetError, match="MD5 mismatch"):
        download_dataset("ml-latest-small", tmp_path / "data", source=archive, releases=UNPINNED)
    assert_nothing_installed(tmp_path / "data")

    md5_file.write_text(f"MD5 (ml-latest-small.zip) = {hashlib.md5(data).hexdigest()}\n")
    target = download_dataset(
        "ml-latest-small", tmp_path / "data", source=archive, releases=UNPINNED
    )
    assert len(read_movielens(target).ratings) == 7
    assert archive.is_file()  # the user's zip is left alone


def test_source_zip_checked_against_pin(tmp_path: Path) -> None:
    archive = tmp_path / "ml-latest-small.zip"
    make_zip(archive, "ml-latest-small", "ml-latest-small")
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        download_dataset("ml-latest-small", tmp_path / "data", source=archive)


def test_zip_without_release_or_with_unsafe_path(tmp_path: Path) -> None:
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ml-latest-small/notes.txt", "nothing here")
    with pytest.raises(DatasetError, match="no MovieLens release inside"):
        download_dataset("ml-latest-small", tmp_path / "data", source=archive, releases=UNPINNED)
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../escape.txt", "x")
    with pytest.raises(DatasetError, match="unsafe path"):
        download_dataset("ml-latest-small", tmp_path / "data", source=archive, releases=UNPINNED)
    assert_nothing_installed(tmp_path / "data")
    assert not (tmp_path / "data" / "escape.txt").exists()


def test_existing_target_kept_unless_overwrite(tmp_path: Path) -> None:
    first = download_dataset("ml-1m", tmp_path / "data", source=FIXTURES / "ml-1m")
    (first / "marker").write_text("old")
    # Already there: returned without touching the (unreachable) network.
    again = download_dataset("ml-1m", tmp_path / "data", base_url="http://127.0.0.1:9")
    assert (again / "marker").is_file()
    replaced = download_dataset(
        "ml-1m", tmp_path / "data", source=FIXTURES / "ml-1m", overwrite=True
    )
    assert replaced == first and not (replaced / "marker").exists()
    assert [p.name for p in (tmp_path / "data" / "raw").iterdir()] == ["ml-1m"]
