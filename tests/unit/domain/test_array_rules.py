"""The request path's array forms of the domain rules equal their reference forms."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recolab.domain.model import Movie, RatedMovies, Rating, Source, genre_jaccard
from recolab.domain.services import (
    UNEXPLAINED,
    Candidate,
    CatalogueIndex,
    GenreSimilarity,
    Reason,
    ReasonKind,
    closest_anchors,
    collaborative_anchor_rows,
    collaborative_anchors,
    collaborative_reason,
    content_anchor_rows,
    content_anchors,
    content_based_arrays,
    content_based_scores,
    content_reason,
    hybrid_merge,
    hybrid_merge_arrays,
    mmr_order,
    mmr_rerank,
    normalize_scores,
    normalized,
    popular_arrays,
    popularity_ranking,
)
from recolab.domain.values import RATING_VALUES, MovieId, RatingScore, Timestamp, UserId

GENRES = ["Action", "drama", "Drama", "Comedy", "Sci-Fi", "Horror", "Film-Noir"]


@st.composite
def catalogues(draw: st.DrawFn) -> list[Movie]:
    ids = draw(st.lists(st.integers(1, 60), min_size=1, max_size=25, unique=True))
    return [
        Movie(
            MovieId(i),
            f"Movie {i}",
            tuple(draw(st.lists(st.sampled_from(GENRES), max_size=3))),
            rating_count=(count := draw(st.integers(0, 50))),
            avg_rating=draw(st.sampled_from(RATING_VALUES)) if count else 0.0,
        )
        for i in ids
    ]


@st.composite
def histories(draw: st.DrawFn) -> list[Rating]:
    """A user's ratings, most recent first (ties by id), some of movies not in any catalogue."""
    ids = draw(st.lists(st.integers(1, 70), max_size=20, unique=True))
    rows = [(i, draw(st.sampled_from(RATING_VALUES)), draw(st.integers(0, 5))) for i in ids]
    rows.sort(key=lambda r: (-r[2], r[0]))
    return [
        Rating(UserId(1), MovieId(i), RatingScore(s), Timestamp.from_unix(t)) for i, s, t in rows
    ]


def genres_of(movies: list[Movie]) -> dict[MovieId, tuple[str, ...]]:
    return {m.id: m.genres for m in movies}


@settings(max_examples=200, deadline=None)
@given(catalogues(), histories(), st.sampled_from([None, 1, 3, 10]))
def test_content_based_on_arrays_equals_the_reference(
    movies: list[Movie], ratings: list[Rating], limit: int | None
) -> None:
    index = CatalogueIndex(movies)
    titles = {m.id: m.title for m in movies}
    reference = content_based_scores(
        ratings, index, titles=titles, genres_of=genres_of(movies), limit=limit, explain=False
    )
    positions, scores = content_based_arrays(index, RatedMovies.from_ratings(ratings), limit)
    assert [index.movies[p].id for p in positions.tolist()] == [c.movie_id for c in reference]
    assert scores.tolist() == [c.score for c in reference]  # to the last bit


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 30), st.floats(0, 1)), max_size=15),
    st.lists(st.tuples(st.integers(1, 30), st.floats(0, 1)), max_size=15),
    st.floats(0, 1),
    st.floats(0.01, 1),
    st.sampled_from([None, 1, 5]),
)
def test_hybrid_merge_on_arrays_equals_the_reference(
    cf: list[tuple[int, float]],
    cb: list[tuple[int, float]],
    cf_w: float,
    cb_w: float,
    limit: int | None,
) -> None:
    cf = list(dict(cf).items())  # a source lists a movie once
    cb = list(dict(cb).items())
    later = Reason(ReasonKind.SIMILAR_USERS)
    reference = hybrid_merge(
        {
            Source.COLLABORATIVE: [
                Candidate(MovieId(m), s, Source.COLLABORATIVE, later) for m, s in cf
            ],
            Source.CONTENT_BASED: [
                Candidate(MovieId(m), s, Source.CONTENT_BASED, UNEXPLAINED) for m, s in cb
            ],
        },
        {Source.COLLABORATIVE: cf_w, Source.CONTENT_BASED: cb_w},
        limit=limit,
    )
    ids, scores, dominant = hybrid_merge_arrays(
        [
            (np.array([m for m, _ in cf], dtype=np.int64), np.array([s for _, s in cf])),
            (np.array([m for m, _ in cb], dtype=np.int64), np.array([s for _, s in cb])),
        ],
        [cf_w, cb_w],
        limit=limit,
    )
    assert ids.tolist() == [c.movie_id.value for c in reference]
    assert scores.tolist() == [c.score for c in reference]
    assert [later if d == 0 else UNEXPLAINED for d in dominant.tolist()] == [
        c.reason for c in reference
    ]


@settings(max_examples=200, deadline=None)
@given(catalogues(), st.lists(st.integers(1, 60), max_size=10, unique=True), st.integers(1, 8))
def test_popular_on_arrays_equals_the_reference(
    movies: list[Movie], rated: list[int], n: int
) -> None:
    index = CatalogueIndex(movies)
    by_popularity = sorted(movies, key=lambda m: (-m.popularity_score(), m.id.value))
    exclude = {MovieId(m) for m in rated}
    reference = normalize_scores(
        popularity_ranking(by_popularity[: n + len(rated)], exclude=exclude, limit=n)
    )
    positions, popularity = popular_arrays(index, np.array(rated, dtype=np.int64), n)
    assert [index.movies[p].id for p in positions.tolist()] == [c.movie_id for c in reference]
    assert normalized(popularity).tolist() == [c.score for c in reference]


@settings(max_examples=100, deadline=None)
@given(catalogues(), st.lists(st.integers(-1, 30), max_size=8))
def test_jaccard_on_arrays_equals_pairwise_genre_jaccard(
    movies: list[Movie], picks: list[int]
) -> None:
    index = CatalogueIndex(movies)
    rows = np.array([p if p < len(movies) else -1 for p in picks], dtype=np.int64)
    every = np.arange(len(movies))
    matrix = index.jaccard(rows, every)
    for i, p in enumerate(rows.tolist()):
        mine = movies[p].genres if p >= 0 else ()
        assert matrix[i].tolist() == [genre_jaccard(mine, m.genres) for m in movies]
    for j in range(len(movies)):
        assert index.jaccard_to(every, j).tolist() == index.jaccard(every, every)[:, j].tolist()


@settings(max_examples=200, deadline=None)
@given(
    catalogues(),
    st.lists(st.floats(0, 1), min_size=1, max_size=25),
    st.floats(0, 1),
    st.integers(1, 12),
)
def test_mmr_on_arrays_picks_what_the_reference_picks(
    movies: list[Movie], scores: list[float], lambda_: float, k: int
) -> None:
    index = CatalogueIndex(movies)
    pool = list(range(min(len(movies), len(scores))))
    candidates = [
        Candidate(movies[p].id, scores[p], Source.COLLABORATIVE, UNEXPLAINED) for p in pool
    ]

    class Pairwise:  # the reference's pairwise calls: no `matrix` shortcut
        def __init__(self) -> None:
            self.similarity = GenreSimilarity(genres_of(movies))

        def __call__(self, a: MovieId, b: MovieId) -> float:
            return self.similarity(a, b)

    reference = mmr_rerank(candidates, Pairwise(), lambda_=lambda_, k=k)
    positions = np.array(pool, dtype=np.int64)
    order = mmr_order(
        np.array(scores[: len(pool)]),
        lambda j: index.jaccard_to(positions, int(positions[j])),
        lambda_=lambda_,
        k=k,
    )
    assert [movies[pool[i]].id for i in order] == [c.movie_id for c in reference]


@settings(max_examples=200, deadline=None)
@given(catalogues(), histories(), st.lists(st.integers(0, 30), min_size=1, max_size=10))
def test_explanations_on_arrays_name_the_reference_anchor(
    movies: list[Movie], ratings: list[Rating], picks: list[int]
) -> None:
    index = CatalogueIndex(movies)
    rated = RatedMovies.from_ratings(ratings)
    titles = {r.movie_id: m.title for r in ratings if (m := _find(movies, r.movie_id))}
    positions = np.array([p % len(movies) for p in picks], dtype=np.int64)
    for rows_of, anchors_of in (
        (content_anchor_rows, content_anchors),
        (collaborative_anchor_rows, collaborative_anchors),
    ):
        anchors = anchors_of(ratings, genres_of(movies))
        rows = rows_of(rated)
        assert rated.movie_ids[rows].tolist() == [r.movie_id.value for r, _ in anchors]
        best = closest_anchors(index.jaccard(positions, index.locate(rated.movie_ids[rows])))
        for p, found in zip(positions.tolist(), best.tolist(), strict=True):
            movie = movies[p]
            if anchors_of is content_anchors:
                expected = content_reason(movie, anchors, titles)
            else:
                expected = collaborative_reason(
                    frozenset(g.lower() for g in movie.genres), anchors, titles
                )
            if found < 0:
                assert expected.kind is not ReasonKind.BECAUSE_YOU_RATED
            else:
                assert expected.kind is ReasonKind.BECAUSE_YOU_RATED
                assert expected.anchor_title == titles[MovieId(int(rated.movie_ids[rows[found]]))]
                assert expected.anchor_score == float(rated.scores[rows[found]])


def _find(movies: list[Movie], movie_id: MovieId) -> Movie | None:
    return next((m for m in movies if m.id == movie_id), None)


@given(histories())
def test_rated_movies_follow_the_rating_rules(ratings: list[Rating]) -> None:
    rated = RatedMovies.from_ratings(ratings)
    assert rated.positive().tolist() == [r.is_positive() for r in ratings]
    assert rated.normalized().tolist() == [r.normalized_score() for r in ratings]
    assert rated.to_ratings(UserId(1)) == ratings
    index = CatalogueIndex([])
    assert index.locate(rated.movie_ids).tolist() == [-1] * len(ratings)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["Action", "Drama", "Comedy"]), max_size=3),
            st.integers(0, 40),
            st.sampled_from(RATING_VALUES),
        ),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    st.lists(st.integers(0, 39), max_size=15),
    st.integers(1, 45),
)
def test_content_scores_reach_only_the_genre_sets_that_can_make_the_cut(
    rows: list[tuple[list[str], int, float]],
    weights: list[float],
    exclude: list[int],
    limit: int,
) -> None:
    # Few genre sets and many movies per set, ties in popularity: the cut by genre set
    # must give the first `limit` of the whole ranking, to the last bit and tie order.
    movies = [
        Movie(
            MovieId(i + 1),
            f"Movie {i}",
            tuple(genres),
            rating_count=count,
            avg_rating=avg if count else 0.0,
        )
        for i, (genres, count, avg) in enumerate(rows)
    ]
    index = CatalogueIndex(movies)
    profile = np.zeros(len(index.vocabulary))
    named = dict(zip(["action", "drama", "comedy"], weights, strict=True))
    for genre, column in index.vocabulary.items():
        profile[column] = named.get(genre, 0.0)  # a movie without genres reads "unknown"
    norm = float(np.sqrt((np.asarray(weights) ** 2).sum()))
    skip = np.asarray([p for p in exclude if p < len(movies)], dtype=np.int64)
    everything = index.content_scores(profile, norm, skip, None)
    positions, scores = index.content_scores(profile, norm, skip, limit)
    assert positions.tolist() == everything[0][:limit].tolist()
    assert scores.tolist() == everything[1][:limit].tolist()
    assert not set(positions.tolist()) & set(skip.tolist())
