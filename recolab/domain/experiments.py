"""Online experiments: which model answers a user while a challenger is tried.

An experiment names a challenger model version (the registry's `challenger` alias) and a
share of users. In `canary` mode the users in the share are answered by the challenger; in
`shadow` mode the champion answers everyone and the challenger's answer for the users in the
share is computed off the request path and recorded, never shown. Assignment is sticky: a
hash of the experiment's name and the user id, the same in every worker and process, so a
user never flips between variants while the experiment runs (a new name reshuffles).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

from recolab.domain.errors import InvalidValue

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
VARIANTS = (CHAMPION, CHALLENGER, SHADOW)  # SHADOW: scored, recorded, not served
CANARY = "canary"
Mode = Literal["canary", "shadow"]
MODES: tuple[Mode, ...] = ("canary", "shadow")
MAX_NAME = 64  # the history's `experiment` column


@dataclass(frozen=True, slots=True)
class Experiment:
    """A running experiment: its name, mode and the share of users in it."""

    name: str
    mode: Mode
    share: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > MAX_NAME:
            raise InvalidValue(
                f"an experiment name is 1 to {MAX_NAME} characters, got {self.name!r}"
            )
        if self.mode not in MODES:
            raise InvalidValue(
                f"experiment mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        share = self.share
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not math.isfinite(share)
            or not 0.0 <= share <= 1.0
        ):
            raise InvalidValue(f"experiment share must be in [0, 1], got {share!r}")


def bucket(experiment_name: str, user_id: int) -> float:
    """The user's place in [0, 1) for this experiment: stable across processes and runs
    (BLAKE2b, not Python's salted `hash`)."""
    digest = hashlib.blake2b(f"{experiment_name}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_experiment(user_id: int, experiment: Experiment | None) -> bool:
    """Whether the user is in the experiment's share (always False without one)."""
    return experiment is not None and bucket(experiment.name, user_id) < experiment.share


def assign_variant(user_id: int, experiment: Experiment | None) -> str:
    """The variant that answers the user: `challenger` for a canary's share, else
    `champion` (in shadow mode the champion answers everyone)."""
    if experiment is not None and experiment.mode == CANARY and in_experiment(user_id, experiment):
        return CHALLENGER
    return CHAMPION
