"""Training entry point: a ratings DataFrame and a `TrainConfig` in, a fitted NeuMF out.

`load_train_config` reads configs/model.yaml and configs/trainer.yaml: top-level keys are
shared, and an `explicit:` or `implicit:` section overrides them for that mode. Overrides
(`recolab.config.training_overrides`) have the same shape and win over both files.
"""

from __future__ import annotations

import copy
import difflib
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import yaml
from torch import Tensor

from recolab.ml import hardware
from recolab.ml.datamodule import HeldOut, IdIndex, InteractionDataModule, Interactions
from recolab.ml.hardware import build_trainer, torch_threads
from recolab.ml.holdout import holdout_explicit, holdout_ranking
from recolab.ml.neumf import NeuMF, NeuMFConfig
from recolab.ml.progress import EpochProgress
from recolab.ml.ranking import NeuMFCatalogue, rows_per_block
from recolab.ml.system import (
    RATING_MIN,
    RATING_SPAN,
    Mode,
    NeuMFSystem,
    RankingLoss,
    check_ranking_loss,
)

MODES: tuple[Mode, ...] = ("explicit", "implicit")
ValOrder = Literal["random", "latest"]
VAL_ORDERS: tuple[ValOrder, ...] = ("random", "latest")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run (model shape, optimisation, validation, hardware)."""

    mode: Mode = "explicit"
    # model
    gmf_dim: int = 32
    mlp_dim: int = 32
    mlp_layers: tuple[int, ...] = (128, 64, 32)
    dropout: float = 0.2
    use_bias: bool = True
    init_std: float = 0.01
    popularity_weight: float = 0.0
    # optimisation
    lr: float = 1e-3
    weight_decay: float = 0.0
    embedding_reg: float = 0.0
    lr_gamma: float = 1.0  # learning rate multiplier after every epoch (1 = constant)
    batch_size: int = 2048
    # optimiser steps per Lightning loop iteration on one device (see StepGroups)
    steps_per_execution: int = 1
    max_epochs: int = 20
    min_epochs: int = 1
    num_negatives: int = 4
    ranking_loss: RankingLoss = "bce"  # implicit: "bce" per pair, or "softmax" per positive
    sparse_rows: bool | Literal["auto"] = "auto"  # lazy Adam on big embedding tables (system.py)
    # validation and early stopping
    val_fraction: float = 0.05
    val_negatives: int | None = None  # implicit: None = full-catalogue ranking, 0 = off
    val_max_users: int = 5000
    # implicit: positives held out per validated user ("auto": recolab.ml.holdout.per_user)
    val_per_user: int | Literal["auto"] = 1
    # implicit: which positives are held out, "random" ones or each user's "latest" (by
    # timestamp, as protocol C's test holds out the latest rating)
    val_order: ValOrder = "random"
    ranking_memory_mb: float = 256  # per block of full-catalogue scores (validation, protocols)
    eval_sample_users: int | None = None  # protocol B: None = every test user, N = a sample
    eval_max_pairs: int | None = 1_000_000_000  # None: no limit; else users x movies above it
    patience: int = 2
    top_k: int = 10
    # hardware and reproducibility
    seed: int = 42
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool | Literal["warn"] = "warn"
    enable_progress_bar: bool | None = None  # None: when the output is a terminal
    # torch intra-op CPU threads during fit (None = leave torch's setting; "auto": see
    # `fit_threads`). A small model's ops are too short to split: on a shared machine every op
    # then waits at a barrier for the slowest thread, which made CPU steps 10-30x slower
    # (benchmarks/results/train.json).
    num_threads: int | Literal["auto"] | None = 1
    # Register a model refitted on all the snapshot's ratings for the epochs the protocol's
    # fit kept (recolab.ml.experiment.refit); False registers the protocol's fit itself.
    refit: bool = True
    # With refit: networks averaged in the registered model. 1: the refit alone; n > 1: the
    # protocol's fit and n - 1 refits seeded seed + 1 .. seed + n - 1, merged into one NeuMF
    # n times as wide (recolab.ml.ensemble), at the cost of n - 1 refits.
    ensemble: int = 1
    # Free C-heap pages handed back to the system as the fit grows (hardware.ReleaseFreedMemory)
    release_memory: bool = True
    heap_reuse_mb: float | None = 1024  # with release_memory: blocks kept in the C heap

    @property
    def monitor(self) -> tuple[str, Literal["min", "max"]]:
        if self.mode == "explicit":
            return "val/rmse", "min"
        return f"val/ndcg@{self.top_k}", "max"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mlp_layers"] = list(self.mlp_layers)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build and validate; an unknown key is an error that names it."""
        refuse_unknown_keys(data)
        values = dict(data)
        if "mlp_layers" in values:
            if not isinstance(values["mlp_layers"], list | tuple):
                raise ValueError(
                    f"mlp_layers must be a list of sizes, got {values['mlp_layers']!r}"
                )
            values["mlp_layers"] = tuple(values["mlp_layers"])
        if values.get("mode", "explicit") not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {values['mode']!r}")
        threads = values.get("num_threads", 1)
        counted = isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1
        if threads is not None and threads != "auto" and not counted:
            raise ValueError(
                f"num_threads must be an integer >= 1, 'auto' or null, got {threads!r}"
            )
        members = values.get("ensemble", 1)
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"ensemble must be an integer >= 1, got {members!r}")
        reuse = values.get("heap_reuse_mb")
        if reuse is not None and (
            isinstance(reuse, bool) or not isinstance(reuse, int | float) or not 1 <= reuse < 2048
        ):  # glibc takes the bytes as a C int
            raise ValueError(
                f"heap_reuse_mb must be null or a number of MB in [1, 2048), got {reuse!r}"
            )
        held = values.get("val_per_user", 1)
        if held != "auto" and (isinstance(held, bool) or not isinstance(held, int) or held < 1):
            raise ValueError(f"val_per_user must be an integer >= 1 or 'auto', got {held!r}")
        if values.get("val_order", "random") not in VAL_ORDERS:
            raise ValueError(f"val_order must be one of {VAL_ORDERS}, got {values['val_order']!r}")
        check_ranking_loss(values.get("ranking_loss", "bce"))
        steps = values.get("steps_per_execution", 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps_per_execution must be an integer >= 1, got {steps!r}")
        return cls(**values)


def refuse_unknown_keys(data: Iterable[str], where: str = "") -> None:
    """Raise ValueError naming each key that is no TrainConfig setting (with a close match)."""
    known = [f.name for f in fields(TrainConfig)]
    unknown = [key for key in data if key not in known]
    if unknown:
        names = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            names.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{where}unknown training setting {', '.join(names)}")


def _split_modes(data: Mapping[str, Any], origin: str) -> tuple[dict[str, Any], dict[Mode, Any]]:
    """Shared keys and per-mode sections, each checked: a typo in the other mode's section is
    an error too, not a setting that never takes effect."""
    shared = {k: v for k, v in data.items() if k not in MODES}
    by_mode: dict[Mode, Any] = {m: data.get(m) or {} for m in MODES}
    refuse_unknown_keys(shared, f"{origin}: ")
    for m, section in by_mode.items():
        if not isinstance(section, Mapping):
            raise ValueError(f"{origin}: {m} must be a mapping of settings, got {section!r}")
        refuse_unknown_keys(section, f"{origin}: {m}: ")
    return shared, by_mode


def load_train_config(
    *paths: Path, mode: Mode | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Merge YAML files (later wins), then apply the section of `mode` (or of their `mode`).

    `overrides` has the files' shape (shared keys, `explicit` / `implicit` sections) and is
    applied last: its shared keys over the files' mode section, then its own mode section.
    """
    merged: dict[str, Any] = {}
    sections: dict[Mode, dict[str, Any]] = {m: {} for m in MODES}
    for path in paths:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping at the top level")
        shared, by_mode = _split_modes(data, str(path))
        for m in MODES:
            sections[m].update(by_mode[m])
        merged.update(shared)
    extra, extra_sections = _split_modes(overrides or {}, "override")
    if mode is not None and extra.get("mode", mode) != mode:
        raise ValueError(f"override: mode = {extra['mode']!r}, but this run's mode is {mode!r}")
    chosen = mode or extra.get("mode") or merged.get("mode", "explicit")
    if chosen not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {chosen!r}")
    merged.update(sections[chosen])
    merged.update(extra)
    merged.update(extra_sections[chosen])
    merged["mode"] = chosen
    return TrainConfig.from_dict(merged)


@dataclass
class FitResult:
    """A fitted model on CPU in eval mode, the id maps it was trained with, and its history."""

    model: NeuMF
    config: TrainConfig
    users: IdIndex
    items: IdIndex
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    fit_seconds: float = 0.0
    train_rows: int = 0  # the rows the model trained on (validation rows held out excluded)

    @property
    def epochs_kept(self) -> int:
        """Epochs up to the weights kept: the best epoch's, else every epoch run."""
        if self.best_epoch is not None:
            return self.best_epoch + 1
        return max(len(self.history), 1)

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to rebuild the model on CPU (plain types + a state_dict)."""
        return {
            "train_config": self.config.to_dict(),
            "model_config": self.model.config.to_dict(),
            "user_ids": self.users.ids.tolist(),
            "item_ids": self.items.ids.tolist(),
            "state_dict": self.model.state_dict(),
        }

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any]) -> FitResult:
        model = NeuMF(NeuMFConfig.from_dict(data["model_config"]))
        model.load_state_dict(data["state_dict"])
        model.eval()
        return cls(
            model=model,
            config=TrainConfig.from_dict(data["train_config"]),
            users=IdIndex(np.asarray(data["user_ids"])),
            items=IdIndex(np.asarray(data["item_ids"])),
        )


class _KeepBest(pl.Callback):
    """Keeps the best weights in memory (no checkpoint files) and restores them at the end."""

    def __init__(self, monitor: str, mode: Literal["min", "max"]) -> None:
        self.monitor = monitor
        self.sign = 1.0 if mode == "min" else -1.0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.state: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        current = float(value)
        if self.best is None or self.sign * current < self.sign * self.best:
            self.best, self.best_epoch = current, trainer.current_epoch
            self.state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def encode(ratings: pd.DataFrame, mode: Mode) -> tuple[Interactions, IdIndex, IdIndex]:
    """Ratings to index interactions; explicit targets are (rating - 0.5) / 4.5."""
    users = IdIndex(ratings["user_id"].to_numpy())
    items = IdIndex(ratings["movie_id"].to_numpy())
    if mode == "explicit":
        targets = (ratings["rating"].to_numpy(np.float32) - RATING_MIN) / RATING_SPAN
    else:
        targets = np.ones(len(ratings), dtype=np.float32)
    data = Interactions(
        users.lookup(ratings["user_id"].to_numpy()),
        items.lookup(ratings["movie_id"].to_numpy()),
        targets.astype(np.float32),
    )
    return data, users, items


def build_system(config: TrainConfig, model: NeuMF) -> NeuMFSystem:
    """The LightningModule that trains `model` with `config`'s optimisation settings."""
    negatives = config.num_negatives if config.mode == "implicit" else 0
    return NeuMFSystem(
        model,
        mode=config.mode,
        lr=config.lr,
        weight_decay=config.weight_decay,
        embedding_reg=config.embedding_reg,
        lr_gamma=config.lr_gamma,
        top_k=config.top_k,
        sparse_rows=config.sparse_rows,
        rows_per_step=(config.batch_size, config.batch_size * (1 + negatives)),
        ranking_loss=config.ranking_loss,
    )


def build_model(config: TrainConfig, n_users: int, n_items: int, global_mean: float) -> NeuMF:
    return NeuMF(
        NeuMFConfig(
            n_users=n_users,
            n_items=n_items,
            gmf_dim=config.gmf_dim,
            mlp_dim=config.mlp_dim,
            mlp_layers=config.mlp_layers,
            dropout=config.dropout,
            use_bias=config.use_bias,
            init_std=config.init_std,
            popularity_weight=config.popularity_weight,
            global_mean=global_mean,
        )
    )


def fit(
    ratings: pd.DataFrame, config: TrainConfig, *, label: str = "fit", **trainer_overrides: Any
) -> FitResult:
    """Train NeuMF on `ratings` (contract columns) and return the best weights seen.

    A slice of `ratings` is held out for early stopping: `val_fraction` of the rows in
    explicit mode, `val_per_user` positives per user in implicit mode (random ones, or with
    `val_order` "latest" each user's latest; up to `val_max_users` users, each ranked against
    the whole catalogue or `val_negatives` sampled items: recolab.ml.holdout).
    `trainer_overrides` go to `pl.Trainer` (e.g. fast_dev_run=True); their `callbacks` run
    beside the fit's own (best weights, early stopping) instead of replacing them. Runs with
    `config.num_threads` torch CPU threads and restores the caller's setting afterwards.
    Each epoch is logged (`recolab.ml.progress.EpochProgress`, its lines start with `label`).
    """
    with torch_threads(fit_threads(config, len(ratings))):
        return _fit(ratings, config, label, **trainer_overrides)


def fit_threads(config: TrainConfig, n_rows: int) -> int | None:
    """The torch CPU threads a fit of `n_rows` ratings runs with (None: torch's setting)."""
    negatives = config.num_negatives if config.mode == "implicit" else 0
    return hardware.fit_threads(config.num_threads, n_rows, config.batch_size * (1 + negatives))


def _fit(
    ratings: pd.DataFrame, config: TrainConfig, label: str, **trainer_overrides: Any
) -> FitResult:
    start = time.perf_counter()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    data, users, items = encode(ratings, config.mode)
    rng = np.random.default_rng(config.seed)
    val: Interactions | None = None
    ranking: HeldOut | None = None
    if config.mode == "explicit":
        train, val = holdout_explicit(data, config.val_fraction, rng)
        global_mean = float(train.targets.mean())
    else:
        times = ratings["timestamp"].to_numpy() if config.val_order == "latest" else None
        train, ranking = holdout_ranking(data, len(items), config, rng, times)
        global_mean = 0.0
    model = build_model(config, len(users), len(items), global_mean)
    # The ranking prior counts training rows only (not the held-out validation ones).
    model.set_item_counts(torch.bincount(torch.from_numpy(train.items), minlength=len(items)))
    system = build_system(config, model)
    datamodule = InteractionDataModule(
        train,
        len(items),
        batch_size=config.batch_size,
        num_negatives=config.num_negatives if config.mode == "implicit" else 0,
        val=val,
        val_ranking=ranking,
        seed=config.seed,
        steps_per_execution=config.steps_per_execution,
        ranking_rows=rows_per_block(len(items), model.pair_bytes(), config.ranking_memory_mb),
    )
    monitor, direction = config.monitor
    keep_best = _KeepBest(monitor, direction)
    callbacks: list[pl.Callback] = [
        keep_best,
        EpochProgress(label),
        *trainer_overrides.pop("callbacks", ()),
    ]
    if val is not None or ranking is not None:
        callbacks.append(
            pl.callbacks.EarlyStopping(monitor, patience=config.patience, mode=direction)
        )
    else:
        trainer_overrides = {"limit_val_batches": 0, **trainer_overrides}
    trainer = build_trainer(config, callbacks, **trainer_overrides)
    trainer.fit(system, datamodule=datamodule)
    model = system.model.cpu().eval()
    return FitResult(
        model=model,
        config=config,
        users=users,
        items=items,
        history=list(system.history),
        best_epoch=keep_best.best_epoch,
        best_score=keep_best.best,
        fit_seconds=time.perf_counter() - start,
        train_rows=len(train),
    )


class NeuMFRecommender:
    """NeuMF behind the evaluation API (fit / predict / score on raw ids).

    Pairs with an id unseen in training fall back to the bias terms that are known.
    """

    def __init__(self, config: TrainConfig, **trainer_overrides: Any) -> None:
        self.config = config
        self.trainer_overrides = trainer_overrides
        self.result: FitResult | None = None
        self._catalogue: NeuMFCatalogue | None = None

    def fit(self, ratings: pd.DataFrame) -> NeuMFRecommender:
        self.result = fit(ratings, self.config, **self.trainer_overrides)
        return self

    def _fitted(self) -> FitResult:
        if self.result is None:
            raise RuntimeError("fit the recommender first")
        return self.result

    def catalogue(self) -> NeuMFCatalogue:  # the fitted model, its item side computed once
        result = self._fitted()
        if self._catalogue is None or self._catalogue.model is not result.model:
            self._catalogue = NeuMFCatalogue(result.model, result.users.ids, result.items.ids)
        return self._catalogue

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """`NeuMF.ranking_score` per pair (a logit plus the popularity prior in implicit mode)."""
        return self.catalogue().score_pairs(user_ids, item_ids)

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Ratings in stars (explicit mode only)."""
        if self.config.mode != "explicit":
            raise ValueError("an implicit-feedback model does not predict ratings")
        normalised = np.clip(self.score(user_ids, item_ids), 0.0, 1.0)
        return normalised * RATING_SPAN + RATING_MIN


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of `config` with some settings changed (validated like a loaded config)."""
    return TrainConfig.from_dict({**config.to_dict(), **changes}) if changes else replace(config)
