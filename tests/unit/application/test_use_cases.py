from __future__ import annotations

import numpy as np
import pytest

from recolab.application.handlers import message_bus
from recolab.application.recommend import (
    RecommendationResult,
    Recommender,
    RecommendRequest,
)
from recolab.application.users import RateMovie, get_profile, rate_movie, register_user
from recolab.domain import (
    InvalidValue,
    Movie,
    MovieId,
    MovieNotFound,
    MovieRated,
    Rating,
    RatingScore,
    RecommendationsGenerated,
    Timestamp,
    User,
    UserId,
    UserNotFound,
    UserRegistered,
)

from .fakes import FakeCache, FakeCatalogue, FakeScorer, FakeUoW, RecordingBus, Store

GENRES = ["Action", "Drama", "Comedy", "Romance", "Sci-Fi", "Horror"]


def make_store(n_movies: int = 200) -> Store:
    store = Store()
    for i in range(1, n_movies + 1):
        genres = (GENRES[i % 6], GENRES[(i * 7) % 6]) if i % 3 else (GENRES[i % 6],)
        store.movies[MovieId(i)] = Movie(
            MovieId(i),
            f"Movie {i}",
            genres,
            year=1950 + i % 70,
            rating_count=(n_movies - i) * 3,
            avg_rating=2.5 + (i % 5) * 0.5 if i < n_movies else 0.0,
        )
    store.movies[MovieId(n_movies)] = Movie(MovieId(n_movies), "Unrated", ("Drama",))
    # user 1: cold start; 2: new (3 ratings); 3: casual (10); 4: power user (120)
    for uid, count in ((1, 0), (2, 3), (3, 10), (4, 120)):
        store.users[UserId(uid)] = User(UserId(uid))
        for j in range(count):
            mid = MovieId(1 + (j * 5 + uid) % (n_movies - 1))
            score = RatingScore(5.0 if j % 2 == 0 else 3.0)
            store.ratings[(UserId(uid), mid)] = Rating(
                UserId(uid), mid, score, Timestamp.from_unix(1e9 + j)
            )
            store.users[UserId(uid)].record_rating(score)
    return store


def scorer_for(store: Store, users: tuple[int, ...] = (3, 4)) -> FakeScorer:
    table = {u: {m.value: ((m.value * 37 + u) % 101) / 100 for m in store.movies} for u in users}
    return FakeScorer("7", table)


def recommender(
    store: Store, scorer: FakeScorer | None, cache: FakeCache | None = None
) -> tuple[Recommender, RecordingBus, FakeCache]:
    bus, cache = RecordingBus(), cache or FakeCache()
    rec = Recommender(
        uow_factory=lambda: FakeUoW(store),
        catalogue=FakeCatalogue(store),
        scorer=lambda: scorer,
        cache=cache,
        bus=bus,
        shortlist=50,
    )
    return rec, bus, cache


def intra_list_similarity(store: Store, result: RecommendationResult) -> float:
    movies = [store.movies[MovieId(i.movie_id)] for i in result.items]
    pairs = [(a, b) for k, a in enumerate(movies) for b in movies[k + 1 :]]
    return sum(a.genre_similarity(b.genres) for a, b in pairs) / len(pairs)


def rated_ids(store: Store, uid: int) -> set[int]:
    return {m.value for (u, m) in store.ratings if u.value == uid}


@pytest.mark.parametrize(
    ("uid", "tier", "strategy", "sources"),
    [
        (1, "cold_start", "popular", {"popular"}),
        (2, "new", "content_based", {"content_based"}),
        (3, "casual", "hybrid", {"hybrid"}),
        (4, "power_user", "collaborative_with_diversity", {"collaborative"}),
    ],
)
def test_auto_strategy_follows_the_tier(
    uid: int, tier: str, strategy: str, sources: set[str]
) -> None:
    store = make_store()
    rec, bus, _ = recommender(store, scorer_for(store))
    result = rec.recommend(RecommendRequest(user_id=uid, n=10))
    assert (result.classification, result.strategy_used) == (tier, strategy)
    assert {i.source for i in result.items} == sources
    assert len(result.items) == 10
    assert [i.rank for i in result.items] == list(range(1, 11))
    assert not {i.movie_id for i in result.items} & rated_ids(store, uid)
    assert all(0.0 <= i.score <= 1.0 for i in result.items)
    assert 0.0 <= result.diversity_score <= 1.0
    assert result.model_version == "7"
    assert isinstance(bus.events[-1], RecommendationsGenerated)


def test_explanations_name_the_real_reason() -> None:
    store = make_store()
    rec, _, _ = recommender(store, scorer_for(store))
    popular = rec.recommend(RecommendRequest(user_id=1, n=5)).items
    assert all(i.explanation.startswith("Popular with") for i in popular)
    content = rec.recommend(RecommendRequest(user_id=2, n=5)).items
    titles = {store.movies[m].title for (u, m) in store.ratings if u.value == 2}
    for item in content:
        assert item.explanation.startswith("Because you rated ")
        assert any(f"Because you rated {t} 5.0" == item.explanation for t in titles)
    assert len({i.explanation for i in content + popular}) > 1
    # hybrid: content-based reasons are worked out for the served picks only, but worked out
    # (the model knows 2 movies for user 3: the other picks owe their place to content)
    scorer = scorer_for(store)
    scorer.table[3] = dict(list(scorer.table[3].items())[:2])
    hybrid = recommender(store, scorer)[0].recommend(RecommendRequest(user_id=3, n=10)).items
    assert len(hybrid) == 10
    titles = {store.movies[m].title for (u, m) in store.ratings if u.value == 3}
    assert all(i.explanation != "Recommended (matches genres)" for i in hybrid)
    assert any(
        i.explanation.startswith("Because you rated ")
        and i.explanation.removeprefix("Because you rated ").rsplit(" ", 1)[0] in titles
        for i in hybrid
    )


def test_power_user_list_is_mmr_reranked() -> None:
    store = make_store()
    scorer = scorer_for(store)
    rec, _, _ = recommender(store, scorer)
    diverse = rec.recommend(RecommendRequest(user_id=4, n=10, diversity_lambda=0.3))
    pure = rec.recommend(RecommendRequest(user_id=4, n=10, diversity_lambda=1.0))
    top, _ = scorer.top_k_ids(UserId(4), 10, np.array(sorted(rated_ids(store, 4))))
    assert [i.movie_id for i in pure.items] == top.tolist()
    assert intra_list_similarity(store, diverse) < intra_list_similarity(store, pure)
    assert [i.movie_id for i in diverse.items] != [i.movie_id for i in pure.items]


def test_user_unknown_to_the_model_is_folded_in() -> None:
    store = make_store()
    scorer = scorer_for(store, users=(4,))
    rec, _, _ = recommender(store, scorer)
    result = rec.recommend(RecommendRequest(user_id=3, n=10, strategy="collaborative"))
    assert scorer.fold_ins == 1
    assert {i.source for i in result.items} == {"collaborative_fold_in"}
    assert not {i.movie_id for i in result.items} & rated_ids(store, 3)


def test_without_a_model_collaborative_falls_back_to_content() -> None:
    store = make_store()
    rec, _, _ = recommender(store, None)
    result = rec.recommend(RecommendRequest(user_id=4, n=5))
    assert result.strategy_used == "content_based"
    assert result.fallback and "no model" in result.fallback
    assert result.model_version is None


def test_cold_start_asking_for_collaborative_gets_popular() -> None:
    store = make_store()
    rec, _, _ = recommender(store, scorer_for(store))
    result = rec.recommend(RecommendRequest(user_id=1, n=3, strategy="collaborative"))
    assert result.strategy_used == "popular"
    assert result.fallback is not None


def test_cache_hit_refresh_and_invalidation_on_rating() -> None:
    store = make_store()
    rec, _, cache = recommender(store, scorer_for(store))
    first = rec.recommend(RecommendRequest(user_id=3, n=10))
    again = rec.recommend(RecommendRequest(user_id=3, n=10))
    assert not first.cached and again.cached
    assert [i.movie_id for i in again.items] == [i.movie_id for i in first.items]
    assert not rec.recommend(RecommendRequest(user_id=3, n=10, force_refresh=True)).cached

    # the real table; the service's own collaborators are not part of this test
    events = message_bus({"cache": cache, "metrics": None, "history": None, "last_served": None})
    top = first.items[0].movie_id
    rate_movie(RateMovie(3, top, 4.5), FakeUoW(store), events)
    after = rec.recommend(RecommendRequest(user_id=3, n=10))
    assert not after.cached
    assert top not in {i.movie_id for i in after.items}


def test_result_json_round_trip() -> None:
    store = make_store()
    rec, _, _ = recommender(store, scorer_for(store))
    result = rec.recommend(RecommendRequest(user_id=4, n=4))
    back = RecommendationResult.from_json(result.to_json())
    assert back.cached and back.items == result.items and back.strategy_used == result.strategy_used


def test_unknown_user_and_bad_requests() -> None:
    store = make_store()
    rec, _, _ = recommender(store, scorer_for(store))
    with pytest.raises(UserNotFound):
        rec.recommend(RecommendRequest(user_id=999))
    for bad in (
        dict(user_id=0),
        dict(user_id=1, n=0),
        dict(user_id=1, n=101),
        dict(user_id=1, n=True),
        dict(user_id=1, strategy="magic"),
        dict(user_id=1, diversity_lambda=1.5),
    ):
        with pytest.raises(InvalidValue):
            RecommendRequest(**bad)  # type: ignore[arg-type]


def test_rate_movie_updates_statistics_and_publishes() -> None:
    store = make_store()
    bus = RecordingBus()
    out = rate_movie(RateMovie(1, 5, 4.0), FakeUoW(store), bus)
    assert out.previous_score is None
    assert out.user.n_ratings == 1 and out.classification.value == "new"
    movie = store.movies[MovieId(5)]
    before = (movie.rating_count, movie.avg_rating)
    again = rate_movie(RateMovie(1, 5, 2.0), FakeUoW(store), bus)
    assert again.previous_score == RatingScore(4.0)
    assert again.user.n_ratings == 1 and again.user.avg_rating == pytest.approx(2.0)
    assert movie.rating_count == before[0]
    assert movie.avg_rating == pytest.approx(before[1] - 2.0 / before[0])
    assert [type(e) for e in bus.events] == [MovieRated, MovieRated]


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (RateMovie(999, 5, 4.0), UserNotFound),
        (RateMovie(1, 9999, 4.0), MovieNotFound),
        (RateMovie(1, 5, 4.2), InvalidValue),
        (RateMovie(1, 5, 0.0), InvalidValue),
        (RateMovie(-1, 5, 4.0), InvalidValue),
    ],
)
def test_rate_movie_rejects_bad_input_and_writes_nothing(
    command: RateMovie, error: type[Exception]
) -> None:
    store = make_store()
    bus = RecordingBus()
    n_ratings = len(store.ratings)
    with pytest.raises(error):
        rate_movie(command, FakeUoW(store), bus)
    assert len(store.ratings) == n_ratings and not bus.events


def test_register_then_profile() -> None:
    store = make_store()
    bus = RecordingBus()
    user = register_user(FakeUoW(store), bus)
    assert user.id == UserId(5) and isinstance(bus.events[0], UserRegistered)
    profile = get_profile(4, FakeUoW(store), recent=5)
    assert profile.classification.value == "power_user"
    assert profile.cf_weight == 1.0 and profile.cb_weight == 0.0
    assert len(profile.recent_ratings) == 5
    stamps = [r.timestamp for r in profile.recent_ratings]
    assert stamps == sorted(stamps, reverse=True)
    with pytest.raises(UserNotFound):
        get_profile(77, FakeUoW(store))
