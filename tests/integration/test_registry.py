"""MLflow tracking and registry on a temporary SQLite store: runs, versions, alias, round trip."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from recolab.adapters.mlflow import model_format as fmt
from recolab.adapters.mlflow import registry as reg
from recolab.adapters.mlflow import tracking as mlf
from recolab.adapters.mlflow.model_format import load_scorer
from recolab.domain.values import MovieId, UserId
from recolab.ml.features import FeatureSnapshot
from recolab.ml.fitting import FitResult, TrainConfig, fit
from recolab.ml.scorer import NeuMFScorer, to_relevance

MODEL = "recolab-neumf"


def synthetic(seed: int = 0, n: int = 600) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ratings = pd.DataFrame(
        {"user_id": rng.integers(1, 41, n), "movie_id": rng.integers(1, 61, n)}
    ).drop_duplicates(["user_id", "movie_id"], ignore_index=True)
    ratings["rating"] = rng.integers(1, 11, len(ratings)) / 2.0
    ratings["timestamp"] = np.arange(len(ratings), dtype=np.int64)
    ratings = ratings.astype({"user_id": "int64", "movie_id": "int64"})
    ids = np.arange(1, 61, dtype=np.int64)
    movies = pd.DataFrame(
        {
            "movie_id": ids,
            "title": [f"Movie {i}" for i in ids],
            "year": pd.array([1990 + i % 20 for i in ids], dtype="Int64"),
            "genres": ["Drama|Comedy" if i % 2 else "Action" for i in ids],
        }
    )
    return ratings, movies


def make_snapshot(root: Path, ratings: pd.DataFrame, snapshot_id: str) -> FeatureSnapshot:
    """A feature snapshot folder as `build_snapshot` writes it (manifest + Parquet tables)."""
    path = root / snapshot_id
    path.mkdir(parents=True)
    ratings.to_parquet(path / "ratings.parquet", index=False)
    manifest = {
        "id": snapshot_id,
        "content_hash": snapshot_id * 4,
        "dataset": "synthetic",
        "rows": {"ratings": len(ratings)},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return FeatureSnapshot(snapshot_id, path)


def quick_fit(ratings: pd.DataFrame, mode: str, lr: float = 0.01) -> FitResult:
    config = TrainConfig(
        mode=mode,  # type: ignore[arg-type]
        gmf_dim=8,
        mlp_dim=8,
        mlp_layers=(16, 8),
        batch_size=256,
        max_epochs=2,
        patience=5,
        val_negatives=20,
        lr=lr,
    )
    return fit(ratings, config)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic()


@pytest.fixture(scope="module", params=["explicit", "implicit"])
def fitted(request: pytest.FixtureRequest, data: tuple[pd.DataFrame, pd.DataFrame]) -> FitResult:
    return quick_fit(data[0], request.param)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield uri
    # register_model must leave MLflow's process-wide URIs (and the environment) as it found them
    after = {k: os.environ.get(k) for k in before}
    assert after == before


def log_run(
    uri: str,
    tmp_path: Path,
    fitted: FitResult,
    snapshot: FeatureSnapshot,
    protocol: str,
    ndcg: float = 0.3,
) -> str:
    experiment = mlf.ensure_experiment(uri, "recolab-synthetic", tmp_path / "mlartifacts")
    plot = tmp_path / "learning_curve.png"
    plot.write_bytes(b"\x89PNG fake")
    return mlf.log_training_run(
        tracking_uri=uri,
        experiment_id=experiment,
        fit_result=fitted,
        params={"protocol": protocol, "evaluation": {"k": 10, "seeds": [1, 2]}},
        metrics={"test/ndcg@10": ndcg, "test/rmse": 0.9},
        history=fitted.history,
        report={"neumf": {"ndcg@10": ndcg}},
        artefacts={"plots": plot},
        snapshot=snapshot,
        protocol=protocol,
        tags={"purpose": "test"},
        run_name="neumf-test",
    )


def test_ensure_experiment_is_idempotent_with_a_local_artifact_root(
    store: str, tmp_path: Path
) -> None:
    first = mlf.ensure_experiment(store, "recolab-demo", tmp_path / "mlartifacts")
    assert mlf.ensure_experiment(store, "recolab-demo", tmp_path / "mlartifacts") == first
    client = mlf.mlflow_client(store)
    location = client.get_experiment(first).artifact_location
    assert location == (tmp_path / "mlartifacts" / "recolab-demo").resolve().as_uri()
    client.delete_experiment(first)
    assert mlf.ensure_experiment(store, "recolab-demo", tmp_path / "mlartifacts") == first
    assert client.get_experiment(first).lifecycle_stage == "active"


def test_a_training_run_leaves_its_experiment_marked_as_model_training(
    store: str, tmp_path: Path, fitted: FitResult, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    # The tag and value MLflow 3 gives a "Machine learning" experiment (not GenAI).
    snapshot = make_snapshot(tmp_path / "features", data[0], "snap0001")
    run_id = log_run(store, tmp_path, fitted, snapshot, "B")
    client = mlf.mlflow_client(store)
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_experiment_kind_tag_and_value_are_those_the_installed_mlflow_ui_knows() -> None:
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    if not bundle.is_dir():
        pytest.skip("this MLflow install has no UI bundle (mlflow-skinny)")
    text = "".join(path.read_text(errors="replace") for path in bundle.glob("*.js"))
    assert f'"{mlf.EXPERIMENT_KIND_TAG}"' in text
    assert f'"{mlf.EXPERIMENT_KIND_TRAINING}"' in text


def test_ensure_experiment_marks_an_older_experiment_and_keeps_a_chosen_kind(
    store: str, tmp_path: Path
) -> None:
    client = mlf.mlflow_client(store)
    older = client.create_experiment("recolab-older")  # as before the kind tag existed
    chosen = client.create_experiment(
        "recolab-chosen", tags={"mlflow.experimentKind": "genai_development"}
    )
    assert mlf.ensure_experiment(store, "recolab-older", tmp_path) == older
    assert mlf.ensure_experiment(store, "recolab-chosen", tmp_path) == chosen
    kind = "mlflow.experimentKind"
    assert client.get_experiment(older).tags[kind] == "custom_model_development"
    assert client.get_experiment(chosen).tags[kind] == "genai_development"


def test_training_run_is_fully_recorded(
    store: str, tmp_path: Path, fitted: FitResult, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    snapshot = make_snapshot(tmp_path / "features", data[0], "snap0001")
    run_id = log_run(store, tmp_path, fitted, snapshot, "B")
    client = mlf.mlflow_client(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "neumf-test"

    params = run.data.params
    for key, value in fitted.config.to_dict().items():
        expected = json.dumps(value) if isinstance(value, list) else str(value)
        assert params[key] == expected, key
    assert params["evaluation.k"] == "10" and params["evaluation.seeds"] == "[1, 2]"

    assert run.data.metrics["test/ndcg_at_10"] == pytest.approx(0.3)
    assert len(fitted.history) == 2
    for key in fitted.history[0]:
        if key == "epoch":
            continue
        history = client.get_metric_history(run_id, mlf.metric_key(key))
        assert [m.step for m in history] == [int(row["epoch"]) for row in fitted.history]
        assert [m.value for m in history] == pytest.approx([row[key] for row in fitted.history])

    def listed(folder: str) -> set[str]:
        return {f.path for f in client.list_artifacts(run_id, folder)}

    assert listed("evaluation") == {"evaluation/report.json"}
    assert listed("id_maps") == {"id_maps/users.csv", "id_maps/items.csv"}
    assert {"config/train_config.yaml", "config/params.yaml"} <= listed("config")
    assert listed("plots") == {"plots/learning_curve.png"}
    users_csv = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="id_maps/users.csv", tracking_uri=store
    )
    assert pd.read_csv(users_csv)["user_id"].tolist() == fitted.users.ids.tolist()

    assert run.inputs is not None
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "snap0001"
    assert dataset_input.dataset.digest == ("snap0001" * 4)[:36]
    assert {(t.key, t.value) for t in dataset_input.tags} == {("mlflow.data.context", "training")}
    assert snapshot.path.resolve().as_uri() in dataset_input.dataset.source

    tags = run.data.tags
    assert (tags["dataset"], tags["snapshot"], tags["protocol"]) == ("synthetic", "snap0001", "B")
    assert tags["git_commit"] == mlf.git_commit() and tags["purpose"] == "test"
    assert tags["git_commit"] == "unknown" or len(tags["git_commit"]) == 40


def test_registered_champion_round_trip_on_cpu(
    store: str, tmp_path: Path, fitted: FitResult, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    ratings, movies = data
    snapshot = make_snapshot(tmp_path / "features", ratings, "snap0001")
    other = quick_fit(ratings, fitted.config.mode, lr=0.05)
    versions = []
    for model in (other, fitted):
        run_id = log_run(store, tmp_path, model, snapshot, "B")
        versions.append(
            reg.register_model(
                tracking_uri=store, run_id=run_id, fit_result=model, model_name=MODEL, movies=movies
            )
        )
    assert versions == ["1", "2"]
    client = mlf.mlflow_client(store)
    reg.set_champion(client, MODEL, "2")

    pairs = pd.DataFrame(
        {
            "user_id": np.r_[fitted.users.ids[:20], 10_000].astype(np.int64),
            "movie_id": np.r_[fitted.items.ids[:20], fitted.items.ids[0]].astype(np.int64),
        }
    )
    in_memory = fmt.NeuMFPyfunc.from_fit_result(fitted, movies).predict(None, pairs)
    with mlf.use_tracking_uri(store):
        loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion", suppress_warnings=True)
    predicted = loaded.predict(pairs)
    assert np.array_equal(predicted, in_memory)  # identical, not just close
    assert np.all((predicted >= 0) & (predicted <= 1))
    model_side = torch.from_numpy(fitted.users.lookup(pairs["user_id"].to_numpy()[:20]))
    item_side = torch.from_numpy(fitted.items.lookup(pairs["movie_id"].to_numpy()[:20]))
    with torch.no_grad():
        direct = fitted.model.ranking_score(model_side, item_side).double()
        direct = to_relevance(direct, fitted.config.mode)
    np.testing.assert_allclose(predicted[:20], direct.numpy(), atol=1e-6)

    unwrapped = loaded.unwrap_python_model()
    assert isinstance(unwrapped, fmt.NeuMFPyfunc)
    assert unwrapped.fit_result.config == fitted.config
    assert unwrapped.fit_result.users.ids.tolist() == fitted.users.ids.tolist()
    for name, tensor in fitted.model.state_dict().items():
        assert torch.equal(unwrapped.fit_result.model.state_dict()[name], tensor), name
    pd.testing.assert_frame_equal(unwrapped.movies, movies)
    signature = loaded.metadata.signature
    assert signature.inputs.input_names() == ["user_id", "movie_id"]

    # The serving path: resolve the alias, then load that version by number.
    scorer = load_scorer(f"models:/{MODEL}/2", store, "2")
    assert scorer.version == "2" and scorer.movies is not None
    user = UserId(int(fitted.users.ids[0]))
    exclude = {MovieId(int(m)) for m in fitted.items.ids[:3]}
    expected = NeuMFScorer.from_fit_result(fitted).top_k(user, 10, exclude)
    assert scorer.top_k(user, 10, exclude) == expected
    assert load_scorer(f"models:/{MODEL}@champion", store, "2").top_k(user, 10, exclude) == expected
    older = load_scorer(f"models:/{MODEL}/1", store, "1")
    assert older.top_k(user, 10, exclude) == NeuMFScorer.from_fit_result(other).top_k(
        user, 10, exclude
    )


def test_the_champions_training_rows_come_from_its_runs_snapshot_and_protocol(
    store: str, tmp_path: Path, fitted: FitResult, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    from recolab.ml.features import build_snapshot
    from recolab.ml.rescoring import training_rows

    ratings, movies = data
    client = mlf.mlflow_client(store)
    assert reg.champion_version(client, MODEL) is None
    users = ratings.groupby("user_id", as_index=False).agg(n_ratings=("rating", "size"))
    features = tmp_path / "features"
    snapshot = build_snapshot((ratings, movies, users), features, dataset="t", database="t")
    run_id = log_run(store, tmp_path, fitted, snapshot, "C")
    version = reg.register_model(
        tracking_uri=store, run_id=run_id, fit_result=fitted, model_name=MODEL, movies=movies
    )
    assert reg.champion_version(client, MODEL) is None
    reg.set_champion(client, MODEL, version)
    champion = reg.champion_version(client, MODEL)
    assert champion is not None and str(champion.version) == version

    rows, about = reg.champion_training_rows(client, champion, features)
    assert rows is not None and len(rows) == int((~snapshot.ratings["loo_test"]).sum())
    pd.testing.assert_frame_equal(rows, training_rows(snapshot, "C"))
    assert about == {
        "champion_snapshot": snapshot.id,
        "champion_protocol": "C",
        "champion_fitted_on": "protocol_train_split",  # a run from before refits has no tag
        "champion_training_rows": len(rows),
    }
    # Its snapshot is gone from the feature store: unknown, and said so.
    rows, about = reg.champion_training_rows(client, champion, tmp_path / "elsewhere")
    assert rows is None and str(about["champion_training_rows"]).startswith("unknown")


def test_challenger_and_comparison_are_recorded(
    store: str, tmp_path: Path, fitted: FitResult, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    ratings, movies = data
    snapshot = make_snapshot(tmp_path / "features", ratings, "snap0001")
    run_id = log_run(store, tmp_path, fitted, snapshot, "B")
    version = reg.register_model(
        tracking_uri=store, run_id=run_id, fit_result=fitted, model_name=MODEL, movies=movies
    )
    client = mlf.mlflow_client(store)
    reason = "ndcg@10 0.3000 does not beat champion 0.4100"
    reg.tag_challenger(client, MODEL, version, reason)
    details = {"promote": False, "reason": reason, "candidate": 0.3, "champion": 0.41}
    reg.record_comparison(client, MODEL, version, details)

    tags = client.get_model_version(MODEL, version).tags
    assert tags["challenger"] == reason
    assert tags["promotion.promote"] == "False" and tags["promotion.champion"] == "0.41"
    run_tags = client.get_run(run_id).data.tags
    assert run_tags["promotion.reason"] == reason
    comparison = mlflow.artifacts.load_dict(
        f"{client.get_run(run_id).info.artifact_uri}/promotion/comparison.json"
    )
    assert comparison == details
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(MODEL, "champion")


class _BeforeThePrior(FitResult):
    """A fit as registered before NeuMF had `popularity_weight` and its `item_log_count`."""

    def checkpoint(self) -> dict[str, Any]:
        data = super().checkpoint()
        data["model_config"].pop("popularity_weight")
        data["train_config"].pop("popularity_weight")
        data["train_config"].pop("num_threads")
        data["state_dict"] = {k: v for k, v in data["state_dict"].items() if k != "item_log_count"}
        return data


def test_a_model_registered_before_the_popularity_prior_still_loads(
    store: str, tmp_path: Path, fitted: FitResult, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    ratings, movies = data
    snapshot = make_snapshot(tmp_path / "features", ratings, "snap0002")
    old = _BeforeThePrior(**{f.name: getattr(fitted, f.name) for f in fields(FitResult)})
    assert "item_log_count" not in old.checkpoint()["state_dict"]
    run_id = log_run(store, tmp_path, fitted, snapshot, "B")
    version = reg.register_model(
        tracking_uri=store, run_id=run_id, fit_result=old, model_name=MODEL, movies=movies
    )
    scorer = load_scorer(f"models:/{MODEL}/{version}", store, version)
    user = UserId(int(fitted.users.ids[0]))
    expected = NeuMFScorer.from_fit_result(fitted).top_k(user, 10, ())
    assert scorer.top_k(user, 10, ()) == expected
