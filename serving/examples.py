"""One example per request and answer of the API, for the OpenAPI page (`serving.schemas`,
`serving.routes`). Ids and titles are the demo dataset's (`make run`): user 1 exists (an
active user), movie 3 is "Iron Stranger (2011)"; the page's "Try it out" works on them."""

from __future__ import annotations

from typing import Any

USER_ID = 1
MOVIE_ID = 3
TITLE_QUERY = "island"
GENRE_QUERY = "Drama"
AT = "2025-01-01T12:00:00Z"

_IRON_STRANGER = {"movie_id": 3, "title": "Iron Stranger (2011)", "year": 2011}
_BRIGHT_ISLAND = {"movie_id": 7, "title": "Bright Island (1983)", "year": 1983}
_MOVIE = {**_IRON_STRANGER, "genres": ["Comedy", "Horror"], "rating_count": 212}
MOVIE: dict[str, Any] = {**_MOVIE, "avg_rating": 3.61, "popularity_score": 8.41}
_ISLAND = {**_BRIGHT_ISLAND, "genres": ["Comedy"], "rating_count": 96}
MOVIE_LIST: dict[str, Any] = {
    "items": [{**_ISLAND, "avg_rating": 3.2, "popularity_score": 6.36}],
}

RECOMMEND_BODY: dict[str, Any] = {"user_id": USER_ID, "n": 5, "strategy": "auto"}
EXPERIMENT = "neumf-v2-canary"
RECOMMEND_RESPONSE: dict[str, Any] = {
    "user_id": USER_ID,
    "classification": "active",
    "strategy_used": "hybrid",
    "model_version": "2",
    "diversity_score": 0.61,
    "cached": False,
    "generated_at": AT,
    "items": [
        {
            **_BRIGHT_ISLAND,
            "genres": ["Comedy"],
            "score": 0.93,
            "rank": 1,
            "source": "collaborative",
            "explanation": "Because you rated Final Summer, The 2 (2002) 4.0",
        }
    ],
    "experiment": EXPERIMENT,
    "variant": "challenger",
}

RATE_BODY: dict[str, Any] = {"user_id": USER_ID, "movie_id": MOVIE_ID, "score": 4.5}
RATING_RESPONSE: dict[str, Any] = {
    **RATE_BODY,
    "previous_score": None,
    "rated_at": AT,
    "classification": "active",
    "n_ratings": 70,
    "avg_rating": 3.56,
}

REGISTERED_USER: dict[str, Any] = {
    "user_id": 1001,
    "classification": "cold_start",
    "created_at": AT,
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
    "token_type": "bearer",
    "expires_in": 2592000,
}

PROFILE: dict[str, Any] = {
    "user_id": USER_ID,
    "classification": "active",
    "n_ratings": 69,
    "avg_rating": 3.55,
    "n_positive": 31,
    "n_negative": 9,
    "favorite_genres": ["Drama", "Comedy", "Thriller"],
    "cf_weight": 1.0,
    "cb_weight": 0.0,
    "created_at": "2012-11-12T00:26:59Z",
    "last_activity": AT,
    "recent_ratings": [
        {"movie_id": 16, "title": "Final Summer, The 2 (2002)", "score": 4.0, "rated_at": AT}
    ],
}

HISTORY: dict[str, Any] = {
    "user_id": USER_ID,
    "items": [
        {
            **{k: _BRIGHT_ISLAND[k] for k in ("movie_id", "title")},
            "rank": 1,
            "score": 0.93,
            "strategy": "hybrid",
            "source": "collaborative",
            "model_version": "1",
            "recommended_at": AT,
        }
    ],
}

SIMILAR: dict[str, Any] = {
    "movie_id": MOVIE_ID,
    "method": "embedding",
    "items": [{**MOVIE_LIST["items"][0], "similarity": 0.82}],
}

STATUS: dict[str, Any] = {
    "ready": True,
    "reasons": [],
    "model": {"name": "recolab-neumf", "loaded": True, "version": "1", "error": None},
    "database": {"ok": True, "backend": "postgresql", "error": None},
    "cache": {"ok": True, "backend": "redis", "error": None},
    "experiment": {
        "name": EXPERIMENT,
        "mode": "canary",
        "share": 0.1,
        "challenger_version": "2",
        "running": True,
        "error": None,
    },
}
