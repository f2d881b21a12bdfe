"""NeuMFScorer against the model it wraps: full-catalogue scoring, exclusion, fold-in, similar."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from recolab.adapters.runtime.threads import set_torch_threads
from recolab.domain.model import Rating
from recolab.domain.ports import Scorer
from recolab.domain.values import MovieId, RatingScore, UserId
from recolab.ml.fitting import FitResult, NeuMFRecommender, TrainConfig, fit
from recolab.ml.scorer import FoldInConfig, NeuMFScorer, to_relevance

GROUP_A = range(1, 21)  # movies liked by users 1..30
GROUP_B = range(21, 41)  # movies liked by users 31..60


def planted_ratings(mode: str, seed: int = 0) -> pd.DataFrame:
    """Two taste groups: each user rates 12 movies of their group highly; in explicit mode
    they also rate 6 movies of the other group badly."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, 61):
        liked, other = (GROUP_A, GROUP_B) if user <= 30 else (GROUP_B, GROUP_A)
        for movie in rng.choice(list(liked), 12, replace=False):
            rows.append((user, int(movie), float(rng.choice([4.5, 5.0]))))
        if mode == "explicit":
            for movie in rng.choice(list(other), 6, replace=False):
                rows.append((user, int(movie), float(rng.choice([0.5, 1.0]))))
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"])
    frame["timestamp"] = np.arange(len(frame), dtype=np.int64)
    return frame.astype({"user_id": "int64", "movie_id": "int64"})


def train(mode: str, max_epochs: int = 40, **changes: Any) -> FitResult:
    settings: dict[str, Any] = {
        "mode": mode,
        "gmf_dim": 8,
        "mlp_dim": 8,
        "mlp_layers": (16, 8),
        "dropout": 0.0,
        "lr": 0.02,
        "batch_size": 128,
        "max_epochs": max_epochs,
        "val_fraction": 0.0,
        "val_negatives": 0,
        "num_negatives": 4,
        "init_std": 0.1,
    }
    return fit(planted_ratings(mode), TrainConfig.from_dict({**settings, **changes}))


@pytest.fixture(scope="module", params=["implicit", "explicit"])
def fitted(request: pytest.FixtureRequest) -> FitResult:
    return train(request.param)


@pytest.fixture(scope="module")
def scorer(fitted: FitResult) -> NeuMFScorer:
    return NeuMFScorer.from_fit_result(fitted, version="7")


def brute_force(fitted: FitResult, user_index: int) -> torch.Tensor:
    """Relevance of every item for one user through the model's own pairwise scoring
    (`forward()`, plus the popularity prior when the model ranks with one)."""
    n = len(fitted.items)
    with torch.no_grad():
        raw = fitted.model.ranking_score(torch.full((n,), user_index), torch.arange(n))
    return to_relevance(raw.float(), fitted.config.mode)


def movie_ids(pairs: list[tuple[MovieId, float]]) -> list[int]:
    return [m.value for m, _ in pairs]


def ratings_of(user: int, scores: dict[int, float]) -> list[Rating]:
    return [Rating(UserId(user), MovieId(m), RatingScore(s)) for m, s in scores.items()]


def assert_top_k_matches_brute_force(fitted: FitResult, scorer: NeuMFScorer) -> None:
    items = fitted.items.ids
    for user_index in (0, 17, 45):
        user = int(fitted.users.ids[user_index])
        expected = brute_force(fitted, user_index)
        top = scorer.top_k(UserId(user), 10, exclude=())
        positions = fitted.items.lookup(np.array(movie_ids(top)))
        got = torch.tensor([s for _, s in top])
        torch.testing.assert_close(got, expected[positions], atol=1e-5, rtol=0)
        # Nothing left out scores better than the last returned item.
        kth = torch.sort(expected, descending=True).values[9]
        assert float(got.min()) >= float(kth) - 1e-5
        assert len(set(positions)) == 10 and set(items[positions]) <= set(items)


def test_top_k_matches_brute_force_forward(fitted: FitResult, scorer: NeuMFScorer) -> None:
    assert fitted.model.config.popularity_weight == 0.0  # ranking_score is forward() here
    assert_top_k_matches_brute_force(fitted, scorer)


@pytest.mark.parametrize(
    "changes",
    [
        {"popularity_weight": 0.5},
        {"mlp_dim": 0, "use_bias": False, "popularity_weight": 0.3},
        {"gmf_dim": 0},
    ],
    ids=["popularity-prior", "gmf-only-no-bias", "mlp-only"],
)
def test_other_model_shapes(changes: dict[str, Any]) -> None:
    fitted = train("implicit", max_epochs=3, **changes)
    scorer = NeuMFScorer.from_fit_result(fitted)
    assert_top_k_matches_brute_force(fitted, scorer)
    top = scorer.fold_in_top_k(ratings_of(900, {1: 5.0, 2: 4.0}), 5, ())
    assert len(top) == 5 and not {1, 2} & set(movie_ids(top))
    assert len(scorer.similar(MovieId(1), 3)) == 3


def test_pair_scores_match_the_evaluation_model(fitted: FitResult, scorer: NeuMFScorer) -> None:
    users = np.r_[fitted.users.ids[:30], 5000, 5000, fitted.users.ids[0]]
    movies = np.r_[fitted.items.ids[:30], fitted.items.ids[4], 5000, 5000]
    recommender = NeuMFRecommender(fitted.config)
    recommender.result = fitted
    raw = torch.from_numpy(recommender.score(users, movies))
    expected = to_relevance(raw, fitted.config.mode).numpy()
    got = scorer.score_pairs(users, movies)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float64 and np.all((got >= 0) & (got <= 1))


def test_a_checkpoint_scores_like_the_fitted_model(fitted: FitResult, scorer: NeuMFScorer) -> None:
    restored = NeuMFScorer.from_checkpoint(fitted.checkpoint(), version="8")
    user = UserId(int(fitted.users.ids[5]))
    assert restored.top_k(user, 10, {MovieId(1)}) == scorer.top_k(user, 10, {MovieId(1)})
    assert restored.version == "8"


def test_excluded_movies_are_never_returned(scorer: NeuMFScorer, fitted: FitResult) -> None:
    user = UserId(int(fitted.users.ids[3]))
    full = scorer.top_k(user, 40, exclude=())
    assert len(full) == len(fitted.items)
    exclude = {m for m, _ in full[:5]} | {MovieId(999)}  # an unknown movie is harmless
    top = scorer.top_k(user, 10, exclude)
    assert not {m for m, _ in top} & exclude
    assert movie_ids(top) == [m for m in movie_ids(full) if MovieId(m) not in exclude][:10]
    # Asking for more than is left returns what is left.
    keep = {m for m, _ in full[-3:]}
    rest = scorer.top_k(user, 10, {m for m, _ in full} - keep)
    assert {m for m, _ in rest} == keep


def test_scores_are_relevance_best_first(scorer: NeuMFScorer, fitted: FitResult) -> None:
    for user in fitted.users.ids[:10]:
        scores = [s for _, s in scorer.top_k(UserId(int(user)), 40, ())]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == sorted(scores, reverse=True)


def test_unknown_users(scorer: NeuMFScorer) -> None:
    port: Scorer = scorer  # the domain port, checked by mypy
    assert port.knows_user(UserId(1)) and not port.knows_user(UserId(1000))
    assert scorer.version == "7"
    with pytest.raises(KeyError):
        scorer.top_k(UserId(1000), 5, ())


def test_fold_in_is_deterministic_and_skips_rated(scorer: NeuMFScorer) -> None:
    rated = ratings_of(500, {1: 5.0, 2: 4.5, 3: 5.0, 25: 1.0})
    first = scorer.fold_in_top_k(rated, 10, exclude={MovieId(4)})
    again = scorer.fold_in_top_k(list(rated), 10, exclude={MovieId(4)})
    assert first == again and len(first) == 10
    with torch.inference_mode():  # as a caller serving requests might be
        assert scorer.fold_in_top_k(rated, 10, exclude={MovieId(4)}) == first
    assert not set(movie_ids(first)) & {1, 2, 3, 4, 25}
    assert all(0.0 <= s <= 1.0 for _, s in first)
    # Movies the model does not know change nothing.
    with_unknown = scorer.fold_in_top_k([*rated, *ratings_of(500, {777: 5.0})], 10, {MovieId(4)})
    assert with_unknown == first


def test_fold_in_without_known_movies_falls_back_to_the_mean_user(scorer: NeuMFScorer) -> None:
    fallback = scorer.fold_in_top_k(ratings_of(500, {777: 4.0}), 40, exclude={MovieId(2)})
    assert len(fallback) == 39 and 2 not in movie_ids(fallback)
    assert scorer.fold_in_top_k([], 40, exclude={MovieId(2)}) == fallback
    personal = scorer.fold_in_top_k(ratings_of(500, {1: 5.0, 2: 5.0}), 40, ())
    assert movie_ids(personal) != movie_ids(fallback)


def test_fold_in_follows_users_with_the_same_taste(scorer: NeuMFScorer) -> None:
    liked_a = {m: 5.0 for m in range(1, 6)}
    disliked_b = {m: 1.0 for m in range(21, 24)} if scorer.mode == "explicit" else {}
    top = movie_ids(scorer.fold_in_top_k(ratings_of(900, {**liked_a, **disliked_b}), 10, ()))
    assert set(top) <= set(GROUP_A), top
    liked_b = {m: 5.0 for m in range(21, 26)}
    top_b = movie_ids(scorer.fold_in_top_k(ratings_of(901, liked_b), 10, ()))
    assert set(top_b) <= set(GROUP_B), top_b


def test_fold_in_settings_are_used(fitted: FitResult) -> None:
    rated = ratings_of(500, {1: 5.0, 22: 5.0})
    still = NeuMFScorer.from_fit_result(fitted, fold_in=FoldInConfig(steps=0))
    moved = NeuMFScorer.from_fit_result(fitted, fold_in=FoldInConfig(steps=25))
    assert still.fold_in_top_k(rated, 40, ()) == still.fold_in_top_k(
        [], 40, {MovieId(1), MovieId(22)}
    )
    assert moved.fold_in_top_k(rated, 40, ()) != still.fold_in_top_k(rated, 40, ())


def test_similar_movies_share_the_taste_group(scorer: NeuMFScorer) -> None:
    near = scorer.similar(MovieId(3), 8)
    assert len(near) == 8 and 3 not in movie_ids(near)
    assert set(movie_ids(near)) <= set(GROUP_A), near
    sims = [s for _, s in near]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 + 1e-6 for s in sims)
    assert set(movie_ids(scorer.similar(MovieId(30), 8))) <= set(GROUP_B)
    assert scorer.similar(MovieId(999), 5) == [] and scorer.similar(MovieId(3), 0) == []


def test_torch_threads_for_serving_workers_also_cap_numpy_blas() -> None:
    previous = torch.get_num_threads()
    blas = threadpool_limits(limits=2, user_api="blas")  # restores the earlier limits
    try:
        set_torch_threads(1)
        assert torch.get_num_threads() == 1
        pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert pools and all(p["num_threads"] == 1 for p in pools)
    finally:
        torch.set_num_threads(previous)
        blas.restore_original_limits()
    with pytest.raises(ValueError):
        set_torch_threads(0)
