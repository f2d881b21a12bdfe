"""Models registered by earlier code still load: their model file imports
`recolab.adapters.registry.NeuMFPyfunc`, so that path must keep working."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "models" / "neumf-e0ba9b6"


def test_the_fixture_names_the_old_import_path() -> None:
    code = (FIXTURE / "neumf_model.py").read_text()
    assert "from recolab.adapters.registry import NeuMFPyfunc" in code


def test_a_model_registered_at_e0ba9b6_loads_and_scores_as_it_did() -> None:
    expected = pd.read_csv(FIXTURE / "expected_scores.csv")
    model = mlflow.pyfunc.load_model(str(FIXTURE), suppress_warnings=True)
    scores = model.predict(expected[["user_id", "movie_id"]])
    np.testing.assert_allclose(np.asarray(scores), expected["score"].to_numpy(), rtol=1e-5)


def test_the_serving_loader_reads_it() -> None:
    from recolab.adapters.mlflow.model_format import load_scorer

    scorer = load_scorer(str(FIXTURE), "sqlite:///:memory:", "7")
    expected = pd.read_csv(FIXTURE / "expected_scores.csv")
    got = scorer.score_pairs(
        expected["user_id"].to_numpy(np.int64), expected["movie_id"].to_numpy(np.int64)
    )
    np.testing.assert_allclose(got, expected["score"].to_numpy(), rtol=1e-5)
    assert scorer.version == "7"
