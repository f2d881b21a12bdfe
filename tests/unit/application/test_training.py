from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from recolab.application.training import (
    ChampionComparison,
    TrainedModel,
    baseline_of,
    register_and_promote,
)
from recolab.domain import ModelPromoted
from recolab.domain.promotion import PromotionDecision

from .fakes import RecordingBus


@dataclass
class Run:
    """A trained model: `primary_value` under its own protocol and split, `popularity` the
    baseline there, and `skill` what any same-data re-scoring of it measures."""

    primary_value: float
    popularity: float = 0.2
    skill: float | None = None
    snapshot_id: str = "snap1"
    protocol_name: str = "B"
    primary_metric: str = "ndcg@10"
    higher_is_better: bool = True

    @property
    def metrics(self) -> Mapping[str, float]:
        return {
            self.primary_metric: self.primary_value,
            f"baseline_popularity_{self.primary_metric}": self.popularity,
            f"baseline_bias_only_{self.primary_metric}": self.popularity / 2,
        }


@dataclass
class FakeRegistry:
    """Re-scores the champion on the candidate's data: both get their `skill` there."""

    model_name: str = "recolab-neumf"
    versions: dict[str, Run] = field(default_factory=dict)
    champion: str | None = None
    challengers: list[str] = field(default_factory=list)
    recorded: dict[str, tuple[PromotionDecision, Mapping[str, object]]] = field(
        default_factory=dict
    )
    rescored_on: list[tuple[str, str, str]] = field(default_factory=list)
    comparable_rows: int | None = None  # test rows the champion was not trained on

    def log_and_register(self, run: TrainedModel) -> tuple[str, str]:
        assert isinstance(run, Run)
        version = str(len(self.versions) + 1)
        self.versions[version] = run
        return f"run-{version}", version

    def compare_with_champion(self, run: TrainedModel) -> ChampionComparison | None:
        assert isinstance(run, Run)
        if self.champion is None:
            return None
        held = self.versions[self.champion]
        self.rescored_on.append((self.champion, run.protocol_name, run.snapshot_id))

        def skill(r: Run) -> float:
            return r.primary_value if r.skill is None else r.skill

        data = {
            "snapshot": run.snapshot_id,
            "protocol": run.protocol_name,
            "champion_snapshot": held.snapshot_id,
            "champion_protocol": held.protocol_name,
        }
        return ChampionComparison(
            self.champion, skill(run), skill(held), data, rows=self.comparable_rows
        )

    def promote(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None:
        self.champion = version
        self.recorded[version] = (decision, details)

    def keep_as_challenger(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None:
        self.challengers.append(version)
        self.recorded[version] = (decision, details)

    def make_challenger(
        self, version: str, decision: PromotionDecision, details: Mapping[str, object]
    ) -> None:
        self.challenger_alias = version
        self.recorded[version] = (decision, details)

    challenger_alias: str | None = None


def promoted(bus: RecordingBus) -> list[tuple[str, str | None, float, float | None]]:
    return [
        (e.version, e.previous_version, e.value, e.previous_value)
        for e in bus.events
        if isinstance(e, ModelPromoted)
    ]


def test_no_champion_and_above_popularity_is_promoted() -> None:
    registry, bus = FakeRegistry(), RecordingBus()
    outcome = register_and_promote(Run(0.30, popularity=0.25), registry, bus)
    assert outcome.decision.promote and registry.champion == "1"
    assert outcome.decision.baseline == 0.25 and outcome.previous_champion is None
    assert promoted(bus) == [("1", None, 0.30, None)]


def test_no_champion_and_below_popularity_is_not_promoted() -> None:
    """The demo's first champion: nDCG@10 0.2564 against popularity's 0.2598."""
    registry, bus = FakeRegistry(), RecordingBus()
    outcome = register_and_promote(Run(0.2564, popularity=0.2598), registry, bus)
    assert not outcome.decision.promote
    assert registry.champion is None and registry.challengers == ["1"]
    assert "popularity baseline 0.2598" in outcome.decision.reason and promoted(bus) == []
    decision, details = registry.recorded["1"]
    assert decision.baseline == 0.2598 and details["baseline_name"] == "popularity"


def test_a_champion_better_on_the_same_data_stays() -> None:
    registry, bus = FakeRegistry(), RecordingBus()
    register_and_promote(Run(0.30, skill=0.30), registry, bus)
    # Its own protocol figure is higher, but on the same rows the champion wins.
    outcome = register_and_promote(Run(0.40, skill=0.28), registry, bus)
    assert not outcome.decision.promote and registry.champion == "1"
    assert (outcome.decision.candidate_same_data, outcome.decision.champion) == (0.28, 0.30)
    assert "does not beat champion 0.3000 on the same data" in outcome.decision.reason
    assert registry.challengers == ["2"] and outcome.previous_champion == "1"


def test_a_candidate_better_on_the_same_data_is_promoted() -> None:
    registry, bus = FakeRegistry(), RecordingBus()
    register_and_promote(Run(0.30), registry, bus)
    outcome = register_and_promote(Run(0.29, skill=0.33), registry, bus)
    assert outcome.decision.promote and registry.champion == "2"
    assert outcome.previous_champion == "1"
    # the event's figures are both the same-data ones
    assert promoted(bus) == [("1", None, 0.30, None), ("2", "1", 0.33, 0.30)]


def test_nightly_new_snapshot_with_a_worse_candidate_is_not_promoted() -> None:
    """Ratings arrived through the API: the retrain runs on a new snapshot. The champion is
    re-scored there instead of being treated as absent."""
    registry, bus = FakeRegistry(), RecordingBus()
    register_and_promote(Run(0.30, snapshot_id="monday"), registry, bus)
    outcome = register_and_promote(
        Run(0.27, popularity=0.2, skill=0.27, snapshot_id="tuesday"), registry, bus
    )
    assert not outcome.decision.promote and registry.champion == "1"
    assert registry.rescored_on == [("1", "B", "tuesday")]
    _, details = registry.recorded["2"]
    assert details["snapshot"] == "tuesday" and details["champion_version"] == "1"
    assert details["same_data.champion_snapshot"] == "monday"
    assert details["same_data.snapshot"] == "tuesday"


def test_a_champion_from_another_protocol_is_rescored_not_ignored() -> None:
    registry, bus = FakeRegistry(), RecordingBus()
    register_and_promote(
        Run(0.80, popularity=0.5, skill=0.5, protocol_name="C", primary_metric="hr@10"),
        registry,
        bus,
    )
    outcome = register_and_promote(Run(0.45, popularity=0.2, skill=0.45), registry, bus)
    assert registry.rescored_on == [("1", "B", "snap1")]
    assert outcome.decision.champion == 0.5 and not outcome.decision.promote
    _, details = registry.recorded["2"]
    assert details["same_data.champion_protocol"] == "C" and details["protocol"] == "B"


def test_rating_prediction_is_held_to_the_bias_only_baseline() -> None:
    run = Run(0.85, popularity=1.9, primary_metric="rmse", protocol_name="A")
    run.higher_is_better = False
    assert baseline_of(run) == ("popularity", 1.9)
    no_popularity = {"rmse": 0.85, "baseline_bias_only_rmse": 0.84}

    class ARun(Run):
        @property
        def metrics(self) -> Mapping[str, float]:
            return no_popularity

    a = ARun(0.85, primary_metric="rmse", protocol_name="A", higher_is_better=False)
    assert baseline_of(a) == ("bias_only", 0.84)
    registry, bus = FakeRegistry(), RecordingBus()
    outcome = register_and_promote(a, registry, bus)
    assert not outcome.decision.promote and "bias_only baseline 0.8400" in outcome.decision.reason


def test_a_comparison_on_too_few_rows_keeps_the_champion() -> None:
    """A champion refitted on all of Monday's ratings has seen nearly every row of Tuesday's
    snapshot: the few left cannot judge it, however well the candidate does on them."""
    registry, bus = FakeRegistry(comparable_rows=12), RecordingBus()
    register_and_promote(Run(0.30, snapshot_id="monday"), registry, bus)
    tuesday = Run(0.40, skill=0.45, snapshot_id="tuesday")
    outcome = register_and_promote(tuesday, registry, bus)
    assert not outcome.decision.promote and registry.champion == "1"
    assert outcome.decision.reason.startswith("only 12 test rows can compare")
    assert "at least 50 are needed" in outcome.decision.reason
    assert registry.recorded["2"][1]["min_comparable_rows"] == 50
    # The threshold is the caller's (configs/pipeline.yaml): 10 rows are enough here.
    outcome = register_and_promote(tuesday, registry, bus, min_comparable_rows=10)
    assert outcome.decision.promote and registry.champion == "3"


def test_as_challenger_a_better_candidate_gets_the_challenger_alias_not_the_champion() -> None:
    registry, bus = FakeRegistry(), RecordingBus()
    register_and_promote(Run(0.30), registry, bus)
    outcome = register_and_promote(Run(0.35), registry, bus, as_challenger=True)
    assert outcome.decision.promote  # the offline gate would have promoted it
    assert registry.champion == "1" and registry.challenger_alias == "2"
    assert len(promoted(bus)) == 1  # only the first champion: no event for a challenger


def test_as_challenger_a_worse_candidate_gets_no_alias() -> None:
    registry, bus = FakeRegistry(), RecordingBus()
    register_and_promote(Run(0.30), registry, bus)
    register_and_promote(Run(0.25), registry, bus, as_challenger=True)
    assert registry.challenger_alias is None and registry.challengers == ["2"]


def test_as_challenger_too_few_comparable_rows_leave_the_decision_to_traffic() -> None:
    """A retrain on the champion's own (refitted) snapshot: offline cannot compare the two,
    so a candidate that beats popularity may be tried online; one below it may not."""
    registry, bus = FakeRegistry(), RecordingBus()
    register_and_promote(Run(0.30), registry, bus)
    registry.comparable_rows = 3
    register_and_promote(Run(0.15, popularity=0.2), registry, bus, as_challenger=True)
    assert registry.challenger_alias is None
    register_and_promote(Run(0.31), registry, bus, as_challenger=True)
    assert registry.champion == "1" and registry.challenger_alias == "3"
