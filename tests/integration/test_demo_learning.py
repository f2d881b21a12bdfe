"""`make run` must train a model worth serving: on the default demo data, with the shipped
model and trainer settings, NeuMF beats popularity under protocol B by a clear margin, and
it gets there by learning over epochs (validation does not peak at epoch 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from recolab.adapters.ingest.demo import generate_demo
from recolab.adapters.ingest.movielens import read_movielens
from recolab.config import PROJECT_ROOT
from recolab.ml.baselines import PopularityRecommender
from recolab.ml.evaluation.protocols import run_topk
from recolab.ml.experiment import PROTOCOLS, load_config
from recolab.ml.features import SplitSpec
from recolab.ml.fitting import NeuMFRecommender

pytestmark = pytest.mark.slow


def test_default_demo_rewards_training(tmp_path: Path) -> None:
    configs = PROJECT_ROOT / "configs"
    demo: dict[str, Any] = yaml.safe_load((configs / "pipeline.yaml").read_text())["demo"]
    ratings = read_movielens(generate_demo(tmp_path, **demo)).ratings
    config = load_config(configs, PROTOCOLS["B"], [])
    split = SplitSpec()
    made: list[NeuMFRecommender] = []

    def neumf() -> NeuMFRecommender:
        made.append(NeuMFRecommender(config))
        return made[-1]

    def ndcg(factory: Any) -> float:
        result = run_topk(
            factory, ratings, k=10, test_fraction=split.test_fraction, seed=split.split_seed
        )
        return float(result.summary["ndcg@10"])

    model, popular = ndcg(neumf), ndcg(PopularityRecommender)
    # Measured: 0.286 against 0.131 (demo seed 42); the first demo gave 0.259 against 0.260.
    assert model > 1.5 * popular, (model, popular)
    fitted = made[-1].result
    assert fitted is not None and fitted.best_epoch is not None
    curve = [epoch["val/ndcg@10"] for epoch in fitted.history]
    assert fitted.best_epoch >= 2 and max(curve) > 1.3 * curve[0], curve
