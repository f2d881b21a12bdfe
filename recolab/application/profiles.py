"""A user and their ratings as bytes: what an uncached recommendation reads from the
database, kept in the user's cache group so that the next one skips the read.

It lives under the same generation as the user's cached answers (see `Cache`): a rating
drops the group, so a profile read before a rating can never be served after it.

Layout: a 4-byte header length, a JSON header (the user's fields and the rating count),
then the ratings as three arrays: movie ids (int64), stars times two (uint8: ratings are
half stars) and Unix seconds (int64). 17 bytes per rating.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from recolab.domain.errors import InvalidValue
from recolab.domain.model import RatedMovies, User
from recolab.domain.values import RATING_STEP, Timestamp, UserId

PROFILE_KEY = "profile"  # its key in the user's cache group
_HEADER = struct.Struct("<I")
_FORMAT = 1


def encode_profile(user: User, rated: RatedMovies) -> bytes:
    n = len(rated)
    header = json.dumps(
        {
            "format": _FORMAT,
            "id": user.id.value,
            "created_at": user.created_at.value.timestamp(),
            "n_ratings": user.n_ratings,
            "avg_rating": user.avg_rating,
            "last_activity": (
                None if user.last_activity is None else user.last_activity.value.timestamp()
            ),
            "favorite_genres": list(user.favorite_genres),
            "ratings": n,
        }
    ).encode()
    halves = np.rint(rated.scores / RATING_STEP)
    return b"".join(
        (
            _HEADER.pack(len(header)),
            header,
            np.ascontiguousarray(rated.movie_ids, dtype="<i8").tobytes(),
            halves.astype(np.uint8).tobytes(),
            np.ascontiguousarray(rated.timestamps, dtype="<i8").tobytes(),
        )
    )


def decode_profile(raw: bytes) -> tuple[User, RatedMovies]:
    """The inverse of `encode_profile`; InvalidValue on anything else (a caller then reads
    the database instead)."""
    try:
        (size,) = _HEADER.unpack_from(raw)
        header = json.loads(raw[_HEADER.size : _HEADER.size + size])
        if header.get("format") != _FORMAT:
            raise InvalidValue(f"profile format {header.get('format')!r} is not {_FORMAT}")
        n = int(header["ratings"])
        start = _HEADER.size + size
        if len(raw) != start + 17 * n:
            raise InvalidValue(f"profile of {len(raw)} bytes does not hold {n} ratings")
        ids = np.frombuffer(raw, dtype="<i8", count=n, offset=start).astype(np.int64)
        halves = np.frombuffer(raw, dtype=np.uint8, count=n, offset=start + 8 * n)
        stamps = np.frombuffer(raw, dtype="<i8", count=n, offset=start + 9 * n).astype(np.int64)
        last = header["last_activity"]
        user = User(
            id=UserId(header["id"]),
            created_at=Timestamp.from_unix(header["created_at"]),
            n_ratings=header["n_ratings"],
            avg_rating=header["avg_rating"],
            last_activity=None if last is None else Timestamp.from_unix(last),
            favorite_genres=list(header["favorite_genres"]),
        )
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidValue(f"not a cached profile: {exc}") from exc
    return user, RatedMovies(ids, halves * RATING_STEP, stamps)
