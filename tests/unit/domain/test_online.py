"""Online metrics: hits counted exactly on a hand-built history (the window's edges, one
credit per rating, ratings before the answer, rank cut-offs, shadow apart), coverage and
novelty, and bootstrap intervals that are reproducible and cover the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recolab.domain.errors import InvalidValue
from recolab.domain.services.online import (
    Answers,
    ExperimentData,
    Popularity,
    ReportSettings,
    bootstrap_ratios,
    compute_report,
    credit_hits,
)
from tests.unit.domain.online_data import (
    DAY,
    answers,
    catalogue,
    feedback,
    settings,
    simulate,
)

# user, created_at (epoch s), variant, movies by rank
HISTORY = [
    (1, 1000.4, "champion", [10, 11, 12]),  # a0
    (1, 5000.0, "champion", [13, 10]),  # a1: movie 10 again
    (2, 1000.0, "challenger", [20, 21, 22, 23, 24]),  # a2
    (3, 2000.0, "champion", [30]),  # a3
    (5, 100.0, "champion", [50]),  # a4
    (5, 500.0, "champion", [50, 51]),  # a5: movie 50 again, after the rating below
]
RATINGS = [
    (1, 10, 6000),  # in a0's and a1's windows: a1's only (the most recent), at rank 2
    (1, 11, 1000),  # a0 at 1000.4: the same whole second counts, rank 2
    (1, 12, 999),  # before a0: no hit
    (2, 20, 1000 + DAY),  # the window's last second: a hit, rank 1
    (2, 24, 1001 + DAY),  # one second after the window: none
    (3, 30, 2001 + DAY),  # after the window: none
    (3, 31, 2500),  # a movie never served to user 3: none
    (4, 10, 3000),  # a user never answered: none
    (5, 50, 300),  # a4 (a5 came after the rating): rank 1
]
#             a0: 10 11 12 | a1: 13 10 | a2: 20 21 22 23 24 | a3: 30 | a4: 50 | a5: 50 51
CREDITED = [0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0]


def report_of(history=HISTORY, ratings=RATINGS, popularity=None, **kwargs):
    data = ExperimentData(answers(history), feedback(ratings), popularity or catalogue())
    return compute_report("exp", data, settings(), **kwargs)


def test_each_rating_is_credited_once_to_the_most_recent_answer_in_whose_window_it_falls() -> None:
    credited = credit_hits(answers(HISTORY), feedback(RATINGS), DAY)
    assert credited.tolist() == CREDITED


def test_per_variant_hit_rates_and_rank_cut_offs() -> None:
    report = report_of()
    champion, challenger = report.variants["champion"], report.variants["challenger"]
    # champion: a0 (hit at rank 2), a1 (rank 2), a3 (none), a4 (rank 1), a5 (none)
    assert (champion.answers, champion.users, champion.items, champion.hits) == (5, 3, 9, 3)
    assert champion.hit_rate == pytest.approx(3 / 5)
    assert champion.hit_rate_at == pytest.approx({1: 1 / 5, 3: 3 / 5, 5: 3 / 5})
    assert champion.hits_by_rank == {1: 1, 2: 2}
    assert (challenger.answers, challenger.hits, challenger.hit_rate) == (1, 1, 1.0)
    assert challenger.hit_rate_at == {1: 1.0, 3: 1.0, 5: 1.0}
    assert report.difference is not None
    assert report.difference.hit_rate == pytest.approx(1.0 - 3 / 5)
    assert report.shadow is None and report.ratings_read == len(RATINGS)
    assert (report.first_answer, report.last_answer) == (100.0, 5000.0)


def test_the_window_is_configurable_and_inclusive_at_both_ends() -> None:
    history = [(1, 1000.9, "champion", [1, 2, 3])]
    ratings = [(1, 1, 1000), (1, 2, 1060), (1, 3, 1061)]
    credited = credit_hits(answers(history), feedback(ratings), 60)
    assert credited.tolist() == [1, 1, 0]  # [1000, 1060]: start floored, both ends in


def test_shadow_answers_are_matched_and_reported_apart_and_never_take_a_hit() -> None:
    shadow = [(1, 1000.4, "shadow", [14, 11]), (2, 1000.0, "shadow", [25])]
    report = report_of(HISTORY + shadow, [*RATINGS, (2, 25, 1500)])
    assert set(report.variants) == {"champion", "challenger"}  # the shown ones
    assert report.variants["champion"].hits == 3  # as without shadow answers
    assert report.variants["challenger"].hits == 1
    s = report.shadow
    assert s is not None and not s.shown
    # rating (1, 11) is a hit for the champion's a0 and, apart, for the shadow answer
    assert (s.answers, s.users, s.hits, s.hit_rate, s.hit_rate_at[1]) == (2, 2, 2, 1.0, 0.5)
    assert report.to_dict()["shadow"]["shown"] is False


def test_hits_by_strategy_and_tier() -> None:
    strategy = ["hybrid", "collaborative", "popular", "hybrid", "hybrid", "popular"]
    tier = ["active", "power_user", "cold_start", "casual", "active", "active"]
    data = ExperimentData(
        answers(HISTORY, strategy=strategy, tier=tier), feedback(RATINGS), catalogue()
    )
    champion = compute_report("exp", data, settings()).variants["champion"]
    by_strategy = {
        k: (b.answers, b.answers_with_hit, b.hits) for k, b in champion.by_strategy.items()
    }
    assert by_strategy == {"hybrid": (3, 2, 2), "collaborative": (1, 1, 1), "popular": (1, 0, 0)}
    assert champion.by_tier["active"].hit_rate == pytest.approx(2 / 3)  # a0, a4; not a5
    assert champion.by_tier["power_user"].hit_rate == 1.0
    assert "cold_start" not in champion.by_tier  # a2 (cold_start) is the challenger's


def test_coverage_and_novelty_of_what_was_served() -> None:
    report = report_of()
    champion = report.variants["champion"]
    assert champion.coverage == pytest.approx(len({10, 11, 12, 13, 30, 50, 51}) / 100)
    # every movie rated once: share (1 + 1) / (100 + 100), -log2 = log2(100)
    assert champion.novelty == pytest.approx(math.log2(100))
    skewed = Popularity([10, 11, 12], [98, 0, 0])  # 98 + 3 smoothed ratings
    served = [(1, 0.0, "champion", [10, 11])]
    novelty = report_of(served, [], skewed).variants["champion"].novelty
    assert novelty == pytest.approx((-math.log2(99 / 101) - math.log2(1 / 101)) / 2)


def test_answers_by_another_model_version_are_left_out_when_versions_are_given() -> None:
    data = ExperimentData(
        Answers(
            user=[1, 2, 3],
            created_at=[0.0, 0.0, 0.0],
            variant=["champion", "champion", "challenger"],
            model_version=["1", "7", "2"],
            strategy=["hybrid"] * 3,
            tier=["active"] * 3,
            item_answer=[0, 1, 2],
            movie=[1, 2, 3],
            rank=[1, 1, 1],
        ),
        feedback([(2, 2, 10)]),
        catalogue(),
    )
    report = compute_report("exp", data, settings(), versions={"champion": "1", "challenger": "2"})
    assert report.excluded_answers == 1
    assert report.variants["champion"].versions == {"1": 1}
    assert report.variants["champion"].hits == 0  # the hit was version 7's


def test_a_report_without_answers_has_no_figures_and_no_difference() -> None:
    report = report_of([], [])
    assert report.difference is None and report.first_answer is None
    assert report.variants["champion"].answers == 0
    assert math.isnan(report.variants["challenger"].hit_rate)
    assert report.to_dict()["variants"]["champion"]["users"] == 0


def test_open_answers_are_counted() -> None:
    assert report_of(now=5000.0 + DAY - 1).open_answers == 1  # a1's window ends a second later
    assert report_of(now=5000.0 + DAY).open_answers == 0
    assert report_of(now=1999.0 + DAY).open_answers == 2  # a1, and a3 (a second to go)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidValue):
        Answers([1], [0.0], ["champion"], ["1"], ["hybrid"], ["active"], [1], [5], [1])
    with pytest.raises(InvalidValue):
        ReportSettings(DAY, (0, 3), 0.9, 100)
    with pytest.raises(InvalidValue):
        ReportSettings(DAY, (1,), 1.2, 100)


def test_bootstrap_intervals_are_reproducible_with_a_seed() -> None:
    data = simulate(3, users=150)
    first = compute_report("exp", data, settings(seed=11))
    again = compute_report("exp", data, settings(seed=11))
    other = compute_report("exp", data, settings(seed=12))
    assert first.difference is not None and again.difference is not None
    assert first.to_dict() == again.to_dict()
    assert np.array_equal(first.difference.replicates, again.difference.replicates)
    assert other.difference is not None
    assert other.difference.hit_rate_interval != first.difference.hit_rate_interval


def test_the_bootstrap_resamples_users_and_recomputes_the_ratio() -> None:
    # two users: one with 3 answers all hit, one with 1 answer, no hit
    numerators = np.array([[3.0], [0.0]])
    denominators = np.array([3.0, 1.0])
    replicates = bootstrap_ratios(numerators, denominators, 4000, np.random.default_rng(0))
    # resampling users gives ratios 1 (both draws the first), 0 (the second), 3/4 (one each)
    values, counts = np.unique(replicates.round(6), return_counts=True)
    assert values.tolist() == [0.0, 0.75, 1.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)


@pytest.mark.slow
def test_bootstrap_intervals_cover_the_truth_on_simulated_data() -> None:
    """200 users per variant, 3 answers each on average, per-user rates ~ Beta around 0.2
    and 0.3: the 90% intervals of each hit rate and of the difference hold the true values
    about 90% of the time over 120 simulated experiments."""
    covered = {"champion": 0, "challenger": 0, "difference": 0}
    runs = 120
    for seed in range(runs):
        data = simulate(seed, users=200, champion_rate=0.2, challenger_rate=0.3)
        report = compute_report("exp", data, settings(samples=400, seed=seed))
        for name, truth in (("champion", 0.2), ("challenger", 0.3)):
            interval = report.variants[name].hit_rate_interval
            covered[name] += interval.low <= truth <= interval.high
        assert report.difference is not None
        d = report.difference.hit_rate_interval
        covered["difference"] += d.low <= 0.1 <= d.high
    for name, count in covered.items():
        assert 0.8 <= count / runs <= 0.97, (name, count)
