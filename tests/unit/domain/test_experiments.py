"""Sticky assignment of users to an experiment's variants (recolab.domain.experiments)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from recolab.domain.errors import InvalidValue
from recolab.domain.experiments import (
    CHALLENGER,
    CHAMPION,
    Experiment,
    assign_variant,
    bucket,
    in_experiment,
)

USERS = range(1, 20_001)


@pytest.mark.parametrize("share", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_shares_are_within_tolerance_over_many_users(share: float) -> None:
    canary = Experiment("v2-canary", "canary", share)
    challengers = sum(assign_variant(u, canary) == CHALLENGER for u in USERS)
    # four standard deviations of a binomial share: a fair hash never fails it
    tolerance = 4 * math.sqrt(share * (1 - share) / len(USERS))
    assert abs(challengers / len(USERS) - share) <= tolerance


def test_assignment_is_sticky_and_shadow_answers_everyone_with_the_champion() -> None:
    canary = Experiment("sticky", "canary", 0.3)
    first = [assign_variant(u, canary) for u in USERS]
    assert [assign_variant(u, canary) for u in USERS] == first
    shadow = Experiment("sticky", "shadow", 0.3)
    assert {assign_variant(u, shadow) for u in USERS} == {CHAMPION}
    # the same users are in the shadow's share as in the canary's of the same name
    assert [in_experiment(u, shadow) for u in USERS] == [v == CHALLENGER for v in first]
    assert {assign_variant(u, None) for u in range(1, 100)} == {CHAMPION}
    assert not any(in_experiment(u, None) for u in range(1, 100))


def test_share_zero_and_one_and_a_new_name_reshuffles() -> None:
    assert not any(in_experiment(u, Experiment("e", "canary", 0.0)) for u in USERS)
    assert all(in_experiment(u, Experiment("e", "canary", 1.0)) for u in USERS)
    a = {u for u in USERS if in_experiment(u, Experiment("a", "canary", 0.5))}
    b = {u for u in USERS if in_experiment(u, Experiment("b", "canary", 0.5))}
    overlap = len(a & b) / len(USERS)  # independent halves overlap on a quarter
    assert abs(overlap - 0.25) < 0.02


def test_growing_the_share_keeps_the_users_already_in() -> None:
    small = {u for u in USERS if in_experiment(u, Experiment("grow", "canary", 0.1))}
    large = {u for u in USERS if in_experiment(u, Experiment("grow", "canary", 0.4))}
    assert small and small <= large


def test_buckets_are_the_same_in_another_process() -> None:
    # Workers are processes: Python's `hash` is salted per process, the bucket must not be.
    users = [1, 2, 3, 1000, 123_456_789]
    code = (
        "import json; from recolab.domain.experiments import bucket; "
        f"print(json.dumps([bucket('cross', u) for u in {users!r}]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert json.loads(out) == [bucket("cross", u) for u in users]
    assert all(0.0 <= b < 1.0 for b in json.loads(out))


@pytest.mark.parametrize(
    ("name", "mode", "share"),
    [("", "canary", 0.1), ("x" * 65, "canary", 0.1), ("e", "ab", 0.1), ("e", "canary", 1.5)],
)
def test_bad_experiments_are_refused(name: str, mode: str, share: float) -> None:
    with pytest.raises(InvalidValue):
        Experiment(name, mode, share)  # type: ignore[arg-type]
