"""Online reports and promotion from online evidence, in MLflow.

- `MlflowOnlineReports` (the `ReportLog` port): each report is a run of the experiment
  `recolab-online`: params (experiment, window, confidence, cut-offs, ...), metrics per
  variant (`champion/hit_rate`, `challenger/hit_rate_at_10`, `difference/lower_bound`, ...),
  tags naming both model versions, the report as `online/report.json` and a plot
  `online/hit_rate.png`; each model version gets the tag `online.report_run` (the run id).
- `MlflowExperimentRegistry` (the `ExperimentRegistry` port): the running experiment, the
  offline comparison of its two versions on the same data, and the promotion: `champion`
  moves to the challenger, the experiment stops and the `challenger` alias goes; the
  decision is kept as `online.promotion.*` tags on the challenger version, promoted or not.

The offline comparison reuses the training gate's: when the challenger's registration
compared it with the version that is champion now (`promotion.champion_version`), its
recorded same-data figures (`promotion.candidate_same_data`, `promotion.champion`, on
`promotion.same_data.test_rows_compared` rows) are used; otherwise both registered models
are re-scored on the challenger's test split (`recolab.ml.rescoring.compare_on_split`),
leaving out the rows either was trained on.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from recolab.adapters.mlflow import tracking as mlf
from recolab.adapters.mlflow.experiments import read_state, stop_experiment
from recolab.adapters.mlflow.registry import COMPARISON_PREFIX, TAG_CHALLENGER, set_champion
from recolab.adapters.sql.online import SqlExperimentHistory
from recolab.application.online import (
    ExperimentStatus,
    OfflineFigures,
    OnlineReporting,
)
from recolab.domain.experiments import CHALLENGER, CHAMPION
from recolab.domain.promotion import HeadToHead, OnlinePromotionDecision
from recolab.domain.services.online import Interval, OnlineReport, VariantReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sqlalchemy import Engine

EXPERIMENT = "recolab-online"
TAG_EXPERIMENT = "online.experiment"
TAG_MODEL = "online.model"
TAG_CHAMPION = "online.champion_version"
TAG_CHALLENGER_VERSION = "online.challenger_version"
TAG_DECISION = "online.decision"
TAG_REPORT_RUN = "online.report_run"  # on model versions: the latest report's run
PROMOTION_PREFIX = "online.promotion."  # on the challenger version: the decision
REPORT_JSON = "online/report.json"
PLOT = "hit_rate.png"
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def jsonable(value: Any) -> Any:
    """`value` as strict JSON values: non-finite floats become None, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _decision_tags(decision: OnlinePromotionDecision, report_run: str) -> dict[str, str]:
    values = {**asdict(decision), "report_run": report_run}
    return {f"{PROMOTION_PREFIX}{k}": str(v)[: mlf.MAX_VALUE] for k, v in values.items()}


def _status_text(status: ExperimentStatus) -> dict[str, Any]:
    experiment = status.experiment
    return {
        "experiment": None if experiment is None else experiment.name,
        "mode": None if experiment is None else experiment.mode,
        "share": None if experiment is None else experiment.share,
        "champion_version": status.champion_version,
        "challenger_version": status.challenger_version,
        "started_at": status.started_at,
        "error": status.error,
    }


# -- the report as a run ------------------------------------------------------------------


def report_metrics(report: OnlineReport) -> dict[str, float]:
    """The report's figures under MLflow-safe keys (non-finite ones left out)."""
    out: dict[str, float] = {}
    every = [*report.variants.values(), *([report.shadow] if report.shadow else [])]
    for v in every:
        figures: dict[str, float] = {
            "answers": v.answers,
            "users": v.users,
            "items": v.items,
            "hits": v.hits,
            "coverage": v.coverage,
            "novelty": v.novelty,
            **_with_interval("hit_rate", v.hit_rate, v.hit_rate_interval),
        }
        for k, value in v.hit_rate_at.items():
            figures.update(_with_interval(f"hit_rate@{k}", value, v.hit_rate_at_interval[k]))
        out.update({f"{v.variant}/{name}": float(x) for name, x in figures.items()})
    d = report.difference
    if d is not None:
        out.update(
            {
                f"difference/{k}": v
                for k, v in _with_interval("hit_rate", d.hit_rate, d.hit_rate_interval).items()
            }
        )
        out["difference/lower_bound"] = d.lower_bound
        for k, value in d.hit_rate_at.items():
            out.update(
                {
                    f"difference/{name}": x
                    for name, x in _with_interval(
                        f"hit_rate@{k}", value, d.hit_rate_at_interval[k]
                    ).items()
                }
            )
    out["open_answers"] = report.open_answers
    out["excluded_answers"] = report.excluded_answers
    return {mlf.metric_key(k): float(v) for k, v in out.items() if math.isfinite(float(v))}


def _with_interval(name: str, value: float, interval: Interval) -> dict[str, float]:
    return {name: value, f"{name}_low": interval.low, f"{name}_high": interval.high}


def online_figure(report: OnlineReport) -> Figure:
    """Two panels: each variant's hit rate with its interval (shadow hatched: never shown),
    and the hit rate at each rank cut-off with its interval band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    bars, lines = figure.subplots(1, 2)
    every = [*report.variants.values(), *([report.shadow] if report.shadow else [])]
    for i, v in enumerate(every):
        low, high = v.hit_rate_interval.low, v.hit_rate_interval.high
        error = [[_gap(v.hit_rate - low)], [_gap(high - v.hit_rate)]]
        colour = f"C{i}"
        bars.bar(
            i,
            0.0 if math.isnan(v.hit_rate) else v.hit_rate,
            yerr=error,
            capsize=6,
            hatch="//" if not v.shown else None,
            alpha=0.5 if not v.shown else 0.9,
            color=colour,
        )
        cutoffs = sorted(v.hit_rate_at)
        lines.plot(
            cutoffs, [v.hit_rate_at[k] for k in cutoffs], "o-", color=colour, label=_label(v)
        )
        lines.fill_between(
            cutoffs,
            [v.hit_rate_at_interval[k].low for k in cutoffs],
            [v.hit_rate_at_interval[k].high for k in cutoffs],
            alpha=0.15,
            color=colour,
        )
    level = f"{report.settings.confidence:.1%}"
    bars.set_xticks(range(len(every)), [v.variant for v in every])
    bars.set_ylabel("hit rate (answers with a hit)")
    bars.set_title(f"hit rate, {level} interval (bootstrap over users)")
    lines.set_xticks(list(report.settings.rank_cutoffs))
    lines.set_xlabel("rank cut-off k")
    lines.set_ylabel("hit rate @ k")
    lines.set_title("a hit at rank <= k")
    lines.legend(fontsize="small")
    d = report.difference
    note = (
        "no difference: a shown variant answered nobody"
        if d is None
        else f"challenger - champion {d.hit_rate:+.4f} [{d.hit_rate_interval.low:+.4f}, "
        f"{d.hit_rate_interval.high:+.4f}], lower bound {d.lower_bound:+.4f} at {level}"
    )
    figure.suptitle(f"online experiment {report.experiment!r}: {note}", fontsize="medium")
    return figure


def _gap(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def _label(v: VariantReport) -> str:
    versions = ", ".join(sorted(v.versions)) or "-"
    shown = "" if v.shown else " (not shown)"
    return f"{v.variant}{shown} v{versions}: {v.users} users"


class MlflowOnlineReports:
    """The `ReportLog` port: a run per report in the `recolab-online` experiment."""

    def __init__(
        self, tracking_uri: str, artifact_root: Path, model_name: str, experiment: str = EXPERIMENT
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.model_name = model_name
        self.experiment = experiment
        self.client = mlf.mlflow_client(tracking_uri)

    def log(
        self,
        report: OnlineReport,
        status: ExperimentStatus,
        decision: OnlinePromotionDecision | None,
        offline: OfflineFigures | None,
    ) -> str:
        experiment_id = mlf.ensure_experiment(
            self.tracking_uri, self.experiment, self.artifact_root
        )
        versions = {CHAMPION: status.champion_version, CHALLENGER: status.challenger_version}
        verdict = (
            "not asked"
            if decision is None
            else "promoted"
            if decision.promote
            else "stays challenger"
        )
        tags = {
            TAG_EXPERIMENT: report.experiment,
            TAG_MODEL: self.model_name,
            TAG_CHAMPION: str(versions[CHAMPION]),
            TAG_CHALLENGER_VERSION: str(versions[CHALLENGER]),
            TAG_DECISION: verdict,
            "mlflow.note.content": decision.reason if decision else _summary(report),
        }
        run = self.client.create_run(
            experiment_id,
            tags={k: v[: mlf.MAX_VALUE] for k, v in tags.items()},
            run_name=f"{report.experiment}-{time.strftime('%Y%m%dT%H%M%S')}",
        )
        run_id = str(run.info.run_id)
        try:
            self._fill(run_id, report, status, decision, offline)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        for version in {v for v in versions.values() if v is not None}:
            self._tag_version(version, TAG_REPORT_RUN, run_id)
        return run_id

    def _fill(
        self,
        run_id: str,
        report: OnlineReport,
        status: ExperimentStatus,
        decision: OnlinePromotionDecision | None,
        offline: OfflineFigures | None,
    ) -> None:
        s = report.settings
        params = {
            "experiment": report.experiment,
            "hit_window_s": s.window_s,
            "confidence": s.confidence,
            "rank_cutoffs": json.dumps(list(s.rank_cutoffs)),
            "bootstrap_samples": s.bootstrap_samples,
            "seed": s.seed,
            "champion_version": status.champion_version,
            "challenger_version": status.challenger_version,
            "mode": None if status.experiment is None else status.experiment.mode,
            "share": None if status.experiment is None else status.experiment.share,
            "promotion_asked": decision is not None,
        }
        now = int(time.time() * 1000)
        metrics = report_metrics(report)
        if decision is not None:
            metrics["promoted"] = float(decision.promote)
        mlf.log_batched(
            self.client,
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[: mlf.MAX_VALUE]) for k, v in params.items()],
            tags=[
                RunTag(k, v)
                for k, v in (_decision_tags(decision, run_id) if decision else {}).items()
            ],
        )
        payload = {
            "report": report.to_dict(),
            "status": _status_text(status),
            "decision": None if decision is None else asdict(decision),
            "offline": None if offline is None else _offline_dict(offline),
        }
        self.client.log_dict(run_id, jsonable(payload), REPORT_JSON)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / PLOT
            online_figure(report).savefig(path, dpi=80)
            self.client.log_artifact(run_id, str(path), "online")

    def _tag_version(self, version: str, key: str, value: str) -> None:
        try:
            self.client.set_model_version_tag(self.model_name, version, key, value)
        except MlflowException as exc:
            if exc.error_code not in _NOT_FOUND:
                raise


def _summary(report: OnlineReport) -> str:
    d = report.difference
    if d is None:
        return f"online report of {report.experiment!r}: no difference (a variant answered nobody)"
    low, high = d.hit_rate_interval.low, d.hit_rate_interval.high
    return (
        f"online report of {report.experiment!r}: challenger - champion hit rate "
        f"{d.hit_rate:+.4f}, {d.confidence:.1%} interval [{low:+.4f}, {high:+.4f}]"
    )


def _offline_dict(offline: OfflineFigures) -> dict[str, Any]:
    h = offline.head_to_head
    return {
        "metric": offline.metric,
        "higher_is_better": offline.higher_is_better,
        "source": offline.source,
        "challenger": None if h is None else h.candidate,
        "champion": None if h is None else h.champion,
        "rows": None if h is None else h.rows,
        **{f"details.{k}": v for k, v in offline.details.items()},
    }


# -- the experiment, the offline comparison and the promotion ------------------------------


class MlflowExperimentRegistry:
    """The `ExperimentRegistry` port on the MLflow model registry."""

    def __init__(self, tracking_uri: str, model_name: str, features_root: Path) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.features_root = features_root
        self.client = mlf.mlflow_client(tracking_uri)

    def status(self) -> ExperimentStatus:
        state = read_state(self.client, self.model_name)
        return ExperimentStatus(
            state.experiment,
            state.champion_version,
            state.challenger_version,
            state.started_at,
            state.error,
        )

    def offline_comparison(self, champion: str, challenger: str) -> OfflineFigures:
        """The challenger's recorded same-data comparison when it was made against
        `champion`; else both re-scored on the challenger's test split."""
        tags = dict(self.client.get_model_version(self.model_name, challenger).tags or {})
        recorded = recorded_comparison(tags, champion)
        return recorded if recorded is not None else self._rescore(champion, challenger)

    def _rescore(self, champion: str, challenger: str) -> OfflineFigures:
        import pandas as pd

        from recolab.adapters.mlflow.model_format import load_scorer
        from recolab.adapters.mlflow.registry import champion_training_rows
        from recolab.ml.experiment import PROTOCOLS
        from recolab.ml.features import FeaturesError, open_snapshot
        from recolab.ml.rescoring import FITTED_ON_SPLIT, compare_on_split, training_rows

        version = self.client.get_model_version(self.model_name, challenger)
        tags = self.client.get_run(version.run_id).data.tags if version.run_id else {}
        snapshot_id, protocol = tags.get(mlf.TAG_SNAPSHOT), tags.get(mlf.TAG_PROTOCOL)
        if not snapshot_id or protocol not in PROTOCOLS:
            return _unavailable(f"version {challenger}'s run names no snapshot and protocol")
        spec = PROTOCOLS[protocol]
        try:
            snapshot = open_snapshot(self.features_root, snapshot_id)
        except FeaturesError as exc:
            return _unavailable(str(exc), spec.primary_metric, spec.higher_is_better)
        fitted_on = tags.get(mlf.TAG_FITTED_ON, FITTED_ON_SPLIT)
        seen = [training_rows(snapshot, protocol, fitted_on)]
        held = self.client.get_model_version(self.model_name, champion)
        champion_rows, about = champion_training_rows(self.client, held, self.features_root)
        if champion_rows is not None:
            seen.append(champion_rows)
        same = compare_on_split(
            self._scorer(load_scorer, challenger),
            self._scorer(load_scorer, champion),
            snapshot,
            protocol,
            champion_trained_on=pd.concat(seen, ignore_index=True),
        )
        rows = int(same.rows["test_rows_compared"])
        return OfflineFigures(
            same.metric,
            spec.higher_is_better,
            HeadToHead(same.candidate, same.champion, rows),
            "re-scored",
            {**same.rows, **about, "challenger_fitted_on": fitted_on, "champion": champion},
        )

    def _scorer(self, load: Any, version: str) -> Any:
        return load(f"models:/{self.model_name}/{version}", self.tracking_uri, version)

    def promote(
        self, champion: str, challenger: str, decision: OnlinePromotionDecision, report: str
    ) -> None:
        set_champion(self.client, self.model_name, challenger)
        stop_experiment(self.client, self.model_name, drop_challenger=True)
        tags = {
            **_decision_tags(decision, report),
            f"{PROMOTION_PREFIX}previous_champion": champion,
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, challenger, key, value)
        version = self.client.get_model_version(self.model_name, challenger)
        if TAG_CHALLENGER in (version.tags or {}):  # it is not one any more
            self.client.delete_model_version_tag(self.model_name, challenger, TAG_CHALLENGER)
        self.client.set_model_version_tag(
            self.model_name, champion, "online.replaced_by", challenger
        )

    def keep(self, challenger: str, decision: OnlinePromotionDecision, report: str) -> None:
        for key, value in _decision_tags(decision, report).items():
            self.client.set_model_version_tag(self.model_name, challenger, key, value)


def recorded_comparison(tags: Mapping[str, str], champion: str) -> OfflineFigures | None:
    """The same-data figures a version's registration recorded (`record_comparison`'s
    `promotion.*` tags), when that comparison was made against `champion`; else None."""
    from recolab.ml.experiment import PROTOCOLS

    p = COMPARISON_PREFIX
    if tags.get(f"{p}champion_version") != str(champion):
        return None
    protocol = tags.get(f"{p}same_data.protocol") or tags.get(f"{p}protocol", "")
    metric = tags.get(f"{p}metric", "")
    higher = PROTOCOLS[protocol].higher_is_better if protocol in PROTOCOLS else metric != "rmse"
    rows = _number(tags.get(f"{p}same_data.test_rows_compared"))
    return OfflineFigures(
        metric,
        higher,
        HeadToHead(
            _number(tags.get(f"{p}candidate_same_data")),
            _number(tags.get(f"{p}champion")),
            None if math.isnan(rows) else int(rows),
        ),
        "recorded",
        {k.removeprefix(p): v for k, v in tags.items() if k.startswith(f"{p}same_data.")},
    )


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "None") else math.nan
    except ValueError:
        return math.nan


def _unavailable(why: str, metric: str = "offline", higher: bool = True) -> OfflineFigures:
    return OfflineFigures(metric, higher, None, "unavailable", {"why": why})


def online_reporting(
    engine: Engine,
    *,
    tracking_uri: str,
    model_name: str,
    artifact_root: Path,
    features_root: Path,
) -> OnlineReporting:
    """The online report's collaborators on a database and an MLflow store."""
    return OnlineReporting(
        history=SqlExperimentHistory(engine),
        registry=MlflowExperimentRegistry(tracking_uri, model_name, features_root),
        reports=MlflowOnlineReports(tracking_uri, artifact_root, model_name),
    )
