"""NeuMF module, tensor batching and the Lightning training path, on tiny data."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recolab.ml import neumf as neumf_module
from recolab.ml.datamodule import (
    IdIndex,
    IndexBatches,
    Interactions,
    KnownPairs,
    pair_keys,
    sample_negatives,
)
from recolab.ml.fitting import (
    FitResult,
    NeuMFRecommender,
    TrainConfig,
    fit,
    load_train_config,
    with_overrides,
)
from recolab.ml.neumf import NeuMF, NeuMFConfig, rest_of_mlp, squared_norm

CONFIGS = Path(__file__).resolve().parents[3] / "configs"

FAST = TrainConfig(
    gmf_dim=8,
    mlp_dim=8,
    mlp_layers=(16, 8),
    batch_size=64,
    max_epochs=2,
    val_fraction=0.2,
    val_negatives=10,
    val_max_users=100,
    accelerator="cpu",
    devices=1,
)


def _ratings(
    n_users: int = 12, n_items: int = 20, per_user: int = 8, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (user, int(item), float(rng.integers(1, 11) / 2), 1000 + j)
        for user in range(1, n_users + 1)
        for j, item in enumerate(rng.choice(np.arange(10, 10 + n_items), per_user, replace=False))
    ]
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def _model(**changes: object) -> NeuMF:
    options: dict[str, object] = {"n_users": 5, "n_items": 7, "gmf_dim": 4, "mlp_dim": 3}
    options.update(changes)
    options.setdefault("mlp_layers", (6, 4))
    torch.manual_seed(0)
    model = NeuMF(NeuMFConfig(**options))  # type: ignore[arg-type]
    with torch.no_grad():  # non-zero biases so that every term is exercised
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("paths", [(4, 3), (4, 0), (0, 3)])
def test_full_catalogue_scores_match_pairwise_forward(paths: tuple[int, int]) -> None:
    model = _model(gmf_dim=paths[0], mlp_dim=paths[1])
    users = torch.tensor([0, 3, 4])
    grid = model.score_all_items(users)
    pairs = model(users.repeat_interleave(7), torch.arange(7).repeat(3)).view(3, 7)
    torch.testing.assert_close(grid, pairs)
    grouped = model(users, torch.arange(7).repeat(3, 1))
    torch.testing.assert_close(grouped, pairs)


@pytest.mark.parametrize("tile", [3, 7, 14, 1 << 14])
def test_cpu_tiles_of_a_full_catalogue_pass_give_the_one_pass_scores(
    tile: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without autograd on the CPU the MLP runs in tiles (slices of the catalogue for one
    user, whole rows for several users): the scores are the single pass's."""
    model = _model()
    users = torch.tensor([0, 1, 3, 4])
    one_pass = model.score_all_items(users)  # autograd on: one pass
    monkeypatch.setattr(neumf_module, "_CPU_TILE_PAIRS", tile)
    with torch.no_grad():
        tiled = model.score_all_items(users)
    torch.testing.assert_close(tiled, one_pass.detach())
    pairs = model(users.repeat_interleave(7), torch.arange(7).repeat(4)).view(4, 7)
    torch.testing.assert_close(tiled, pairs.detach())


def test_first_mlp_layer_is_one_linear_over_the_concatenated_embeddings() -> None:
    model = _model()
    assert model.mlp_first is not None and model.user_mlp is not None and model.item_mlp is not None
    assert model.mlp_first.in_features == 2 * model.config.mlp_dim
    users, items = torch.tensor([1, 2]), torch.tensor([3, 6])
    concat = torch.cat([model.user_mlp(users), model.item_mlp(items)], dim=-1)
    terms = model.item_terms()
    assert terms.mlp_first is not None
    user_half = model.user_mlp(users) @ model.mlp_first.weight[:, :3].T + model.mlp_first.bias
    torch.testing.assert_close(model.mlp_first(concat), user_half + terms.mlp_first[items])


def _l2_by_lookup(model: NeuMF, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The training L2 computed the slow way: squared norms of every looked-up row, each
    user row counted once per candidate, per scored pair."""
    tables = [model.user_gmf, model.user_mlp, model.user_bias]
    item_tables = [model.item_gmf, model.item_mlp, model.item_bias]
    per_user = items.shape[-1]
    total = sum(t.weight[users].pow(2).sum() * per_user for t in tables if t is not None) + sum(
        t.weight[items].pow(2).sum() for t in item_tables if t is not None
    )
    assert isinstance(total, torch.Tensor)
    return total / items.numel()


@pytest.mark.parametrize("paths", [(4, 3), (4, 0), (0, 3)])
def test_training_l2_from_the_forward_lookup_matches_a_fresh_lookup(
    paths: tuple[int, int],
) -> None:
    model = _model(gmf_dim=paths[0], mlp_dim=paths[1])
    users, items = torch.tensor([0, 3, 4]), torch.tensor([[1, 2], [6, 0], [5, 5]])
    scores, l2 = model.forward_with_l2(users, items)
    torch.testing.assert_close(scores, model(users, items))
    expected = _l2_by_lookup(model, users, items)
    torch.testing.assert_close(l2, expected)
    # 6 item lookups of a 7-row table: the per-lookup sum (squared_norm); same gradients
    l2.backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    expected.backward()
    assert fast and fast.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in fast.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, msg=name)


@pytest.mark.parametrize("contiguous", [True, False])
def test_squared_norm_has_the_value_and_gradient_of_pow_then_sum(contiguous: bool) -> None:
    base = torch.randn(6, 5, 4, dtype=torch.float64)
    x = (base if contiguous else base.transpose(0, 2)).requires_grad_()
    y = x.detach().clone().requires_grad_()
    (3.0 * squared_norm(x)).backward()
    (3.0 * y.pow(2).sum()).backward()
    torch.testing.assert_close(squared_norm(x.detach()), y.detach().pow(2).sum())
    torch.testing.assert_close(x.grad, y.grad)
    assert torch.autograd.gradcheck(squared_norm, (x.detach().clone().requires_grad_(),))


def test_training_l2_of_a_batch_larger_than_the_item_table_matches_the_lookup_sum() -> None:
    # 4 rows x 5 candidates = 20 item lookups of a 7-row table: the L2 is then taken from the
    # table weighted by use counts; value and gradients must equal the per-lookup sum.
    model = _model()
    users = torch.tensor([0, 3, 4, 3])
    items = torch.tensor([[1, 2, 2, 6, 0], [6, 0, 1, 1, 1], [5, 5, 2, 3, 4], [0, 0, 6, 2, 1]])
    _, l2 = model.forward_with_l2(users, items)
    l2.backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    expected = _l2_by_lookup(model, users, items)
    expected.backward()
    torch.testing.assert_close(l2, expected.detach())
    slow = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert fast.keys() == slow.keys() and "item_gmf.weight" in fast
    for name, grad in fast.items():
        torch.testing.assert_close(grad, slow[name], msg=name)


def test_weights_saved_before_the_popularity_prior_still_load() -> None:
    old = {k: v for k, v in _model().state_dict().items() if k != "item_log_count"}
    restored = NeuMF(_model().config).eval()
    restored.load_state_dict(old)  # strict: the missing buffer defaults to zeros
    assert torch.equal(restored.item_log_count, torch.zeros(7))
    users, items = torch.tensor([0, 1]), torch.tensor([2, 3])
    torch.testing.assert_close(restored.ranking_score(users, items), restored(users, items))
    claims_prior = NeuMF(_model(popularity_weight=0.5).config)
    with pytest.raises(ValueError, match="item_log_count"):
        claims_prior.load_state_dict(old)


def test_fit_records_the_training_counts_for_the_prior() -> None:
    ratings = _ratings()
    config = with_overrides(FAST, mode="implicit", max_epochs=1, popularity_weight=1.0)
    threads = torch.get_num_threads()
    result = fit(ratings, with_overrides(config, num_threads=1))
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    counts = np.bincount(result.items.lookup(ratings["movie_id"].to_numpy()), minlength=20)
    logged = torch.expm1(result.model.item_log_count).round().numpy()
    # Validation holds one rating out of some users; those are not counted.
    assert np.all(logged <= counts) and logged.sum() > 0.8 * counts.sum()
    assert np.all(logged > 0)


def test_config_round_trips_and_rejects_an_empty_model() -> None:
    config = NeuMFConfig(n_users=3, n_items=4, mlp_layers=(8, 4))
    assert NeuMFConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        NeuMFConfig(n_users=3, n_items=4, gmf_dim=0, mlp_dim=0)


def test_index_batches_cover_the_epoch_and_resample_unrated_negatives() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), 5)
    items = np.concatenate([rng.choice(12, 5, replace=False) for _ in range(6)])
    data = Interactions(users, items, np.ones(30, np.float32))
    batches = IndexBatches(data, batch_size=7, n_items=12, num_negatives=3, seed=1)
    epoch1 = list(batches)
    epoch2 = list(batches)
    assert len(epoch1) == len(batches) == 5
    all_users = torch.cat([b[0] for b in epoch1])
    all_items = torch.cat([b[1] for b in epoch1])
    targets = torch.cat([b[2] for b in epoch1])
    assert all_items.shape == (30, 4)
    assert (targets[:, 0] == 1).all() and (targets[:, 1:] == 0).all()
    positives = set(pair_keys(torch.from_numpy(users), torch.from_numpy(items), 12).tolist())
    assert set(pair_keys(all_users, all_items[:, 0], 12).tolist()) == positives
    negatives = pair_keys(all_users.repeat_interleave(3), all_items[:, 1:].reshape(-1), 12)
    assert not set(negatives.tolist()) & positives
    assert not torch.equal(torch.cat([b[1] for b in epoch2]), all_items)
    replay = IndexBatches(data, batch_size=7, n_items=12, num_negatives=3, seed=1)
    assert torch.equal(torch.cat([b[1] for b in replay]), all_items)


def test_index_batches_shard_an_epoch_across_ranks() -> None:
    data = Interactions(np.arange(10), np.arange(10), np.zeros(10, np.float32))
    shards = [
        torch.cat(
            [b[0] for b in IndexBatches(data, batch_size=3, n_items=10, rank=r, world_size=2)]
        )
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 5
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_id_index_maps_unknown_ids_to_minus_one() -> None:
    index = IdIndex(np.array([30, 10, 20, 10]))
    assert index.lookup(np.array([10, 20, 30, 25, 99])).tolist() == [0, 1, 2, -1, -1]


def test_explicit_model_overfits_fifty_ratings() -> None:
    ratings = _ratings(n_users=10, n_items=15, per_user=5)
    assert len(ratings) == 50
    config = with_overrides(
        FAST, val_fraction=0.0, dropout=0.0, lr=0.05, max_epochs=60, batch_size=5
    )
    model = NeuMFRecommender(config).fit(ratings)
    pred = model.predict(ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy())
    rmse = float(np.sqrt(np.mean((pred - ratings["rating"].to_numpy()) ** 2)))
    assert rmse < 0.1


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_fast_dev_run_smoke(mode: str) -> None:
    result = fit(_ratings(), with_overrides(FAST, mode=mode), fast_dev_run=True)
    assert result.model.config.n_users == 12
    assert len(result.history) == 1 and "train/loss" in result.history[0]


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_training_logs_validation_metrics_and_keeps_the_best_epoch(mode: str) -> None:
    result = fit(_ratings(), with_overrides(FAST, mode=mode, max_epochs=3, patience=5))
    metric = "val/rmse" if mode == "explicit" else "val/ndcg@10"
    assert [row["epoch"] for row in result.history] == [0.0, 1.0, 2.0]
    values = [row[metric] for row in result.history]
    best = min(values) if mode == "explicit" else max(values)
    assert result.best_score == pytest.approx(best)
    assert result.best_epoch == values.index(best)


def test_same_seed_gives_the_same_predictions_and_another_seed_does_not() -> None:
    ratings = _ratings()
    users, items = ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy()
    first = NeuMFRecommender(FAST).fit(ratings).predict(users, items)
    second = NeuMFRecommender(FAST).fit(ratings).predict(users, items)
    other = NeuMFRecommender(with_overrides(FAST, seed=7)).fit(ratings).predict(users, items)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_unknown_ids_fall_back_to_known_biases_and_checkpoint_rebuilds_the_model() -> None:
    ratings = _ratings()
    recommender = NeuMFRecommender(with_overrides(FAST, max_epochs=1)).fit(ratings)
    users = np.array([1, 1, 999, 999])
    items = np.array([10, 12345, 10, 12345])
    pred = recommender.predict(users, items)
    assert np.all((pred >= 0.5) & (pred <= 5.0))
    assert recommender.result is not None
    rebuilt = NeuMFRecommender(recommender.config)
    rebuilt.result = FitResult.from_checkpoint(recommender.result.checkpoint())
    np.testing.assert_allclose(rebuilt.predict(users, items), pred)
    with pytest.raises(ValueError):
        NeuMFRecommender(with_overrides(FAST, mode="implicit")).predict(users, items)


def test_shipped_configs_load_for_both_modes() -> None:
    paths = (CONFIGS / "model.yaml", CONFIGS / "trainer.yaml")
    explicit = load_train_config(*paths, mode="explicit")
    implicit = load_train_config(*paths, mode="implicit")
    assert explicit.mode == "explicit" and implicit.mode == "implicit"
    assert implicit.num_negatives > 0
    assert explicit.monitor == ("val/rmse", "min")
    assert implicit.monitor[0] == "val/ndcg@10"


def test_unknown_settings_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("lerning_rate: 0.1\n")
    with pytest.raises(ValueError, match="lerning_rate"):
        load_train_config(path)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_and_scores_on_cuda() -> None:
    config = with_overrides(FAST, accelerator="cuda", precision="bf16-mixed", max_epochs=2)
    result = fit(_ratings(), config)
    assert next(result.model.parameters()).device.type == "cpu"  # handed back on CPU
    assert len(result.history) == 2
    scores = result.model.score_all_items(torch.arange(3))
    assert torch.isfinite(scores).all()


def test_rest_of_mlp_in_place_only_without_autograd() -> None:
    torch.manual_seed(0)
    model = NeuMF(NeuMFConfig(n_users=3, n_items=5, mlp_dim=4, mlp_layers=(8, 4, 2), dropout=0.3))
    assert model.mlp_rest is not None
    hidden = torch.randn(3, 5, 8)
    model.eval()
    expected = model.mlp_rest(hidden)
    kept = hidden.clone()
    with torch.no_grad():
        fresh = hidden.clone()
        assert torch.equal(rest_of_mlp(model.mlp_rest, fresh), expected)
        assert (fresh >= 0).all()  # the first ReLU ran in place on the fresh activation
    assert torch.equal(rest_of_mlp(model.mlp_rest, hidden), expected)  # autograd: untouched
    assert torch.equal(hidden, kept)
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        first = rest_of_mlp(model.mlp_rest, hidden)
        torch.manual_seed(1)
        assert torch.equal(first, model.mlp_rest(hidden))  # training: dropout still applies
    assert torch.equal(hidden, kept)


def test_known_pairs_dense_and_sorted_agree_and_negatives_are_unchanged() -> None:
    rng = np.random.default_rng(3)
    users = torch.from_numpy(rng.integers(0, 20, 150))
    items = torch.from_numpy(rng.integers(0, 30, 150))
    keys = pair_keys(users, items, 30)
    dense, searched = KnownPairs(keys, 20 * 30), KnownPairs(keys, 0)
    assert dense.dense is not None and dense.sorted is None and searched.dense is None
    probe = torch.arange(20 * 30)
    assert torch.equal(dense.contains(probe), searched.contains(probe))
    assert set(probe[dense.contains(probe)].tolist()) == set(keys.tolist())
    draws = users.repeat_interleave(5)
    by_dense = sample_negatives(draws, 30, dense, torch.Generator().manual_seed(1))
    by_keys = sample_negatives(draws, 30, searched, torch.Generator().manual_seed(1))
    assert torch.equal(by_dense, by_keys)
    assert not dense.contains(pair_keys(draws, by_dense, 30)).any()
    assert not KnownPairs(torch.empty(0, dtype=torch.int64), 0).contains(probe).any()
