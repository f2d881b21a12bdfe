from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from recolab.application.training import register_and_promote
from recolab.domain import ModelPromoted
from recolab.domain.promotion import PromotionDecision

from .fakes import RecordingBus


@dataclass
class Run:
    primary_value: float
    snapshot_id: str = "snap1"
    protocol_name: str = "B"
    primary_metric: str = "ndcg@10"
    higher_is_better: bool = True

    @property
    def metrics(self) -> Mapping[str, float]:
        return {self.primary_metric: self.primary_value}


@dataclass
class FakeRegistry:
    model_name: str = "recolab-neumf"
    versions: dict[str, Run] = field(default_factory=dict)
    champion: str | None = None
    challengers: list[str] = field(default_factory=list)

    def log_and_register(self, run: Run) -> tuple[str, str]:
        version = str(len(self.versions) + 1)
        self.versions[version] = run
        return f"run-{version}", version

    def comparable_champion(
        self, metric: str, protocol: str, snapshot_id: str
    ) -> tuple[str, float] | None:
        if self.champion is None:
            return None
        run = self.versions[self.champion]
        if (run.protocol_name, run.snapshot_id) != (protocol, snapshot_id):
            return None
        return self.champion, run.primary_value

    def promote(self, version: str, decision: PromotionDecision) -> None:
        self.champion = version

    def keep_as_challenger(self, version: str, decision: PromotionDecision) -> None:
        self.challengers.append(version)


def test_first_model_becomes_champion_then_only_better_ones() -> None:
    registry, bus = FakeRegistry(), RecordingBus()
    first = register_and_promote(Run(0.30), registry, bus)
    assert first.decision.promote and registry.champion == "1"
    worse = register_and_promote(Run(0.29), registry, bus)
    assert not worse.decision.promote and registry.champion == "1" and registry.challengers == ["2"]
    better = register_and_promote(Run(0.31), registry, bus)
    assert better.decision.promote and better.previous_champion == "1" and registry.champion == "3"
    promoted = [e for e in bus.events if isinstance(e, ModelPromoted)]
    assert [(e.version, e.previous_version) for e in promoted] == [("1", None), ("3", "1")]


def test_a_champion_from_another_snapshot_is_not_comparable() -> None:
    registry, bus = FakeRegistry(), RecordingBus()
    register_and_promote(Run(0.50, snapshot_id="old"), registry, bus)
    outcome = register_and_promote(Run(0.20, snapshot_id="new"), registry, bus)
    assert outcome.decision.promote and "no comparable champion" in outcome.decision.reason
