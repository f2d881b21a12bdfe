"""The metric names README.md mentions are names a training run logs to MLflow.

The names are collected from tiny runs of `experiment.train` under each protocol (with the
baselines), as `log_training_run` records them: the final figures and every per-epoch
history key, through `metric_key` (MLflow allows no `@` in a name).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from markdown_it import MarkdownIt

from recolab.adapters.mlflow.tracking import metric_key
from recolab.config import PROJECT_ROOT
from recolab.ml.experiment import PROTOCOLS, train
from recolab.ml.features import FeatureSnapshot, build_snapshot
from recolab.ml.fitting import TrainConfig

TINY = {
    "explicit": TrainConfig(mode="explicit", gmf_dim=4, mlp_dim=4, mlp_layers=(8, 4), max_epochs=1),
    "implicit": TrainConfig(
        mode="implicit", gmf_dim=4, mlp_dim=4, mlp_layers=(8, 4), max_epochs=1, val_negatives=10
    ),
}

# A code span that names a metric: `val/...`, `train/...`, `test/...`, `baseline_...`, or
# any name with a cut-off (`ndcg@10`, `hr_at_10`); not a deployment (`train/recolab`).
METRIC = re.compile(r"^(?!\w+/recolab)(?:(?:train|val|test)/\S+|baseline_\w+|\w*(?:@|_at_)\d+)$")


def readme_metric_names(markdown: str) -> set[str]:
    """The code spans of `markdown` (inline and in tables) that name a metric."""
    names = set()
    for block in MarkdownIt("commonmark").enable("table").parse(markdown):
        for child in block.children or []:
            if child.type == "code_inline" and METRIC.match(child.content):
                names.add(child.content)
    return names


def tiny_snapshot(root: Path, n_users: int = 40, n_movies: int = 150) -> FeatureSnapshot:
    """Users rating 12 random movies each, as a feature snapshot (protocol C ranks each
    held-out movie against 100 the user has not rated)."""
    rng = np.random.default_rng(0)
    rows = [
        (user, int(movie) + 1, float(rng.integers(1, 11)) / 2, 1000 + 12 * user + j)
        for user in range(1, n_users + 1)
        for j, movie in enumerate(rng.choice(n_movies, size=12, replace=False))
    ]
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    ids = np.arange(1, n_movies + 1)
    movies = pd.DataFrame(
        {
            "movie_id": ids,
            "title": [f"Movie {i}" for i in ids],
            "year": 2000,
            "genres": [("Action", "Comedy", "Drama")[i % 3] for i in ids],
        }
    )
    users = ratings.groupby("user_id", as_index=False).agg(n_ratings=("rating", "size"))
    return build_snapshot((ratings, movies, users), root, dataset="tiny", database="test")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Per protocol: the metric names its training run logs to MLflow."""
    root = tmp_path_factory.mktemp("metric-names")
    snapshot = tiny_snapshot(root / "features")
    names = {}
    for name, protocol in PROTOCOLS.items():
        run = train(snapshot, name, TINY[protocol.mode], root / name)
        history = {key for row in run.fit_result.history for key in row if key != "epoch"}
        names[name] = {metric_key(key) for key in {*run.metrics, *history}}
    return names


def test_readme_metric_names_pick_metric_code_spans_only() -> None:
    markdown = (
        "Logs `train/loss` and `val/ndcg_at_10`; `ndcg@10` and `baseline_popularity_hr_at_10`\n"
        "but not `models:/<name>@champion`, `--set trainer.max_epochs=5`, `rmse`,\n"
        "`train/recolab` or `pipeline/recolab-pool`.\n\n"
        "| metric |\n| --- |\n| `val/rmse` |\n"
    )
    assert readme_metric_names(markdown) == {
        "train/loss",
        "val/ndcg_at_10",
        "ndcg@10",
        "baseline_popularity_hr_at_10",
        "val/rmse",
    }


def test_every_metric_the_readme_names_is_logged(logged: dict[str, set[str]]) -> None:
    mentioned = readme_metric_names((PROJECT_ROOT / "README.md").read_text(encoding="utf-8"))
    assert "train/loss" in mentioned, "the README should name the metrics a run logs"
    every = set().union(*logged.values())
    assert sorted(mentioned - every) == [], f"logged names: {sorted(every)}"


def test_per_epoch_names_by_protocol(logged: dict[str, set[str]]) -> None:
    """What the README says of each mode: ratings (A) log RMSE and MAE, rankings (B, C)
    nDCG@10 and HR@10, all under MLflow-safe names."""
    assert {"train/loss", "val/rmse", "val/mae"} <= logged["A"]
    for protocol in ("B", "C"):
        assert {"train/loss", "val/ndcg_at_10", "val/hr_at_10"} <= logged[protocol]
        assert "val/rmse" not in logged[protocol]
    assert not any("@" in name for names in logged.values() for name in names)
