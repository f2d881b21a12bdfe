"""Drift figures (population stability index, unseen shares, popularity deciles) and the
retrain decision: when to ask, and never twice for one champion and snapshot."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recolab.domain.errors import InvalidValue
from recolab.domain.services.drift import (
    EPSILON,
    AnswerCounts,
    DriftReport,
    DriftThresholds,
    RatingSample,
    RetrainRequest,
    decide_retrain,
    drift_report,
    popularity_bins,
    population_stability_index,
    rating_histogram,
)


def sample(users: list[int], movies: list[int], scores: list[float]) -> RatingSample:
    return RatingSample(np.array(users), np.array(movies), np.array(scores, dtype=float))


def test_psi_of_identical_distributions_is_zero() -> None:
    assert population_stability_index([10, 20, 30, 40], [10, 20, 30, 40]) == 0.0
    # the same shares from different totals
    assert population_stability_index([1, 2, 3, 4], [100, 200, 300, 400]) == pytest.approx(0.0)


def test_psi_of_a_known_shift_matches_the_hand_computation() -> None:
    # shares (0.5, 0.5) -> (0.25, 0.75):
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 2 + 0.25 ln 1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert population_stability_index([50, 50], [25, 75]) == pytest.approx(expected)
    assert expected == pytest.approx(0.274653, abs=1e-6)


def test_psi_with_empty_bins_is_finite_and_uses_the_epsilon_floor() -> None:
    # empty on both sides: adds nothing
    assert population_stability_index([5, 0, 5], [5, 0, 5]) == 0.0
    # empty in the snapshot only: (0.5 - eps) ln(0.5 / eps) + (0.5 - 1) ln(0.5 / 1)
    value = population_stability_index([10, 0], [5, 5])
    hand = (0.5 - EPSILON) * math.log(0.5 / EPSILON) + (0.5 - 1.0) * math.log(0.5)
    assert math.isfinite(value) and value == pytest.approx(hand)
    # empty in the recent data only: finite too
    assert math.isfinite(population_stability_index([5, 5], [10, 0]))


@given(
    st.lists(st.integers(0, 1000), min_size=2, max_size=12).flatmap(
        lambda e: st.tuples(
            st.just(e), st.lists(st.integers(0, 1000), min_size=len(e), max_size=len(e))
        )
    )
)
def test_psi_is_never_negative(pair: tuple[list[int], list[int]]) -> None:
    expected, actual = pair
    if sum(expected) == 0 or sum(actual) == 0:
        return
    value = population_stability_index(expected, actual)
    assert math.isfinite(value) and value >= -1e-12


def test_psi_refuses_what_is_not_two_count_vectors() -> None:
    with pytest.raises(InvalidValue):
        population_stability_index([1, 2], [1, 2, 3])
    with pytest.raises(InvalidValue):
        population_stability_index([0, 0], [1, 2])
    with pytest.raises(InvalidValue):
        population_stability_index([1, -1], [1, 2])


def test_rating_histogram_has_one_bin_per_half_star() -> None:
    counts = rating_histogram(np.array([0.5, 1.0, 1.0, 3.5, 5.0, 5.0, 5.0]))
    assert counts.tolist() == [1, 2, 0, 0, 0, 0, 1, 0, 0, 3]


def test_popularity_bins_follow_the_snapshots_deciles_and_put_new_movies_in_the_first() -> None:
    # 10 movies rated 1..10 times: one movie per decile; 55 ratings in all
    snapshot = np.repeat(np.arange(1, 11), np.arange(1, 11))
    expected, actual = popularity_bins(snapshot, np.array([10, 10, 1, 99]))
    assert expected.tolist() == list(range(1, 11))
    # movie 10 (the most rated) twice, movie 1 (the least) once, unknown movie 99 with it
    assert actual.tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]


def test_drift_report_figures_on_a_hand_built_case() -> None:
    snapshot = sample([1, 1, 2, 2], [10, 11, 10, 11], [4.0, 4.0, 3.0, 3.0])
    recent = sample([1, 3, 3, 4], [10, 10, 12, 12], [4.0, 3.0, 3.0, 3.0])
    report = drift_report(
        snapshot, recent, AnswerCounts(10, 3, 4), model_version="2", snapshot_id="s1"
    )
    assert report.new_ratings == 4 and report.snapshot_ratings == 4 and report.answers == 10
    assert report.unseen_users_share == pytest.approx(0.75)  # users 3, 3, 4
    assert report.unseen_movies_share == pytest.approx(0.5)  # movie 12 twice
    assert report.fallback_share == pytest.approx(0.3)
    assert report.cold_start_share == pytest.approx(0.4)
    # ratings (4: 0.5, 3: 0.5) -> (4: 0.25, 3: 0.75): the hand-computed shift above
    assert report.rating_psi == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert report.popularity_psi is not None and report.popularity_psi >= 0


def test_no_recent_data_leaves_figures_unset() -> None:
    snapshot = sample([1], [10], [4.0])
    report = drift_report(
        snapshot, sample([], [], []), AnswerCounts(), model_version="1", snapshot_id="s"
    )
    assert report.new_ratings == 0 and report.rating_psi is None
    assert report.unseen_users_share is None and report.fallback_share is None
    assert not decide_retrain(report, DriftThresholds(min_sample=1)).retrain
    with pytest.raises(InvalidValue, match="no ratings"):
        drift_report(
            sample([], [], []), snapshot, AnswerCounts(), model_version="1", snapshot_id="s"
        )


def report(**figures: Any) -> DriftReport:
    base = DriftReport(
        model_version="3", snapshot_id="snap", snapshot_ratings=10_000, new_ratings=500, answers=500
    )
    return replace(base, **figures)


CALM = {
    "rating_psi": 0.01,
    "popularity_psi": 0.02,
    "unseen_users_share": 0.05,
    "unseen_movies_share": 0.01,
    "fallback_share": 0.02,
    "cold_start_share": 0.1,
}


def test_below_every_threshold_nothing_is_asked() -> None:
    decision = decide_retrain(report(**CALM), DriftThresholds())
    assert not decision.retrain and decision.reasons == ()
    assert "within its threshold" in decision.summary


@pytest.mark.parametrize(
    ("figure", "value", "words"),
    [
        ("rating_psi", 0.31, "rating PSI 0.310 > 0.200 (on 500 ratings)"),
        ("popularity_psi", 0.25, "popularity PSI 0.250 > 0.200"),
        ("unseen_users_share", 0.4, "unseen users share 0.400 > 0.300"),
        ("unseen_movies_share", 0.5, "unseen movies share 0.500 > 0.200"),
        ("fallback_share", 0.25, "fallback share 0.250 > 0.200 (on 500 answers)"),
        ("cold_start_share", 0.9, "cold-start share 0.900 > 0.500"),
    ],
)
def test_each_figure_past_its_threshold_asks_with_its_figures(
    figure: str, value: float, words: str
) -> None:
    decision = decide_retrain(report(**{**CALM, figure: value}), DriftThresholds())
    assert decision.retrain
    assert len(decision.reasons) == 1 and decision.reasons[0].startswith(words)
    assert words in decision.summary


def test_figures_on_too_small_a_sample_are_shown_not_judged() -> None:
    drifted = report(**{**CALM, "rating_psi": 2.0, "fallback_share": 0.9}, new_ratings=50)
    decision = decide_retrain(drifted, DriftThresholds(min_sample=200))
    # the rating figures rest on 50 ratings: not judged; the answers on 500: judged
    assert decision.retrain and len(decision.reasons) == 1
    assert decision.reasons[0].startswith("fallback share 0.900")
    assert any(
        n.startswith("rating PSI 2.000 not judged: 50 ratings < 200") for n in decision.notes
    )


def test_enough_new_ratings_ask_without_any_drift() -> None:
    decision = decide_retrain(report(**CALM, new_ratings=10_000), DriftThresholds())
    assert decision.retrain
    assert decision.reasons == ("10000 new ratings since snapshot snap >= 10000",)
    assert not decide_retrain(report(**CALM, new_ratings=9_999), DriftThresholds()).retrain


def test_never_twice_for_the_same_champion_and_snapshot() -> None:
    drifted = report(**{**CALM, "rating_psi": 0.5})
    asked = RetrainRequest(
        "3", "snap", "rating PSI", 500, datetime(2026, 1, 1, tzinfo=UTC), "run-1", id=7
    )
    again = decide_retrain(drifted, DriftThresholds(), asked)
    assert not again.retrain and again.already_requested == asked
    assert again.reasons  # still said, for the report
    assert "already asked (2026-01-01T00:00:00+00:00, request 7)" in again.summary
    # a new champion (another version, or the same version on another snapshot) may ask
    for other in (("4", "snap"), ("3", "snap2")):
        older = RetrainRequest(other[0], other[1], "x", 1, id=1)
        assert decide_retrain(drifted, DriftThresholds(), older).retrain


def test_the_same_champion_may_ask_again_once_another_n_ratings_came() -> None:
    """A retrain that was asked for and not promoted leaves the same champion serving: the
    drift stays, and so does the answer (no request per run), until another
    `new_ratings` ratings arrived since the last request."""
    asked = RetrainRequest("3", "snap", "rating PSI", 500, id=7)
    thresholds = DriftThresholds()
    drifted = {**CALM, "rating_psi": 0.5}
    assert not decide_retrain(report(**drifted), thresholds, asked).retrain
    almost = report(**drifted, new_ratings=500 + thresholds.new_ratings - 1)
    assert not decide_retrain(almost, thresholds, asked).retrain
    grown = report(**drifted, new_ratings=500 + thresholds.new_ratings)
    assert decide_retrain(grown, thresholds, asked).retrain
