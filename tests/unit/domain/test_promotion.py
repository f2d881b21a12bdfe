from __future__ import annotations

import math

import pytest

from recolab.domain.promotion import HeadToHead, PromotionDecision, decide_promotion


def decide(
    candidate: float, champion: HeadToHead | None, baseline: float | None, higher: bool = True
) -> PromotionDecision:
    return decide_promotion(
        candidate, champion, baseline, metric="ndcg@10", higher_is_better=higher
    )


def test_no_champion_and_above_popularity_promotes() -> None:
    decision = decide(0.30, None, 0.25)
    assert decision.promote and decision.champion is None and decision.baseline == 0.25
    assert "no champion" in decision.reason and "popularity" in decision.reason


@pytest.mark.parametrize("candidate", [0.2564, 0.2598])  # the demo's first champion, a tie
def test_no_champion_and_not_above_popularity_is_refused(candidate: float) -> None:
    decision = decide(candidate, None, 0.2598)
    assert not decision.promote
    assert "does not beat the popularity baseline 0.2598" in decision.reason


def test_below_popularity_is_refused_even_when_it_beats_the_champion() -> None:
    decision = decide(0.25, HeadToHead(candidate=0.30, champion=0.10), 0.26)
    assert not decision.promote and "popularity" in decision.reason


def test_a_missing_baseline_keeps_the_champion() -> None:
    for baseline in (None, math.nan):
        decision = decide(0.4, None, baseline)
        assert not decision.promote and "no popularity baseline" in decision.reason


@pytest.mark.parametrize(
    ("same_data", "higher", "promote"),
    [
        (HeadToHead(0.36, 0.35), True, True),
        (HeadToHead(0.35, 0.35), True, False),  # a tie keeps the champion
        (HeadToHead(0.34, 0.35), True, False),
        (HeadToHead(0.85, 0.86), False, True),  # RMSE: lower is better
        (HeadToHead(0.87, 0.86), False, False),
    ],
)
def test_the_champion_is_compared_on_the_same_data(
    same_data: HeadToHead, higher: bool, promote: bool
) -> None:
    # The candidate's protocol figure (0.5 / 0.5) is not what is compared with the champion.
    baseline = 0.1 if higher else 0.95
    decision = decide(0.5, same_data, baseline, higher=higher)
    assert decision.promote is promote
    assert ("beats champion" in decision.reason) is promote
    assert (decision.champion, decision.candidate_same_data) == (
        same_data.champion,
        same_data.candidate,
    )
    assert decision.candidate == 0.5 and decision.baseline == baseline


def test_a_champion_that_cannot_be_measured_is_not_beaten() -> None:
    decision = decide(0.4, HeadToHead(0.4, math.nan), 0.1)
    assert not decision.promote and "cannot compare" in decision.reason


def test_min_improvement_and_nan() -> None:
    assert not decide_promotion(
        0.5,
        HeadToHead(0.351, 0.35),
        0.1,
        metric="m",
        higher_is_better=True,
        min_improvement=0.01,
    ).promote
    assert not decide(math.nan, None, 0.1).promote


@pytest.mark.parametrize(
    ("rows", "min_rows", "promote"),
    [(49, 50, False), (50, 50, True), (0, 1, False), (None, 50, True), (3, 1, True)],
)
def test_a_head_to_head_on_too_few_rows_is_not_won(
    rows: int | None, min_rows: int, promote: bool
) -> None:
    # The candidate wins on the rows compared; whether they are enough decides.
    decision = decide_promotion(
        0.5,
        HeadToHead(0.40, 0.30, rows),
        0.1,
        metric="ndcg@10",
        higher_is_better=True,
        min_rows=min_rows,
    )
    assert decision.promote is promote
    if not promote:
        assert decision.reason == (
            f"only {rows} test rows can compare the candidate with the champion (it was "
            f"trained on the others); at least {min_rows} are needed"
        )
        assert (decision.candidate_same_data, decision.champion) == (0.40, 0.30)


def test_too_few_rows_are_checked_before_the_figures() -> None:
    # NaN figures (no rows at all) are refused for the count, which says more.
    decision = decide_promotion(
        0.5, HeadToHead(math.nan, math.nan, 0), 0.1, metric="hr@10", higher_is_better=True
    )
    assert not decision.promote and decision.reason.startswith("only 0 test rows")
