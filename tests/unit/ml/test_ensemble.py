"""NeuMF ensembles merged into one network (recolab.ml.ensemble) and the refit that
registers the mean of the early-stopped fit and its refits (trainer.ensemble)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from recolab.ml.ensemble import align, merge
from recolab.ml.experiment import refit_fit
from recolab.ml.fitting import FitResult, TrainConfig, fit
from recolab.ml.neumf import NeuMF, NeuMFConfig
from recolab.ml.progress import PROGRESS_LOGGER
from tests.unit.ml.tiny import tiny_ratings

SHAPES = [
    NeuMFConfig(20, 30, gmf_dim=8, mlp_dim=4, mlp_layers=(6, 3), popularity_weight=0.5),
    NeuMFConfig(20, 30, gmf_dim=8, mlp_dim=0),  # explicit's shape: GMF and biases
    NeuMFConfig(20, 30, gmf_dim=0, mlp_dim=4, mlp_layers=(5,), use_bias=False),
]


def _trained_like(config: NeuMFConfig, seed: int) -> NeuMF:
    """A network with every parameter and the prior's counts away from their initial values."""
    torch.manual_seed(seed)
    model = NeuMF(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
        model.item_log_count.copy_(torch.rand(config.n_items) * 3)
    return model.eval()


@pytest.mark.parametrize("config", SHAPES, ids=["neumf", "gmf", "mlp"])
def test_the_merged_network_scores_the_weighted_mean_of_its_members(config: NeuMFConfig) -> None:
    members = [_trained_like(config, seed) for seed in range(3)]
    weights = [0.2, 0.5, 0.3]
    merged = merge(members, weights)
    users = torch.randint(0, 20, (64,))
    items = torch.randint(0, 30, (64,))
    with torch.no_grad():
        pairs = sum(
            w * m.ranking_score(users, items) for w, m in zip(weights, members, strict=True)
        )
        full = sum(w * m.score_all_items(users[:7]) for w, m in zip(weights, members, strict=True))
        grouped = sum(
            w * m(users[:5], items[:20].view(5, 4)) for w, m in zip(weights, members, strict=True)
        )
        assert torch.allclose(merged.ranking_score(users, items), pairs, atol=1e-5)
        assert torch.allclose(merged.score_all_items(users[:7]), full, atol=1e-5)
        assert torch.allclose(merged(users[:5], items[:20].view(5, 4)), grouped, atol=1e-5)
    # as wide as the members together, and rebuilt from its config like any checkpoint
    assert merged.config.gmf_dim == 3 * config.gmf_dim
    assert merged.config.mlp_layers == tuple(3 * size for size in config.mlp_layers)
    rebuilt = NeuMF(NeuMFConfig.from_dict(merged.config.to_dict()))
    rebuilt.load_state_dict(merged.state_dict())
    with torch.no_grad():
        assert torch.equal(
            rebuilt.eval().ranking_score(users, items), merged.ranking_score(users, items)
        )


def test_merge_refuses_members_of_another_shape_and_bad_weights() -> None:
    a = _trained_like(SHAPES[0], 0)
    with pytest.raises(ValueError, match="one shape"):
        merge([a, _trained_like(replace(SHAPES[0], gmf_dim=4), 1)])
    with pytest.raises(ValueError, match="one shape"):
        merge([a, _trained_like(replace(SHAPES[0], n_items=31), 1)])
    with pytest.raises(ValueError, match="summing to 1"):
        merge([a, a], [0.7, 0.7])
    with pytest.raises(ValueError, match="at least one"):
        merge([])


@pytest.mark.parametrize(("mode", "members"), [("explicit", 3), ("implicit", 2)])
def test_the_ensemble_registers_the_mean_of_the_fit_and_differently_seeded_refits(
    mode: str, members: int, caplog: pytest.LogCaptureFixture
) -> None:
    ratings = tiny_ratings(n_users=20, per_user=10, n_movies=40)
    ratings["rating"] = np.random.default_rng(1).integers(1, 6, len(ratings)).astype(float)
    config = TrainConfig(
        mode=mode,  # type: ignore[arg-type]
        gmf_dim=4,
        mlp_dim=4 if mode == "implicit" else 0,
        mlp_layers=(8, 4),
        max_epochs=2,
        val_negatives=10,
        patience=5,
        ensemble=members,
        enable_progress_bar=False,
    )
    first = fit(ratings, config)
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        registered = refit_fit(first, ratings)
    epochs = first.epochs_kept
    # with several refits, each one's progress lines say which it is
    refits = members - 1
    labels = ["refit"] if refits == 1 else [f"refit {k}/{refits}" for k in range(1, members)]
    for label in labels:
        assert f"{label} epoch {epochs}/{epochs}:" in caplog.text
    alone = [
        fit(
            ratings,
            replace(
                config,
                max_epochs=epochs,
                min_epochs=epochs,
                val_fraction=0.0,
                val_negatives=0,
                seed=config.seed + j,
            ),
        )
        for j in range(1, members)
    ]
    assert registered.model.config.gmf_dim == members * config.gmf_dim
    assert np.array_equal(registered.users.ids, first.users.ids)
    # every refit's curve is kept, one row per epoch: the first's keys bare, refit k's "k/..."
    assert len(registered.history) == epochs == registered.epochs_kept
    for row, alone_row in zip(registered.history, alone[0].history, strict=True):
        assert row["train/loss"] == pytest.approx(alone_row["train/loss"])
    for k in range(2, members):
        curve = [row[f"{k}/train/loss"] for row in registered.history]
        assert curve == pytest.approx([r["train/loss"] for r in alone[k - 1].history])
    users = torch.arange(len(first.users))
    with torch.no_grad():
        scores = [m.model.score_all_items(users) for m in [first, *alone]]
        expected = sum(scores) / members
        assert torch.allclose(registered.model.score_all_items(users), expected, atol=1e-5)
        assert not torch.allclose(scores[0], scores[1], atol=1e-3)  # the members differ
    # the checkpoint the registry stores rebuilds the merged network
    rebuilt = FitResult.from_checkpoint(registered.checkpoint())
    with torch.no_grad():
        assert torch.allclose(rebuilt.model.score_all_items(users), expected, atol=1e-5)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_an_ensemble_setting_that_is_not_a_count_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="ensemble must be an integer >= 1"):
        TrainConfig.from_dict({"ensemble": value})


def test_without_the_ensemble_the_refit_is_registered_alone() -> None:
    ratings = tiny_ratings(n_users=20, per_user=10, n_movies=40)
    config = TrainConfig(
        mode="implicit",
        gmf_dim=4,
        mlp_dim=0,
        max_epochs=1,
        val_negatives=10,
        enable_progress_bar=False,
    )
    registered = refit_fit(fit(ratings, config), ratings)
    assert registered.model.config.gmf_dim == 4 and registered.config.seed == config.seed


def test_a_member_that_never_saw_a_user_or_item_is_aligned_with_zero_rows() -> None:
    config = SHAPES[0]
    model = _trained_like(replace(config, n_users=3, n_items=4), 0)
    users, items = np.array([2, 5, 9]), np.array([10, 20, 30, 40])
    to_users, to_items = np.array([2, 3, 5, 9]), np.array([10, 15, 20, 30, 40])
    aligned = align(model, users, items, to_users, to_items)
    assert (aligned.config.n_users, aligned.config.n_items) == (4, 5)
    known_u, known_i = torch.tensor([0, 2, 3]), torch.tensor([0, 2, 3, 4])
    with torch.no_grad():
        old = model.score_all_items(torch.arange(3))
        new = aligned.score_all_items(known_u)
        assert torch.allclose(new[:, known_i], old, atol=1e-6)
        assert aligned.user_gmf is not None and aligned.item_gmf is not None
        assert aligned.item_bias is not None
        assert not aligned.user_gmf.weight[1].any() and not aligned.item_gmf.weight[1].any()
        assert aligned.item_bias.weight[1].item() == 0 and aligned.item_log_count[1] == 0
    assert align(model, users, items, users, items) is model
