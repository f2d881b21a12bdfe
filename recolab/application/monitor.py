"""Use case: compare recent data with the champion's training snapshot and, past a
threshold, ask for one retrain (recolab.domain.services.drift says when).

Collaborators: `Champions` (which model version serves and which snapshot it was trained
on: the registry), `SnapshotRatings` (that snapshot's ratings: the feature store),
`MonitorData` (the ratings since, the recent answers, the requests already made: the
database) and a `RetrainTrigger` (what starts the retrain: a Prefect event). The request is
recorded before the trigger fires, so a second monitor run on the same state finds it and
asks nothing; a trigger that fails withdraws it, so the next run asks again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from recolab.domain.services.drift import (
    AnswerCounts,
    DriftReport,
    DriftThresholds,
    RatingSample,
    RetrainDecision,
    RetrainRequest,
    decide_retrain,
    drift_report,
)

__all__ = [
    "Champion",
    "Champions",
    "DriftReport",
    "DriftThresholds",
    "MonitorData",
    "MonitorOutcome",
    "MonitorSettings",
    "MonitorSources",
    "RetrainDecision",
    "RetrainRequest",
    "RetrainTrigger",
    "SnapshotData",
    "SnapshotRatings",
    "check_drift",
    "drift_thresholds",
]


@dataclass(frozen=True, slots=True)
class Champion:
    """The serving model version, the feature snapshot it was trained on (None when its
    run does not say) and that snapshot's dataset."""

    model_name: str
    version: str
    snapshot_id: str | None
    dataset: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotData:
    """A feature snapshot's ratings and the latest rating time it holds (epoch seconds)."""

    snapshot_id: str
    dataset: str
    ratings: RatingSample
    latest_timestamp: int


class Champions(Protocol):
    def champion(self) -> Champion | None:
        """The model version serving now, or None when there is no champion yet."""
        ...


class SnapshotRatings(Protocol):
    def load(self, snapshot_id: str) -> SnapshotData | None:
        """The snapshot's ratings, or None when the feature store no longer holds it."""
        ...


class MonitorData(Protocol):
    def ratings_after(self, timestamp: int) -> RatingSample:
        """The ratings stored with a time after `timestamp` (epoch seconds): those that
        arrived after a snapshot whose latest rating is that old (a rating changed since
        counts again, with its new value)."""
        ...

    def answer_counts(self, since: datetime) -> AnswerCounts:
        """The answers served since `since` (shadow scorings excluded)."""
        ...

    def last_request(self, model_version: str, snapshot_id: str) -> RetrainRequest | None:
        """The latest retrain request recorded for this champion version and snapshot."""
        ...

    def record_request(self, request: RetrainRequest, every: int) -> RetrainRequest | None:
        """Record `request` (with its id and time) unless the latest one for the same version
        and snapshot already asked (`drift.already_asked` with `every`: a concurrent run):
        then None. Atomic."""
        ...

    def withdraw_request(self, request_id: int) -> None: ...


class RetrainTrigger(Protocol):
    def request_retrain(
        self, request: RetrainRequest, report: DriftReport, champion: Champion
    ) -> str:
        """Start the retrain (or ask for it); an id of what was sent. Raises when it could
        not be sent."""
        ...


class MonitorSettings(Protocol):
    """The monitor's knobs (configs/monitor.yaml, `recolab.config.MonitorConfig`)."""

    @property
    def recent_hours(self) -> float: ...
    @property
    def min_recent_ratings(self) -> int: ...
    @property
    def rating_psi(self) -> float: ...
    @property
    def popularity_psi(self) -> float: ...
    @property
    def unseen_users_share(self) -> float: ...
    @property
    def unseen_movies_share(self) -> float: ...
    @property
    def fallback_share(self) -> float: ...
    @property
    def cold_start_share(self) -> float: ...
    @property
    def new_ratings(self) -> int: ...


def drift_thresholds(settings: MonitorSettings) -> DriftThresholds:
    """The thresholds of `settings`; `min_recent_ratings` is the least sample judged, of
    recent ratings for the rating figures and of recent answers for the answer shares."""
    return DriftThresholds(
        min_sample=settings.min_recent_ratings,
        rating_psi=settings.rating_psi,
        popularity_psi=settings.popularity_psi,
        unseen_users_share=settings.unseen_users_share,
        unseen_movies_share=settings.unseen_movies_share,
        fallback_share=settings.fallback_share,
        cold_start_share=settings.cold_start_share,
        new_ratings=settings.new_ratings,
    )


@dataclass(frozen=True, slots=True)
class MonitorSources:
    champions: Champions
    snapshots: SnapshotRatings
    data: MonitorData


Status = Literal["no_champion", "no_snapshot", "checked"]


@dataclass(frozen=True, slots=True)
class MonitorOutcome:
    """What a monitor run found and did. `report` and `decision` are None when there was
    nothing to compare (no champion, or its snapshot unknown)."""

    status: Status
    message: str
    thresholds: DriftThresholds
    champion: Champion | None = None
    report: DriftReport | None = None
    decision: RetrainDecision | None = None
    request: RetrainRequest | None = None  # recorded by this run
    trigger_id: str | None = None  # what the trigger sent (e.g. an event id)
    dry_run: bool = False
    recent_hours: float = 0.0  # the answers' window

    @property
    def triggered(self) -> bool:
        return self.trigger_id is not None

    def to_dict(self) -> dict[str, Any]:
        figures = (
            [
                {
                    "name": f.name,
                    "value": f.value,
                    "threshold": f.threshold,
                    "observations": f.observations,
                    "judged": f.judged,
                    "over": f.over,
                }
                for f in self.report.figures(self.thresholds)
            ]
            if self.report is not None
            else []
        )
        decision = self.decision
        return {
            "status": self.status,
            "message": self.message,
            "model_version": self.champion.version if self.champion else None,
            "snapshot_id": self.champion.snapshot_id if self.champion else None,
            "new_ratings": self.report.new_ratings if self.report else None,
            "answers": self.report.answers if self.report else None,
            "figures": figures,
            "retrain": bool(decision and decision.retrain),
            "reasons": list(decision.reasons) if decision else [],
            "notes": list(decision.notes) if decision else [],
            "already_requested": (
                decision.already_requested.id if decision and decision.already_requested else None
            ),
            "request_id": self.request.id if self.request else None,
            "triggered": self.triggered,
            "trigger_id": self.trigger_id,
            "dry_run": self.dry_run,
            "recent_hours": self.recent_hours,
        }


def check_drift(
    sources: MonitorSources,
    settings: MonitorSettings,
    trigger: RetrainTrigger,
    *,
    now: datetime,
    dry_run: bool = False,
    requested_by: str | None = None,
) -> MonitorOutcome:
    """Compare the ratings since the champion's snapshot and the answers of the last
    `settings.recent_hours` with that snapshot; when the decision is to retrain (and not
    `dry_run`), record the request (with `requested_by`, e.g. the monitor's run id) and
    fire `trigger`. No champion, or one whose snapshot is unknown: nothing to compare."""
    thresholds = drift_thresholds(settings)
    champion = sources.champions.champion()
    if champion is None:
        return MonitorOutcome(
            "no_champion", "no champion yet: nothing to compare", thresholds, dry_run=dry_run
        )
    snapshot = sources.snapshots.load(champion.snapshot_id) if champion.snapshot_id else None
    if snapshot is None:
        why = (
            f"snapshot {champion.snapshot_id} is not in the feature store"
            if champion.snapshot_id
            else "its training run names no feature snapshot"
        )
        return MonitorOutcome(
            "no_snapshot",
            f"champion version {champion.version}: {why}: nothing to compare",
            thresholds,
            champion,
            dry_run=dry_run,
        )
    if champion.dataset is None:
        champion = replace(champion, dataset=snapshot.dataset)
    report = drift_report(
        snapshot.ratings,
        sources.data.ratings_after(snapshot.latest_timestamp),
        sources.data.answer_counts(now - timedelta(hours=settings.recent_hours)),
        model_version=champion.version,
        snapshot_id=snapshot.snapshot_id,
    )
    decision = decide_retrain(
        report, thresholds, sources.data.last_request(champion.version, snapshot.snapshot_id)
    )
    outcome = MonitorOutcome(
        "checked",
        decision.summary,
        thresholds,
        champion,
        report,
        decision,
        dry_run=dry_run,
        recent_hours=settings.recent_hours,
    )
    if not decision.retrain or dry_run:
        return outcome
    return _ask_for_retrain(
        sources.data, trigger, outcome, champion, report, decision, now, requested_by
    )


def _ask_for_retrain(
    data: MonitorData,
    trigger: RetrainTrigger,
    outcome: MonitorOutcome,
    champion: Champion,
    report: DriftReport,
    decision: RetrainDecision,
    now: datetime,
    requested_by: str | None,
) -> MonitorOutcome:
    wanted = RetrainRequest(
        model_version=report.model_version,
        snapshot_id=report.snapshot_id,
        reason="; ".join(decision.reasons),
        new_ratings=report.new_ratings,
        requested_at=now,
        flow_run_id=requested_by,
    )
    recorded = data.record_request(wanted, outcome.thresholds.new_ratings)
    if recorded is None:  # another run recorded it between our read and our write
        earlier = data.last_request(report.model_version, report.snapshot_id)
        moot = RetrainDecision(False, decision.reasons, decision.notes, earlier or wanted)
        return replace(outcome, decision=moot, message=moot.summary)
    try:
        sent = trigger.request_retrain(recorded, report, champion)
    except Exception:
        if recorded.id is not None:
            data.withdraw_request(recorded.id)
        raise
    return replace(outcome, request=recorded, trigger_id=sent)
