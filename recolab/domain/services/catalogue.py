"""A catalogue held in memory: its movies, their popularity order and their arrays."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from recolab.domain.model import Movie
from recolab.domain.services.index import CatalogueIndex
from recolab.domain.values import MovieId


class CatalogueSnapshot:
    """One version of a catalogue, everything built once (the `Catalogue` port): the serving
    catalogue swaps a whole snapshot on refresh, so a request sees one version whole."""

    def __init__(self, movies: Iterable[Movie]) -> None:
        self._movies = list(movies)
        self._by_id = {m.id: m for m in self._movies}
        self._ranked = sorted(self._movies, key=lambda m: (-m.popularity_score(), m.id.value))
        self._index = CatalogueIndex(self._movies)

    def movies(self) -> Sequence[Movie]:
        return self._movies

    def by_popularity(self) -> Sequence[Movie]:
        return self._ranked

    def get(self, movie_id: MovieId) -> Movie | None:
        return self._by_id.get(movie_id)

    def index(self) -> CatalogueIndex:
        return self._index
