"""Domain services: strategy choice, merging, popularity, content-based, diversity, MMR, explain."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from recolab.domain import (
    Candidate,
    InvalidValue,
    Movie,
    MovieId,
    Rating,
    RatingScore,
    Reason,
    ReasonKind,
    Source,
    Strategy,
    StrategyWeights,
    Timestamp,
    UserClassification,
    UserId,
    content_based_scores,
    diversity_score,
    explain,
    favorite_genres,
    hybrid_merge,
    mmr_rerank,
    normalize_scores,
    popularity_ranking,
    select_strategy,
    strategy_weights,
)
from recolab.domain.services import (
    UNEXPLAINED,
    GenreIndex,
    content_anchors,
    content_reason,
    genre_profile,
    genre_similarity,
)

CF = Source.COLLABORATIVE
CB = Source.CONTENT_BASED
CF_REASON = Reason(ReasonKind.SIMILAR_USERS, predicted_rating=4.2)
CB_REASON = Reason(ReasonKind.MATCHES_GENRES, genres=("Drama",))


def _cand(mid: int, score: float, source: Source = CF, reason: Reason = CF_REASON) -> Candidate:
    return Candidate(MovieId(mid), score, source, reason)


def _cb(mid: int, score: float) -> Candidate:
    return Candidate(MovieId(mid), score, CB, CB_REASON)


def _movie(
    mid: int,
    title: str,
    genres: Sequence[str],
    count: int = 0,
    avg: float = 0.0,
    year: int | None = None,
) -> Movie:
    return Movie(MovieId(mid), title, tuple(genres), year=year, rating_count=count, avg_rating=avg)


def _rating(mid: int, stars: float, at: int = 1_700_000_000) -> Rating:
    return Rating(UserId(1), MovieId(mid), RatingScore(stars), Timestamp.from_unix(at))


def _ids(candidates: Sequence[Candidate]) -> list[int]:
    return [c.movie_id.value for c in candidates]


# --- strategy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "strategy"),
    [
        (UserClassification.COLD_START, Strategy.POPULAR),
        (UserClassification.NEW, Strategy.CONTENT_BASED),
        (UserClassification.CASUAL, Strategy.HYBRID),
        (UserClassification.ACTIVE, Strategy.HYBRID),
        (UserClassification.POWER_USER, Strategy.COLLABORATIVE_WITH_DIVERSITY),
    ],
)
def test_select_strategy_per_tier(tier: UserClassification, strategy: Strategy) -> None:
    assert select_strategy(tier) is strategy


@pytest.mark.parametrize(
    ("tier", "weights"),
    [
        (UserClassification.COLD_START, StrategyWeights(content_based=1.0)),
        (UserClassification.NEW, StrategyWeights(content_based=1.0)),
        (UserClassification.CASUAL, StrategyWeights(collaborative=0.6, content_based=0.4)),
        (UserClassification.ACTIVE, StrategyWeights(collaborative=0.8, content_based=0.2)),
        (UserClassification.POWER_USER, StrategyWeights(collaborative=0.7, diversity=0.3)),
    ],
)
def test_strategy_weights_per_tier(tier: UserClassification, weights: StrategyWeights) -> None:
    assert strategy_weights(tier) == weights


# --- normalize_scores -------------------------------------------------------------------


def test_normalize_scores_empty() -> None:
    assert normalize_scores([]) == []


@pytest.mark.parametrize("score", [0.0, -3.0, 7.5])
def test_normalize_scores_equal_scores_become_one(score: float) -> None:
    out = normalize_scores([_cand(1, score), _cand(2, score)])
    assert [c.score for c in out] == [1.0, 1.0]


def test_normalize_scores_min_max_keeps_order_and_fields() -> None:
    given = [_cand(1, 4.0), _cand(2, 2.0), _cb(3, 10.0)]
    out = normalize_scores(given)
    assert [c.score for c in out] == pytest.approx([0.25, 0.0, 1.0])
    assert _ids(out) == [1, 2, 3]
    assert out[2].source is CB
    assert out[2].reason == CB_REASON
    assert given[0].score == 4.0  # inputs are untouched


# --- hybrid_merge -----------------------------------------------------------------------


def _wildly_scaled_lists() -> dict[Source, list[Candidate]]:
    # CF scores are in the hundreds, CB scores in the thousandths.
    return {
        CF: [_cand(1, 1000.0), _cand(2, 0.0), _cand(3, 500.0)],
        CB: [
            _cb(2, 0.01),
            _cb(3, 0.0),
            _cb(4, 0.005),
        ],
    }


def test_hybrid_merge_normalises_each_list_before_weighting() -> None:
    merged = hybrid_merge(_wildly_scaled_lists(), {CF: 0.6, CB: 0.4})
    # normalised CF: 1 -> 1, 2 -> 0, 3 -> 0.5; CB: 2 -> 1, 3 -> 0, 4 -> 0.5
    assert _ids(merged) == [1, 2, 3, 4]
    assert [c.score for c in merged] == pytest.approx([0.6, 0.4, 0.3, 0.2])
    assert all(c.source is Source.HYBRID for c in merged)


def test_hybrid_merge_weights_are_relative() -> None:
    base = hybrid_merge(_wildly_scaled_lists(), {CF: 0.6, CB: 0.4})
    scaled = hybrid_merge(_wildly_scaled_lists(), {CF: 6.0, CB: 4.0, Source.POPULAR: 99.0})
    assert _ids(scaled) == _ids(base)
    assert [c.score for c in scaled] == pytest.approx([c.score for c in base])


def test_hybrid_merge_flips_with_the_weights() -> None:
    merged = hybrid_merge(_wildly_scaled_lists(), {CF: 0.2, CB: 0.8})
    assert _ids(merged)[0] == 2
    assert merged[0].score == pytest.approx(0.8)


def test_hybrid_merge_sums_contributions_of_a_movie_in_both_lists() -> None:
    lists = {
        CF: [_cand(7, 10.0), _cand(8, 0.0)],
        CB: [_cb(7, 5.0), _cb(9, 0.0)],
    }
    merged = hybrid_merge(lists, {CF: 0.6, CB: 0.4})
    assert merged[0].movie_id == MovieId(7)
    assert merged[0].score == pytest.approx(1.0)
    assert sorted(_ids(merged)) == [7, 8, 9]


def test_hybrid_merge_keeps_the_reason_of_the_dominant_source() -> None:
    lists = {
        CF: [_cand(1, 1.0), _cand(2, 0.5), _cand(3, 0.0)],
        CB: [
            _cb(2, 1.0),
            _cb(1, 0.9),
            _cb(4, 0.0),
        ],
    }
    merged = {c.movie_id.value: c for c in hybrid_merge(lists, {CF: 0.6, CB: 0.4})}
    # movie 2: CF 0.6 * 0.5 = 0.3 < CB 0.4 * 1.0 = 0.4 -> content-based reason
    assert merged[2].reason == CB_REASON
    assert merged[2].score == pytest.approx(0.7)
    # movie 1: CF 0.6 * 1.0 = 0.6 > CB 0.4 * 0.9 = 0.36 -> collaborative reason
    assert merged[1].reason == CF_REASON
    assert merged[1].score == pytest.approx(0.96)


def test_hybrid_merge_breaks_ties_by_movie_id() -> None:
    merged = hybrid_merge({CF: [_cand(9, 1.0), _cand(3, 1.0), _cand(5, 1.0)]}, {CF: 1.0})
    assert _ids(merged) == [3, 5, 9]


@pytest.mark.parametrize(
    "weights",
    [
        {CF: 0.0, CB: 0.0},
        {},
        {Source.POPULAR: 1.0},
        {CF: 1.0, CB: -0.5},
        {CF: -1.0, CB: -1.0},
        {CF: float("nan"), CB: 1.0},
        {CF: float("inf"), CB: 1.0},
    ],
)
def test_hybrid_merge_rejects_unusable_weights(weights: dict[Source, float]) -> None:
    with pytest.raises(InvalidValue, match="weight"):
        hybrid_merge(_wildly_scaled_lists(), weights)


def test_hybrid_merge_with_an_empty_list() -> None:
    merged = hybrid_merge({CF: [], CB: [_cb(1, 3.0)]}, {CF: 0.5, CB: 0.5})
    assert _ids(merged) == [1]
    assert 0.0 <= merged[0].score <= 1.0


# --- popularity_ranking -----------------------------------------------------------------

CATALOGUE = [
    _movie(1, "Heat", ["Crime", "Drama"], count=99, avg=4.0),  # 8.0
    _movie(2, "Toy Story", ["Animation"], count=999, avg=4.0),  # 12.0
    _movie(3, "Casino", ["drama"], count=9, avg=4.5),  # 4.5
    _movie(4, "Unseen", ["Drama"], count=0, avg=0.0),
    _movie(5, "Cars", ["Animation", "Comedy"], count=9, avg=3.0),  # 3.0
]


def test_popularity_ranking_orders_by_popularity_and_skips_unrated() -> None:
    ranked = popularity_ranking(CATALOGUE)
    assert _ids(ranked) == [2, 1, 3, 5]
    assert [c.score for c in ranked] == pytest.approx([12.0, 8.0, 4.5, 3.0])
    assert all(c.source is Source.POPULAR for c in ranked)
    assert [explain(c.reason) for c in ranked][:2] == [
        "Popular with 999 ratings",
        "Popular with 99 ratings",
    ]


def test_popularity_ranking_excludes_and_limits() -> None:
    ranked = popularity_ranking(CATALOGUE, exclude={MovieId(2)}, limit=2)
    assert _ids(ranked) == [1, 3]
    assert popularity_ranking(CATALOGUE, limit=0) == []


def test_popularity_ranking_genre_filter_is_case_insensitive() -> None:
    ranked = popularity_ranking(CATALOGUE, genres=["DRAMA"])
    assert _ids(ranked) == [1, 3]
    assert [explain(c.reason) for c in ranked] == ["Popular in Drama", "Popular in drama"]
    comedy = popularity_ranking(CATALOGUE, genres=["comedy", "western"])
    assert _ids(comedy) == [5]
    assert explain(comedy[0].reason) == "Popular in Comedy"
    assert popularity_ranking(CATALOGUE, genres=["Western"]) == []


# --- genre profile, content-based, favourite genres -------------------------------------

GENRES: dict[MovieId, tuple[str, ...]] = {
    MovieId(1): ("Crime", "Thriller"),  # Heat
    MovieId(2): ("Animation", "Children"),  # Toy Story
    MovieId(3): ("Romance", "Comedy"),  # Amelie
    MovieId(4): ("Crime", "Thriller", "Action"),  # Ronin
    MovieId(5): ("Animation", "Children"),  # Cars
    MovieId(6): ("Crime", "Drama"),  # Casino
    MovieId(7): ("Romance", "Comedy"),  # Notting Hill
    MovieId(8): ("Documentary",),  # Baraka
}
TITLES = {
    MovieId(1): "Heat",
    MovieId(2): "Toy Story",
    MovieId(3): "Amelie",
    MovieId(4): "Ronin",
    MovieId(5): "Cars",
    MovieId(6): "Casino",
    MovieId(7): "Notting Hill",
    MovieId(8): "Baraka",
}
MOVIES = [_movie(m.value, TITLES[m], g, count=9, avg=3.0) for m, g in GENRES.items()]


def test_genre_profile_uses_only_positive_ratings_when_there_are_any() -> None:
    profile = genre_profile([_rating(1, 5.0), _rating(2, 2.0), _rating(3, 4.0)], GENRES)
    assert set(profile) == {"crime", "thriller", "romance", "comedy"}
    assert profile["crime"] == pytest.approx(1.0)
    assert profile["romance"] == pytest.approx(3.5 / 4.5)


def test_genre_profile_falls_back_to_all_ratings_and_floors_the_weight() -> None:
    profile = genre_profile([_rating(1, 0.5), _rating(2, 2.0)], GENRES)
    assert profile["crime"] == pytest.approx(0.05)
    assert profile["animation"] == pytest.approx(1.5 / 4.5)
    assert genre_profile([], GENRES) == {}
    assert genre_profile([_rating(99, 5.0)], GENRES) == {}


def test_content_based_excludes_rated_movies_and_favours_matching_genres() -> None:
    ratings = [_rating(1, 5.0), _rating(2, 2.0)]
    out = content_based_scores(ratings, MOVIES, titles=TITLES, genres_of=GENRES)
    ids = _ids(out)
    assert 1 not in ids and 2 not in ids
    # Only the positive rating (Heat) shapes the profile: Cars (like Toy Story) is not scored.
    assert ids == [4, 6]
    assert out[0].score > out[1].score
    assert all(0.0 <= c.score <= 1.0 for c in out)
    assert all(c.source is Source.CONTENT_BASED for c in out)
    assert [explain(c.reason) for c in out] == ["Because you rated Heat 5.0"] * 2


def test_content_based_explanation_names_the_closest_anchor() -> None:
    ratings = [_rating(1, 5.0), _rating(3, 4.0)]
    out = {c.movie_id.value: c for c in content_based_scores(
        ratings, MOVIES, titles=TITLES, genres_of=GENRES
    )}  # fmt: skip
    assert explain(out[7].reason) == "Because you rated Amelie 4.0"
    assert explain(out[4].reason) == "Because you rated Heat 5.0"
    assert 8 not in out  # no shared genre


def test_content_based_falls_back_to_genres_without_an_anchor_title() -> None:
    out = content_based_scores([_rating(1, 4.5)], MOVIES, titles={}, genres_of=GENRES, limit=1)
    assert _ids(out) == [4]
    assert explain(out[0].reason) == "Matches your favourite genres: Crime, Thriller, Action"


def test_content_based_with_only_negative_ratings_uses_them_all() -> None:
    out = content_based_scores([_rating(2, 2.0)], MOVIES, titles=TITLES, genres_of=GENRES)
    assert _ids(out) == [5]
    assert explain(out[0].reason) == "Because you rated Toy Story 2.0"


def test_content_based_popularity_breaks_genre_ties() -> None:
    movies = [
        _movie(20, "Obscure", ["Crime", "Thriller"], count=1, avg=3.0),
        _movie(21, "Famous", ["Crime", "Thriller"], count=9999, avg=4.0),
    ]
    out = content_based_scores([_rating(1, 5.0)], movies, titles=TITLES, genres_of=GENRES)
    assert _ids(out) == [21, 20]
    assert out[0].score == pytest.approx(1.0)
    assert out[1].score < out[0].score


def _reference_content_scores(
    ratings: Sequence[Rating], movies: Sequence[Movie]
) -> list[tuple[int, float]]:
    """The rule written out movie by movie: cosine of genres, popularity nudge, ties by id."""
    profile = genre_profile(ratings, GENRES)
    norm = sum(w * w for w in profile.values()) ** 0.5
    rated = {r.movie_id for r in ratings}
    out = []
    for movie in movies:
        genres = [g.lower() for g in movie.genres]
        dot = sum(profile.get(g, 0.0) for g in genres)
        if movie.id in rated or dot <= 0:
            continue
        cosine = min(1.0, dot / (norm * len(genres) ** 0.5))
        out.append((movie.id.value, cosine * 0.95 + 0.05 * min(1.0, movie.popularity_score() / 15)))
    return sorted(out, key=lambda p: (-p[1], p[0]))


@pytest.mark.parametrize("limit", [None, 0, 1, 2, 3, 50])
def test_content_based_on_a_genre_index_follows_the_rule_with_ties_and_limits(
    limit: int | None,
) -> None:
    movies = [
        *MOVIES,
        _movie(30, "Twin A", ["Crime", "Thriller"], count=10, avg=4.0),
        _movie(31, "Twin B", ["thriller", "crime"], count=10, avg=4.0),
        _movie(32, "No genres", [], count=10, avg=4.0),
    ]
    ratings = [_rating(1, 5.0), _rating(3, 4.0)]
    index = GenreIndex(movies)

    out = content_based_scores(ratings, index, titles=TITLES, genres_of=GENRES, limit=limit)

    expected = _reference_content_scores(ratings, movies)[:limit]
    assert [(c.movie_id.value, pytest.approx(c.score)) for c in out] == expected
    assert out == content_based_scores(
        ratings, movies, titles=TITLES, genres_of=GENRES, limit=limit
    )


def test_content_based_explanations_can_be_deferred_to_the_served_picks() -> None:
    ratings = [_rating(1, 5.0), _rating(3, 4.0)]
    explained = content_based_scores(ratings, MOVIES, titles=TITLES, genres_of=GENRES)
    deferred = content_based_scores(ratings, MOVIES, titles=TITLES, genres_of=GENRES, explain=False)

    assert [(c.movie_id, c.score) for c in deferred] == [(c.movie_id, c.score) for c in explained]
    assert all(c.reason is UNEXPLAINED for c in deferred)
    anchors = content_anchors(ratings, GENRES)
    by_id = {m.id: m for m in MOVIES}
    assert [content_reason(by_id[c.movie_id], anchors, TITLES) for c in deferred] == [
        c.reason for c in explained
    ]


def test_content_based_without_a_profile_returns_nothing() -> None:
    assert content_based_scores([], MOVIES, titles=TITLES, genres_of=GENRES) == []
    assert content_based_scores([_rating(99, 5.0)], MOVIES, titles=TITLES, genres_of=GENRES) == []


def test_favorite_genres_top_three_by_count_then_name_positives_only() -> None:
    genres_of = {
        MovieId(1): ("Drama", "Crime"),
        MovieId(2): ("Drama", "Action"),
        MovieId(3): ("Comedy", "Action"),
        MovieId(4): ("Horror", "Horror2"),
        MovieId(5): ("Western",),
    }
    ratings = [
        _rating(1, 5.0),
        _rating(2, 4.0),
        _rating(3, 4.5),
        _rating(4, 2.0),
        _rating(4, 1.0),
        _rating(5, 3.5),
        _rating(99, 5.0),
    ]
    assert favorite_genres(ratings, genres_of) == ["Action", "Drama", "Comedy"]
    assert favorite_genres(ratings, genres_of, k=1) == ["Action"]
    assert favorite_genres(ratings, genres_of, k=10) == ["Action", "Drama", "Comedy", "Crime"]
    assert favorite_genres([_rating(5, 3.5)], genres_of) == []


# --- diversity --------------------------------------------------------------------------


def test_diversity_of_nothing_and_of_one_movie() -> None:
    assert diversity_score([]) == 0.0
    assert diversity_score([_movie(1, "Heat", ["Crime"], count=99, avg=4.0, year=1995)]) == 0.0


def test_diversity_of_identical_movies_is_low_and_varied_is_higher() -> None:
    same = [_movie(i, "Heat", ["Crime"], count=99, avg=4.0, year=1995) for i in range(1, 6)]
    assert diversity_score(same) == 0.0
    varied = [
        _movie(1, "A", ["Crime"], count=999, avg=4.5, year=1950),
        _movie(2, "B", ["Comedy"], count=9, avg=3.0, year=1975),
        _movie(3, "C", ["Horror"], count=99, avg=2.0, year=2000),
        _movie(4, "D", ["Documentary"], count=0, avg=0.0, year=2020),
    ]
    two_genre_clones = [_movie(i, "X", ["Action", "Drama"], 9, 3.0, 1990) for i in range(1, 5)]
    assert diversity_score(varied) > 0.8
    assert diversity_score(two_genre_clones) < diversity_score(varied)


def test_diversity_components_and_year_span() -> None:
    pair = [
        _movie(1, "Old", ["Western"], count=0, avg=0.0, year=1950),
        _movie(2, "New", ["Drama"], count=99, avg=4.0, year=2000),
    ]
    # evenness 1, popularity spread 2*std/max = 2*4/8 = 1, year range 50/50 = 1
    assert diversity_score(pair) == pytest.approx(1.0)
    assert diversity_score(pair, year_span=100) == pytest.approx(0.5 + 0.3 + 0.1)
    no_years = [_movie(1, "A", ["Western"]), _movie(2, "B", ["Drama"], year=1990)]
    # only the genre part counts: unrated movies have no popularity spread, one year no range
    assert diversity_score(no_years) == pytest.approx(0.5)


# --- MMR --------------------------------------------------------------------------------

MMR_GENRES = {
    MovieId(1): ("Action",),
    MovieId(2): ("Action",),
    MovieId(3): ("Comedy",),
    MovieId(4): ("Action", "Comedy"),
}


def _mmr_pool() -> list[Candidate]:
    return [_cand(1, 0.9), _cand(2, 0.85), _cand(3, 0.3), _cand(4, 0.5)]


def test_mmr_lambda_one_keeps_relevance_order() -> None:
    out = mmr_rerank(_mmr_pool(), genre_similarity(MMR_GENRES), lambda_=1.0)
    assert _ids(out) == [1, 2, 4, 3]


def test_mmr_lambda_zero_picks_dissimilar_items() -> None:
    out = mmr_rerank(_mmr_pool(), genre_similarity(MMR_GENRES), lambda_=0.0, k=2)
    assert _ids(out) == [1, 3]


def test_mmr_default_lambda_trades_relevance_for_diversity() -> None:
    sim = genre_similarity(MMR_GENRES)
    # relevance after min-max: 1 -> 1, 2 -> 11/12, 3 -> 0, 4 -> 1/3. After picking 1 (Action),
    # lambda 0.7: 2 -> 0.7*11/12 - 0.3*1 = 0.34, 4 -> 0.7/3 - 0.3*0.5 = 0.08, 3 -> 0.
    assert _ids(mmr_rerank(_mmr_pool(), sim, k=3)) == [1, 2, 4]
    # lambda 0.5: 2 -> 11/24 - 0.5 < 0, 4 -> 1/6 - 0.25 < 0, 3 -> 0: the comedy jumps ahead.
    assert _ids(mmr_rerank(_mmr_pool(), sim, lambda_=0.5, k=2)) == [1, 3]


def test_mmr_drops_duplicates_and_limits_k() -> None:
    pool = [_cand(1, 0.9), _cand(1, 0.1), _cand(2, 0.5), _cand(2, 0.95)]
    out = mmr_rerank(pool, genre_similarity(MMR_GENRES), lambda_=1.0)
    assert _ids(out) == [1, 2]
    assert out[0].score == 0.9  # first occurrence kept, original score returned
    assert _ids(mmr_rerank(_mmr_pool(), genre_similarity(MMR_GENRES), lambda_=1.0, k=1)) == [1]
    assert mmr_rerank(_mmr_pool(), genre_similarity(MMR_GENRES), k=0) == []
    assert mmr_rerank([], genre_similarity(MMR_GENRES)) == []


@pytest.mark.parametrize("lambda_", [-0.01, 1.01, float("nan")])
def test_mmr_rejects_invalid_lambda(lambda_: float) -> None:
    with pytest.raises(InvalidValue, match="lambda"):
        mmr_rerank(_mmr_pool(), genre_similarity(MMR_GENRES), lambda_=lambda_)


def test_genre_similarity_for_unknown_movies_is_zero() -> None:
    sim = genre_similarity(MMR_GENRES)
    assert sim(MovieId(1), MovieId(2)) == 1.0
    assert sim(MovieId(1), MovieId(4)) == pytest.approx(0.5)
    assert sim(MovieId(1), MovieId(99)) == 0.0


# --- explain ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (
            Reason(ReasonKind.BECAUSE_YOU_RATED, anchor_title="Heat", anchor_score=5.0),
            "Because you rated Heat 5.0",
        ),
        (
            Reason(ReasonKind.BECAUSE_YOU_RATED, anchor_title="Amelie", anchor_score=4.5),
            "Because you rated Amelie 4.5",
        ),
        (Reason(ReasonKind.BECAUSE_YOU_RATED, anchor_title="Heat"), "Because you rated Heat"),
        (Reason(ReasonKind.POPULAR_IN_GENRE, genre="Drama"), "Popular in Drama"),
        (Reason(ReasonKind.POPULAR_IN_GENRE, genre="Film-Noir"), "Popular in Film-Noir"),
        (
            Reason(ReasonKind.MATCHES_GENRES, genres=("Crime", "Drama")),
            "Matches your favourite genres: Crime, Drama",
        ),
        (
            Reason(ReasonKind.SIMILAR_USERS, predicted_rating=4.26),
            "Viewers with tastes like yours rate it highly (predicted 4.3 stars)",
        ),
        (
            Reason(ReasonKind.SIMILAR_USERS, predicted_rating=0.0),
            "Viewers with tastes like yours rate it highly (predicted 0.0 stars)",
        ),
        (Reason(ReasonKind.POPULAR_OVERALL, rating_count=329), "Popular with 329 ratings"),
        # fallbacks when the detail is missing still name the kind of reason
        (Reason(ReasonKind.BECAUSE_YOU_RATED, anchor_score=5.0), "Recommended (because you rated)"),
        (Reason(ReasonKind.POPULAR_IN_GENRE), "Recommended (popular in genre)"),
        (Reason(ReasonKind.MATCHES_GENRES), "Recommended (matches genres)"),
        (Reason(ReasonKind.SIMILAR_USERS), "Recommended (similar users)"),
        (Reason(ReasonKind.POPULAR_OVERALL), "Recommended (popular overall)"),
    ],
)
def test_explain(reason: Reason, text: str) -> None:
    assert explain(reason) == text


def test_explanations_are_never_one_fixed_string() -> None:
    full = [
        Reason(ReasonKind.BECAUSE_YOU_RATED, anchor_title="Heat", anchor_score=5.0),
        Reason(ReasonKind.POPULAR_IN_GENRE, genre="Drama"),
        Reason(ReasonKind.MATCHES_GENRES, genres=("Drama",)),
        Reason(ReasonKind.SIMILAR_USERS, predicted_rating=4.0),
        Reason(ReasonKind.POPULAR_OVERALL, rating_count=10),
    ]
    fallbacks = [Reason(kind) for kind in ReasonKind]
    texts = [explain(r) for r in full + fallbacks]
    assert len(set(texts)) == len(texts)
    assert all(text.strip() for text in texts)
