"""The Lightning "system": loss, optimiser and validation metrics around a plain NeuMF module."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recolab.adapters.ml.datamodule import Batch
from recolab.adapters.ml.neumf import NeuMF

Mode = Literal["explicit", "implicit"]

# Explicit targets are (rating - 0.5) / 4.5, so an error of e in that space is 4.5 e stars.
RATING_SPAN = 4.5
RATING_MIN = 0.5


class NeuMFSystem(pl.LightningModule):
    """Trains a NeuMF module in explicit (MSE on normalised ratings) or implicit (BCE) mode.

    Logs `train/loss` once per epoch (no per-step logging: it costs more than a step on
    small models) and `val/rmse` (stars) or `val/ndcg@10` + `val/hr@10` (sampled candidates).
    """

    def __init__(
        self,
        model: NeuMF,
        *,
        mode: Mode = "explicit",
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        embedding_reg: float = 0.0,
        top_k: int = 10,
    ) -> None:
        super().__init__()
        self.model = model
        self.mode: Mode = mode
        self.lr = lr
        self.weight_decay = weight_decay
        self.embedding_reg = embedding_reg
        self.top_k = top_k
        self.save_hyperparameters(ignore=["model"])
        self._loss_sum = torch.zeros(())
        self._loss_batches = 0
        self._val_sums = torch.zeros(3)
        self._last_val: dict[str, float] = {}
        self.history: list[dict[str, float]] = []

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return self.model(users, items)

    def loss(self, batch: Batch) -> Tensor:
        users, items, targets = batch
        scores = self.model(users, items).float()
        if self.mode == "explicit":
            loss = F.mse_loss(scores, targets)
        else:
            loss = F.binary_cross_entropy_with_logits(scores, targets)
        if self.embedding_reg > 0:
            loss = loss + self.embedding_reg * self.model.embedding_l2(users, items)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach()
        self._loss_batches += 1
        return loss

    def on_train_epoch_end(self) -> None:
        row: dict[str, float] = {"epoch": float(self.current_epoch)}
        if self._loss_batches:
            mean = self._loss_sum / self._loss_batches
            self.log("train/loss", mean, on_epoch=True, sync_dist=True)
            row["train/loss"] = float(mean)
        self.history.append({**row, **self._last_val})
        self._loss_sum = torch.zeros(())
        self._loss_batches = 0
        self._last_val = {}

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, device=self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        users, items, targets = batch
        if self.mode == "explicit":
            pred = self.model(users, items).float().clamp(0.0, 1.0)
            err = pred - targets
            step = torch.stack(
                [err.pow(2).sum(), err.abs().sum(), torch.tensor(float(err.numel()))]
            )
        else:
            scores = self.model(users, items).float()
            # Pessimistic ties: a negative scored equal to the positive ranks above it.
            rank = (scores[:, 1:] >= scores[:, :1]).sum(dim=1)
            hit = (rank < self.top_k).float()
            ndcg = hit / torch.log2(rank.float() + 2.0)
            step = torch.stack([ndcg.sum(), hit.sum(), torch.tensor(float(users.numel()))])
        self._val_sums = self._val_sums + step.to(self._val_sums.device)

    def on_validation_epoch_end(self) -> None:
        first, second, count = self._val_sums.tolist()
        if count == 0:
            return
        if self.mode == "explicit":
            values = {"val/rmse": (first / count) ** 0.5 * RATING_SPAN}
            values["val/mae"] = second / count * RATING_SPAN
        else:
            values = {
                f"val/ndcg@{self.top_k}": first / count,
                f"val/hr@{self.top_k}": second / count,
            }
        self.log_dict(values)
        self._last_val = values

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Decay only dense weights; embeddings are regularised per batch by `embedding_reg`.
        dense = [p for n, p in self.model.named_parameters() if _is_dense(n, self.model)]
        sparse = [p for n, p in self.model.named_parameters() if not _is_dense(n, self.model)]
        groups = [
            {"params": dense, "weight_decay": self.weight_decay},
            {"params": sparse, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.lr)


def _is_dense(name: str, model: nn.Module) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(module, nn.Linear)
