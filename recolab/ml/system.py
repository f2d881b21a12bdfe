"""The Lightning "system": loss, optimiser and validation metrics around a plain NeuMF module."""

from __future__ import annotations

import inspect
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LRScheduler

from recolab.domain import values as rating_scale
from recolab.ml.datamodule import BatchGroup, TensorBatch
from recolab.ml.neumf import ItemTerms, NeuMF
from recolab.ml.ranking import rank_block

Mode = Literal["explicit", "implicit"]
SparseRows = bool | Literal["auto"]
# "auto" trains a table with lazy row updates when it holds at least this many times the rows
# a step looks up in it. One implicit step (2048 users x 25 items) with ml-32m's tables
# (200,948 users, 87,585 movies): dense AdamW 206-234 ms, user tables lazy 160-182 ms; with
# the 5M demo's (31,398 users: 15x a batch) no faster; item tables lazy (1.7x the 51,200
# item rows a step looks up) 219 ms with SparseAdam, slower than dense.
LAZY_ROWS_RATIO = 32
USER_TABLES, ITEM_TABLES = (
    ("user_gmf", "user_mlp", "user_bias"),
    ("item_gmf", "item_mlp", "item_bias"),
)

# Explicit targets are (rating - 0.5) / 4.5, so an error of e in that space is 4.5 e stars.
RATING_SPAN = rating_scale.RATING_SPAN
RATING_MIN = rating_scale.MIN_RATING


# Implicit mode's loss over a positive and its sampled negatives: binary cross-entropy of
# every pair, or the (sampled) softmax cross-entropy of the positive against its negatives.
RankingLoss = Literal["bce", "softmax"]
RANKING_LOSSES: tuple[RankingLoss, ...] = ("bce", "softmax")


def check_ranking_loss(value: object) -> None:
    """Raise ValueError naming `ranking_loss` unless `value` is one of RANKING_LOSSES."""
    if value not in RANKING_LOSSES:
        raise ValueError(f"ranking_loss must be one of {RANKING_LOSSES}, got {value!r}")


class NeuMFSystem(pl.LightningModule):
    """Trains a NeuMF module in explicit (MSE on normalised ratings) or implicit mode (BCE
    of every pair, or with `ranking_loss="softmax"` each positive's cross-entropy against
    its sampled negatives).

    Logs `train/loss` once per epoch (no per-step logging: it costs more than a step on
    small models) and `val/rmse` (stars) or `val/ndcg@10` + `val/hr@10` (held-out items,
    each ranked by `ranking_score` against every item the user has neither trained on nor
    holds out in another row: recolab.ml.holdout).

    Optimisation is manual (zero_grad, `manual_backward`, step; the scheduler once per
    epoch), the same updates as automatic optimisation: an explicit-mode step is about 2 ms
    on CPU, and Lightning's automatic loop (closure, zero_grad and optimizer_step hooks) plus
    its per-hook bookkeeping put about 0.6 ms on each; manual, about 0.25 ms per loop
    iteration, which a `BatchGroup` (`StepGroups`) spreads over several steps.
    `manual_backward` and the `LightningOptimizer` from `optimizers()` still go through the
    strategy and precision plugin (AMP scaling, DDP gradient sync) and count `global_step`.
    Trainer options of automatic optimisation only (`gradient_clip_val`,
    `accumulate_grad_batches` > 1) are not supported.
    """

    def __init__(
        self,
        model: NeuMF,
        *,
        mode: Mode = "explicit",
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        embedding_reg: float = 0.0,
        lr_gamma: float = 1.0,
        top_k: int = 10,
        sparse_rows: SparseRows = "auto",
        rows_per_step: tuple[int, int] = (0, 0),
        ranking_loss: RankingLoss = "bce",
    ) -> None:
        super().__init__()
        if sparse_rows not in (True, False, "auto"):
            raise ValueError(f"sparse_rows must be true, false or 'auto', got {sparse_rows!r}")
        check_ranking_loss(ranking_loss)
        self.model = model
        self.mode: Mode = mode
        self.lr = lr
        self.weight_decay = weight_decay
        self.embedding_reg = embedding_reg
        self.lr_gamma = lr_gamma
        self.top_k = top_k
        self.sparse_rows: SparseRows = sparse_rows
        self.rows_per_step = rows_per_step  # (users, items) one step looks up: for "auto"
        self.ranking_loss: RankingLoss = ranking_loss
        self.save_hyperparameters(ignore=["model"])
        self.automatic_optimization = False
        self._losses: list[Tensor] = []  # detached, one per step of the current epoch
        self._val_sums = torch.zeros(3)
        self._terms: ItemTerms | None = None
        self._last_val: dict[str, float] = {}
        self.history: list[dict[str, float]] = []

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return self.model(users, items)

    def loss(self, batch: TensorBatch) -> Tensor:
        users, items, targets = batch
        if self.embedding_reg > 0:
            scores, l2 = self.model.forward_with_l2(users, items)
            scores = scores.float()
        else:
            scores, l2 = self.model(users, items).float(), None
        if self.mode == "explicit":
            loss = F.mse_loss(scores, targets)
        elif self.ranking_loss == "softmax":
            # Per positive: the cross-entropy of picking it (column 0) among its negatives.
            first = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
            loss = F.cross_entropy(scores, first, reduction="sum") / scores.shape[0]
        else:
            # Per positive: its own term plus those of its sampled negatives.
            loss = F.binary_cross_entropy_with_logits(scores, targets, reduction="sum")
            loss = loss / scores.shape[0]
        if l2 is not None:
            loss = loss + self.embedding_reg * l2
        return loss

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook call (about 25 times a step);
        # `nn.Module.__setattr__` looks the name up in the parameter, module and buffer
        # registries first, which for a str or None ends in the same plain attribute.
        if name == "_current_fx_name" and (value is None or isinstance(value, str)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def training_step(self, batch: TensorBatch | BatchGroup, batch_idx: int) -> None:
        """One optimiser step per batch; a `BatchGroup` (see `StepGroups`) is several."""
        optimizers = self.optimizers()
        if not isinstance(optimizers, list):
            optimizers = [optimizers]
        group = (batch,) if isinstance(batch[0], Tensor) else batch
        for step in group:
            loss = self.loss(step)
            for optimizer in optimizers:
                assert isinstance(optimizer, LightningOptimizer)
                optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            for optimizer in optimizers:
                optimizer.step()
            self._losses.append(loss.detach())

    # Lightning inspects `training_step`'s signature before every step (does it take
    # `batch_idx`?); a precomputed `__signature__` spares it rebuilding one each time.
    training_step.__signature__ = inspect.signature(training_step)  # type: ignore[attr-defined]

    def on_train_epoch_end(self) -> None:
        row: dict[str, float] = {"epoch": float(self.current_epoch)}
        if self._losses:
            mean = torch.stack(self._losses).mean()
            self.log("train/loss", mean, on_epoch=True, sync_dist=True)
            row["train/loss"] = float(mean)
        self.history.append({**row, **self._last_val})
        self._losses = []
        self._last_val = {}
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if isinstance(scheduler, LRScheduler):  # per epoch, as `lr_gamma` says
                scheduler.step()

    def on_fit_end(self) -> None:
        for name in USER_TABLES + ITEM_TABLES:  # the fitted model's gradients are dense again
            table = getattr(self.model, name)
            if table is not None:
                table.sparse = False

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, device=self.device)
        self._terms = self.model.item_terms() if self.mode == "implicit" else None

    def validation_step(self, batch: TensorBatch, batch_idx: int) -> None:
        users, items, targets = batch
        if self.mode == "explicit":
            pred = self.model(users, items).float().clamp(0.0, 1.0)
            err = pred - targets
            step = torch.stack(
                [err.pow(2).sum(), err.abs().sum(), torch.tensor(float(err.numel()))]
            )
        else:
            if items.dim() == 2:  # sampled candidates, column 0 held out
                scores = self.model.ranking_score(users, items).float()
                # Pessimistic ties: an item scored equal to the held-out one ranks above it.
                rank = (scores[:, 1:] >= scores[:, :1]).sum(dim=1)
            else:  # the whole catalogue, ranked as the evaluation protocols rank it
                assert self._terms is not None
                # The batch is one block sized by the ranking memory budget (datamodule).
                scores = self.model.score_users(users, self._terms, max_rows=users.numel())
                exclude = (targets[0], targets[1])  # the users' training items
                ranked = rank_block(scores.float(), exclude, held_out=items).held_out_rank
                assert ranked is not None
                rank = ranked
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
        self.log_dict(values, sync_dist=True)  # equal on every rank (all rank every user)
        self._last_val = values

    def lazy_tables(self) -> list[str]:
        """The embedding tables trained with sparse gradients and lazy Adam (`sparse_rows`).

        Dense AdamW zeroes, fills and updates every row of every table on every step, so with
        tables far larger than a batch a step costs in proportion to the tables, and an epoch
        to ratings x tables. Lazy (`torch.optim.SparseAdam`): only the rows a step looked up
        get a gradient and an update (their moments too; a row not looked up stays as it
        is). One process only: several (DDP) keep dense gradients, which they all-reduce.
        """
        if self.sparse_rows is False:
            return []
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            if self.sparse_rows is True:
                raise ValueError("sparse_rows: true trains in one process only (not with ddp)")
            return []
        users, items = self.rows_per_step
        sizes = (self.model.config.n_users,) * 3 + (self.model.config.n_items,) * 3
        looked_up = (users,) * 3 + (items,) * 3
        return [
            name
            for name, rows, used in zip(USER_TABLES + ITEM_TABLES, sizes, looked_up, strict=True)
            if getattr(self.model, name) is not None
            and (self.sparse_rows is True or rows >= LAZY_ROWS_RATIO * max(used, 1))
        ]

    def configure_optimizers(self) -> Any:
        """AdamW (fused on CPU and CUDA), the learning rate multiplied by `lr_gamma` every epoch;
        with `lazy_tables`, SparseAdam for those tables beside it.

        Only dense weights get weight decay; embeddings are regularised per batch by
        `embedding_reg`.
        """
        lazy = self.lazy_tables()
        for name in lazy:
            getattr(self.model, name).sparse = True
        named = [(n, p) for n, p in self.model.named_parameters() if n.split(".")[0] not in lazy]
        groups: list[dict[str, Any]] = [
            {"params": [p for n, p in named if _is_dense(n, self.model)]},
            {"params": [p for n, p in named if not _is_dense(n, self.model)], "weight_decay": 0.0},
        ]
        # The fused kernel updates every tensor in one pass: on CPU an explicit-mode step took
        # 3.0 -> 2.0 ms and an implicit one 87 -> 78 ms (ml-latest-small, one thread).
        fused = self.device.type in ("cpu", "cuda")
        optimizers: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(
                groups, lr=self.lr, weight_decay=self.weight_decay, fused=fused or None
            )
        ]
        if lazy:
            rows = [getattr(self.model, name).weight for name in lazy]
            optimizers.append(torch.optim.SparseAdam(rows, lr=self.lr))
        if self.lr_gamma >= 1.0:
            return optimizers[0] if len(optimizers) == 1 else optimizers
        schedulers = [
            {
                "scheduler": torch.optim.lr_scheduler.ExponentialLR(o, gamma=self.lr_gamma),
                "interval": "epoch",
            }
            for o in optimizers
        ]
        if len(optimizers) == 1:
            return {"optimizer": optimizers[0], "lr_scheduler": schedulers[0]}
        return optimizers, schedulers


def _is_dense(name: str, model: nn.Module) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(module, nn.Linear)
