"""Versioned, content-addressed feature snapshots (Parquet + manifest) of the database's tables.

A snapshot holds the ratings with their evaluation-split assignments, movie and user
statistics, genre vectors and contiguous id maps. Its id is a hash of the content, so the
same database content always gives the same snapshot id, and a snapshot is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recolab.ml.evaluation.splits import kfold_indices, latest_mask, stratified_test_mask

FORMAT_VERSION = 1
TABLES = ("ratings", "movies", "users", "genres")


@dataclass(frozen=True)
class SplitSpec:
    """How the evaluation splits are drawn; part of the snapshot's identity."""

    n_folds: int = 5
    fold_seed: int = 42
    test_fraction: float = 0.25
    split_seed: int = 42


class FeaturesError(ValueError):
    """Features cannot be built (e.g. an empty database)."""


class SnapshotNotFound(FeaturesError, LookupError):
    pass


@dataclass(frozen=True)
class FeatureSnapshot:
    id: str
    path: Path

    @cached_property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / "manifest.json").read_text())
        return data

    def table(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise KeyError(f"unknown snapshot table {name!r}; known: {', '.join(TABLES)}")
        return pd.read_parquet(self.path / f"{name}.parquet")

    @property
    def ratings(self) -> pd.DataFrame:
        """user_id, movie_id, rating, timestamp, user_idx, item_idx, fold, holdout_b, loo_test."""
        return self.table("ratings")

    @property
    def movies(self) -> pd.DataFrame:
        return self.table("movies")


def _with_splits(ratings: pd.DataFrame, spec: SplitSpec) -> pd.DataFrame:
    out = ratings.reset_index(drop=True).copy()
    fold = np.empty(len(out), dtype=np.int8)
    for k, rows in enumerate(kfold_indices(len(out), spec.n_folds, spec.fold_seed)):
        fold[rows] = k
    out["fold"] = fold
    users = out["user_id"].to_numpy()
    # masks, not frames: the same rows as the protocols' splits without copying the table
    out["holdout_b"] = stratified_test_mask(users, spec.test_fraction, spec.split_seed)
    out["loo_test"] = latest_mask(users, out["timestamp"].to_numpy(), out["movie_id"].to_numpy())
    return out


def _genre_matrix(movies: pd.DataFrame) -> pd.DataFrame:
    exploded = movies[["movie_id", "genres"]].assign(genre=movies["genres"].str.split("|"))
    exploded = exploded.explode("genre")
    matrix = pd.crosstab(exploded["movie_id"], exploded["genre"]).astype("int8")
    return matrix.reset_index()


def _hash(frames: dict[str, pd.DataFrame], spec: SplitSpec) -> str:
    digest = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **spec.__dict__}).encode())
    for name in ("ratings", "movies", "users"):
        frame = frames[name]
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def build_snapshot(
    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    root: Path,
    *,
    dataset: str,
    database: str,
    spec: SplitSpec | None = None,
) -> FeatureSnapshot:
    """Build (or find) the snapshot of `tables` (ratings, movies, users as the database holds
    them: `recolab.adapters.sql.features.read_feature_tables`) under `root`."""
    spec = spec or SplitSpec()
    ratings, movies, users = tables
    if ratings.empty:
        raise FeaturesError("the database holds no ratings: run `recolab ingest` first")
    raw_hash = _hash({"ratings": ratings, "movies": movies, "users": users}, spec)
    snapshot_id = raw_hash[:16]
    final = root / snapshot_id
    if (final / "manifest.json").exists():
        return FeatureSnapshot(snapshot_id, final)
    user_ids = np.sort(ratings["user_id"].unique())
    item_ids = np.sort(ratings["movie_id"].unique())
    ratings = _with_splits(ratings, spec)
    ratings["user_idx"] = np.searchsorted(user_ids, ratings["user_id"].to_numpy())
    ratings["item_idx"] = np.searchsorted(item_ids, ratings["movie_id"].to_numpy())
    frames = {"ratings": ratings, "movies": movies, "users": users, "genres": _genre_matrix(movies)}
    manifest = {
        "id": snapshot_id,
        "content_hash": raw_hash,
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "database": database,
        "rows": {name: len(f) for name, f in frames.items()},
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "splits": spec.__dict__,
        "tables": {name: f"{name}.parquet" for name in frames},
    }
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{snapshot_id}-", dir=root))
    try:
        for name, frame in frames.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, final)  # atomic: readers never see a half-written snapshot
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "manifest.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return FeatureSnapshot(snapshot_id, final)


def open_snapshot(root: Path, snapshot_id: str) -> FeatureSnapshot:
    path = root / snapshot_id
    if not (path / "manifest.json").exists():
        raise SnapshotNotFound(f"no feature snapshot {snapshot_id!r} under {root}")
    return FeatureSnapshot(snapshot_id, path)


def latest_snapshot(root: Path) -> FeatureSnapshot:
    manifests = sorted(root.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not manifests:
        raise SnapshotNotFound(f"no feature snapshot under {root}: run `recolab features` first")
    return FeatureSnapshot(manifests[-1].parent.name, manifests[-1].parent)
