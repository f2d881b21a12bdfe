"""Generate the synthetic ``demo`` dataset in the ml-latest-small CSV format.

Everything is drawn from one seeded generator, so the same arguments give the same bytes.
The planted structure (user and item biases, latent factors, user-genre affinity, and a
choice of what to watch driven by genre, popularity and taste) is what a recommender is
expected to learn back.

What a user watches follows what they expect to like, as in MovieLens: each pick is the
best-liked, by the user's planted taste (latent factors + genre affinity) plus Gumbel noise,
of `CANDIDATES` titles they come across (by genre and popularity). That is sampling-importance
resampling toward p(movie | user) ~ exposure(movie | user) * exp(CHOICE_SHARPNESS * taste).

Why (issue 15, part 5): in the first version only the stars depended on the latent factors;
which movies a user rated depended on genre taste and popularity alone. Protocol B ranks the
movies a user rated, whatever the stars, so on the default demo even the planted model
itself scored nDCG@10 0.285 against popularity's 0.260, NeuMF 0.259 with validation flat
from epoch 0 (0.047-0.049 over 6 epochs). Choice by taste with the first version's
8 factors (dot product sd 0.55) was still too weak a signal to emerge within the shipped 6
epochs (NeuMF 0.179, popularity 0.178); 4 factors with sd 1.0 are learned: `recolab
pipeline` with the shipped settings gives 0.294 / 0.287 / 0.288 against popularity's
0.131 / 0.130 / 0.141 (demo seeds 42 / 0 / 1), validation nDCG@10 rising from ~0.035 after
epoch 1 to ~0.067 after epoch 6. Only the first 4 of 8 drawn factors are used, so the
catalogue and each user's number of ratings are the first version's; the star shares and the
long tails of activity and popularity are checked in tests/unit/adapters/test_demo.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from recolab.adapters.ingest.movielens import DEMO_MARKER, GENRES
from recolab.domain.values import RATING_VALUES

STARS = np.array(RATING_VALUES)
# Target share of each half star 0.5..5.0 (the familiar MovieLens shape: mean ~3.5, mode at
# 4.0, whole stars more common than the half stars next to them).
STAR_SHARES = np.array([0.014, 0.028, 0.018, 0.075, 0.055, 0.199, 0.130, 0.266, 0.085, 0.130])
# How common each genre is in the catalogue, in GENRES order (Drama and Comedy dominate).
GENRE_SHARES = np.array(
    [8.0, 5.5, 2.5, 3.0, 16.0, 5.5, 2.0, 20.0, 3.5, 0.5, 4.5, 1.5, 2.5, 7.0, 4.0, 8.0, 1.7, 0.8]
)
# Latent factors planted per user and movie: 4 strong ones are learnable from the default
# 100,000 ratings, where the first version's 8 weaker ones were not.
N_FACTORS = 4
# Factors drawn per user and movie: still the first version's 8 (the extra ones are unused),
# so that every later draw, hence the catalogue (titles, genres) and each user's number of
# ratings, is what it was: the README and the OpenAPI examples name demo ids and titles.
_FACTORS_DRAWN = 8
# Standard deviation of the planted dot product user_factors . item_factors (in the units of
# the score that is mapped onto stars, where the noise has sd 0.45); the first version's was
# 0.55.
FACTOR_SD = 1.0
# Each pick is the best-liked of this many titles the user comes across; the taste is scaled by
# CHOICE_SHARPNESS before the Gumbel noise is added (0 would be a random one of them).
CANDIDATES = 8
CHOICE_SHARPNESS = 2.0
# Weight of the genre affinity in a movie's taste (split evenly among its genres). 1.0, the
# first version's 0.6: once users watch what they like, less genre taste is left to see in the
# stars of what they rated; 1.0 keeps it as learnable from the stars as it was (biases +
# per-user genre taste, tests/unit/adapters/test_demo.py: held-out RMSE 0.017 below biases
# alone; 0.015 in the first version, 0.0005 with choice by taste and 0.6).
GENRE_TASTE = 1.0
# Popularity of the movie ranked k (0 = most watched) is proportional to (k + 6) ** -1.05.
ZIPF_EXPONENT = 1.05
_ZIPF_OFFSET = 6.0
FIRST_YEAR, LAST_YEAR = 1930, 2024
_START_TS, _END_TS = 820_454_400, 1_735_603_200  # 1996-01-01 .. 2024-12-31 UTC
_DAY = 86_400
_CHUNK = 1 << 20

_ADJECTIVES = (
    "Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Midnight", "Wild", "Lost",
    "Electric", "Frozen", "Burning", "Secret", "Endless", "Little", "Savage", "Quiet", "Distant",
    "Velvet", "Iron", "Hollow", "Bright", "Restless", "Forgotten", "Northern", "Wandering",
    "Paper", "Glass", "Scarlet", "Final",
)  # fmt: skip
_NOUNS = (
    "River", "Harbor", "Kingdom", "Garden", "Empire", "Station", "Mirror", "Horizon", "Valley",
    "Stranger", "Summer", "Winter", "Detective", "Orchard", "Frontier", "Lighthouse", "Circus",
    "Café", "Señor", "Island", "Machine", "Letters", "Shadows", "Promise", "Road", "Storm",
    "Dreamer", "Citadel", "Rêve", "Voyage",
)  # fmt: skip
_SEQUELS = ("", "", "", "", "", "", "", "", " II", " 2", " III", ": The Return")


@dataclass(frozen=True)
class _World:
    """The planted model: what users like and what movies are."""

    movie_ids: np.ndarray  # (n_movies,) int64, increasing, with gaps like MovieLens
    years: np.ndarray  # (n_movies,) int64
    genre_idx: np.ndarray  # (n_movies, 3) int64 genre indexes, -1 padded
    genre_weight: np.ndarray  # (n_movies, 3) each genre's share of GENRE_TASTE, 0 for a pad
    pop_rank: np.ndarray  # (n_movies,) int64, 0 = most popular
    item_bias: np.ndarray
    item_factors: np.ndarray  # (n_movies, N_FACTORS)
    user_bias: np.ndarray
    user_factors: np.ndarray  # (n_users, N_FACTORS)
    affinity: np.ndarray  # (n_users, n_genres) taste for each genre


def generate_demo(
    out_dir: Path,
    *,
    n_users: int = 1000,
    n_movies: int = 2000,
    n_ratings: int = 100_000,
    seed: int = 42,
) -> Path:
    """Write a synthetic MovieLens-style dataset (movies.csv, ratings.csv, DEMO.txt).

    The result reads back with :func:`recolab.adapters.ingest.movielens.read_movielens` as layout
    ``demo``. Deterministic from ``seed``; every user has at least one rating, no
    (user, movie) pair repeats, ratings are half stars in 0.5..5.0. Returns ``out_dir``.
    """
    _check_sizes(n_users, n_movies, n_ratings)
    rng = np.random.default_rng(seed)
    world = _plant_world(rng, n_users, n_movies)
    titles = _titles(rng, n_movies, world.years)
    counts = _activity(rng, n_users, n_movies, n_ratings)
    users, items = _sample_pairs(rng, world, counts)
    stars = _ratings(rng, world, users, items)
    timestamps = _timestamps(rng, world, users, items, n_users)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_movies(out_dir / "movies.csv", world, titles)
    _write_ratings(out_dir / "ratings.csv", world.movie_ids, users, items, stars, timestamps)
    _write_atomic(
        out_dir / DEMO_MARKER,
        (
            "Synthetic RecoLab demo data (not MovieLens): generated by "
            "recolab.adapters.ingest.demo.generate_demo\n"
            f"n_users={n_users} n_movies={n_movies} n_ratings={n_ratings} seed={seed}\n"
        ).encode(),
    )
    return out_dir


@dataclass(frozen=True)
class PlantedPreferences:
    """What each demo user truly likes: the planted score (biases + latent factors + genre
    affinity, no noise) of every (user, movie) pair, for simulating feedback to answers."""

    user_ids: np.ndarray  # (n_users,) the demo's user ids (1..n_users)
    movie_ids: np.ndarray  # (n_movies,) the demo's movie ids
    scores: np.ndarray  # (n_users, n_movies) float32

    def of(self, user_id: int, movie_ids: np.ndarray) -> np.ndarray:
        """The user's planted scores of `movie_ids` (NaN for a movie not in the demo)."""
        at = np.searchsorted(self.movie_ids, movie_ids).clip(max=len(self.movie_ids) - 1)
        row = self.scores[int(user_id) - 1, at].astype(np.float64)
        return np.where(self.movie_ids[at] == movie_ids, row, np.nan)


def planted_preferences(
    *, n_users: int = 1000, n_movies: int = 2000, seed: int = 42
) -> PlantedPreferences:
    """The planted preferences of the demo `generate_demo` writes with the same sizes and
    seed (the world is the first thing drawn from the seed)."""
    world = _plant_world(np.random.default_rng(seed), n_users, n_movies)
    users = np.repeat(np.arange(n_users), n_movies)
    items = np.tile(np.arange(n_movies), n_users)
    score = world.user_bias[users] + world.item_bias[items] + _taste(world, users, items)
    return PlantedPreferences(
        np.arange(1, n_users + 1, dtype=np.int64),
        world.movie_ids,
        score.reshape(n_users, n_movies).astype(np.float32),
    )


def _check_sizes(n_users: int, n_movies: int, n_ratings: int) -> None:
    if n_users < 1 or n_movies < 2:
        raise ValueError("need at least 1 user and 2 movies")
    if n_ratings < n_users:
        raise ValueError(f"n_ratings ({n_ratings}) must be >= n_users ({n_users})")
    if n_ratings > n_users * _max_per_user(n_movies):
        raise ValueError(
            f"n_ratings ({n_ratings}) too dense: at most {_max_per_user(n_movies)} ratings "
            f"per user for {n_movies} movies"
        )


def _max_per_user(n_movies: int) -> int:
    # Keeps sampling without replacement cheap: at least half of the catalogue stays unseen.
    return max(1, n_movies // 2)


# --- the planted world -------------------------------------------------------------------


def _plant_world(rng: np.random.Generator, n_users: int, n_movies: int) -> _World:
    n_genres = len(GENRES)
    movie_ids = np.cumsum(rng.geometric(0.5, size=n_movies)).astype(np.int64)
    years = FIRST_YEAR + np.rint((LAST_YEAR - FIRST_YEAR) * rng.beta(2.5, 1.2, n_movies))

    # 1-3 distinct genres per movie, weighted by genre share (Gumbel top-k).
    n_of = rng.choice(3, size=n_movies, p=[0.4, 0.4, 0.2]) + 1
    keys = np.log(GENRE_SHARES / GENRE_SHARES.sum()) + rng.gumbel(size=(n_movies, n_genres))
    top3 = np.argsort(-keys, axis=1)[:, :3]
    genre_idx = np.sort(np.where(np.arange(3) < n_of[:, None], top3, n_genres), axis=1)
    genre_idx[genre_idx == n_genres] = -1  # padding sorts last

    # Zipf-like popularity over a random order; popular movies are a little better liked.
    pop_rank = rng.permutation(n_movies)
    log_pop = -ZIPF_EXPONENT * np.log(pop_rank + _ZIPF_OFFSET)
    zpop = (log_pop - log_pop.mean()) / log_pop.std()
    item_bias = 0.35 * rng.standard_normal(n_movies) + 0.15 * zpop

    # N(0, scale) entries: the dot product of two rows has variance N_FACTORS * scale**2.
    scale = FACTOR_SD / np.sqrt(N_FACTORS)
    item_factors = rng.normal(0.0, np.sqrt(scale), (n_movies, _FACTORS_DRAWN))[:, :N_FACTORS]
    user_bias = 0.4 * rng.standard_normal(n_users)
    user_factors = rng.normal(0.0, np.sqrt(scale), (n_users, _FACTORS_DRAWN))[:, :N_FACTORS]
    return _World(
        movie_ids=movie_ids,
        years=years.astype(np.int64),
        genre_idx=genre_idx.astype(np.int64),
        genre_weight=np.where(genre_idx >= 0, GENRE_TASTE / n_of[:, None], 0.0),
        pop_rank=pop_rank.astype(np.int64),
        item_bias=item_bias,
        item_factors=item_factors,
        user_bias=user_bias,
        user_factors=user_factors,
        affinity=0.7 * rng.standard_normal((n_users, n_genres)),
    )


def _titles(rng: np.random.Generator, n_movies: int, years: np.ndarray) -> list[str]:
    adjective = rng.integers(len(_ADJECTIVES), size=n_movies)
    noun = rng.integers(len(_NOUNS), size=n_movies)
    other = rng.integers(len(_NOUNS), size=n_movies)
    pattern = rng.integers(4, size=n_movies)
    sequel = rng.integers(len(_SEQUELS), size=n_movies)
    titles = []
    for a, n, o, p, s, y in zip(adjective, noun, other, pattern, sequel, years, strict=True):
        adj, noun_a, noun_b = _ADJECTIVES[a], _NOUNS[n], _NOUNS[o]
        # MovieLens moves a leading article to the end: "Lighthouse, The (1999)".
        base = (
            f"{adj} {noun_a}, The",
            f"{adj} {noun_a}",
            f"{noun_a} of the {adj} {noun_b}",
            f"{noun_a} and the {noun_b}",
        )[p]
        titles.append(f"{base}{_SEQUELS[s]} ({y})")
    return titles


# --- who rated what ------------------------------------------------------------------------


def _activity(rng: np.random.Generator, n_users: int, n_movies: int, n_ratings: int) -> np.ndarray:
    """Ratings per user: long-tailed (log-normal), >= 1 each, summing to n_ratings exactly."""
    cap = _max_per_user(n_movies)
    weights = rng.lognormal(0.0, 1.1, n_users)
    counts = np.ones(n_users, dtype=np.int64)
    while (left := n_ratings - int(counts.sum())) > 0:
        open_ = counts < cap
        share = np.where(open_, weights, 0.0)
        exact = left * share / share.sum()
        add = np.floor(exact).astype(np.int64)
        # Largest remainders get the few ratings that flooring left over.
        rest = left - int(add.sum())
        if rest:
            add[np.argsort(-(exact - add), kind="stable")[:rest]] += 1
        counts = np.minimum(counts + add, cap)
    return counts


def _sample_pairs(
    rng: np.random.Generator, world: _World, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw distinct (user, movie index) pairs: mostly by genre taste, then by popularity."""
    n_users, n_movies = len(counts), len(world.pop_rank)
    genre_pick = _genre_choice(world)
    by_genre, genre_start = _movies_by_genre(world)
    by_rank = np.argsort(world.pop_rank)
    taken = np.empty(0, dtype=np.int64)  # sorted keys user * n_movies + movie
    need = counts.copy()
    round_ = 0
    while need.sum() > 0:
        draws = np.where(need > 0, np.ceil(need * 1.3).astype(np.int64) + 1, 0)
        want = np.repeat(np.arange(n_users), draws)
        if round_ < 4:
            movies = _draw_movies(rng, world, want, genre_pick, by_genre, genre_start, by_rank)
        else:
            # Heavy users can exhaust their tastes: finish uniformly (always converges).
            movies = rng.integers(n_movies, size=len(want))
        keys = want * n_movies + movies
        fresh = _first_new(keys, taken)
        # Draws are i.i.d. in sequence, so keeping each user's distinct candidates in order of
        # first appearance is sequential weighted sampling without replacement.
        user = want[fresh]
        rank = np.arange(len(fresh)) - np.searchsorted(user, np.arange(n_users))[user]
        chosen = keys[fresh[rank < need[user]]]
        need -= np.bincount(chosen // n_movies, minlength=n_users)
        # Stable sort of two sorted runs is a linear merge (timsort).
        taken = np.sort(np.concatenate((taken, np.sort(chosen))), kind="stable")
        round_ += 1
    return taken // n_movies, taken % n_movies


def _first_new(keys: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each key not in sorted ``taken``, ascending.

    Sort-based on purpose: np.unique/np.isin are several times slower here.
    """
    if len(taken):
        slot = np.minimum(np.searchsorted(taken, keys), len(taken) - 1)
        candidates = np.flatnonzero(taken[slot] != keys)
    else:
        candidates = np.arange(len(keys))
    if not len(candidates):
        return candidates
    order = np.argsort(keys[candidates])
    sorted_keys = keys[candidates][order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return np.sort(np.minimum.reduceat(candidates[order], starts))


def _genre_choice(world: _World) -> np.ndarray:
    """Per-user cumulative probability of picking each genre (offset by the user's row)."""
    present = np.bincount(world.genre_idx[world.genre_idx >= 0], minlength=len(GENRES)) > 0
    with np.errstate(divide="ignore"):  # a genre no movie has gets probability 0
        shares = np.log(np.where(present, GENRE_SHARES, 0.0) / GENRE_SHARES.sum())
    logits = shares + 1.2 * world.affinity
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    return (cum + np.arange(len(cum))[:, None]).ravel()


def _movies_by_genre(world: _World) -> tuple[np.ndarray, np.ndarray]:
    """Movie indexes grouped by genre, most popular first, and each genre's start offset."""
    movie = np.repeat(np.arange(len(world.genre_idx)), 3)
    genre = world.genre_idx.ravel()
    movie, genre = movie[genre >= 0], genre[genre >= 0]
    order = np.lexsort((world.pop_rank[movie], genre))
    starts = np.searchsorted(genre[order], np.arange(len(GENRES) + 1))
    return movie[order], starts


def _zipf_ranks(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """A rank in [0, size) per entry, p(k) ~ (k + 6) ** -1.05, by the continuous inverse CDF."""
    e = 1.0 - ZIPF_EXPONENT
    lo = _ZIPF_OFFSET**e
    hi = (sizes + _ZIPF_OFFSET) ** e
    x = (lo + rng.random(len(sizes)) * (hi - lo)) ** (1.0 / e)
    ranks: np.ndarray = np.clip((x - _ZIPF_OFFSET).astype(np.int64), 0, np.maximum(sizes - 1, 0))
    return ranks


def _draw_movies(
    rng: np.random.Generator,
    world: _World,
    users: np.ndarray,
    genre_pick: np.ndarray,
    by_genre: np.ndarray,
    genre_start: np.ndarray,
    by_rank: np.ndarray,
) -> np.ndarray:
    """One movie index per entry of ``users``: the best-liked of CANDIDATES titles met."""
    picks = np.empty(len(users), dtype=np.int64)
    step = max(1, _CHUNK // CANDIDATES)  # bounds the (entries x CANDIDATES) temporaries
    for lo in range(0, len(users), step):
        who = np.repeat(users[lo : lo + step], CANDIDATES)
        met = _exposure(rng, who, genre_pick, by_genre, genre_start, by_rank)
        keys = CHOICE_SHARPNESS * _taste(world, who, met) + rng.gumbel(size=len(met))
        best = np.argmax(keys.reshape(-1, CANDIDATES), axis=1)
        picks[lo : lo + step] = met.reshape(-1, CANDIDATES)[np.arange(len(best)), best]
    return picks


def _exposure(
    rng: np.random.Generator,
    users: np.ndarray,
    genre_pick: np.ndarray,
    by_genre: np.ndarray,
    genre_start: np.ndarray,
    by_rank: np.ndarray,
) -> np.ndarray:
    """A title each user comes across: a genre by taste, then a popular movie of it."""
    n_genres = len(GENRES)
    slot = np.searchsorted(genre_pick, users + rng.random(len(users)), side="right")
    genre = np.minimum(slot - users * n_genres, n_genres - 1)
    start = genre_start[genre]
    movies: np.ndarray = by_genre[start + _zipf_ranks(rng, genre_start[genre + 1] - start)]
    # A quarter of them ignore genre and follow overall popularity.
    explore = np.flatnonzero(rng.random(len(users)) < 0.25)
    movies[explore] = by_rank[_zipf_ranks(rng, np.full(len(explore), len(by_rank)))]
    return movies


def _taste(world: _World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """How much each user likes each movie beyond the biases: factors + genre affinity."""
    # Flat gathers are about twice as fast as 2-D fancy indexing here; a -1 genre pad reads
    # some other cell, weighted 0.
    cells = (users * world.affinity.shape[1])[:, None] + world.genre_idx[items]
    taste: np.ndarray = np.einsum("rf,rf->r", world.user_factors[users], world.item_factors[items])
    taste += np.einsum("rg,rg->r", world.affinity.ravel()[cells], world.genre_weight[items])
    return taste


# --- what they rated -------------------------------------------------------------------------


def _ratings(
    rng: np.random.Generator, world: _World, users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """Planted score -> half stars by quantile mapping onto STAR_SHARES (order preserved)."""
    score = world.user_bias[users] + world.item_bias[items]
    for lo in range(0, len(users), _CHUNK):  # chunks bound the (rows x factors) temporaries
        score[lo : lo + _CHUNK] += _taste(world, users[lo : lo + _CHUNK], items[lo : lo + _CHUNK])
    score += 0.45 * rng.standard_normal(len(score))
    cuts = np.quantile(score, np.cumsum(STAR_SHARES)[:-1] / STAR_SHARES.sum())
    stars: np.ndarray = STARS[np.searchsorted(cuts, score, side="right")]
    return stars


def _timestamps(
    rng: np.random.Generator, world: _World, users: np.ndarray, items: np.ndarray, n_users: int
) -> np.ndarray:
    start = rng.integers(_START_TS, _END_TS - 30 * _DAY, size=n_users)
    span = np.minimum(rng.exponential(365.0 * _DAY, size=n_users), _END_TS - start)
    ts = start[users] + rng.random(len(users)) * span[users]
    # Nobody rates a movie before it came out.
    released = (world.years[items] - 1970).astype("datetime64[Y]").astype("datetime64[s]")
    ts = np.maximum(ts, released.astype(np.int64) + rng.random(len(users)) * 180 * _DAY)
    seconds: np.ndarray = np.minimum(ts, _END_TS).astype(np.int64)
    return seconds


# --- files ---------------------------------------------------------------------------------


def _write_movies(path: Path, world: _World, titles: list[str]) -> None:
    names = np.array([*GENRES, ""], dtype=object)
    genre_str = [
        "|".join(n for n in row if n) for row in names[world.genre_idx].tolist()
    ]  # -1 indexes the trailing ""
    movies = pd.DataFrame({"movieId": world.movie_ids, "title": titles, "genres": genre_str})
    _write_atomic(path, movies.to_csv(index=False, lineterminator="\n").encode("utf-8"))


def _write_ratings(
    path: Path,
    movie_ids: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    stars: np.ndarray,
    timestamps: np.ndarray,
) -> None:
    # Sorted like MovieLens (user, then movie id); the pair keys were already user-major and
    # movie indexes follow movie id order.
    labels = pa.array([f"{s:.1f}" for s in STARS])
    codes = pa.array(np.rint(stars * 2).astype(np.int32) - 1)
    table = pa.table(
        {
            "userId": users + 1,
            "movieId": movie_ids[items],
            "rating": pa.DictionaryArray.from_arrays(codes, labels).cast(pa.string()),
            "timestamp": timestamps,
        }
    )
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(b"userId,movieId,rating,timestamp\n")
        # pyarrow's writer is ~10x faster than DataFrame.to_csv for millions of rows.
        pacsv.write_csv(
            table,
            handle,
            write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
        )
    os.replace(tmp, path)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
