"""Per-tier figures of served lists, on a case small enough to work out by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from recolab.ml.evaluation.policy import (
    evaluate_split,
    markdown_table,
    split_profiles,
    summarize,
)

LOG3 = 1 / math.log2(3)  # the discount of rank 2


def _case() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    # user 1 rated 3 movies in training (tier new), user 2 rated 10 (tier casual)
    train = pd.DataFrame(
        [(1, m, 4.0, 100 + m) for m in (1, 2, 3)] + [(2, m, 3.0, 200 + m) for m in range(1, 11)],
        columns=["user_id", "movie_id", "rating", "timestamp"],
    )
    test = pd.DataFrame(
        [(1, 10, 5.0, 999), (2, 20, 5.0, 999), (2, 21, 4.0, 998)],
        columns=["user_id", "movie_id", "rating", "timestamp"],
    )
    ids = list(range(1, 41))
    genres = ["B" if i == 11 else "A|B" if i == 30 else "A" for i in ids]
    movies = pd.DataFrame(
        {"movie_id": ids, "title": [f"M{i}" for i in ids], "genres": genres, "year": 2000}
    )
    return train, test, movies


def _fixed(lists: dict[int, list[int]]):  # type: ignore[no-untyped-def]
    def make(users: Sequence[int], k: int) -> np.ndarray:
        return np.array([lists[u][:k] for u in users], dtype=np.int64)

    return make


SYSTEMS = {
    "policy": _fixed({1: [10, 11], 2: [20, 30]}),
    "model": _fixed({1: [11, 10], 2: [1, 31]}),
}


def test_per_tier_figures_by_hand() -> None:
    train, test, movies = _case()
    profiles = split_profiles(train, movies)
    run = evaluate_split(train, test, profiles, SYSTEMS, k=2)
    fig = run.per_user.set_index(["system", "user_id"])
    assert fig.loc[("policy", 1), "tier"] == "new"
    assert fig.loc[("policy", 2), "tier"] == "casual"
    # user 1: one relevant item; policy has it first, the model second
    assert fig.loc[("policy", 1), ["ndcg", "hr", "map", "recall"]].tolist() == [1, 1, 1, 1]
    assert fig.loc[("model", 1), "ndcg"] == pytest.approx(LOG3)
    assert fig.loc[("model", 1), "map"] == pytest.approx(0.5)
    # user 2: two relevant items, the policy finds one at rank 1, the model none
    assert fig.loc[("policy", 2), "ndcg"] == pytest.approx(1 / (1 + LOG3))
    assert fig.loc[("policy", 2), "recall"] == pytest.approx(0.5)
    assert fig.loc[("policy", 2), "map"] == pytest.approx(0.5)
    assert fig.loc[("model", 2), ["ndcg", "hr", "map", "recall"]].tolist() == [0, 0, 0, 0]
    # novelty: movie 1 was rated by both training users (0 bits), the rest by one or none
    # (a movie nobody rated counts as rated by one: 1 bit of 2 users)
    assert fig.loc[("model", 2), "novelty"] == pytest.approx(0.5)
    assert fig.loc[("policy", 1), "novelty"] == pytest.approx(1.0)
    # ILD: {A} vs {B} share nothing; {A} vs {A, B} has Jaccard 1/2; {A} vs {A} is 1
    assert fig.loc[("policy", 1), "ild"] == pytest.approx(1.0)
    assert fig.loc[("policy", 2), "ild"] == pytest.approx(0.5)
    assert fig.loc[("model", 2), "ild"] == pytest.approx(0.0)
    # coverage per tier: distinct served movies over the 40-movie catalogue
    assert run.coverage["new"] == {"policy": 2 / 40, "model": 2 / 40}
    assert run.coverage["casual"]["model"] == 2 / 40

    table = summarize([run], [0], n_boot=200)
    new, casual = table["by_tier"]["new"], table["by_tier"]["casual"]
    assert table["by_tier"]["power_user"] == {"n_users": 0}
    assert new["systems"]["policy"]["ndcg@2"] == {"mean": 1.0, "std": 0.0}
    assert new["policy_vs"]["model"]["ndcg@2"]["diff"] == pytest.approx(1 - LOG3)
    assert new["verdict"] == casual["verdict"] == "better"
    assert "| new | 1 | policy |" in markdown_table(table)


def test_verdict_is_noise_when_the_lists_are_the_same_and_worse_when_behind() -> None:
    train, test, movies = _case()
    profiles = split_profiles(train, movies)
    same = {"policy": SYSTEMS["model"], "model": SYSTEMS["model"]}
    runs = [evaluate_split(train, test, profiles, same, k=2) for _ in range(2)]
    table = summarize(runs, [0, 1], n_boot=200)
    assert table["by_tier"]["new"]["verdict"] == "within noise"
    assert table["by_tier"]["new"]["policy_vs"]["model"]["ndcg@2"]["ci95"] == [0.0, 0.0]
    behind = {"policy": SYSTEMS["model"], "model": SYSTEMS["policy"]}
    table = summarize([evaluate_split(train, test, profiles, behind, k=2)], [0], n_boot=200)
    assert table["by_tier"]["casual"]["verdict"] == "worse"


def test_split_profiles_take_statistics_from_the_training_rows_only() -> None:
    train, _, movies = _case()
    profiles = split_profiles(train, movies)
    assert profiles.users[2].n_ratings == 10
    assert profiles.users[1].avg_rating == pytest.approx(4.0)
    by_id = {m.id.value: m for m in profiles.movies}
    assert (by_id[1].rating_count, by_id[1].avg_rating) == (2, pytest.approx(3.5))
    assert by_id[20].rating_count == 0  # a test movie: no training rating
    # most recent first
    assert profiles.ratings[2].movie_ids.tolist() == list(range(10, 0, -1))
