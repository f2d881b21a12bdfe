"""The online-report use case with hand-written fakes of its own ports: which experiment it
reports on, which versions' answers count, and what it does with the decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from recolab.application.online import (
    ExperimentStatus,
    OfflineFigures,
    OnlineReport,
    OnlineReporting,
    online_report,
)
from recolab.domain.errors import InvalidValue
from recolab.domain.events import DomainEvent, ModelPromoted
from recolab.domain.experiments import Experiment
from recolab.domain.promotion import HeadToHead, OnlinePromotionDecision
from recolab.domain.services.online import ExperimentData
from tests.unit.domain.online_data import simulate


@dataclass
class Config:
    hit_window_s: int = 86_400
    rank_cutoffs: list[int] = field(default_factory=lambda: [1, 5, 10])
    confidence: float = 0.99
    bootstrap_samples: int = 500
    min_users_per_variant: int = 30
    offline_tolerance: float = 0.0


class FakeHistory:
    def __init__(self, data: ExperimentData) -> None:
        self.data = data
        self.reads: list[tuple[str, float | None, float]] = []

    def read(self, experiment: str, *, since: float | None, window_s: float) -> ExperimentData:
        self.reads.append((experiment, since, window_s))
        return self.data


class FakeRegistry:
    model_name = "recolab-neumf"

    def __init__(self, status: ExperimentStatus, offline: HeadToHead | None) -> None:
        self._status = status
        self.offline = offline
        self.calls: list[tuple[str, ...]] = []

    def status(self) -> ExperimentStatus:
        return self._status

    def offline_comparison(self, champion: str, challenger: str) -> OfflineFigures:
        self.calls.append(("offline", champion, challenger))
        return OfflineFigures("ndcg@10", True, self.offline, "recorded")

    def promote(
        self, champion: str, challenger: str, decision: OnlinePromotionDecision, report: str
    ) -> None:
        self.calls.append(("promote", champion, challenger, report))

    def keep(self, challenger: str, decision: OnlinePromotionDecision, report: str) -> None:
        self.calls.append(("keep", challenger, report))


class FakeReports:
    def __init__(self) -> None:
        self.logged: list[tuple[OnlineReport, OnlinePromotionDecision | None]] = []

    def log(
        self,
        report: OnlineReport,
        status: ExperimentStatus,
        decision: OnlinePromotionDecision | None,
        offline: OfflineFigures | None,
    ) -> str:
        self.logged.append((report, decision))
        return f"run-{len(self.logged)}"


class Bus:
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def publish(self, event: DomainEvent) -> None:
        self.events.append(event)


RUNNING = ExperimentStatus(Experiment("v2-vs-v1", "canary", 0.5), "1", "2", 1.0)


def wired(
    status: ExperimentStatus = RUNNING,
    challenger_rate: float = 0.35,
    offline: HeadToHead | None = HeadToHead(0.3, 0.3, 400),
) -> tuple[FakeHistory, FakeRegistry, FakeReports]:
    data = simulate(1, users=200, champion_rate=0.2, challenger_rate=challenger_rate)
    return FakeHistory(data), FakeRegistry(status, offline), FakeReports()


def test_reports_on_the_running_experiment_without_deciding_unless_asked() -> None:
    history, registry, reports = wired()
    outcome = online_report(history, registry, reports, Config(), since=5.0)
    assert history.reads == [("v2-vs-v1", 5.0, 86_400.0)]
    assert outcome.running and outcome.decision is None and not outcome.promoted
    assert outcome.report.experiment == "v2-vs-v1" and outcome.report_id == "run-1"
    assert registry.calls == []  # neither compared offline nor touched
    assert reports.logged[0][1] is None
    assert outcome.report.settings.rank_cutoffs == (1, 5, 10)


def test_a_better_challenger_is_promoted_and_the_event_published() -> None:
    history, registry, reports = wired()
    bus = Bus()
    outcome = OnlineReporting(history, registry, reports).run(Config(), promote=True, bus=bus)
    assert outcome.promoted, outcome.decision
    assert registry.calls == [("offline", "1", "2"), ("promote", "1", "2", "run-1")]
    (event,) = bus.events
    assert isinstance(event, ModelPromoted)
    assert (event.version, event.previous_version, event.metric) == ("2", "1", "online_hit_rate")
    assert event.value == outcome.report.variants["challenger"].hit_rate
    assert reports.logged[0][1] is outcome.decision  # the run records the decision


def test_a_challenger_not_better_online_is_kept_with_why() -> None:
    history, registry, reports = wired(challenger_rate=0.2)
    bus = Bus()
    outcome = online_report(history, registry, reports, Config(), promote=True, bus=bus)
    assert outcome.decision is not None and not outcome.promoted
    assert "online" in outcome.decision.failed
    assert registry.calls[-1] == ("keep", "2", "run-1") and bus.events == []


def test_answers_of_other_versions_do_not_count() -> None:
    status = ExperimentStatus(Experiment("v2-vs-v1", "canary", 0.5), "1", "3")  # v3 now
    history, registry, reports = wired(status)
    outcome = online_report(history, registry, reports, Config())
    challenger = outcome.report.variants["challenger"]
    assert challenger.answers == 0 and outcome.report.excluded_answers > 0


def test_an_experiment_that_is_not_running_is_reported_but_never_promoted() -> None:
    history, registry, reports = wired()
    outcome = online_report(history, registry, reports, Config(), experiment="old")
    assert not outcome.running and history.reads[0][0] == "old"
    assert outcome.report.variants["challenger"].answers > 0  # no version filter
    with pytest.raises(InvalidValue, match="'old' is not running"):
        online_report(history, registry, reports, Config(), experiment="old", promote=True)


def test_without_a_running_experiment_a_name_is_needed() -> None:
    history, registry, reports = wired(ExperimentStatus(None, "1", None))
    with pytest.raises(InvalidValue, match="no experiment is running"):
        online_report(history, registry, reports, Config())
    assert history.reads == [] and reports.logged == []
