from __future__ import annotations

import math

import pytest

from recolab.domain.promotion import decide_promotion


def test_no_comparable_champion_promotes() -> None:
    decision = decide_promotion(0.3, None, metric="ndcg@10", higher_is_better=True)
    assert decision.promote and decision.champion is None


@pytest.mark.parametrize(
    ("candidate", "champion", "higher", "promote"),
    [
        (0.36, 0.35, True, True),
        (0.35, 0.35, True, False),  # a tie keeps the champion
        (0.34, 0.35, True, False),
        (0.85, 0.86, False, True),  # RMSE: lower is better
        (0.87, 0.86, False, False),
    ],
)
def test_strictly_better_wins(
    candidate: float, champion: float, higher: bool, promote: bool
) -> None:
    decision = decide_promotion(candidate, champion, metric="m", higher_is_better=higher)
    assert decision.promote is promote
    assert ("beats" in decision.reason) is promote


def test_min_improvement_and_nan() -> None:
    assert not decide_promotion(
        0.351, 0.35, metric="m", higher_is_better=True, min_improvement=0.01
    ).promote
    assert not decide_promotion(math.nan, None, metric="m", higher_is_better=True).promote
