"""NeuMFSystem's manual optimisation against a hand-written PyTorch loop."""

import copy

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
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
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
