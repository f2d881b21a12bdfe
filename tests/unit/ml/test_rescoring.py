"""Re-scoring a trained model on another run's split, as the service would serve it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recolab.domain.model import RatedMovies
from recolab.domain.values import UserId
from recolab.ml.experiment import train
from recolab.ml.features import FeatureSnapshot, build_snapshot
from recolab.ml.fitting import TrainConfig, fit
from recolab.ml.rescoring import ServedModel, compare_on_split, protocol_split, training_rows
from recolab.ml.scorer import NeuMFScorer

TINY = TrainConfig(
    mode="implicit",
    gmf_dim=8,
    mlp_dim=4,
    mlp_layers=(8, 4),
    batch_size=256,
    max_epochs=1,
    val_negatives=20,
    num_negatives=4,
    lr=0.02,
)


def grouped(n_users: int = 60, n_movies: int = 150, per_user: int = 20) -> pd.DataFrame:
    """Three taste groups, each rating movies of its own third (popular ones more)."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(1, n_users + 1):
        pool = np.arange(user % 3, n_movies, 3)
        weight = 1.0 / (1 + np.arange(pool.size))
        for movie in rng.choice(pool, size=per_user, replace=False, p=weight / weight.sum()):
            rows.append((user, int(movie) + 1, float(rng.integers(6, 11)) / 2, 1000 + len(rows)))
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def snapshot_of(ratings: pd.DataFrame, root: Path) -> FeatureSnapshot:
    ids = np.arange(1, int(ratings["movie_id"].max()) + 1)
    movies = pd.DataFrame(
        {
            "movie_id": ids,
            "title": [f"Movie {i}" for i in ids],
            "year": 2000,
            "genres": [("Action", "Comedy", "Drama")[(i - 1) % 3] for i in ids],
        }
    )
    users = ratings.groupby("user_id", as_index=False).agg(n_ratings=("rating", "size"))
    return build_snapshot((ratings, movies, users), root, dataset="grouped", database="test")


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return grouped()


@pytest.fixture(scope="module")
def scorer(ratings: pd.DataFrame) -> NeuMFScorer:
    return NeuMFScorer.from_fit_result(fit(ratings, TINY))


def test_a_known_user_is_ranked_as_served(scorer: NeuMFScorer, ratings: pd.DataFrame) -> None:
    model = ServedModel(scorer).fit(ratings)
    items = np.sort(ratings["movie_id"].unique())
    for user in (1, 2, 30):
        served, _ = scorer.top_k_ids(UserId(user), 10, np.empty(0, np.int64))
        scores = model.score(np.full(items.size, user), items)
        assert items[np.argsort(-scores, kind="stable")[:10]].tolist() == served.tolist()


def test_an_unseen_user_is_folded_in_and_unknown_movies_are_never_served(
    scorer: NeuMFScorer,
) -> None:
    newcomer = pd.DataFrame(
        {"user_id": 999, "movie_id": [1, 4, 7], "rating": 5.0, "timestamp": [1, 2, 3]}
    )
    model = ServedModel(scorer).fit(newcomer)
    assert model.n_folded_in == 1
    rated = RatedMovies(np.array([1, 4, 7]), np.full(3, 5.0), np.array([1, 2, 3]))
    served, _ = scorer.fold_in_top_k_ids(rated, 10, np.empty(0, np.int64))
    items = np.r_[np.arange(1, 151), 10_000]  # 10_000: a movie the model never saw
    scores = model.score(np.full(items.size, 999), items)
    assert items[np.argsort(-scores, kind="stable")[:10]].tolist() == served.tolist()
    assert scores[-1] == -np.inf and np.isneginf(scores[[0, 3, 6]]).all()  # rated: excluded
    with pytest.raises(ValueError, match="does not predict ratings"):
        model.predict(np.array([999]), np.array([2]))


@pytest.mark.parametrize("protocol", ["B", "C"])
def test_rescoring_reproduces_the_protocol_figure(
    ratings: pd.DataFrame, tmp_path: Path, protocol: str
) -> None:
    """On its own split the candidate re-scored is the figure `experiment.train` reports."""
    snapshot = snapshot_of(ratings, tmp_path / "features")
    run = train(snapshot, protocol, TINY, tmp_path / "out", baselines=False)
    own = NeuMFScorer.from_fit_result(run.fit_result)
    same = compare_on_split(own, own, snapshot, protocol)
    assert same.candidate == pytest.approx(run.primary_value, abs=1e-9)
    assert same.champion == same.candidate
    assert same.rows["test_rows_champion_trained_on"] is None


def _candidate_under_b(
    ratings: pd.DataFrame, tmp_path: Path
) -> tuple[FeatureSnapshot, pd.DataFrame, pd.DataFrame, NeuMFScorer]:
    """A snapshot of `ratings`, its protocol B split and a model fitted on the split's train."""
    snapshot = snapshot_of(ratings, tmp_path / "features")
    train_b, test_b = protocol_split(snapshot, "B")
    return snapshot, train_b, test_b, NeuMFScorer.from_fit_result(fit(train_b, TINY))


def test_rescoring_ranks_a_seeded_user_sample_only_over_the_pair_budget(
    ratings: pd.DataFrame, scorer: NeuMFScorer, tmp_path: Path
) -> None:
    snapshot, train_b, test_b, candidate = _candidate_under_b(ratings, tmp_path)
    n_users, n_catalogue = test_b["user_id"].nunique(), train_b["movie_id"].nunique()
    whole = compare_on_split(candidate, scorer, snapshot, "B")
    fits = compare_on_split(candidate, scorer, snapshot, "B", max_pairs=n_users * n_catalogue)
    assert (fits.candidate, fits.champion) == (whole.candidate, whole.champion)
    assert "users_sampled" not in fits.rows
    budget = 3 * n_catalogue + n_catalogue - 1  # room for 3 users, not 4
    sampled = compare_on_split(candidate, scorer, snapshot, "B", max_pairs=budget)
    assert sampled.rows["users_sampled"] == {"evaluated": 3, "of": n_users}
    assert sampled.rows["users_compared"] == 3 < n_users
    again = compare_on_split(candidate, scorer, snapshot, "B", max_pairs=budget)
    assert (again.candidate, again.champion) == (sampled.candidate, sampled.champion)
    assert 0.0 <= sampled.candidate <= 1.0 and 0.0 <= sampled.champion <= 1.0


def test_rows_the_champion_was_trained_on_are_left_out(
    ratings: pd.DataFrame, scorer: NeuMFScorer, tmp_path: Path
) -> None:
    """`scorer` was fitted on every rating: judged on them it would look better than it is."""
    snapshot, train_b, test_b, candidate = _candidate_under_b(ratings, tmp_path)
    leaky = compare_on_split(candidate, scorer, snapshot, "B")
    assert leaky.rows["test_rows_compared"] == len(test_b)
    assert leaky.champion > leaky.candidate  # it has seen the answers

    # New ratings since the champion's snapshot: only those count, for both models.
    newer = grouped(per_user=24)
    newer = newer[
        ~newer.set_index(["user_id", "movie_id"]).index.isin(
            ratings.set_index(["user_id", "movie_id"]).index
        )
    ]
    both = pd.concat([ratings, newer], ignore_index=True)
    later = snapshot_of(both, tmp_path / "features")
    old_rows = training_rows(snapshot, "B")
    assert len(old_rows) == len(train_b)
    fair = compare_on_split(candidate, scorer, later, "B", champion_trained_on=ratings)
    _, later_test = protocol_split(later, "B")
    kept = later_test.merge(ratings[["user_id", "movie_id"]], how="left", indicator=True)
    assert fair.rows["test_rows_compared"] == int((kept["_merge"] == "left_only").sum()) > 0
    assert (
        fair.rows["test_rows_champion_trained_on"]
        == len(later_test) - fair.rows["test_rows_compared"]
    )
