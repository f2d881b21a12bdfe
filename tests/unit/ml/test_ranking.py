"""Full-catalogue ranking in blocks (recolab.ml.ranking): the same scores and lists as the
per-pair path, within a memory budget, shared by protocols and the training's validation."""

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from recolab.ml import ranking
from recolab.ml.datamodule import HeldOut, HeldOutBatches, Interactions
from recolab.ml.evaluation import metrics
from recolab.ml.evaluation import protocols as P
from recolab.ml.fitting import NeuMFRecommender, TrainConfig
from recolab.ml.neumf import NeuMF, NeuMFConfig
from recolab.ml.system import NeuMFSystem

SMALL = TrainConfig(
    mode="implicit",
    gmf_dim=6,
    mlp_dim=4,
    mlp_layers=(8, 4),
    num_negatives=2,
    batch_size=64,
    max_epochs=1,
    val_negatives=0,
    popularity_weight=0.3,  # the ranking prior is part of the score compared
    enable_progress_bar=False,
)


def _ratings(n_users: int = 25, n_items: int = 40, per_user: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        (u, int(m) * 3, float(rng.integers(1, 11) / 2), j)
        for u in range(1, n_users + 1)
        for j, m in enumerate(rng.choice(n_items, per_user, replace=False))
    ]
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


class _PairsOnly:
    """The same fitted model seen only through its per-pair `score` (the old path)."""

    def __init__(self, inner: NeuMFRecommender) -> None:
        self.inner = inner

    def fit(self, ratings: pd.DataFrame) -> Any:
        return self

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return self.inner.score(user_ids, item_ids)


@pytest.fixture(scope="module")
def fitted() -> NeuMFRecommender:
    return NeuMFRecommender(SMALL).fit(_ratings())


def test_catalogue_scores_equal_the_per_pair_scores(fitted: NeuMFRecommender) -> None:
    users = np.array([1, 7, 25, 999])  # 999: never seen, gets the known bias terms
    catalogue = np.array([0, 3, 60, 117, 5000])  # 5000: never seen either
    block = ranking.catalogue_scorer(fitted).score_catalogue(users, catalogue)
    pairs = fitted.score(np.repeat(users, catalogue.size), np.tile(catalogue, users.size))
    np.testing.assert_allclose(block.numpy(), pairs.reshape(4, 5), rtol=1e-5, atol=1e-5)
    whole = fitted.result.items.ids  # type: ignore[union-attr]
    full = ranking.catalogue_scorer(fitted).score_catalogue(users[:3], whole)
    grid = fitted.score(np.repeat(users[:3], whole.size), np.tile(whole, 3))
    np.testing.assert_allclose(full.numpy(), grid.reshape(3, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("memory_mb", [ranking.DEFAULT_MEMORY_MB, 1e-4])
def test_top_k_lists_equal_the_per_pair_path(fitted: NeuMFRecommender, memory_mb: float) -> None:
    """1e-4 MB: one user per block; the lists must not depend on the blocks."""
    ratings = _ratings()
    catalogue = np.unique(ratings["movie_id"].to_numpy())
    users = np.unique(ratings["user_id"].to_numpy())
    rows = pd.Series(np.arange(users.size), index=users)[ratings["user_id"]].to_numpy()
    cols = np.searchsorted(catalogue, ratings["movie_id"].to_numpy())
    args = (users, catalogue, rows, cols, 10)
    top, scores = P.top_k_items(fitted, *args, memory_mb=memory_mb)
    old_top, old_scores = P.top_k_items(_PairsOnly(fitted), *args, memory_mb=memory_mb)
    np.testing.assert_array_equal(top, old_top)
    np.testing.assert_allclose(scores, old_scores, rtol=1e-5, atol=1e-5)
    rated = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert not {(r, int(c)) for r in range(users.size) for c in top[r]} & rated


def test_rank_block_excludes_breaks_ties_by_position_and_ranks_pessimistically() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 5.0]])
    excluded = (torch.tensor([0, 1]), torch.tensor([2, 4]))
    out = ranking.rank_block(scores, excluded, k=3, held_out=torch.tensor([1, 3]))
    assert out.top is not None and out.top_scores is not None
    assert out.top.tolist() == [[1, 4, 0], [0, 1, 2]]
    assert out.top_scores.tolist() == [[3.0, 3.0, 1.0], [2.0, 2.0, 2.0]]
    # Row 0: item 4 ties with the held-out item 1 and counts above it; row 1: three ties.
    assert out.held_out_rank is not None and out.held_out_rank.tolist() == [1, 3]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_with_many_ties_is_a_stable_sort_by_score_then_position(seed: int, k: int) -> None:
    """Scores drawn from a few values (ties everywhere, excluded items at -inf, rows with
    fewer rankable items than k): each list is the first k of a stable descending sort."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(40, 12)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[:3, 2:] = -np.inf  # rows with only 2 rankable items
    out = ranking.rank_block(torch.from_numpy(scores.copy()), k=k)
    assert out.top is not None and out.top_scores is not None
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    assert out.top.numpy().tolist() == expected.tolist()
    assert out.top_scores.numpy().tolist() == np.take_along_axis(scores, expected, 1).tolist()


def test_blocks_follow_the_memory_budget() -> None:
    model = NeuMF(NeuMFConfig(n_users=3, n_items=10, gmf_dim=4, mlp_dim=4, mlp_layers=(64, 32)))
    assert model.pair_bytes() == 4 * (64 + 32 + 3)
    rows = ranking.rows_per_block(10_000, model.pair_bytes(), 64)
    assert rows * 10_000 * model.pair_bytes() <= 64 * 2**20 < (rows + 1) * 10_000 * 396
    assert ranking.rows_per_block(10**9, 400, 1) == 1  # never less than one user
    with pytest.raises(ValueError, match="memory budget"):
        ranking.rows_per_block(10, 4, 0)


def test_protocol_c_candidates_score_as_the_per_pair_path(fitted: NeuMFRecommender) -> None:
    users = np.array([1, 2, 3])
    candidates = np.array([[0, 3, 6], [9, 12, 15], [18, 21, 7777]])
    got = ranking.catalogue_scorer(fitted).score_candidates(users, candidates)
    want = ranking.GridScorer(fitted).score_candidates(users, candidates)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_validation_ranks_the_held_out_item_as_a_brute_force_count() -> None:
    torch.manual_seed(0)
    model = NeuMF(NeuMFConfig(n_users=6, n_items=9, gmf_dim=4, mlp_dim=3, mlp_layers=(6, 3)))
    system = NeuMFSystem(model.eval(), mode="implicit", top_k=2)
    train = Interactions(
        np.array([0, 0, 1, 2, 3, 4, 5]), np.array([1, 2, 3, 4, 5, 6, 7]), np.ones(7, np.float32)
    )
    held = HeldOut(np.array([0, 1, 2, 3, 4, 5]), np.array([0, 8, 1, 2, 3, 4]))
    batches = list(HeldOutBatches(held, train, batch_size=4))
    assert len(batches) == 2
    with torch.no_grad():
        system.on_validation_epoch_start()
        for i, batch in enumerate(batches):
            system.validation_step(batch, i)
        scores = model.score_all_items(torch.arange(6))
    ranks = []
    for u, item in enumerate(held.items.tolist()):
        row = scores[u].clone()
        row[train.items[train.users == u]] = -torch.inf
        ranks.append(int((row >= row[item]).sum()) - 1)
    hits = [r < 2 for r in ranks]
    ndcg = sum(1 / np.log2(r + 2) for r, h in zip(ranks, hits, strict=True) if h)
    np.testing.assert_allclose(system._val_sums.tolist(), [ndcg, sum(hits), 6], rtol=1e-5)


def test_protocol_b_on_a_seeded_user_sample_reports_a_bootstrap_interval() -> None:
    ratings = _ratings(n_users=60)
    full = P.run_topk(lambda: NeuMFRecommender(SMALL), ratings, k=5, seed=0)
    assert "users_sampled" not in full.summary and full.summary["n_users"] == 60
    sampled = P.run_topk(lambda: NeuMFRecommender(SMALL), ratings, k=5, seed=0, sample_users=20)
    again = P.run_topk(lambda: NeuMFRecommender(SMALL), ratings, k=5, seed=0, sample_users=20)
    info = sampled.summary["users_sampled"]
    assert info["evaluated"] == sampled.summary["n_users"] == 20 and info["of"] == 60
    assert sampled.per_user["user_id"].tolist() == again.per_user["user_id"].tolist()
    low, high = info["ci95"]["ndcg@5"]
    assert low <= sampled.summary["ndcg@5"] <= high and low < high
    # Same split, same model: the sampled users' figures are the full run's for them.
    merged = sampled.per_user.merge(full.per_user, on="user_id", suffixes=("", "_all"))
    np.testing.assert_allclose(merged["ndcg@5"], merged["ndcg@5_all"], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="sample_users"):
        P.run_topk(lambda: NeuMFRecommender(SMALL), ratings, k=5, sample_users=0)


def test_bootstrap_interval_is_seeded_and_narrows_with_more_users() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.random(50), rng.random(5000)
    lo, hi = metrics.bootstrap_ci(small, seed=3)
    assert (lo, hi) == metrics.bootstrap_ci(small, seed=3)
    assert lo < small.mean() < hi
    lo_l, hi_l = metrics.bootstrap_ci(large, seed=3)
    assert hi_l - lo_l < (hi - lo) / 5
    assert np.isnan(metrics.bootstrap_ci(np.empty(0))[0])
    with pytest.raises(ValueError, match="level"):
        metrics.bootstrap_ci(small, level=1.5)


@pytest.mark.parametrize("baseline", ["popularity", "bias_only"])
def test_baselines_score_whole_catalogues_as_their_per_pair_scores(baseline: str) -> None:
    from recolab.ml.baselines import BiasOnlyRecommender, PopularityRecommender

    ratings = _ratings()
    model = (PopularityRecommender() if baseline == "popularity" else BiasOnlyRecommender()).fit(
        ratings
    )
    scorer = ranking.catalogue_scorer(model)
    assert scorer is model  # ranked by its own catalogue scoring, not the per-pair grid
    # known and unknown users (0, 999) and items (1, 2: never rated) alike
    users = np.array([3, 0, 1, 999, 25])
    catalogue = np.array([0, 1, 2, *np.unique(ratings["movie_id"])[:30]])
    grid = ranking.GridScorer(model).score_catalogue(users, catalogue)
    block = scorer.score_catalogue(users, catalogue)
    assert block.dtype == torch.float64 and block.shape == (5, catalogue.size)
    assert torch.equal(block, grid)
    block[0, 0] = -torch.inf  # ranking writes into a block: rows are not views of one
    assert block[1, 0] == grid[1, 0]
    candidates = catalogue[: 4 * 5].reshape(5, 4)
    assert np.array_equal(
        scorer.score_candidates(users, candidates),
        ranking.GridScorer(model).score_candidates(users, candidates),
    )
    assert scorer.pair_bytes() > 0
    # protocol B through the blocks: the same lists as through the per-pair grid
    exclusions = ranking.Exclusions.from_pairs(np.array([0, 2]), np.array([5, 6]), 5)
    lists = [
        ranking.top_k(
            lambda b, s=s: s.score_catalogue(b, catalogue), users, catalogue.size, exclusions, 10, 2
        )
        for s in (scorer, ranking.GridScorer(model))
    ]
    assert np.array_equal(lists[0][0], lists[1][0])
    assert np.array_equal(lists[0][1], lists[1][1])
