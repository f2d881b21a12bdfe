"""Each metric against examples computed by hand."""

import math

import numpy as np
import pytest

from recolab.ml.evaluation import metrics
from recolab.ml.evaluation.tiers import by_tier, user_tiers


def test_hits_matrix_marks_relevant_ranked_items() -> None:
    topk = np.array([[3, 1], [2, 0]])
    hits = metrics.hits_matrix(topk, np.array([0, 1, 1]), np.array([1, 0, 5]))
    assert hits.tolist() == [[False, True], [False, True]]


def test_ndcg_hand_computed() -> None:
    hits = np.array([[True, False, True]])
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal with 2 relevant = 1 + 1/log2(3)
    expected = 1.5 / (1 + 1 / math.log2(3))
    assert metrics.ndcg_at_k(hits, np.array([2]))[0] == pytest.approx(expected)
    # More relevant items than k: the ideal list is full.
    full = 1 + 1 / math.log2(3) + 0.5
    assert metrics.ndcg_at_k(hits, np.array([7]))[0] == pytest.approx(1.5 / full)


def test_ndcg_is_one_for_a_perfect_list_and_zero_without_hits() -> None:
    perfect = np.array([[True, True, False]])
    assert metrics.ndcg_at_k(perfect, np.array([2]))[0] == pytest.approx(1.0)
    assert metrics.ndcg_at_k(np.zeros((1, 3), bool), np.array([2]))[0] == 0.0


def test_average_precision_divides_by_all_relevant_items() -> None:
    hits = np.array([[True, False, True]])
    # precision at the hits: 1/1 and 2/3; 4 relevant test items in total
    assert metrics.average_precision_at_k(hits, np.array([4]))[0] == pytest.approx((1 + 2 / 3) / 4)
    assert metrics.average_precision_at_k(hits, np.array([0]))[0] == 0.0


def test_precision_and_recall() -> None:
    hits = np.array([[True, False, True], [False, False, False]])
    assert metrics.precision_at_k(hits).tolist() == pytest.approx([2 / 3, 0.0])
    assert metrics.recall_at_k(hits, np.array([4, 3])).tolist() == pytest.approx([0.5, 0.0])


def test_leave_one_out_rank_hit_rate_and_ndcg() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [2.0, 1.0, 0.0, -1.0]])
    ranks = metrics.rank_of_positive(scores)
    assert ranks.tolist() == [2, 0]  # a tie counts against the held-out item
    assert metrics.loo_hit_rate(np.array([0, 9, 10]), 10).tolist() == [1.0, 1.0, 0.0]
    assert metrics.loo_ndcg(np.array([0, 9, 10]), 10).tolist() == pytest.approx(
        [1.0, 1 / math.log2(11), 0.0]
    )
    assert metrics.hit_rate_at_k(np.array([[False, True], [False, False]])).tolist() == [1.0, 0.0]


def test_catalogue_coverage() -> None:
    assert metrics.catalogue_coverage(np.array([[0, 1], [1, 2]]), 10) == pytest.approx(0.3)


def test_novelty_is_mean_self_information() -> None:
    popularity = np.array([0.5, 0.25, 1.0])
    assert metrics.novelty(np.array([[0, 1], [2, 2]]), popularity).tolist() == pytest.approx(
        [1.5, 0.0]
    )


def test_intra_list_diversity_from_genre_jaccard() -> None:
    genres = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=bool)  # {A,B}, {A}, {C}
    # pairs: J(0,1) = 1/2, J(0,2) = 0, J(1,2) = 0 -> mean similarity 1/6
    ild = metrics.intra_list_diversity(np.array([[0, 1, 2], [1, 1, 1]]), genres)
    assert ild.tolist() == pytest.approx([5 / 6, 0.0])


def test_rmse_and_mae() -> None:
    assert metrics.rmse(np.array([3.0, 4.0]), np.array([4.0, 2.0])) == pytest.approx(math.sqrt(2.5))
    assert metrics.mae(np.array([3.0, 4.0]), np.array([4.0, 2.0])) == pytest.approx(1.5)


def test_user_tiers_boundaries() -> None:
    counts = np.array([0, 1, 5, 6, 20, 21, 100, 101])
    assert user_tiers(counts).tolist() == [
        "cold_start",
        "new",
        "new",
        "casual",
        "casual",
        "active",
        "active",
        "power_user",
    ]
    with pytest.raises(ValueError):
        user_tiers(np.array([-1]))


def test_by_tier_averages_within_each_tier() -> None:
    tiers = np.array(["new", "new", "active"], dtype=object)
    out = by_tier({"x": np.array([1.0, 3.0, 5.0])}, tiers)
    assert out["new"] == {"n_users": 2, "x": 2.0}
    assert out["active"] == {"n_users": 1, "x": 5.0}
    assert out["cold_start"] == {"n_users": 0}
