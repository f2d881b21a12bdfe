"""The catalogue as arrays: built once per catalogue version, read by every recommendation.

A request then costs work proportional to its shortlist: ids map to row positions with
one `searchsorted`, genre sets are rows of a boolean matrix (Jaccard of a whole shortlist
in one matrix product), content-based scores are one matrix-vector product.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from recolab.domain.model import Movie
from recolab.domain.values import MovieId

# Weight of popularity in a content-based score (it breaks near-ties between genre matches).
CONTENT_POPULARITY_WEIGHT = 0.05
# Popularity score at which the content-based popularity term is full.
CONTENT_POPULARITY_FULL_AT = 15.0


class CatalogueIndex:
    """A catalogue's ids, genres and popularity as arrays, in the order of its movies.

    Genre names are compared lower-cased. Popularity is taken when the index is built,
    like the catalogue it comes from; rebuild it when the catalogue changes.
    """

    def __init__(self, movies: Iterable[Movie]) -> None:
        self.movies: tuple[Movie, ...] = tuple(movies)
        n = len(self.movies)
        self.positions: dict[MovieId, int] = {m.id: i for i, m in enumerate(self.movies)}
        self.ids = np.array([m.id.value for m in self.movies], dtype=np.int64)
        self._sorter = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._sorter]
        self.vocabulary: dict[str, int] = {}
        cols: list[int] = []
        lengths = np.zeros(n, dtype=np.int64)
        for i, movie in enumerate(self.movies):
            lengths[i] = len(movie.genres)
            for genre in movie.genres:
                cols.append(self.vocabulary.setdefault(genre.lower(), len(self.vocabulary)))
        # Each movie's genre columns, in its genres' order (CSR: genre_ptr[i]:genre_ptr[i+1]).
        self.genre_cols = np.asarray(cols, dtype=np.int64)
        self.genre_ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        self.counts = np.zeros((n, len(self.vocabulary)))
        np.add.at(self.counts, (rows, self.genre_cols), 1)
        # Genre sets as bit masks, 64 genres a word (a movie's genres are distinct
        # case-insensitively): Jaccard by bit counts, exact and without BLAS.
        n_words = max(1, (len(self.vocabulary) + 63) // 64)
        self.masks = np.zeros((n, n_words), dtype=np.uint64)
        bits = np.left_shift(np.uint64(1), (self.genre_cols % 64).astype(np.uint64))
        np.bitwise_or.at(self.masks, (rows, self.genre_cols // 64), bits)
        self.sizes = np.bitwise_count(self.masks).sum(axis=1, dtype=np.int64)
        with np.errstate(divide="ignore"):
            self.inv_sqrt_length = np.where(lengths > 0, 1.0 / np.sqrt(lengths), 0.0)
        self.popularity = np.array([m.popularity_score() for m in self.movies], dtype=np.float64)
        self.popularity_term = np.array(
            [
                CONTENT_POPULARITY_WEIGHT * min(1.0, p / CONTENT_POPULARITY_FULL_AT)
                for p in self.popularity.tolist()
            ],
            dtype=np.float64,
        )
        self.rating_count = np.array([m.rating_count for m in self.movies], dtype=np.int64)
        self._group_by_genre_set(n)
        # Rated movies, most popular first, ties by id (`popularity_ranking`'s order).
        ranked = np.lexsort((self.ids, -self.popularity))
        self.popular = ranked[self.rating_count[ranked] > 0]

    def _group_by_genre_set(self, n: int) -> None:
        """Movies grouped by genre set: a profile's cosine is one figure per set, so the
        content rule works per set and reaches only the sets that can make the cut.

        `set_of[i]` is movie i's set; `set_members[set_ptr[s]:set_ptr[s + 1]]` the movies of
        set s; `set_counts`, `set_inv_sqrt_length` their (shared) genre row and 1/sqrt(len);
        `set_best_popularity` the largest popularity term among them.
        """
        if n == 0:
            self.set_of = np.zeros(0, dtype=np.int64)
            self.set_counts = np.zeros((0, len(self.vocabulary)))
            self.set_inv_sqrt_length = self.set_best_popularity = np.zeros(0)
            self.set_members = np.zeros(0, dtype=np.int64)
            self.set_ptr = np.zeros(1, dtype=np.int64)
            return
        _, first, inverse = np.unique(self.masks, axis=0, return_index=True, return_inverse=True)
        self.set_of = inverse.reshape(-1).astype(np.int64)
        self.set_counts = np.ascontiguousarray(self.counts[first])
        self.set_inv_sqrt_length = self.inv_sqrt_length[first]
        sizes = np.bincount(self.set_of, minlength=len(first))
        self.set_members = np.lexsort((-self.popularity_term, self.set_of)).astype(np.int64)
        self.set_ptr = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.set_best_popularity = self.popularity_term[self.set_members[self.set_ptr[:-1]]]

    def __len__(self) -> int:
        return len(self.movies)

    def locate(self, movie_ids: np.ndarray) -> np.ndarray:
        """The row of each movie id, -1 for ids not in the catalogue."""
        ids = np.asarray(movie_ids, dtype=np.int64)
        if self._sorted.size == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        at = np.searchsorted(self._sorted, ids).clip(max=self._sorted.size - 1)
        return np.where(self._sorted[at] == ids, self._sorter[at], -1).astype(np.int64)

    def genre_columns(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(genre column, index into `positions`) of every genre of the movies at
        `positions`, in their order and each movie's genres' order."""
        starts = self.genre_ptr[positions]
        lengths = self.genre_ptr[positions + 1] - starts
        owner = np.repeat(np.arange(len(positions), dtype=np.int64), lengths)
        offsets = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(lengths) - lengths, lengths
        )
        return self.genre_cols[starts[owner] + offsets], owner

    def jaccard(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Genre Jaccard (case-insensitive) of the movies at `rows` against those at `cols`,
        in one pass of bit counts; a position of -1 (not in the catalogue) has no genres."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        if not len(self):
            return np.zeros((len(rows), len(cols)))
        a = np.where((rows >= 0)[:, None], self.masks[rows.clip(min=0)], np.uint64(0))
        b = np.where((cols >= 0)[:, None], self.masks[cols.clip(min=0)], np.uint64(0))
        shared = np.zeros((len(rows), len(cols)), dtype=np.int64)
        for w in range(a.shape[1]):
            shared += np.bitwise_count(a[:, w, None] & b[None, :, w])
        size_a = np.where(rows >= 0, self.sizes[rows.clip(min=0)], 0)
        size_b = np.where(cols >= 0, self.sizes[cols.clip(min=0)], 0)
        union = size_a[:, None] + size_b[None, :] - shared
        out: np.ndarray = np.divide(
            shared, union, out=np.zeros(shared.shape), where=union > 0, dtype=np.float64
        )
        return out

    def jaccard_to(self, rows: np.ndarray, position: int) -> np.ndarray:
        """Genre Jaccard of the movies at `rows` (all in the catalogue) against the one at
        `position`: one column of `jaccard`, for MMR, which needs only its picks' columns."""
        shared = np.bitwise_count(self.masks[rows] & self.masks[position]).sum(
            axis=1, dtype=np.int64
        )
        union = self.sizes[rows] + self.sizes[position] - shared
        out: np.ndarray = np.divide(
            shared, union, out=np.zeros(len(rows)), where=union > 0, dtype=np.float64
        )
        return out

    def profile_weights(self, profile: Mapping[str, float]) -> tuple[np.ndarray, float]:
        """A genre profile (lower-cased genre -> weight) as a weight per genre column, and
        its Euclidean norm (over all its genres, known to the catalogue or not)."""
        weights = np.zeros(len(self.vocabulary))
        for genre, weight in profile.items():
            if (column := self.vocabulary.get(genre)) is not None:
                weights[column] = weight
        return weights, math.sqrt(sum(w * w for w in profile.values()))

    def content_scores(
        self, weights: np.ndarray, norm: float, exclude: np.ndarray, limit: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores), best first (ties by id), of the movies sharing a genre with
        the profile `weights`, except the positions in `exclude`: the content-based rule,
        0.95 * min(1, cosine) + 0.05 * min(1, popularity / 15)."""
        if (limit is not None and limit <= 0) or norm <= 0 or not len(self):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        # One dot and one cosine term per genre set (every movie of a set shares them).
        set_dot = self.set_counts @ weights
        set_cosine = np.minimum(1.0, set_dot * self.set_inv_sqrt_length / norm) * 0.95
        excluded = np.zeros(len(self), dtype=bool)
        excluded[np.asarray(exclude, dtype=np.intp)] = True
        sets = np.flatnonzero(set_dot > 0)
        if limit is not None:
            sets = self._sets_that_can_make_the_cut(sets, set_cosine, excluded, limit)
        keep = self._members_of(sets)
        keep = keep[~excluded[keep]]
        score = set_cosine[self.set_of[keep]] + self.popularity_term[keep]
        if limit is not None and len(keep) > limit:
            # Only scores at least the limit-th best can make the cut (ties included).
            cutoff = -np.partition(-score, limit - 1)[limit - 1]
            kept = score >= cutoff
            keep, score = keep[kept], score[kept]
        order = np.lexsort((self.ids[keep], -score))[:limit]
        return keep[order], score[order]

    def _sets_that_can_make_the_cut(
        self, sets: np.ndarray, cosine: np.ndarray, excluded: np.ndarray, limit: int
    ) -> np.ndarray:
        """The genre sets among `sets` that may hold one of the `limit` best movies.

        A movie scores its set's cosine term plus its own popularity term (at least 0, at
        most its set's best). Walking the sets by cosine term, the first sets that hold
        `limit` movies not excluded put the limit-th best score at or above `floor`, the
        cosine term of the last of them; a set whose best possible score is below `floor`
        holds none of the best. Exact: the sets kept hold every movie scoring `floor` or
        more, ties included.
        """
        if not len(sets):
            return sets
        by_cosine = sets[np.argsort(-cosine[sets], kind="stable")]
        sizes = np.diff(self.set_ptr)[by_cosine]
        available = (
            sizes - np.bincount(self.set_of[excluded], minlength=len(self.set_ptr) - 1)[by_cosine]
        )
        reached = int(np.searchsorted(np.cumsum(available), limit))
        if reached >= len(by_cosine):  # fewer than `limit` movies in all: every set
            return sets
        floor = cosine[by_cosine[reached]]
        kept: np.ndarray = sets[cosine[sets] + self.set_best_popularity[sets] >= floor]
        return kept

    def _members_of(self, sets: np.ndarray) -> np.ndarray:
        """The movies (positions) of the genre sets `sets`, set by set."""
        starts = self.set_ptr[sets]
        lengths = self.set_ptr[sets + 1] - starts
        offsets = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(lengths) - lengths, lengths
        )
        members: np.ndarray = self.set_members[np.repeat(starts, lengths) + offsets]
        return members

    def scores(
        self, profile: Mapping[str, float], exclude: Iterable[MovieId], limit: int | None
    ) -> list[tuple[float, Movie]]:
        """(score, movie) of the movies sharing a genre with ``profile``, best first."""
        if limit is not None and limit <= 0:
            return []
        weights, norm = self.profile_weights(profile)
        skip = np.asarray(
            [p for m in exclude if (p := self.positions.get(m)) is not None], dtype=np.int64
        )
        positions, score = self.content_scores(weights, norm, skip, limit)
        return [
            (s, self.movies[p]) for s, p in zip(score.tolist(), positions.tolist(), strict=True)
        ]


# The name the content-based scoring first had; the same index.
GenreIndex = CatalogueIndex
