"""Train NeuMF on a feature snapshot under one evaluation protocol, with baselines beside it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from recolab.config import ConfigError, training_overrides
from recolab.ml import ensemble, plots
from recolab.ml.baselines import BiasOnlyRecommender, PopularityRecommender
from recolab.ml.evaluation.protocols import (
    ItemFeatures,
    OfflineRecommender,
    ProtocolResult,
    TopkSplit,
    run_leave_one_out,
    run_rating_cv,
    run_topk,
    topk_split,
)
from recolab.ml.features import FeatureSnapshot
from recolab.ml.fitting import (
    FitResult,
    NeuMFRecommender,
    TrainConfig,
    fit,
    load_train_config,
    with_overrides,
)
from recolab.ml.progress import Progress, Reporting

log = logging.getLogger(__name__)
CONTRACT = ["user_id", "movie_id", "rating", "timestamp"]


@dataclass(frozen=True)
class EvaluationProtocol:
    name: str
    mode: str
    primary_metric: str
    higher_is_better: bool


PROTOCOLS = {
    "A": EvaluationProtocol("A", "explicit", "rmse", False),
    "B": EvaluationProtocol("B", "implicit", "ndcg@10", True),
    "C": EvaluationProtocol("C", "implicit", "hr@10", True),
}


@dataclass
class TrainingRun:
    """A fitted model, its evaluation under one protocol and the files that document it.

    `fit_result` is the model fitted on the protocol's training split: the one the summary
    measures, and the one compared with the champion on the same test rows. `refitted` (set
    by `refit`) is the same configuration fitted on all the snapshot's ratings: the model to
    register, which has seen the test rows and so is not measured on them.
    """

    protocol: EvaluationProtocol
    snapshot: FeatureSnapshot
    config: TrainConfig
    fit_result: FitResult
    summary: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    artefacts: dict[str, Path] = field(default_factory=dict)
    refitted: FitResult | None = None

    @property
    def registered_fit(self) -> FitResult:
        """The model to register: the refit when there is one, else the protocol's fit."""
        return self.refitted if self.refitted is not None else self.fit_result

    @property
    def protocol_name(self) -> str:
        return self.protocol.name

    @property
    def snapshot_id(self) -> str:
        return self.snapshot.id

    @property
    def primary_metric(self) -> str:
        return self.protocol.primary_metric

    @property
    def higher_is_better(self) -> bool:
        return self.protocol.higher_is_better

    @property
    def primary_value(self) -> float:
        return float(self.summary[self.protocol.primary_metric])

    @property
    def metrics(self) -> dict[str, float]:
        flat = {k: float(v) for k, v in self.summary.items() if isinstance(v, int | float)}
        for name, base in self.baselines.items():
            flat.update(
                {
                    f"baseline_{name}_{k}": float(v)
                    for k, v in base.items()
                    if isinstance(v, int | float)
                }
            )
        for tier, values in self.summary.get("by_tier", {}).items():
            flat.update({f"tier_{tier}_{k}": float(v) for k, v in values.items()})
        return flat


def load_config(
    config_dir: Path, protocol: EvaluationProtocol, overrides: Iterable[str]
) -> TrainConfig:
    """model.yaml + trainer.yaml for the protocol's mode, then the `model.` / `trainer.`
    overrides (a bare `key=value` is `trainer.key=value`; see recolab.config).

    Raises ConfigError naming an unknown section or training key, or a bad value."""
    changes = training_overrides(overrides)  # refuses an unknown section among all of them
    try:
        return load_train_config(
            config_dir / "model.yaml",
            config_dir / "trainer.yaml",
            mode=protocol.mode,  # type: ignore[arg-type]
            overrides=changes,
        )
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model/trainer config: {exc}") from None


def _progress(
    protocol: EvaluationProtocol,
    snapshot: FeatureSnapshot,
    ratings: pd.DataFrame,
    what: str,
    split: TopkSplit | None,
) -> Progress:
    """The evaluation's work, counted as the protocol does it: every rating predicted once
    across A's folds; each test user ranked once under B (those of its sample, if any) and C."""
    from recolab.ml.rescoring import protocol_split

    if protocol.name == "A":
        return Progress(f"protocol A, {what}", len(ratings), "ratings predicted")
    if split is not None:
        return Progress(f"protocol B, {what}", int(split.users.size), "users ranked")
    test = protocol_split(snapshot, protocol.name)[1]
    return Progress(f"protocol {protocol.name}, {what}", test["user_id"].nunique(), "users ranked")


def _shared_split(
    protocol: EvaluationProtocol,
    ratings: pd.DataFrame,
    snapshot: FeatureSnapshot,
    items: ItemFeatures,
    config: TrainConfig,
) -> TopkSplit | None:
    """Protocol B's split, made once for NeuMF and every baseline ranked on it."""
    if protocol.name != "B":
        return None
    spec = snapshot.manifest["splits"]
    return topk_split(
        ratings,
        test_fraction=spec["test_fraction"],
        seed=spec["split_seed"],
        items=items,
        sample_users=config.eval_sample_users,
        max_pairs=config.eval_max_pairs,
    )


def _run(
    protocol: EvaluationProtocol,
    factory: Any,
    ratings: pd.DataFrame,
    snapshot: FeatureSnapshot,
    items: ItemFeatures,
    what: str,
    config: TrainConfig,
    split: TopkSplit | None = None,
) -> ProtocolResult:
    progress = _progress(protocol, snapshot, ratings, what, split)

    def counted() -> Reporting:  # the protocol's calls to the model, counted
        return Reporting(factory(), progress)

    spec = snapshot.manifest["splits"]
    if protocol.name == "A":
        return run_rating_cv(counted, ratings, n_folds=spec["n_folds"], seed=spec["fold_seed"])
    if protocol.name == "B":
        return run_topk(
            counted,
            ratings,
            k=10,
            test_fraction=spec["test_fraction"],
            seed=spec["split_seed"],
            items=items,
            memory_mb=config.ranking_memory_mb,
            sample_users=config.eval_sample_users,
            split=split,
            max_pairs=config.eval_max_pairs,
        )
    return run_leave_one_out(counted, ratings, k=10, n_negatives=100, seed=spec["split_seed"])


def _flatten_a(summary: dict[str, Any]) -> dict[str, Any]:
    # Protocol A reports {"rmse": {"mean", "std"}}: the mean is the figure compared.
    out = dict(summary)
    for key in ("rmse", "mae"):
        if isinstance(out.get(key), dict):
            out[f"{key}_std"] = out[key]["std"]
            out[key] = out[key]["mean"]
    return out


def train(
    snapshot: FeatureSnapshot,
    protocol_name: str,
    config: TrainConfig,
    out_dir: Path,
    *,
    baselines: bool = True,
) -> TrainingRun:
    """Fit NeuMF under the protocol (its split of the snapshot), evaluate, export, plot."""
    protocol = PROTOCOLS[protocol_name]
    ratings = snapshot.ratings[CONTRACT]
    items = ItemFeatures.from_movies(snapshot.movies)
    made: list[NeuMFRecommender] = []

    def neumf() -> OfflineRecommender:
        made.append(NeuMFRecommender(config))
        return made[-1]

    split = _shared_split(protocol, ratings, snapshot, items, config)
    result = _run(protocol, neumf, ratings, snapshot, items, "neumf", config, split)
    fitted = made[-1].result
    assert fitted is not None
    summary = _flatten_a(result.summary)
    others: dict[str, dict[str, Any]] = {}
    if baselines:
        factories: dict[str, Any] = {"bias_only": BiasOnlyRecommender}
        if protocol.name != "A":
            factories["popularity"] = PopularityRecommender
        for name, factory in factories.items():
            others[name] = _flatten_a(
                _run(protocol, factory, ratings, snapshot, items, name, config, split).summary
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    artefacts = {
        "evaluation": _write_json(
            out_dir / "evaluation.json",
            {
                "protocol": protocol.name,
                "snapshot": snapshot.id,
                "neumf": summary,
                "baselines": others,
                "history": fitted.history,
                "config": config.to_dict(),
            },
        ),
        "scores": result.export_scores(out_dir / "test_scores.csv"),
        "learning_curve": plots.save(
            learning_curve(fitted, others), out_dir / "learning_curve.png"
        ),
        "per_tier": plots.save(
            plots.per_tier_figure(
                summary.get("by_tier", {}),
                protocol.primary_metric,
                f"protocol {protocol.name}: {protocol.primary_metric} by user tier",
            ),
            out_dir / "per_tier.png",
        ),
    }
    log.info(
        "protocol %s: %s = %.4f",
        protocol.name,
        protocol.primary_metric,
        summary[protocol.primary_metric],
    )
    return TrainingRun(protocol, snapshot, config, fitted, summary, others, artefacts)


def refit_config(config: TrainConfig, epochs: int) -> TrainConfig:
    """`config` for `epochs` epochs exactly, with no validation slice held out: nothing is left
    to early-stop on, so the epochs are the ones the protocol's fit chose."""
    if epochs < 1:
        raise ValueError(f"a refit needs at least one epoch, got {epochs}")
    return with_overrides(
        config, max_epochs=epochs, min_epochs=epochs, val_fraction=0.0, val_negatives=0
    )


def refit(run: TrainingRun, **trainer_overrides: Any) -> TrainingRun:
    """`run` with its model refitted on all the snapshot's ratings (`run.refitted`), for
    `run.fit_result.epochs_kept` epochs, the protocol's fit's choice; `run` unchanged when its
    config's `refit` is off. The summary stays the protocol's: the refit has seen the test rows.

    Each epoch covers more rows than the protocol's fit did (its test rows and validation
    slice too), with the same learning-rate schedule per epoch."""
    if not run.config.refit:
        log.info("refit off: the fit on protocol %s's split is registered", run.protocol_name)
        return run
    ratings = run.snapshot.ratings[CONTRACT]
    log.info("refit on all %d ratings of snapshot %s", len(ratings), run.snapshot_id)
    return replace(run, refitted=refit_fit(run.fit_result, ratings, **trainer_overrides))


def refit_fit(first: FitResult, ratings: pd.DataFrame, **trainer_overrides: Any) -> FitResult:
    """A fit of `ratings` for the epochs `first` kept (`refit_config`), nothing held out.

    With `ensemble` n > 1, n - 1 refits start from seeds seed + 1 .. seed + n - 1 (other
    initialisations, other sampled negatives) and the result is the mean of them and `first`,
    merged into one NeuMF (`recolab.ml.ensemble.merge`; all index `ratings`'s users and
    items). Its `fit_seconds` are the refits' together."""
    epochs = first.epochs_kept
    config = refit_config(first.config, epochs)
    seeds = [config.seed + j for j in range(1, config.ensemble)] or [config.seed]
    refits = []
    for k, seed in enumerate(seeds, start=1):
        # progress lines say which refit ("refit 2/4 epoch 3/7: ...") when there are several
        label = "refit" if len(seeds) == 1 else f"refit {k}/{len(seeds)}"
        log.info("%s of %d ratings for %d epochs (seed %d)", label, len(ratings), epochs, seed)
        result = fit(ratings, with_overrides(config, seed=seed), label=label, **trainer_overrides)
        log.info("refit done in %.1f s", result.fit_seconds)
        refits.append(result)
    if config.ensemble == 1:
        return refits[0]
    users, items = refits[0].users.ids, refits[0].items.ids
    # The protocol's fit may not know every user and movie of `ratings` (the pipeline refits
    # on the whole snapshot, test rows included): those get its zero rows.
    split_fit = ensemble.align(first.model, first.users.ids, first.items.ids, users, items)
    log.info("registered: the mean of the fit and %d refits (one merged NeuMF)", len(refits))
    return replace(
        refits[0],
        model=ensemble.merge([split_fit, *(r.model for r in refits)]),
        config=config,
        fit_seconds=sum(r.fit_seconds for r in refits),
        history=ensemble_history(refits),
    )


def ensemble_history(refits: Sequence[FitResult]) -> list[dict[str, float]]:
    """The refits' per-epoch rows side by side: the first's keys as they are, refit k's
    (k >= 2) as "k/<key>" (MLflow: refit/train/loss, refit/2/train/loss, ...). The refits
    ran the same epochs, so the rows stay one per epoch."""
    rows = [dict(row) for row in refits[0].history]
    for k, result in enumerate(refits[1:], start=2):
        for row, other in zip(rows, result.history, strict=True):
            row.update({f"{k}/{key}": v for key, v in other.items() if key != "epoch"})
    return rows


class RefittedRecommender(NeuMFRecommender):
    """NeuMF behind the evaluation API as the train flow registers it: the fit holds its
    validation slice out and early-stops, then (with `config.refit`) the model is refitted
    on every rating it was given for the epochs that fit kept (`refit_fit`). What
    benchmarks/quality.py measures; `protocol_fit` keeps the first fit (its validation
    history), `result` the model that scores."""

    def __init__(self, config: TrainConfig, **trainer_overrides: Any) -> None:
        super().__init__(config, **trainer_overrides)
        self.protocol_fit: FitResult | None = None

    def fit(self, ratings: pd.DataFrame) -> RefittedRecommender:
        super().fit(ratings)
        self.protocol_fit = self._fitted()
        if self.config.refit:
            self.result = refit_fit(self.protocol_fit, ratings, **self.trainer_overrides)
        return self


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def learning_curve(fitted: FitResult, baselines: dict[str, dict[str, Any]]) -> Figure:
    """The fit's learning curve (`recolab.ml.plots.learning_curve_figure`): the epoch whose
    weights were kept marked, the baselines' figures for the same metrics as lines."""
    return plots.learning_curve_figure(
        fitted.history, best_epoch=fitted.best_epoch, baselines=baselines
    )


__all__ = [
    "PROTOCOLS",
    "EvaluationProtocol",
    "RefittedRecommender",
    "TrainingRun",
    "learning_curve",
    "load_config",
    "refit",
    "refit_config",
    "refit_fit",
    "train",
]
