"""Use cases: choose training settings for a dataset (a recorded search), and read back the
latest choice as overrides for `train`.

The search itself (Optuna on the protocol's training split) and its records (MLflow) are
collaborators: `search(data, on_trial)` returns the best configuration as a mapping with at
least `overrides`, `metric` and `best_value`; a `TuningLog` records the search, each trial
and the result; `TunedConfigs` finds the latest result.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from recolab.domain.errors import InvalidValue, NotFound

S = TypeVar("S")  # a feature snapshot


class TuningLog(Protocol):
    """Where a search is recorded: one parent record, one per trial, the result."""

    def start(
        self, dataset: str, protocol: str, snapshot_id: str, settings: Mapping[str, Any]
    ) -> str:
        """Open the search's record; its id."""
        ...

    def log_trial(self, trial: Mapping[str, Any]) -> str: ...

    def finish(self, best: Mapping[str, Any]) -> str:
        """Keep the best configuration as the latest for its dataset; its version."""
        ...

    def fail(self, reason: str) -> None: ...


class TunedConfigs(Protocol):
    def latest(self, dataset: str, protocol: str) -> Mapping[str, Any] | None: ...


class NoTunedConfig(NotFound):
    """`train` was asked for the tuned settings of a dataset that was never tuned."""


@dataclass(frozen=True, slots=True)
class TuningOutcome:
    run_id: str
    version: str
    best: Mapping[str, Any]

    @property
    def overrides(self) -> list[str]:
        return list(self.best["overrides"])


Search = Callable[[S, Callable[[Mapping[str, Any]], object]], Mapping[str, Any]]


def tune_settings(
    protocol: str,
    protocols: Collection[str],
    snapshot: Callable[[], S],
    identify: Callable[[S], tuple[str, str]],
    settings: Mapping[str, Any],
    search: Search[S],
    log: TuningLog,
    *,
    dataset: str | None = None,
) -> TuningOutcome:
    """Search settings under `protocol` on `snapshot()` (whose dataset and id `identify`
    gives; `dataset`, when given, must be the snapshot's), record every trial, keep the
    best as the dataset's latest tuned configuration. A failed search is recorded as
    failed and changes nothing that `train` reads."""
    if protocol not in protocols:
        raise InvalidValue(f"protocol = {protocol!r}: expected one of {', '.join(protocols)}")
    data = snapshot()
    name, snapshot_id = identify(data)
    if dataset is not None and dataset != name:
        raise InvalidValue(
            f"snapshot {snapshot_id} holds dataset {name!r}, not {dataset!r}: build features "
            f"of {dataset!r} first or name its snapshot"
        )
    run_id = log.start(name, protocol, snapshot_id, settings)
    try:
        best = search(data, log.log_trial)
    except BaseException as exc:
        log.fail(f"{type(exc).__name__}: {exc}")
        raise
    version = log.finish(best)
    return TuningOutcome(run_id, version, best)


def tuned_overrides(
    configs: TunedConfigs, dataset: str, protocol: str, *, required: bool
) -> Sequence[str]:
    """The latest tuned configuration of `dataset` under `protocol` as `section.key=value`
    overrides (put the user's own after them: later wins). None found: an error when
    `required`, else no overrides (the shipped defaults)."""
    found = configs.latest(dataset, protocol)
    if found is None:
        if required:
            raise NoTunedConfig(
                f"no tuned configuration for dataset {dataset!r} under protocol {protocol}: "
                f"run `recolab tune --dataset {dataset} --protocol {protocol}` first"
            )
        return []
    return [str(item) for item in found.get("overrides", [])]
