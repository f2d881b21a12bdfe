"""The tuning use cases with hand-written fakes of their ports: a search is recorded (start,
each trial, the result), a failed one is marked failed and moves nothing, and `train` reads
the latest result back as overrides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from recolab.application.tuning import (
    NoTunedConfig,
    TuningOutcome,
    tune_settings,
    tuned_overrides,
)
from recolab.domain.errors import InvalidValue


@dataclass
class FakeTuningLog:
    """Records like the MLflow adapter: `latest` is what the last finished search kept."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    kept: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    current: tuple[str, str] = ("", "")

    def start(
        self, dataset: str, protocol: str, snapshot_id: str, settings: Mapping[str, Any]
    ) -> str:
        self.current = (dataset, protocol)
        self.events.append(("start", (dataset, protocol, snapshot_id)))
        return "parent-1"

    def log_trial(self, trial: Mapping[str, Any]) -> str:
        self.events.append(("trial", trial["number"]))
        return f"trial-{trial['number']}"

    def finish(self, best: Mapping[str, Any]) -> str:
        self.events.append(("finish", best["best_value"]))
        self.kept[self.current] = best
        return str(len(self.kept))

    def fail(self, reason: str) -> None:
        self.events.append(("fail", reason))

    def latest(self, dataset: str, protocol: str) -> Mapping[str, Any] | None:
        return self.kept.get((dataset, protocol))


BEST = {"metric": "val/ndcg@10", "best_value": 0.4, "overrides": ["model.gmf_dim=64"]}


def two_trials(snapshot: str, on_trial: Callable[[Mapping[str, Any]], object]) -> dict[str, Any]:
    assert snapshot == "snapshot-of-demo"
    for number in (0, 1):
        on_trial({"number": number})
    return BEST


def run(log: FakeTuningLog, search: Any = two_trials, **kwargs: Any) -> TuningOutcome:
    options: dict[str, Any] = {"protocol": "B", **kwargs}
    return tune_settings(
        options.pop("protocol"),
        ("A", "B", "C"),
        snapshot=lambda: "snapshot-of-demo",
        identify=lambda s: ("demo", "abc123"),
        settings={"n_trials": 2},
        search=search,
        log=log,
        **options,
    )


def test_a_search_is_recorded_and_kept_as_the_latest() -> None:
    log = FakeTuningLog()
    outcome = run(log)
    assert log.events == [
        ("start", ("demo", "B", "abc123")),
        ("trial", 0),
        ("trial", 1),
        ("finish", 0.4),
    ]
    assert (outcome.run_id, outcome.version, outcome.overrides) == (
        "parent-1",
        "1",
        ["model.gmf_dim=64"],
    )
    assert tuned_overrides(log, "demo", "B", required=True) == ["model.gmf_dim=64"]


def test_a_failed_search_is_marked_failed_and_keeps_nothing() -> None:
    def broken(snapshot: str, on_trial: Callable[[Mapping[str, Any]], object]) -> dict[str, Any]:
        on_trial({"number": 0})
        raise RuntimeError("every trial was pruned")

    log = FakeTuningLog()
    with pytest.raises(RuntimeError, match="pruned"):
        run(log, broken)
    assert log.events[-1] == ("fail", "RuntimeError: every trial was pruned")
    assert not any(kind == "finish" for kind, _ in log.events)
    assert tuned_overrides(log, "demo", "B", required=False) == []


def test_an_unknown_protocol_or_another_datasets_snapshot_is_refused() -> None:
    log = FakeTuningLog()
    with pytest.raises(InvalidValue, match="protocol = 'D'"):
        run(log, protocol="D")
    with pytest.raises(InvalidValue, match="holds dataset 'demo', not 'ml-1m'"):
        run(log, dataset="ml-1m")
    assert log.events == []


def test_train_asking_for_settings_never_tuned_is_a_clear_error() -> None:
    log = FakeTuningLog()
    with pytest.raises(NoTunedConfig, match="run `recolab tune --dataset demo --protocol C`"):
        tuned_overrides(log, "demo", "C", required=True)
    assert tuned_overrides(log, "demo", "C", required=False) == []
    run(log)
    # kept per dataset and protocol: B's settings are not C's
    assert tuned_overrides(log, "demo", "C", required=False) == []
