"""The monitor use case over fakes of its ports: drift past a threshold asks for one retrain
and one only, a new champion may ask again, calm data asks nothing, enough new ratings ask
without drift, no champion asks nothing; a failed trigger leaves no request behind."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recolab.application.monitor import (
    Champion,
    MonitorOutcome,
    MonitorSources,
    RetrainTrigger,
    SnapshotData,
    check_drift,
)
from recolab.domain.services.drift import (
    AnswerCounts,
    DriftReport,
    RatingSample,
    RetrainRequest,
    already_asked,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
SNAPSHOT_TS = 1_700_000_000


@dataclass
class Settings:
    recent_hours: float = 24.0
    min_recent_ratings: int = 100
    rating_psi: float = 0.2
    popularity_psi: float = 0.2
    unseen_users_share: float = 0.3
    unseen_movies_share: float = 0.2
    fallback_share: float = 0.2
    cold_start_share: float = 0.5
    new_ratings: int = 10_000


def ratings(users: np.ndarray, movies: np.ndarray, scores: np.ndarray) -> RatingSample:
    return RatingSample(users.astype(np.int64), movies.astype(np.int64), scores.astype(float))


def snapshot_sample(n: int = 2000) -> RatingSample:
    rng = np.random.default_rng(0)
    return ratings(rng.integers(1, 101, n), rng.integers(1, 201, n), rng.choice([3.0, 4.0, 5.0], n))


def like_snapshot(n: int, seed: int = 1) -> RatingSample:
    """Recent ratings drawn like the snapshot's: same users, movies and values."""
    rng = np.random.default_rng(seed)
    base = snapshot_sample()
    pick = rng.integers(0, len(base), n)
    return ratings(base.user_ids[pick], base.movie_ids[pick], base.scores[pick])


def harsh(n: int) -> RatingSample:
    """Recent ratings of the snapshot's users and movies, but all 1 star: a rating shift."""
    calm = like_snapshot(n)
    return ratings(calm.user_ids, calm.movie_ids, np.full(n, 1.0))


@dataclass
class FakeChampions:
    current: Champion | None

    def champion(self) -> Champion | None:
        return self.current


@dataclass
class FakeSnapshots:
    held: dict[str, SnapshotData]

    def load(self, snapshot_id: str) -> SnapshotData | None:
        return self.held.get(snapshot_id)


@dataclass
class FakeData:
    recent: RatingSample
    answers: AnswerCounts = field(default_factory=AnswerCounts)
    recorded: list[RetrainRequest] = field(default_factory=list)
    asked_since: list[datetime] = field(default_factory=list)
    asked_after: list[int] = field(default_factory=list)
    concurrent: bool = False  # another run records between our read and our write

    def ratings_after(self, timestamp: int) -> RatingSample:
        self.asked_after.append(timestamp)
        return self.recent

    def answer_counts(self, since: datetime) -> AnswerCounts:
        self.asked_since.append(since)
        return self.answers

    def last_request(self, model_version: str, snapshot_id: str) -> RetrainRequest | None:
        mine = [
            r
            for r in self.recorded
            if (r.model_version, r.snapshot_id) == (model_version, snapshot_id)
        ]
        return mine[-1] if mine else None

    def record_request(self, request: RetrainRequest, every: int) -> RetrainRequest | None:
        if self.concurrent:
            self.recorded.append(replace(request, id=99, flow_run_id="other"))
        last = self.last_request(request.model_version, request.snapshot_id)
        if already_asked(
            last, request.model_version, request.snapshot_id, request.new_ratings, every
        ):
            return None
        stored = replace(request, id=len(self.recorded) + 1)
        self.recorded.append(stored)
        return stored

    def withdraw_request(self, request_id: int) -> None:
        self.recorded = [r for r in self.recorded if r.id != request_id]


@dataclass
class FakeTrigger:
    sent: list[tuple[RetrainRequest, DriftReport, Champion]] = field(default_factory=list)
    fail: bool = False

    def request_retrain(
        self, request: RetrainRequest, report: DriftReport, champion: Champion
    ) -> str:
        if self.fail:
            raise RuntimeError("no Prefect API")
        self.sent.append((request, report, champion))
        return f"event-{len(self.sent)}"


def world(
    recent: RatingSample, champion: Champion | None = None, answers: AnswerCounts | None = None
) -> tuple[MonitorSources, FakeData, FakeChampions]:
    champions = FakeChampions(champion or Champion("recolab-neumf", "1", "snap-a"))
    data = FakeData(recent, answers or AnswerCounts())
    snapshots = {
        sid: SnapshotData(sid, "demo", snapshot_sample(), SNAPSHOT_TS)
        for sid in ("snap-a", "snap-b")
    }
    return MonitorSources(champions, FakeSnapshots(snapshots), data), data, champions


def run(
    sources: MonitorSources,
    trigger: RetrainTrigger,
    settings: Settings | None = None,
    *,
    dry_run: bool = False,
    requested_by: str | None = None,
) -> MonitorOutcome:
    return check_drift(
        sources,
        settings or Settings(),
        trigger,
        now=NOW,
        dry_run=dry_run,
        requested_by=requested_by,
    )


def test_drift_past_a_threshold_asks_for_one_retrain_and_one_only() -> None:
    sources, data, champions = world(harsh(500))
    trigger = FakeTrigger()
    first = run(sources, trigger, requested_by="monitor-run-1")
    assert first.status == "checked" and first.triggered and first.trigger_id == "event-1"
    assert first.decision is not None and first.decision.retrain
    assert first.report is not None and first.report.rating_psi is not None
    assert first.report.rating_psi > 0.2
    assert any(r.startswith("rating PSI") for r in first.decision.reasons)
    (request,) = data.recorded
    assert (request.model_version, request.snapshot_id, request.new_ratings) == ("1", "snap-a", 500)
    assert request.flow_run_id == "monitor-run-1" and request.requested_at == NOW
    assert "rating PSI" in request.reason
    (sent,) = trigger.sent
    assert sent[0] == request and sent[2].dataset == "demo"  # the snapshot's dataset
    # the recent data asked for: ratings after the snapshot's latest, answers of the window
    assert data.asked_after == [SNAPSHOT_TS] and data.asked_since == [NOW - timedelta(hours=24)]

    second = run(sources, trigger)
    assert not second.triggered and second.request is None
    assert second.decision is not None and second.decision.already_requested == request
    assert "already asked" in second.message
    assert len(data.recorded) == 1 and len(trigger.sent) == 1

    # a new champion serves (trained on a new snapshot): the same drift may ask again
    champions.current = Champion("recolab-neumf", "2", "snap-b")
    third = run(sources, trigger)
    assert third.triggered and len(data.recorded) == 2 and len(trigger.sent) == 2
    assert data.recorded[-1].model_version == "2"


def test_below_the_thresholds_nothing_is_asked() -> None:
    sources, data, _ = world(like_snapshot(500), answers=AnswerCounts(400, 10, 40))
    trigger = FakeTrigger()
    outcome = run(sources, trigger)
    assert outcome.status == "checked" and outcome.report is not None
    assert outcome.report.rating_psi is not None and outcome.report.rating_psi < 0.05
    assert outcome.decision is not None and not outcome.decision.retrain
    assert data.recorded == [] and trigger.sent == []
    figures = outcome.to_dict()["figures"]
    assert [f["name"] for f in figures][:2] == ["rating PSI", "popularity PSI"]
    assert all(f["judged"] and not f["over"] for f in figures)


def test_enough_new_ratings_ask_even_without_drift() -> None:
    sources, data, _ = world(like_snapshot(300))
    trigger = FakeTrigger()
    outcome = run(sources, trigger, Settings(new_ratings=300))
    assert outcome.triggered and len(data.recorded) == 1
    assert outcome.decision is not None
    assert outcome.decision.reasons == ("300 new ratings since snapshot snap-a >= 300",)


def test_answer_shares_past_their_thresholds_ask() -> None:
    sources, _, _ = world(like_snapshot(500), answers=AnswerCounts(200, 10, 150))
    outcome = run(sources, FakeTrigger())
    assert outcome.triggered and outcome.decision is not None
    assert outcome.decision.reasons == ("cold-start share 0.750 > 0.500 (on 200 answers)",)


def test_no_champion_nothing_to_compare_and_no_trigger() -> None:
    sources, data, champions = world(harsh(5000))
    champions.current = None
    trigger = FakeTrigger()
    outcome = run(sources, trigger)
    assert outcome.status == "no_champion" and outcome.report is None
    assert "nothing to compare" in outcome.message
    assert data.recorded == [] and trigger.sent == [] and data.asked_after == []
    assert outcome.to_dict()["retrain"] is False


@pytest.mark.parametrize(
    ("snapshot_id", "words"),
    [(None, "names no feature snapshot"), ("gone", "snapshot gone is not in the feature store")],
)
def test_a_champion_without_its_snapshot_has_nothing_to_compare(
    snapshot_id: str | None, words: str
) -> None:
    sources, data, _ = world(harsh(5000), Champion("recolab-neumf", "1", snapshot_id))
    trigger = FakeTrigger()
    outcome = run(sources, trigger)
    assert outcome.status == "no_snapshot" and words in outcome.message
    assert data.recorded == [] and trigger.sent == []


def test_a_dry_run_reports_the_decision_and_asks_nothing() -> None:
    sources, data, _ = world(harsh(500))
    trigger = FakeTrigger()
    outcome = run(sources, trigger, dry_run=True)
    assert outcome.decision is not None and outcome.decision.retrain
    assert not outcome.triggered and data.recorded == [] and trigger.sent == []
    assert outcome.to_dict()["dry_run"] is True


def test_a_failed_trigger_withdraws_its_request_so_the_next_run_asks_again() -> None:
    sources, data, _ = world(harsh(500))
    with pytest.raises(RuntimeError, match="no Prefect API"):
        run(sources, FakeTrigger(fail=True))
    assert data.recorded == []
    assert run(sources, FakeTrigger()).triggered and len(data.recorded) == 1


def test_a_concurrent_run_that_recorded_first_wins() -> None:
    sources, data, _ = world(harsh(500))
    data.concurrent = True
    trigger = FakeTrigger()
    outcome = run(sources, trigger)
    assert not outcome.triggered and trigger.sent == []
    assert outcome.decision is not None and outcome.decision.already_requested is not None
    assert outcome.decision.already_requested.flow_run_id == "other"
    assert len(data.recorded) == 1
