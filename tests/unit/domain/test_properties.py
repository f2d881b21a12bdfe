"""Property tests (hypothesis) for the domain invariants."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from recolab.domain import (
    Candidate,
    Movie,
    MovieId,
    Rating,
    RatingScore,
    Reason,
    ReasonKind,
    Source,
    Timestamp,
    User,
    UserId,
    content_based_scores,
    diversity_score,
    hybrid_merge,
    mmr_rerank,
    normalize_scores,
)
from recolab.domain.services import genre_similarity

# Shared CI machines are slow and noisy: no per-example deadline.
relaxed = settings(deadline=None, max_examples=100)

GENRE_NAMES = ["Action", "comedy", "Drama", "Horror", "Sci-Fi", "Romance", "Unknown"]
REASON = Reason(ReasonKind.SIMILAR_USERS, predicted_rating=4.0)

movie_ids = st.integers(min_value=1, max_value=40).map(MovieId)
# Decimal-like scores: distinct raw scores stay distinct after min-max scaling.
coarse_scores = st.integers(min_value=-1000, max_value=1000).map(lambda i: i / 10)
wide_scores = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
stars = st.integers(min_value=1, max_value=10).map(lambda i: RatingScore(i / 2))
genre_lists = st.lists(st.sampled_from(GENRE_NAMES), max_size=4)


def candidates(
    scores: st.SearchStrategy[float] = coarse_scores,
) -> st.SearchStrategy[list[Candidate]]:
    return st.lists(
        st.builds(Candidate, movie_ids, scores, st.just(Source.COLLABORATIVE), st.just(REASON)),
        max_size=25,
    )


genre_maps = st.dictionaries(movie_ids, genre_lists.map(tuple), max_size=40)


@st.composite
def movies(draw: st.DrawFn, mid: int) -> Movie:
    count = draw(st.integers(min_value=0, max_value=100_000))
    avg = 0.0 if count == 0 else draw(st.floats(min_value=0.5, max_value=5.0))
    year = draw(st.none() | st.integers(min_value=1890, max_value=2030))
    return Movie(MovieId(mid), f"Movie {mid}", tuple(draw(genre_lists)), year, count, avg)


@st.composite
def movie_lists(draw: st.DrawFn, max_size: int = 20) -> list[Movie]:
    n = draw(st.integers(min_value=0, max_value=max_size))
    return [draw(movies(i)) for i in range(1, n + 1)]


def _distinct(pool: list[Candidate]) -> list[Candidate]:
    seen: set[MovieId] = set()
    out = []
    for cand in pool:
        if cand.movie_id not in seen:
            seen.add(cand.movie_id)
            out.append(cand)
    return out


@relaxed
@given(
    candidates(),
    genre_maps,
    st.floats(min_value=0.0, max_value=1.0),
    st.none() | st.integers(min_value=0, max_value=30),
)
def test_mmr_returns_a_duplicate_free_subset_of_the_right_length(
    pool: list[Candidate], genres: dict[MovieId, tuple[str, ...]], lambda_: float, k: int | None
) -> None:
    out = mmr_rerank(pool, genre_similarity(genres), lambda_=lambda_, k=k)
    distinct = _distinct(pool)
    ids = [c.movie_id for c in out]
    assert len(ids) == len(set(ids))
    assert all(c in distinct for c in out)
    assert len(out) == (len(distinct) if k is None else min(k, len(distinct)))


@relaxed
@given(
    candidates(),
    genre_maps,
    st.floats(min_value=0.0, max_value=1.0),
    st.none() | st.integers(min_value=0, max_value=30),
)
def test_mmr_over_a_similarity_matrix_picks_exactly_what_pairwise_calls_pick(
    pool: list[Candidate], genres: dict[MovieId, tuple[str, ...]], lambda_: float, k: int | None
) -> None:
    similarity = genre_similarity(genres)

    def pairwise(a: MovieId, b: MovieId) -> float:  # no `matrix`: the one-pair-at-a-time path
        return similarity(a, b)

    assert mmr_rerank(pool, similarity, lambda_=lambda_, k=k) == mmr_rerank(
        pool, pairwise, lambda_=lambda_, k=k
    )


@relaxed
@given(candidates(), genre_maps)
def test_mmr_with_lambda_one_keeps_relevance_order(
    pool: list[Candidate], genres: dict[MovieId, tuple[str, ...]]
) -> None:
    out = mmr_rerank(pool, genre_similarity(genres), lambda_=1.0)
    # sorted() is stable: equal scores keep input order, as MMR promises.
    assert out == sorted(_distinct(pool), key=lambda c: -c.score)


@relaxed
@given(movie_lists(), st.integers(min_value=1, max_value=200))
def test_diversity_is_in_unit_interval(movie_list: list[Movie], year_span: int) -> None:
    assert 0.0 <= diversity_score(movie_list, year_span=year_span) <= 1.0


@relaxed
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=15), stars), max_size=200))
def test_incremental_means_with_re_ratings_equal_a_recount(
    operations: list[tuple[int, RatingScore]],
) -> None:
    user = User(UserId(1))
    movie = Movie(MovieId(1), "Heat")
    current: dict[int, RatingScore] = {}  # movie -> the user's score
    movie_scores: dict[int, RatingScore] = {}  # other user -> their score of `movie`
    for key, score in operations:
        user.record_rating(score, previous=current.get(key))
        movie.add_rating(score, previous=movie_scores.get(key))
        current[key] = score
        movie_scores[key] = score
    expected = statistics.fmean(s.value for s in current.values()) if current else 0.0
    assert user.n_ratings == movie.rating_count == len(current)
    assert abs(user.avg_rating - expected) <= 1e-9
    assert abs(movie.avg_rating - expected) <= 1e-9


@relaxed
@given(candidates(wide_scores))
def test_normalised_scores_are_in_unit_interval(pool: list[Candidate]) -> None:
    out = normalize_scores(pool)
    assert len(out) == len(pool)
    assert all(0.0 <= c.score <= 1.0 for c in out)
    assert [c.movie_id for c in out] == [c.movie_id for c in pool]
    if out:
        assert max(c.score for c in out) == 1.0


@relaxed
@given(
    candidates(wide_scores),
    candidates(wide_scores),
    st.floats(min_value=0.0, max_value=10.0),
    st.floats(min_value=0.0, max_value=10.0),
)
def test_hybrid_merge_scores_are_in_unit_interval(
    cf: list[Candidate], cb: list[Candidate], w_cf: float, w_cb: float
) -> None:
    assume(w_cf + w_cb > 0)
    lists = {Source.COLLABORATIVE: cf, Source.CONTENT_BASED: cb}
    merged = hybrid_merge(lists, {Source.COLLABORATIVE: w_cf, Source.CONTENT_BASED: w_cb})
    assert all(0.0 <= c.score <= 1.0 for c in merged)
    assert {c.movie_id for c in merged} == {c.movie_id for c in cf + cb}
    assert [c.score for c in merged] == sorted((c.score for c in merged), reverse=True)


@relaxed
@given(movie_lists(30), st.data())
def test_content_based_never_returns_a_rated_movie(
    catalogue: list[Movie], data: st.DataObject
) -> None:
    assume(catalogue)
    rated_movies = data.draw(st.lists(st.sampled_from(catalogue), max_size=10, unique=True))
    ratings = [
        Rating(UserId(1), m.id, data.draw(stars), Timestamp.from_unix(1_700_000_000 + i))
        for i, m in enumerate(rated_movies)
    ]
    out = content_based_scores(
        ratings,
        catalogue,
        titles={m.id: m.title for m in catalogue},
        genres_of={m.id: m.genres for m in catalogue},
    )
    rated = {m.id for m in rated_movies}
    assert not rated & {c.movie_id for c in out}
    assert all(0.0 <= c.score <= 1.0 for c in out)


@relaxed
@given(
    st.dictionaries(
        st.builds(MovieId, st.integers(min_value=1, max_value=40)),
        st.lists(st.sampled_from([f"G{i}" for i in range(150)] + ["g1", "Drama"]), max_size=12),
        max_size=25,
    )
)
def test_genre_similarity_matrix_equals_pairwise_jaccard_over_any_number_of_genres(
    genres: dict[MovieId, list[str]],
) -> None:
    ids = [*genres, MovieId(999)]  # 999: a movie without genres
    pairwise = genre_similarity(genres)
    matrix = genre_similarity(genres).matrix(ids)
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            assert matrix[i, j] == pytest.approx(pairwise(a, b), abs=1e-12)


def _merge_reference(
    lists: dict[Source, list[Candidate]], weights: dict[Source, float]
) -> list[Candidate]:
    """hybrid_merge written the plain way: normalise, weight, sum, keep the best reason."""
    total = sum(weights.get(source, 0.0) for source in lists)
    scores: dict[MovieId, float] = {}
    best: dict[MovieId, tuple[float, Candidate]] = {}
    for source, cands in lists.items():
        for cand in normalize_scores(cands):
            part = weights.get(source, 0.0) / total * cand.score
            scores[cand.movie_id] = scores.get(cand.movie_id, 0.0) + part
            if cand.movie_id not in best or part > best[cand.movie_id][0]:
                best[cand.movie_id] = (part, cand)
    merged = [
        Candidate(mid, min(1.0, score), Source.HYBRID, best[mid][1].reason)
        for mid, score in scores.items()
    ]
    return sorted(merged, key=lambda c: (-c.score, c.movie_id.value))


REASONS = [REASON, Reason(ReasonKind.MATCHES_GENRES), Reason(ReasonKind.POPULAR_OVERALL)]


@relaxed
@given(
    st.lists(st.tuples(movie_ids, coarse_scores, st.sampled_from(REASONS)), max_size=25),
    st.lists(st.tuples(movie_ids, coarse_scores, st.sampled_from(REASONS)), max_size=25),
    st.floats(min_value=0.0, max_value=10.0),
    st.floats(min_value=0.0, max_value=10.0),
    st.none() | st.integers(min_value=0, max_value=30),
)
def test_hybrid_merge_equals_the_plain_formulation(
    cf_rows: list[tuple[MovieId, float, Reason]],
    cb_rows: list[tuple[MovieId, float, Reason]],
    w_cf: float,
    w_cb: float,
    limit: int | None,
) -> None:
    assume(w_cf + w_cb > 0)
    lists = {
        Source.COLLABORATIVE: [Candidate(m, s, Source.COLLABORATIVE, r) for m, s, r in cf_rows],
        Source.CONTENT_BASED: [Candidate(m, s, Source.CONTENT_BASED, r) for m, s, r in cb_rows],
    }
    weights = {Source.COLLABORATIVE: w_cf, Source.CONTENT_BASED: w_cb}
    expected = _merge_reference(lists, weights)
    assert hybrid_merge(lists, weights, limit) == (expected if limit is None else expected[:limit])
