"""Use case: the online report of an experiment, and promotion from its evidence.

Read what the experiment served and the ratings that followed (`ExperimentHistory`), compute
the report (`recolab.domain.services.online`), log it (`ReportLog`) and, when asked to
promote, judge the challenger (`recolab.domain.promotion.decide_online_promotion`) and act
through the registry (`ExperimentRegistry`): promote it, or keep it as challenger with why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from recolab.domain.errors import InvalidValue
from recolab.domain.events import ModelPromoted
from recolab.domain.experiments import CHALLENGER, CHAMPION, SHADOW, Experiment
from recolab.domain.ports import EventPublisher
from recolab.domain.promotion import (
    MIN_COMPARABLE_ROWS,
    HeadToHead,
    OnlinePromotionDecision,
    decide_online_promotion,
)
from recolab.domain.services.online import (
    ExperimentData,
    Interval,
    OnlineReport,
    ReportSettings,
    VariantReport,
    compute_report,
)

__all__ = [
    "ExperimentHistory",
    "ExperimentRegistry",
    "ExperimentStatus",
    "Interval",
    "OfflineFigures",
    "OnlineConfig",
    "OnlineOutcome",
    "OnlineReport",
    "OnlineReporting",
    "ReportLog",
    "VariantReport",
    "online_report",
]

ONLINE_METRIC = "online_hit_rate"


class OnlineConfig(Protocol):
    """The knobs of configs/experiments.yaml the report and the rule read."""

    @property
    def hit_window_s(self) -> int: ...
    @property
    def rank_cutoffs(self) -> Sequence[int]: ...
    @property
    def confidence(self) -> float: ...
    @property
    def bootstrap_samples(self) -> int: ...
    @property
    def min_users_per_variant(self) -> int: ...
    @property
    def offline_tolerance(self) -> float: ...


@dataclass(frozen=True, slots=True)
class ExperimentStatus:
    """What the registry says: the running experiment (None: none runs) and the versions
    holding the `champion` and `challenger` aliases."""

    experiment: Experiment | None
    champion_version: str | None
    challenger_version: str | None
    started_at: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OfflineFigures:
    """The challenger and the champion measured offline on the same data (`head_to_head`,
    the challenger as `candidate`; None: no comparison could be made), how (`source`:
    "recorded" at registration against this champion, or "re-scored" now) and on what."""

    metric: str
    higher_is_better: bool
    head_to_head: HeadToHead | None
    source: str
    details: Mapping[str, object] = field(default_factory=dict)


class ExperimentHistory(Protocol):
    def read(self, experiment: str, *, since: float | None, window_s: float) -> ExperimentData:
        """The experiment's answers (from `since`, epoch seconds), the ratings that may be
        hits for them, and the catalogue's popularity."""
        ...


class ExperimentRegistry(Protocol):
    model_name: str

    def status(self) -> ExperimentStatus: ...
    def offline_comparison(self, champion: str, challenger: str) -> OfflineFigures:
        """Both versions on the same data (the challenger's test split)."""
        ...

    def promote(
        self, champion: str, challenger: str, decision: OnlinePromotionDecision, report: str
    ) -> None:
        """Move `champion` to the challenger, stop the experiment, record the decision."""
        ...

    def keep(self, challenger: str, decision: OnlinePromotionDecision, report: str) -> None:
        """Leave the challenger as it is and record why it was not promoted."""
        ...


class ReportLog(Protocol):
    def log(
        self,
        report: OnlineReport,
        status: ExperimentStatus,
        decision: OnlinePromotionDecision | None,
        offline: OfflineFigures | None,
    ) -> str:
        """Keep the report (and the decision, when one was made); its id."""
        ...


@dataclass(frozen=True, slots=True)
class OnlineOutcome:
    report: OnlineReport
    status: ExperimentStatus
    running: bool  # the report is of the running experiment
    decision: OnlinePromotionDecision | None  # None: promotion was not asked
    offline: OfflineFigures | None
    report_id: str

    @property
    def promoted(self) -> bool:
        return self.decision is not None and self.decision.promote


def report_settings(config: OnlineConfig, seed: int = 0) -> ReportSettings:
    return ReportSettings(
        window_s=float(config.hit_window_s),
        rank_cutoffs=tuple(sorted(set(config.rank_cutoffs))),
        confidence=float(config.confidence),
        bootstrap_samples=int(config.bootstrap_samples),
        seed=seed,
    )


def experiment_to_report(status: ExperimentStatus, name: str | None, promote: bool) -> str:
    """The experiment a report is about: `name`, else the running one. Promotion needs the
    running experiment (its aliases say which versions are compared)."""
    running = None if status.experiment is None else status.experiment.name
    chosen = name or running
    if chosen is None:
        raise InvalidValue(
            "no experiment is running: give the name of the one to report on"
            + (f" ({status.error})" if status.error else "")
        )
    if promote and chosen != running:
        raise InvalidValue(
            f"experiment {chosen!r} is not running: only the running experiment's challenger "
            "can be promoted"
        )
    return chosen


def online_report(
    history: ExperimentHistory,
    registry: ExperimentRegistry,
    reports: ReportLog,
    config: OnlineConfig,
    *,
    experiment: str | None = None,
    promote: bool = False,
    since: float | None = None,
    seed: int = 0,
    bus: EventPublisher | None = None,
    clock: Callable[[], float] = time.time,
    min_rows: int = MIN_COMPARABLE_ROWS,
    require_offline: bool = False,
) -> OnlineOutcome:
    """Report on `experiment` (the running one by default); with `promote`, judge its
    challenger and promote it or record why not. Answers of the running experiment count
    only when served by the versions its aliases name now (the two being compared)."""
    status = registry.status()
    name = experiment_to_report(status, experiment, promote)
    running = status.experiment is not None and status.experiment.name == name
    versions = _compared_versions(status) if running else None
    data = history.read(name, since=since, window_s=float(config.hit_window_s))
    report = compute_report(
        name, data, report_settings(config, seed), versions=versions, now=clock()
    )
    decision, offline = None, None
    if promote:
        offline, decision = _judge(report, status, registry, config, min_rows, require_offline)
    report_id = reports.log(report, status, decision, offline)
    if decision is not None:
        _act(decision, report, status, registry, report_id, bus)
    return OnlineOutcome(report, status, running, decision, offline, report_id)


def _compared_versions(status: ExperimentStatus) -> dict[str, str]:
    versions = {CHAMPION: status.champion_version, CHALLENGER: status.challenger_version}
    versions[SHADOW] = status.challenger_version
    return {k: v for k, v in versions.items() if v is not None}


def _judge(
    report: OnlineReport,
    status: ExperimentStatus,
    registry: ExperimentRegistry,
    config: OnlineConfig,
    min_rows: int,
    require_offline: bool,
) -> tuple[OfflineFigures | None, OnlinePromotionDecision]:
    champion, challenger = status.champion_version, status.challenger_version
    if champion is None or challenger is None:
        raise InvalidValue("promotion needs both a champion and a challenger version")
    offline = registry.offline_comparison(champion, challenger)
    decision = decide_online_promotion(
        offline.head_to_head,
        None if report.difference is None else report.difference.evidence(),
        metric=offline.metric,
        higher_is_better=offline.higher_is_better,
        confidence=float(config.confidence),
        min_users_per_variant=int(config.min_users_per_variant),
        offline_tolerance=float(config.offline_tolerance),
        min_rows=min_rows,
        require_offline=require_offline,
    )
    return offline, decision


def _act(
    decision: OnlinePromotionDecision,
    report: OnlineReport,
    status: ExperimentStatus,
    registry: ExperimentRegistry,
    report_id: str,
    bus: EventPublisher | None,
) -> None:
    champion, challenger = status.champion_version, status.challenger_version
    assert champion is not None and challenger is not None  # checked by _judge
    if not decision.promote:
        registry.keep(challenger, decision, report_id)
        return
    registry.promote(champion, challenger, decision, report_id)
    if bus is not None:
        shown = report.variants
        bus.publish(
            ModelPromoted(
                model_name=registry.model_name,
                version=challenger,
                previous_version=champion,
                metric=ONLINE_METRIC,
                value=shown[CHALLENGER].hit_rate,
                previous_value=shown[CHAMPION].hit_rate,
            )
        )


@dataclass(frozen=True, slots=True)
class OnlineReporting:
    """The report's collaborators, wired (`recolab.adapters.mlflow.online.online_reporting`)."""

    history: ExperimentHistory
    registry: ExperimentRegistry
    reports: ReportLog

    def run(
        self,
        config: OnlineConfig,
        *,
        experiment: str | None = None,
        promote: bool = False,
        since: float | None = None,
        seed: int = 0,
        bus: EventPublisher | None = None,
        min_rows: int = MIN_COMPARABLE_ROWS,
    ) -> OnlineOutcome:
        """`online_report` with these collaborators."""
        return online_report(
            self.history,
            self.registry,
            self.reports,
            config,
            experiment=experiment,
            promote=promote,
            since=since,
            seed=seed,
            bus=bus,
            min_rows=min_rows,
        )
