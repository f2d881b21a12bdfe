"""NeuMFSystem's manual optimisation against a hand-written PyTorch loop."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from recolab.ml.datamodule import (
    IndexBatches,
    InteractionDataModule,
    Interactions,
    StepGroups,
)
from recolab.ml.fitting import TrainConfig
from recolab.ml.neumf import NeuMF, NeuMFConfig
from recolab.ml.system import NeuMFSystem


def _data(mode: str) -> tuple[Interactions, int]:
    rng = np.random.default_rng(0)
    n_users, n_items, n = 15, 25, 300
    targets = rng.random(n) if mode == "explicit" else np.ones(n)
    data = Interactions(
        rng.integers(0, n_users, n), rng.integers(0, n_items, n), targets.astype(np.float32)
    )
    return data, n_items


def _system(mode: str, n_items: int) -> NeuMFSystem:
    torch.manual_seed(0)
    model = NeuMF(NeuMFConfig(n_users=15, n_items=n_items, gmf_dim=4, mlp_dim=4, mlp_layers=(8, 4)))
    return NeuMFSystem(model, mode=mode, lr=0.01, embedding_reg=0.01, lr_gamma=0.5)  # type: ignore[arg-type]


def _trainer(epochs: int) -> pl.Trainer:
    """A bare CPU trainer (no logger, checkpoints, progress bar or validation)."""
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )


@pytest.mark.parametrize(("mode", "steps"), [("explicit", 1), ("implicit", 1), ("explicit", 2)])
def test_lightning_fit_matches_a_plain_loop_step_for_step(mode: str, steps: int) -> None:
    """With `steps` batches per loop iteration (5 batches: groups of 2, 2, 1) as well."""
    data, n_items = _data(mode)
    negatives = 2 if mode == "implicit" else 0
    epochs = 3

    plain = _system(mode, n_items)
    configured = plain.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    plain.train()
    batches = IndexBatches(data, batch_size=64, n_items=n_items, num_negatives=negatives)
    for _ in range(epochs):
        for batch in batches:
            loss = plain.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        scheduler.step()

    system = _system(mode, n_items)
    trainer = _trainer(epochs)
    batches = IndexBatches(data, batch_size=64, n_items=n_items, num_negatives=negatives)
    trainer.fit(system, train_dataloaders=StepGroups(batches, steps))

    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(system.model.state_dict()[name], value, rtol=0, atol=0)
    assert trainer.global_step == epochs * len(batches)  # optimiser steps are counted
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**epochs)
    assert [row["epoch"] for row in system.history] == [0.0, 1.0, 2.0]
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(
        system.history[-1]["train/loss"]
    )


def test_lazy_tables_are_those_far_larger_than_a_step_in_one_process() -> None:
    model = NeuMF(NeuMFConfig(n_users=5000, n_items=300, gmf_dim=4, mlp_dim=4, mlp_layers=(4,)))

    def lazy(setting: object, per_step: tuple[int, int]) -> list[str]:
        system = NeuMFSystem(model, sparse_rows=setting, rows_per_step=per_step)  # type: ignore[arg-type]
        return system.lazy_tables()

    users = ["user_gmf", "user_mlp", "user_bias"]
    items = ["item_gmf", "item_mlp", "item_bias"]
    assert lazy("auto", (64, 64 * 5)) == users  # 5000 >= 32 x 64; 300 < 32 x 320
    assert lazy("auto", (157, 157)) == []  # 5000 < 32 x 157
    assert lazy("auto", (8, 8)) == users + items
    assert lazy(True, (10_000, 10_000)) == users + items
    assert lazy(False, (1, 1)) == []
    with pytest.raises(ValueError, match="sparse_rows"):
        lazy("yes", (1, 1))

    # Several processes (DDP) all-reduce dense gradients: auto keeps every table dense.
    ddp = NeuMFSystem(model, sparse_rows="auto", rows_per_step=(8, 8))
    ddp._trainer = SimpleNamespace(world_size=2)  # type: ignore[assignment]
    assert ddp.lazy_tables() == []
    ddp.sparse_rows = True
    with pytest.raises(ValueError, match="one process"):
        ddp.lazy_tables()


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_lazy_rows_match_a_plain_sparse_adam_loop_and_touch_only_the_rows_looked_up(
    mode: str,
) -> None:
    data, n_items = _data(mode)
    negatives = 2 if mode == "implicit" else 0

    def system() -> NeuMFSystem:
        made = _system(mode, n_items)
        made.sparse_rows = True
        return made

    plain = system()
    optimizers, schedulers = plain.configure_optimizers()
    assert [type(o).__name__ for o in optimizers] == ["AdamW", "SparseAdam"]
    assert plain.model.user_gmf is not None and plain.model.user_gmf.sparse
    before = plain.model.user_gmf.weight.detach().clone()
    plain.train()
    batches = IndexBatches(data, batch_size=64, n_items=n_items, num_negatives=negatives)
    first = True
    for batch in batches:
        loss = plain.loss(batch)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        assert plain.model.user_gmf.weight.grad is not None
        assert plain.model.user_gmf.weight.grad.is_sparse
        for optimizer in optimizers:
            optimizer.step()
        if first:  # lazy: a user row no step looked up has not moved
            moved = (plain.model.user_gmf.weight != before).any(dim=1)
            assert torch.equal(moved, torch.isin(torch.arange(15), batch[0].unique()))
            first = False
    for scheduler in schedulers:
        scheduler["scheduler"].step()

    lightning = system()
    trainer = _trainer(1)
    batches = IndexBatches(data, batch_size=64, n_items=n_items, num_negatives=negatives)
    trainer.fit(lightning, train_dataloaders=StepGroups(batches, 2))
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(lightning.model.state_dict()[name], value, rtol=0, atol=0)
    assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == [0.005, 0.005]
    assert trainer.global_step == 2 * len(batches)  # Lightning counts each optimiser's steps
    assert lightning.model.user_gmf is not None and not lightning.model.user_gmf.sparse


def test_attribute_fast_path_leaves_module_registration_alone() -> None:
    system = _system("explicit", 5)
    system._current_fx_name = "training_step"
    assert system._current_fx_name == "training_step"
    system.extra = nn.Linear(2, 2)
    system.scale = nn.Parameter(torch.ones(()))
    assert "extra" in dict(system.named_children())
    assert "scale" in dict(system.named_parameters())
    assert copy.deepcopy(system)._current_fx_name == "training_step"


def test_step_groups_keep_every_batch_in_order() -> None:
    data, n_items = _data("explicit")
    batches = IndexBatches(data, batch_size=64, n_items=n_items, shuffle=False)
    groups = list(StepGroups(batches, 2))
    assert len(StepGroups(batches, 2)) == len(groups) == 3
    assert [len(g) for g in groups] == [2, 2, 1]
    flat = [b for g in groups for b in g]
    for got, want in zip(flat, batches, strict=True):
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="steps"):
        StepGroups(batches, 0)


def test_grouped_steps_only_on_a_single_device() -> None:
    data, n_items = _data("explicit")

    def loader(**trainer_options: object) -> object:
        module = InteractionDataModule(data, n_items, batch_size=64, steps_per_execution=4)
        module.trainer = pl.Trainer(accelerator="cpu", logger=False, **trainer_options)  # type: ignore[arg-type]
        return module.train_dataloader()

    single = loader(devices=1)
    assert isinstance(single, StepGroups) and single.steps == 4
    # DDP expects one backward per forward: one batch per loop iteration, each rank a shard.
    ddp = loader(devices=2, strategy="ddp")
    assert isinstance(ddp, IndexBatches) and len(ddp) == 3
    # Runs counted in steps or batches keep one step per iteration, so the count is exact.
    assert isinstance(loader(devices=1, max_steps=7), IndexBatches)
    assert isinstance(loader(devices=1, fast_dev_run=True), IndexBatches)


@pytest.mark.parametrize("steps", [0, -2, 1.5, True])
def test_steps_per_execution_must_be_a_positive_integer(steps: object) -> None:
    with pytest.raises(ValueError, match="steps_per_execution"):
        TrainConfig.from_dict({"steps_per_execution": steps})


@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_softmax_ranking_loss_is_each_positives_cross_entropy_against_its_negatives(
    reg: float,
) -> None:
    torch.manual_seed(0)
    config = NeuMFConfig(n_users=5, n_items=20, gmf_dim=4, mlp_dim=3, mlp_layers=(6, 3))
    model = NeuMF(config).eval()  # no dropout: the same scores in every call
    users = torch.tensor([0, 1, 4])
    items = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 11, 19]])
    targets = torch.zeros(3, 4)
    targets[:, 0] = 1.0
    softmax = NeuMFSystem(model, mode="implicit", embedding_reg=reg, ranking_loss="softmax")
    bce = NeuMFSystem(model, mode="implicit", embedding_reg=reg)
    with torch.no_grad():
        scores, l2 = model.forward_with_l2(users, items)
        probability = scores.softmax(dim=1)[:, 0]
        want = -probability.log().mean() + reg * l2
        pairs = nn.functional.binary_cross_entropy_with_logits(scores, targets, reduction="sum")
        got_softmax = softmax.loss((users, items, targets))
        got_bce = bce.loss((users, items, targets))
    torch.testing.assert_close(got_softmax, want)
    torch.testing.assert_close(got_bce, pairs / 3 + reg * l2)


def test_an_unknown_ranking_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="ranking_loss"):
        TrainConfig.from_dict({"mode": "implicit", "ranking_loss": "bpr"})
    with pytest.raises(ValueError, match="ranking_loss"):
        NeuMFSystem(NeuMF(NeuMFConfig(n_users=1, n_items=2)), ranking_loss="bpr")  # type: ignore[arg-type]
