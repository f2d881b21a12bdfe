"""The offline policy is the live Recommender: the same list for the same user and data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recolab.application.policy_eval import (
    SYSTEMS,
    PolicyKnobs,
    offline_recommender,
    offline_systems,
)
from recolab.application.recommend import Recommender, RecommendRequest
from recolab.domain import Movie, MovieId, Rating, RatingScore, Timestamp, User, UserId
from recolab.domain.errors import InvalidValue
from recolab.domain.model import UserClassification
from recolab.domain.services.strategy import StrategyWeights
from recolab.ml.evaluation.policy import split_profiles

from .fakes import FakeCache, FakeCatalogue, FakeScorer, FakeUoW, RecordingBus, Store

GENRES = ["Action", "Drama", "Comedy", "Romance", "Sci-Fi", "Horror"]
N_MOVIES = 120
# user -> number of ratings: new, casual, active, power user
COUNTS = {2: 3, 3: 12, 5: 40, 4: 110}


def ratings_frame() -> pd.DataFrame:
    rows = []
    for uid, count in COUNTS.items():
        for j in range(count):
            movie = 1 + (j * 7 + uid * 3) % N_MOVIES
            rows.append((uid, movie, 5.0 if (j + uid) % 3 else 2.5, 1_000_000_000 + j * 60 + uid))
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    return frame.drop_duplicates(["user_id", "movie_id"], keep="last")


def movies_frame() -> pd.DataFrame:
    ids = np.arange(1, N_MOVIES + 1)
    genres = [
        "|".join(dict.fromkeys([GENRES[i % 6], GENRES[(i * 5) % 6]])) if i % 4 else GENRES[i % 6]
        for i in ids
    ]
    return pd.DataFrame(
        {"movie_id": ids, "title": [f"Movie {i}" for i in ids], "genres": genres,
         "year": [1960 + i % 50 for i in ids]}
    )  # fmt: skip


def live_store(ratings: pd.DataFrame, movies: pd.DataFrame) -> Store:
    """What the service's database holds after ingesting `ratings`: statistics recounted
    through the domain (`record_rating`, `add_rating`), as the rate use case does."""
    store = Store()
    for row in movies.itertuples():
        store.movies[MovieId(row.movie_id)] = Movie(
            MovieId(row.movie_id), row.title, tuple(row.genres.split("|")), year=row.year
        )
    for row in ratings.sort_values("timestamp").itertuples():
        uid, mid = UserId(int(row.user_id)), MovieId(int(row.movie_id))
        store.users.setdefault(uid, User(uid))
        score = RatingScore(float(row.rating))
        store.users[uid].record_rating(score)
        store.movies[mid].add_rating(score)
        store.ratings[(uid, mid)] = Rating(uid, mid, score, Timestamp.from_unix(row.timestamp))
    return store


def scorer() -> FakeScorer:
    table = {
        u: {m: ((m * 37 + u * 11) % 101) / 100 for m in range(1, N_MOVIES + 1)} for u in (3, 4, 5)
    }
    return FakeScorer("1", table)


def live_recommender(store: Store, knobs: PolicyKnobs, model: FakeScorer) -> Recommender:
    return Recommender(
        uow_factory=lambda: FakeUoW(store),
        catalogue=FakeCatalogue(store),
        scorer=lambda: model,
        cache=FakeCache(),
        bus=RecordingBus(),
        shortlist=knobs.shortlist,
        default_lambda=knobs.mmr_lambda,
        hybrid_weights=knobs.hybrid_weights,
    )


KNOBS = [
    PolicyKnobs(mmr_lambda=0.7, shortlist=50),
    PolicyKnobs(
        mmr_lambda=0.9,
        shortlist=30,
        hybrid_weights={
            UserClassification.CASUAL: StrategyWeights(collaborative=1.0, content_based=0.0),
            UserClassification.ACTIVE: StrategyWeights(collaborative=0.5, content_based=0.5),
        },
    ),
]


@pytest.mark.parametrize("knobs", KNOBS)
def test_offline_policy_serves_what_the_live_recommender_serves(knobs: PolicyKnobs) -> None:
    ratings, movies = ratings_frame(), movies_frame()
    model = scorer()
    live = live_recommender(live_store(ratings, movies), knobs, model)
    offline = offline_systems(split_profiles(ratings, movies), model, knobs)
    users = sorted(COUNTS)
    for system, strategy in SYSTEMS.items():
        lists = offline[system](users, 10)
        for row, uid in enumerate(users):
            served = live.recommend(RecommendRequest(uid, n=10, strategy=strategy))
            expected = [item.movie_id for item in served.items]
            assert lists[row, : len(expected)].tolist() == expected, (system, uid)
            assert (lists[row, len(expected) :] == -1).all()
    # every tier of the data was served, each by its own strategy
    tiers = {live.recommend(RecommendRequest(u, n=10)).classification for u in users}
    assert tiers == {"new", "casual", "active", "power_user"}


def test_offline_recommender_is_the_service_class_and_read_only() -> None:
    profiles = split_profiles(ratings_frame(), movies_frame())
    rec = offline_recommender(profiles, scorer(), PolicyKnobs())
    assert type(rec) is Recommender
    with pytest.raises(InvalidValue, match="read-only"), rec.uow_factory() as uow:
        uow.ratings.upsert(Rating(UserId(2), MovieId(1), RatingScore(4.0), Timestamp.now()))


def test_hybrid_weights_knob_changes_what_a_casual_user_is_served() -> None:
    ratings, movies = ratings_frame(), movies_frame()
    model = scorer()
    profiles = split_profiles(ratings, movies)
    seed = offline_systems(profiles, model, PolicyKnobs())["policy"]([3], 10)
    cf_only = PolicyKnobs(hybrid_weights={UserClassification.CASUAL: StrategyWeights(1.0, 0.0)})
    pure = offline_systems(profiles, model, cf_only)
    # with the content-based weight at 0, the hybrid list is the model's own
    assert pure["policy"]([3], 10).tolist() == pure["model"]([3], 10).tolist()
    assert seed.tolist() != pure["policy"]([3], 10).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_sampled_table_profiles_only_its_users_and_samples_as_the_evaluation_does(
    seed: int,
) -> None:
    """`write_policy_table` profiles only the users it samples (the split's sort and the
    per-user objects were most of its cost at 5M ratings): they are the users the evaluation
    samples, with the same profiles and catalogue as when every user is profiled."""
    from recolab.ml.evaluation.policy import _sample, evaluate_split
    from recolab.ml.evaluation.protocols import stratified_user_split

    train, test = stratified_user_split(ratings_frame(), 0.3, seed=seed)
    movies = movies_frame()
    full = split_profiles(train, movies)
    chosen = _sample(train, test, 2, seed)
    assert chosen is not None and chosen.size == 2
    run = evaluate_split(
        train, test, full, offline_systems(full, scorer(), PolicyKnobs()), max_users=2, seed=seed
    )
    assert sorted(set(run.per_user["user_id"])) == chosen.tolist()
    part = split_profiles(train, movies, chosen)
    assert sorted(part.users) == chosen.tolist()
    assert part.movies == full.movies
    for uid in chosen.tolist():
        assert part.users[uid] == full.users[uid]
        mine, whole = part.ratings[uid], full.ratings[uid]
        for name in ("movie_ids", "scores", "timestamps"):
            assert np.array_equal(getattr(mine, name), getattr(whole, name)), name
    assert _sample(train, test, 10_000, seed) is None  # fewer users than that: all of them
