"""The served policy evaluated offline, per user tier, beside the model and the baselines.

`recolab.application.policy_eval` runs the service's own `Recommender` over a protocol's
training split; this module builds what it reads from that split (`split_profiles`: users,
their ratings, the catalogue with statistics from the training rows only), asks it for each
compared system's top-k (`systems`: name -> (user ids, k) -> [users, k] movie ids), and scores
the lists against the split's test rows (every test item of a user is relevant; under
protocol C that is the one held-out rating, ranked against the whole catalogue as served,
not against 100 sampled negatives).

Figures per tier (by n_ratings in training): nDCG@k, HR@k, MAP@k, recall@k, novelty,
intra-list diversity (ILD) and catalogue coverage. Noise: split-to-split (std of each
tier's mean over seeds) and a paired bootstrap over users of the policy-minus-model
difference; the verdict says whether the policy beats the model by more than that noise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recolab.domain.model import Movie, RatedMovies, User
from recolab.domain.values import UserId, shared_movie_id
from recolab.ml.evaluation import metrics
from recolab.ml.evaluation.tiers import TIERS, user_tiers

if TYPE_CHECKING:
    from recolab.ml.experiment import TrainingRun

USER, ITEM, RATING, TIME = "user_id", "movie_id", "rating", "timestamp"
ListMaker = Callable[[Sequence[int], int], np.ndarray]
RANKING = ("ndcg", "hr", "map", "recall")
BEYOND = ("novelty", "ild")
COMPARED = ("model", "popularity", "content_based")  # the policy is compared with each


@dataclass(frozen=True)
class SplitProfiles:
    """What the service would hold after ingesting a training split (see
    `recolab.application.policy_eval.TrainingView`)."""

    users: dict[int, User]
    ratings: dict[int, RatedMovies]
    movies: list[Movie]


def split_profiles(
    train: pd.DataFrame, movies: pd.DataFrame, only: np.ndarray | None = None
) -> SplitProfiles:
    """Users (n_ratings, mean rating), their ratings most recent first (ties by movie id)
    and every movie of `movies` with rating count and mean from `train` alone. `only`:
    profile only these users (the movies' figures still count every training row)."""
    mine = train if only is None else train[train[USER].isin(only)]
    ordered = mine.sort_values([USER, TIME, ITEM], ascending=[True, False, True], kind="stable")
    users_col = ordered[USER].to_numpy(np.int64)
    items = ordered[ITEM].to_numpy(np.int64)
    stars = ordered[RATING].to_numpy(np.float64)
    times = ordered[TIME].to_numpy(np.int64)
    cuts = np.flatnonzero(np.diff(users_col)) + 1
    users: dict[int, User] = {}
    ratings: dict[int, RatedMovies] = {}
    for rows in np.split(np.arange(users_col.size), cuts):
        if not rows.size:
            continue
        uid = int(users_col[rows[0]])
        ratings[uid] = RatedMovies(items[rows], stars[rows], times[rows])
        users[uid] = User(
            UserId(uid), n_ratings=int(rows.size), avg_rating=float(stars[rows].mean())
        )
    stats = train.groupby(ITEM)[RATING].agg(["size", "mean"])
    counts = stats["size"].reindex(movies[ITEM]).fillna(0).to_numpy(np.int64)
    means = stats["mean"].reindex(movies[ITEM]).fillna(0.0).to_numpy(np.float64)
    years = movies["year"] if "year" in movies else pd.Series([None] * len(movies))
    catalogue = [
        Movie(
            id=shared_movie_id(int(movie_id)),
            title=str(title),
            genres=tuple(g for g in str(genres).split("|") if g) if isinstance(genres, str) else (),
            year=None if pd.isna(year) else int(year),
            rating_count=int(count),
            avg_rating=float(mean) if count else 0.0,
        )
        for movie_id, title, genres, year, count, mean in zip(
            movies[ITEM].tolist(),
            movies["title"].tolist(),
            movies["genres"].tolist(),
            years.tolist(),
            counts.tolist(),
            means.tolist(),
            strict=True,
        )
    ]
    return SplitProfiles(users, ratings, catalogue)


@dataclass
class PolicyRun:
    """One split's per-user figures (rows: user x system) and per-tier coverage."""

    per_user: pd.DataFrame
    coverage: dict[str, dict[str, float]]  # tier -> system -> share of the catalogue
    k: int


def _genre_matrix(movies: Sequence[Movie]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted movie ids, boolean [movies, genres]) of the catalogue."""
    ids = np.array([m.id.value for m in movies], dtype=np.int64)
    vocabulary: dict[str, int] = {}
    cells = [
        (i, vocabulary.setdefault(g.lower(), len(vocabulary)))
        for i, m in enumerate(movies)
        for g in m.genres
    ]
    genres = np.zeros((len(movies), max(1, len(vocabulary))), dtype=bool)
    if cells:
        rows, cols = zip(*cells, strict=True)
        genres[list(rows), list(cols)] = True
    order = np.argsort(ids)
    return ids[order], genres[order]


def score_lists(
    lists: np.ndarray,
    relevant: Mapping[int, np.ndarray],
    users: Sequence[int],
    item_share: Callable[[np.ndarray], np.ndarray],
    catalogue_ids: np.ndarray,
    catalogue_genres: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per-user figures of `lists` ([users, k] movie ids, -1 past a short list):
    nDCG/HR/MAP/recall@k against `relevant` (user -> relevant movie ids), novelty
    (mean -log2 of the share of training users who rated each item) and ILD (1 - mean
    pairwise genre Jaccard)."""
    lists = np.asarray(lists, dtype=np.int64)
    n, k = lists.shape
    hits = np.zeros((n, k), dtype=bool)
    n_relevant = np.zeros(n, dtype=np.int64)
    for row, user in enumerate(users):
        wanted = relevant.get(int(user), np.empty(0, dtype=np.int64))
        n_relevant[row] = np.unique(wanted).size
        hits[row] = np.isin(lists[row], wanted) & (lists[row] >= 0)
    out = {
        "ndcg": metrics.ndcg_at_k(hits, n_relevant),
        "hr": metrics.hit_rate_at_k(hits),
        "map": metrics.average_precision_at_k(hits, n_relevant),
        "recall": metrics.recall_at_k(hits, n_relevant),
    }
    novelty = np.zeros(n)
    ild = np.zeros(n)
    at = np.searchsorted(catalogue_ids, lists).clip(max=max(catalogue_ids.size - 1, 0))
    for length in np.unique((lists >= 0).sum(axis=1)):
        rows = np.flatnonzero((lists >= 0).sum(axis=1) == length)
        if length == 0:
            continue
        valid = lists[rows][:, :length]
        novelty[rows] = (-np.log2(item_share(valid))).mean(axis=1)
        ild[rows] = metrics.intra_list_diversity(at[rows][:, :length], catalogue_genres)
    out["novelty"], out["ild"] = novelty, ild
    return out


def evaluate_split(
    train: pd.DataFrame,
    test: pd.DataFrame,
    profiles: SplitProfiles,
    systems: Mapping[str, ListMaker],
    *,
    k: int = 10,
    max_users: int | None = None,
    seed: int = 0,
    tiers_only: Collection[str] | None = None,
) -> PolicyRun:
    """Every system's top-k for the test users (those of `tiers_only` when given; a seeded
    sample of `max_users` of them when given), scored against their test rows; tiers by
    n_ratings in `train`."""
    counts = train[USER].value_counts()
    users = np.unique(test[USER].to_numpy(np.int64))
    users = users[np.isin(users, list(profiles.users))]  # a user with no training row: none
    if tiers_only is not None:
        found = user_tiers(pd.Series(users).map(counts).fillna(0).to_numpy(np.int64))
        users = users[np.isin(found, list(tiers_only))]
    users = _draw(users, max_users, seed)
    relevant = {
        int(u): g[ITEM].to_numpy(np.int64) for u, g in test[test[USER].isin(users)].groupby(USER)
    }
    tiers = user_tiers(pd.Series(users).map(counts).fillna(0).to_numpy(np.int64))
    raters = train.groupby(ITEM)[USER].nunique()
    n_train_users = max(1, train[USER].nunique())
    rated_ids = raters.index.to_numpy(np.int64)
    rated_n = raters.to_numpy(np.float64)

    def item_share(ids: np.ndarray) -> np.ndarray:
        # An item no training user rated counts as rated by one (its novelty is finite).
        at = np.searchsorted(rated_ids, ids).clip(max=max(rated_ids.size - 1, 0))
        n = (
            np.where(rated_ids[at] == ids, rated_n[at], 1.0)
            if rated_ids.size
            else np.ones(ids.shape)
        )
        return np.maximum(n, 1.0) / n_train_users

    catalogue_ids, genres = _genre_matrix(profiles.movies)
    frames: list[pd.DataFrame] = []
    coverage: dict[str, dict[str, float]] = {t: {} for t in TIERS}
    user_list = users.tolist()
    for name, make in systems.items():
        lists = make(user_list, k)
        figures = score_lists(lists, relevant, user_list, item_share, catalogue_ids, genres)
        frames.append(pd.DataFrame({USER: users, "tier": tiers, "system": name, **figures}))
        for tier in TIERS:
            chosen = lists[tiers == tier]
            if chosen.size:
                distinct = np.unique(chosen[chosen >= 0]).size
                coverage[tier][name] = distinct / max(1, catalogue_ids.size)
    return PolicyRun(pd.concat(frames, ignore_index=True), coverage, k)


def _bootstrap(
    diffs: np.ndarray, groups: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float]:
    """95% interval of the mean of `diffs`, users resampled within each group (seed)."""
    rng = np.random.default_rng(seed)
    means = np.zeros(n_boot)
    total = diffs.size
    for g in np.unique(groups):
        values = diffs[groups == g]
        picks = rng.integers(0, values.size, size=(n_boot, values.size))
        means += values[picks].sum(axis=1)
    means /= total
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def summarize(
    runs: Sequence[PolicyRun],
    seeds: Sequence[int],
    *,
    n_boot: int = 1000,
    primary: str = "ndcg",
) -> dict[str, Any]:
    """The per-tier table over `runs` (one per seed): for each tier and system the mean of
    every figure over seeds and its std (split-to-split), coverage, and the paired
    policy-minus-model difference of every ranking figure with a bootstrap 95% interval
    over users; `verdict` on `primary`: better / worse (interval clear of 0) or within noise."""
    if not runs:
        raise ValueError("no runs to summarize")
    k = runs[0].k
    frame = pd.concat([r.per_user.assign(seed=s) for r, s in zip(runs, seeds, strict=True)])
    tiers: dict[str, Any] = {}
    for tier in TIERS:
        part = frame[frame["tier"] == tier]
        if part.empty:
            tiers[tier] = {"n_users": 0}
            continue
        row: dict[str, Any] = {"n_users": int(part[USER].nunique()), "systems": {}}
        for system, rows in part.groupby("system", sort=False):
            per_seed = rows.groupby("seed")[list(RANKING + BEYOND)].mean()
            figures = {
                _name(m, k): {"mean": float(per_seed[m].mean()), "std": _std(per_seed[m])}
                for m in RANKING + BEYOND
            }
            cover = [r.coverage[tier].get(str(system)) for r in runs]
            values = [c for c in cover if c is not None]
            figures["coverage"] = {"mean": float(np.mean(values)), "std": _std(pd.Series(values))}
            row["systems"][str(system)] = figures
        row["policy_vs"] = {
            other: _paired(part, other, k, n_boot)
            for other in COMPARED
            if other in set(part["system"])
        }
        model = row["policy_vs"].get("model", {}).get(_name(primary, k))
        if model is not None:
            row["verdict"] = model["verdict"]
        tiers[tier] = row
    return {
        "k": k,
        "seeds": list(seeds),
        "n_bootstrap": n_boot,
        "primary": _name(primary, k),
        "by_tier": tiers,
    }


def _paired(part: pd.DataFrame, other: str, k: int, n_boot: int) -> dict[str, Any]:
    keyed = part.set_index(["seed", USER, "system"])[list(RANKING + BEYOND)]
    policy = keyed.xs("policy", level="system")
    base = keyed.xs(other, level="system").reindex(policy.index)
    groups = policy.index.get_level_values("seed").to_numpy()
    out: dict[str, Any] = {}
    for m in RANKING + BEYOND:
        diffs = (policy[m] - base[m]).to_numpy(np.float64)
        low, high = _bootstrap(diffs, groups, n_boot, seed=0)
        per_seed = pd.Series(diffs).groupby(groups).mean()
        verdict = "better" if low > 0 else "worse" if high < 0 else "within noise"
        out[_name(m, k)] = {
            "diff": float(diffs.mean()),
            "ci95": [low, high],
            "seed_std": _std(per_seed),
            "verdict": verdict,
        }
    return out


def _name(metric: str, k: int) -> str:
    return metric if metric in BEYOND else f"{metric}@{k}"


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def markdown_table(
    summary: Mapping[str, Any],
    systems: Sequence[str] = ("policy", "model", "popularity", "content_based"),
) -> str:
    """The per-tier table as Markdown: one row per tier and system, the verdict on the
    primary metric (policy vs model alone)."""
    k = summary["k"]
    cols = [_name(m, k) for m in RANKING] + list(BEYOND) + ["coverage"]
    lines = [
        "| tier | users | system | " + " | ".join(cols) + " |",
        "| --- | ---: | --- | " + " | ".join("---:" for _ in cols) + " |",
    ]
    for tier, row in summary["by_tier"].items():
        if not row.get("n_users"):
            continue
        for system in systems:
            figures = row["systems"].get(system)
            if figures is None:
                continue
            cells = [f"{figures[c]['mean']:.4f} ± {figures[c]['std']:.4f}" for c in cols]
            lines.append(f"| {tier} | {row['n_users']} | {system} | " + " | ".join(cells) + " |")
        diff = row.get("policy_vs", {}).get("model", {}).get(summary["primary"])
        if diff is not None:
            lines.append(
                f"| {tier} | | policy − model | {diff['diff']:+.4f} "
                f"[{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}] ({diff['verdict']}) |"
                + " |"
                * (len(cols) - 1)
            )
    return "\n".join(lines) + "\n"


SystemsFor = Callable[[SplitProfiles, Any], Mapping[str, ListMaker]]


def write_policy_table(
    train: pd.DataFrame,
    test: pd.DataFrame,
    movies: pd.DataFrame,
    scorer: Any,
    systems_for: SystemsFor,
    folder: Path,
    *,
    max_users: int | None = 200,
    seed: int = 0,
    about: Mapping[str, Any] | None = None,
) -> Path:
    """The per-tier table of one training run (its split, its model as `scorer`) written to
    `folder` as policy_table.json and policy_table.md; `systems_for(profiles, scorer)` is
    the served policy and the systems beside it (recolab.application.policy_eval). A seeded
    sample of `max_users` test users keeps the cost modest; the files say so."""
    profiles = split_profiles(train, movies, _sample(train, test, max_users, seed))
    run = evaluate_split(
        train, test, profiles, systems_for(profiles, scorer), max_users=max_users, seed=seed
    )
    summary = summarize([run], [seed])
    n_users = int(run.per_user[USER].nunique())
    summary["users"] = (
        f"a seeded sample of {n_users} test users (seed {seed})"
        if max_users is not None and n_users >= max_users
        else f"all {n_users} test users"
    )
    summary["noise"] = "one split: a paired bootstrap over users (no split-to-split std)"
    summary.update(about or {})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy_table.json").write_text(json.dumps(summary, indent=2, default=str))
    (folder / "policy_table.md").write_text(
        f"# Served policy per tier ({summary['users']})\n\n{markdown_table(summary)}"
    )
    return folder


def _sample(
    train: pd.DataFrame, test: pd.DataFrame, max_users: int | None, seed: int
) -> np.ndarray | None:
    """The users `evaluate_split` samples (test users with a training row, a seeded
    `max_users` of them), drawn as it draws them, so that only they need profiles; None:
    no sample, every user."""
    if max_users is None:
        return None
    users = np.unique(test[USER].to_numpy(np.int64))
    users = users[np.isin(users, train[USER].unique())]
    drawn = _draw(users, max_users, seed)
    return None if drawn is users else drawn


def _draw(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """A seeded `max_users` of `users` (sorted), or `users` itself when there are no more."""
    if max_users is None or users.size <= max_users:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))


def run_policy_table(
    run: TrainingRun, systems_for: SystemsFor, *, max_users: int | None = 200
) -> Path:
    """`write_policy_table` for a training run: its protocol's split of its snapshot, the
    model it fitted, next to its evaluation report (folder `policy`)."""
    from recolab.ml.rescoring import protocol_split
    from recolab.ml.scorer import NeuMFScorer

    train, test = protocol_split(run.snapshot, run.protocol_name)
    return write_policy_table(
        train,
        test,
        run.snapshot.movies,
        NeuMFScorer.from_fit_result(run.fit_result),
        systems_for,
        run.artefacts["evaluation"].parent / "policy",
        max_users=max_users,
        about={"protocol": run.protocol_name, "snapshot": run.snapshot_id},
    )
