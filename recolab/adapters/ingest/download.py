"""Download, verify and unpack the official GroupLens MovieLens releases.

A release is streamed to a temporary file, checked against the ``<zip>.md5`` that GroupLens
publishes next to it (and against a pinned SHA-256 where a trustworthy one is known), then
unpacked into a temporary folder that is renamed to ``<dest_root>/raw/<name>`` only once
everything succeeded: a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

from recolab.adapters.ingest.movielens import DatasetError, detect_layout

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes received so far, total bytes or None when the server does not say)."""


@dataclass(frozen=True)
class Release:
    """One downloadable MovieLens release."""

    name: str
    zip_name: str
    folder: str  # top-level folder inside the zip
    sha256: str | None = None  # pinned where a trustworthy value is known
    size: int | None = None  # bytes of the zip, with the pinned sha256


# SHA-256 and sizes as pinned by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/movielens.txt). ml-latest is updated in place and has
# no stable checksum; ml-10m and ml-32m rely on the published .md5 only.
RELEASES: Mapping[str, Release] = {
    r.name: r
    for r in (
        Release(
            "ml-100k",
            "ml-100k.zip",
            "ml-100k",
            "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            4_924_029,
        ),
        Release(
            "ml-1m",
            "ml-1m.zip",
            "ml-1m",
            "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            5_917_549,
        ),
        Release("ml-10m", "ml-10m.zip", "ml-10M100K"),
        Release(
            "ml-latest-small",
            "ml-latest-small.zip",
            "ml-latest-small",
            "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            978_202,
        ),
        Release("ml-latest", "ml-latest.zip", "ml-latest"),
        Release(
            "ml-20m",
            "ml-20m.zip",
            "ml-20m",
            "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            198_702_078,
        ),
        Release(
            "ml-25m",
            "ml-25m.zip",
            "ml-25m",
            "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
            261_978_986,
        ),
        Release("ml-32m", "ml-32m.zip", "ml-32m"),
    )
}

_MD5 = re.compile(r"\b([0-9a-fA-F]{32})\b")
_CHUNK = 1 << 20


def download_dataset(
    name: str,
    dest_root: Path,
    *,
    base_url: str = GROUPLENS_URL,
    source: Path | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    timeout: float = 60.0,
    releases: Mapping[str, Release] = RELEASES,
) -> Path:
    """Fetch release ``name`` into ``dest_root/raw/<name>`` and return that folder.

    ``source`` takes a local zip (checked like a download: pinned SHA-256, and a sibling
    ``<zip>.md5`` when present) or an unpacked folder instead of the network. An existing
    target is returned as is unless ``overwrite``. Raises :class:`DatasetError` for an
    unknown name, a failed download, a checksum mismatch or a broken zip; nothing is left
    behind then.
    """
    release = releases.get(name)
    if release is None:
        hint = " ('demo' is generated: see recolab.adapters.ingest.demo)" if name == "demo" else ""
        raise DatasetError(f"unknown dataset {name!r}{hint}; known: {', '.join(releases)}")
    raw = Path(dest_root) / "raw"
    target = raw / name
    if target.exists() and not overwrite:
        return target
    raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=raw, prefix=f".{name}-") as tmp_name:
        tmp = Path(tmp_name)
        if source is not None and Path(source).is_dir():
            unpacked = _copy_folder(Path(source), tmp / "unpacked")
        else:
            archive = tmp / release.zip_name
            if source is not None:
                _check_local_zip(Path(source), release)
                archive = Path(source)
            else:
                _fetch_verified(release, base_url, archive, progress, timeout)
            unpacked = _unpack(archive, tmp / "unpacked", release)
            try:  # refuse to install what read_movielens cannot read
                unpacked = detect_layout(unpacked).folder
            except DatasetError as exc:
                raise DatasetError(f"{archive}: no MovieLens release inside: {exc}") from exc
        _install(unpacked, target, tmp)
    return target


# --- network -----------------------------------------------------------------------------


def _fetch_verified(
    release: Release,
    base_url: str,
    archive: Path,
    progress: ProgressCallback | None,
    timeout: float,
) -> None:
    url = f"{base_url.rstrip('/')}/{release.zip_name}"
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            md5 = _published_md5(client, f"{url}.md5", release)
            digests = _stream(client, url, archive, progress)
    except httpx.HTTPError as exc:
        raise DatasetError(f"{url}: download failed: {exc}") from exc
    _verify(archive.name, digests, md5, release)


def _published_md5(client: httpx.Client, url: str, release: Release) -> str | None:
    response = client.get(url)
    if response.status_code == 404 and release.sha256:
        return None  # the pinned sha256 still verifies the zip
    if response.status_code != 200:
        raise DatasetError(
            f"{url}: cannot fetch the checksum (HTTP {response.status_code}); refusing to "
            "install an unverified download"
        )
    found = _MD5.search(response.text)
    if found is None:
        raise DatasetError(f"{url}: no MD5 checksum in {response.text[:80]!r}")
    return found.group(1).lower()


def _stream(
    client: httpx.Client, url: str, archive: Path, progress: ProgressCallback | None
) -> dict[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    # identity: the published checksums are of the zip bytes exactly as served.
    with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
        if response.status_code != 200:
            raise DatasetError(f"{url}: download failed (HTTP {response.status_code})")
        length = response.headers.get("content-length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with archive.open("wb") as out:
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                md5.update(chunk)
                sha256.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
        if total is not None and response.num_bytes_downloaded != total:
            raise DatasetError(
                f"{url}: download truncated ({response.num_bytes_downloaded} of {total} bytes)"
            )
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest(), "size": str(received)}


# --- verification ------------------------------------------------------------------------


def _check_local_zip(path: Path, release: Release) -> None:
    if not path.is_file():
        raise DatasetError(f"{path}: source is neither a zip file nor a folder")
    sibling = path.with_name(f"{path.name}.md5")
    md5 = None
    if sibling.is_file() and (found := _MD5.search(sibling.read_text(errors="replace"))):
        md5 = found.group(1).lower()
    _verify(str(path), _digest_file(path), md5, release)


def _digest_file(path: Path) -> dict[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest(), "size": str(path.stat().st_size)}


def _verify(what: str, digests: Mapping[str, str], md5: str | None, release: Release) -> None:
    if md5 is not None and digests["md5"] != md5:
        raise DatasetError(
            f"{what}: MD5 mismatch (expected {md5}, got {digests['md5']}): corrupt or "
            "tampered download; nothing was installed"
        )
    if release.sha256 is not None and digests["sha256"] != release.sha256:
        raise DatasetError(
            f"{what}: SHA-256 mismatch with the pinned value for {release.name} (expected "
            f"{release.sha256}, got {digests['sha256']}, {digests['size']} bytes); "
            "nothing was installed"
        )


# --- unpacking ---------------------------------------------------------------------------


def _unpack(archive: Path, dest: Path, release: Release) -> Path:
    """Extract ``archive`` into ``dest`` and return the folder holding the release files."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                parts = PurePosixPath(member).parts
                if member.startswith("/") or ".." in parts:
                    raise DatasetError(f"{archive}: unsafe path in zip: {member!r}")
            bundle.extractall(dest)  # checks every member's CRC
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DatasetError(f"{archive}: not a valid zip ({exc}): truncated or corrupt") from exc
    inner = dest / release.folder
    if inner.is_dir():
        return inner
    entries = [p for p in dest.iterdir() if not p.name.startswith("__MACOSX")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def _copy_folder(source: Path, dest: Path) -> Path:
    _, folder = detect_layout(source)
    shutil.copytree(folder, dest)
    return dest


def _install(unpacked: Path, target: Path, tmp: Path) -> None:
    """Move the unpacked folder into place; an old copy is swapped out, then removed."""
    old = tmp / "previous"
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(unpacked, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
