"""The stored user and movie statistics read back, and two readings compared: shared by the
tests that check the incremental statistics against a recount or the domain's own count."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from recolab.adapters.sql import schema as s

TOLERANCE = 1e-9
Statistics = dict[int, tuple[Any, ...]]


def _number(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


def stored_statistics(engine: Engine) -> tuple[Statistics, Statistics]:
    """Users: id -> (n_ratings, avg_rating, favorite_genres); movies: id -> (rating_count,
    avg_rating, popularity_score)."""
    with engine.connect() as conn:
        users = {
            int(u): (int(n), _number(a, float), _number(g, str))
            for u, n, a, g in conn.execute(
                select(
                    s.users.c.id,
                    s.users.c.n_ratings,
                    s.users.c.avg_rating,
                    s.users.c.favorite_genres,
                )
            )
        }
        movies = {
            int(m): (int(n), _number(a, float), _number(p, float))
            for m, n, a, p in conn.execute(
                select(
                    s.movies.c.id,
                    s.movies.c.rating_count,
                    s.movies.c.avg_rating,
                    s.movies.c.popularity_score,
                )
            )
        }
    return users, movies


def differences(a: Statistics, b: Statistics, tolerance: float = TOLERANCE) -> list[str]:
    """What differs between two readings (floats within `tolerance` are equal); [] if none."""
    if a.keys() != b.keys():
        return [f"keys differ: {sorted(a.keys() ^ b.keys())[:10]}"]
    found = []
    for key in a:
        for x, y in zip(a[key], b[key], strict=True):
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
            if numbers and (isinstance(x, float) or isinstance(y, float)):
                same = abs(x - y) <= tolerance
            else:
                same = x == y
            if not same:
                found.append(f"{key}: {a[key]} != {b[key]}")
                break
    return found
