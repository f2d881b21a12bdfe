"""Online metrics of an experiment: what each variant served, judged by the ratings that
followed (the `online-report` flow computes them exactly over the history).

The hit rule. A rating (user u, movie m, time t) is a hit for the most recent answer a to u
that contained m with  start(a) <= t <= start(a) + window,  where start(a) is a's time
floored to the whole second (ratings carry whole seconds, so a rating in the answer's own
second counts) and both ends are inclusive. A rating is credited once, to that answer: an
earlier answer that also held m gets nothing for it, and a rating before the answer or after
its window counts for no answer. Its rank in the answer is the hit's position.

Shown answers (champion, challenger) and shadow answers (the challenger's, scored off the
request path, never shown) are matched separately: a shadow answer does not take a rating
from the answer the user actually saw. Shadow figures say what the challenger would have put
in front of the users; they are reported apart and are no online evidence for promotion.

Per variant: answers, users, hit rate (the share of answers with at least one hit), hit rate
at each rank cut-off k (a hit at rank <= k), hits by strategy and tier, coverage (distinct
movies served / catalogue size) and novelty (mean self-information -log2 p of the served
items, p a movie's share of the ratings, add-one smoothed over the catalogue so a movie never
rated has a finite value). Intervals come from a percentile bootstrap over users (users are
resampled with replacement, the ratio recomputed; seeded, vectorised): answers of one user
are not independent, users are. The challenger-minus-champion difference resamples each
variant's users independently (sticky assignment: the variants' users are disjoint).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from recolab.domain.errors import InvalidValue
from recolab.domain.experiments import CHALLENGER, CHAMPION, SHADOW, VARIANTS
from recolab.domain.promotion import OnlineEvidence

SHOWN = (CHAMPION, CHALLENGER)
# Bootstrap blocks: replicates x users weights held at once (8 bytes each).
_CELLS = 4_000_000


def _array(values: Any, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=dtype))


@dataclass(frozen=True, eq=False)
class Answers:
    """What was served: one row per answer (`user` .. `tier`), and one row per served item
    (`item_answer`: the row of its answer, `movie`, `rank` from 1)."""

    user: np.ndarray
    created_at: np.ndarray  # epoch seconds
    variant: np.ndarray  # champion | challenger | shadow
    model_version: np.ndarray  # "" when none
    strategy: np.ndarray
    tier: np.ndarray  # "" when unknown
    item_answer: np.ndarray
    movie: np.ndarray
    rank: np.ndarray

    def __post_init__(self) -> None:
        answer = {"user": np.int64, "created_at": np.float64, "variant": str}
        answer |= {"model_version": str, "strategy": str, "tier": str}
        item = {"item_answer": np.int64, "movie": np.int64, "rank": np.int64}
        for name, dtype in (answer | item).items():
            object.__setattr__(self, name, _array(getattr(self, name), dtype))
        if len({getattr(self, c).size for c in answer}) > 1:
            raise InvalidValue("every answer column must have one value per answer")
        if len({getattr(self, c).size for c in item}) > 1:
            raise InvalidValue("every item column must have one value per served item")
        if self.rank.size and not 0 <= self.item_answer.min() <= self.item_answer.max() < len(self):
            raise InvalidValue("an item names an answer that does not exist")

    def __len__(self) -> int:
        return int(self.user.size)

    def subset(self, keep: np.ndarray) -> Answers:
        """The answers where `keep` (a mask over answers) holds, with their items."""
        rows = np.flatnonzero(keep)
        new = np.full(self.user.size, -1, dtype=np.int64)
        new[rows] = np.arange(rows.size)
        items = new[self.item_answer] >= 0
        return Answers(
            self.user[rows],
            self.created_at[rows],
            self.variant[rows],
            self.model_version[rows],
            self.strategy[rows],
            self.tier[rows],
            new[self.item_answer[items]],
            self.movie[items],
            self.rank[items],
        )


@dataclass(frozen=True, eq=False)
class Feedback:
    """Ratings: (user, movie, epoch seconds), one row each."""

    user: np.ndarray
    movie: np.ndarray
    timestamp: np.ndarray

    def __post_init__(self) -> None:
        for name in ("user", "movie", "timestamp"):
            object.__setattr__(self, name, _array(getattr(self, name), np.int64))
        if not self.user.size == self.movie.size == self.timestamp.size:
            raise InvalidValue("every rating column must have one value per rating")


@dataclass(frozen=True, eq=False)
class Popularity:
    """The catalogue (every movie id) and each movie's number of ratings."""

    movie: np.ndarray
    count: np.ndarray

    def __post_init__(self) -> None:
        for name in ("movie", "count"):
            object.__setattr__(self, name, _array(getattr(self, name), np.int64))
        if self.movie.size != self.count.size:
            raise InvalidValue("one rating count per catalogue movie")

    @property
    def catalogue_size(self) -> int:
        return int(self.movie.size)

    def self_information(self, movies: np.ndarray) -> np.ndarray:
        """-log2 of each movie's add-one smoothed share of the ratings (unknown: count 0)."""
        order = np.argsort(self.movie)
        ids, counts = self.movie[order], self.count[order]
        at = np.searchsorted(ids, movies).clip(max=max(ids.size - 1, 0))
        found = (ids[at] == movies) if ids.size else np.zeros(movies.shape, bool)
        count = np.where(found, counts[at] if ids.size else 0, 0)
        total = float(counts.sum()) + max(self.catalogue_size, 1)
        return np.asarray(-np.log2((count + 1.0) / total), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class ExperimentData:
    """Everything a report reads: the answers, the ratings after them, the catalogue."""

    answers: Answers
    feedback: Feedback
    popularity: Popularity


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Answers of one strategy or tier, those with a hit, and the ratings credited."""

    answers: int
    answers_with_hit: int
    hits: int

    @property
    def hit_rate(self) -> float:
        return self.answers_with_hit / self.answers if self.answers else math.nan


@dataclass(frozen=True, eq=False)
class VariantReport:
    variant: str
    shown: bool  # False: shadow answers, never put in front of the users
    answers: int
    users: int
    items: int
    hits: int  # ratings credited to this variant's answers
    hit_rate: float
    hit_rate_interval: Interval
    hit_rate_at: dict[int, float]
    hit_rate_at_interval: dict[int, Interval]
    hits_by_rank: dict[int, int]
    by_strategy: dict[str, Breakdown]
    by_tier: dict[str, Breakdown]
    coverage: float
    novelty: float
    versions: dict[str, int]  # model version -> answers
    replicates: np.ndarray = field(repr=False)  # bootstrap: [hit rate, hit rate@k...] rows


@dataclass(frozen=True, eq=False)
class Difference:
    """Challenger minus champion: the hit rate's (and each cut-off's) point difference, its
    two-sided interval and one-sided lower bound at `confidence`, and the replicates."""

    hit_rate: float
    hit_rate_interval: Interval
    lower_bound: float
    confidence: float
    hit_rate_at: dict[int, float]
    hit_rate_at_interval: dict[int, Interval]
    replicates: np.ndarray = field(repr=False)
    champion_users: int = 0
    challenger_users: int = 0

    def evidence(self) -> OnlineEvidence:
        """The online evidence the promotion rule judges."""
        return OnlineEvidence(
            self.hit_rate, self.replicates, self.champion_users, self.challenger_users
        )


@dataclass(frozen=True, slots=True)
class ReportSettings:
    window_s: float
    rank_cutoffs: tuple[int, ...]
    confidence: float
    bootstrap_samples: int
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.window_s >= 0 and 0.5 < self.confidence < 1 and self.bootstrap_samples > 0):
            raise InvalidValue(
                "window_s >= 0, 0.5 < confidence < 1 and bootstrap_samples > 0 are needed"
            )
        if not self.rank_cutoffs or min(self.rank_cutoffs) < 1:
            raise InvalidValue("rank cut-offs are positive ranks (1 = the first item)")


@dataclass(frozen=True, eq=False)
class OnlineReport:
    experiment: str
    settings: ReportSettings
    variants: dict[str, VariantReport]  # shown variants (champion, challenger)
    shadow: VariantReport | None  # apart: never shown, never evidence
    difference: Difference | None  # None unless both shown variants answered someone
    catalogue_size: int
    ratings_read: int
    first_answer: float | None
    last_answer: float | None
    open_answers: int  # answers whose window had not closed at `now`
    excluded_answers: int  # served by another model version than the one compared

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (no replicates; cut-offs as string keys)."""
        out: dict[str, Any] = plain(self)
        return out


def plain(value: Any) -> Any:
    """Report values as plain data: dataclasses as dicts (without bootstrap replicates),
    intervals as [low, high], mapping keys as strings, tuples as lists."""
    if isinstance(value, Interval):
        return [value.low, value.high]
    if isinstance(value, Breakdown):
        return {
            **{f.name: getattr(value, f.name) for f in fields(value)},
            "hit_rate": value.hit_rate,
        }
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name)) for f in fields(value) if f.name != "replicates"
        }
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def credit_hits(answers: Answers, feedback: Feedback, window_s: float) -> np.ndarray:
    """For each served item, how many ratings are credited to it (0 or 1 with one rating
    per user and movie), by the module's hit rule, within each pool (shown, shadow)."""
    credited = np.zeros(answers.movie.size, dtype=np.int64)
    shadow = answers.variant == SHADOW
    for pool in (~shadow, shadow):
        rows = np.flatnonzero(pool[answers.item_answer])
        if rows.size and feedback.user.size:
            credited += np.bincount(
                _match(answers, rows, feedback, window_s), minlength=credited.size + 1
            )[1:]
    return credited


def _match(answers: Answers, rows: np.ndarray, feedback: Feedback, window_s: float) -> np.ndarray:
    """For each rating, 1 + the item row (of `rows`) it is credited to; 0 for none.

    One sort of items and ratings together by (user, movie, second, kind, exact time): the
    last item before a rating in that order, when it has the rating's user and movie, is the
    most recent answer holding the movie whose second is not after the rating's."""
    answer = answers.item_answer[rows]
    exact = answers.created_at[answer]
    start = np.floor(exact).astype(np.int64)
    n = rows.size
    user = np.concatenate([answers.user[answer], feedback.user])
    movie = np.concatenate([answers.movie[rows], feedback.movie])
    second = np.concatenate([start, feedback.timestamp])
    kind = np.concatenate([np.zeros(n, np.int8), np.ones(feedback.user.size, np.int8)])
    tie = np.concatenate([exact, np.zeros(feedback.user.size)])
    order = np.lexsort((tie, kind, second, movie, user))
    is_item = order < n
    last = np.maximum.accumulate(np.where(is_item, np.arange(order.size), -1))
    rating_at = np.flatnonzero(~is_item)
    before = last[rating_at]
    found = before >= 0
    item_pos = np.where(found, order[np.where(found, before, 0)], 0)
    rating = order[rating_at] - n
    ok = (
        found
        & (user[item_pos] == feedback.user[rating])
        & (movie[item_pos] == feedback.movie[rating])
        & (feedback.timestamp[rating] <= start[item_pos] + window_s)
    )
    out = np.zeros(feedback.user.size, dtype=np.int64)
    out[rating[ok]] = rows[item_pos[ok]] + 1
    return out


def compute_report(
    experiment: str,
    data: ExperimentData,
    settings: ReportSettings,
    *,
    versions: Mapping[str, str] | None = None,
    now: float | None = None,
) -> OnlineReport:
    """The online report of `experiment` from `data`.

    `versions` (variant -> model version) keeps only the answers each variant served with
    that version (the two versions being compared); the others are counted as excluded."""
    answers = data.answers
    keep = np.ones(len(answers), dtype=bool)
    for variant, version in (versions or {}).items():
        keep &= (answers.variant != variant) | (answers.model_version == str(version))
    excluded = int((~keep).sum())
    answers = answers.subset(keep) if excluded else answers
    credited = credit_hits(answers, data.feedback, settings.window_s)
    reports = {
        name: _variant(name, i, answers, credited, data.popularity, settings)
        for i, name in enumerate(_variant_order(answers.variant))
    }
    shown = {k: v for k, v in reports.items() if k != SHADOW}
    times = answers.created_at
    return OnlineReport(
        experiment=experiment,
        settings=settings,
        variants=shown,
        shadow=reports.get(SHADOW),
        difference=_difference(shown.get(CHAMPION), shown.get(CHALLENGER), settings),
        catalogue_size=data.popularity.catalogue_size,
        ratings_read=int(data.feedback.user.size),
        first_answer=float(times.min()) if times.size else None,
        last_answer=float(times.max()) if times.size else None,
        open_answers=(0 if now is None else int((np.floor(times) + settings.window_s > now).sum())),
        excluded_answers=excluded,
    )


def _variant_order(variants: np.ndarray) -> list[str]:
    """The shown variants first (champion, challenger always), shadow, then any other."""
    present = set(np.unique(variants).tolist())
    known = [v for v in VARIANTS if v in present or v in SHOWN]
    return known + sorted(present - set(VARIANTS))


def _variant(
    name: str,
    index: int,
    answers: Answers,
    credited: np.ndarray,
    popularity: Popularity,
    settings: ReportSettings,
) -> VariantReport:
    mine = answers.variant == name
    rows = np.flatnonzero(mine)
    items = mine[answers.item_answer]
    hit_items = items & (credited > 0)
    # per answer of this variant: hits, best rank of a hit
    local = np.full(answers.user.size, -1, dtype=np.int64)
    local[rows] = np.arange(rows.size)
    owner = local[answers.item_answer[hit_items]]
    hits = np.bincount(owner, weights=credited[hit_items], minlength=rows.size).astype(np.int64)
    best = np.full(rows.size, np.iinfo(np.int64).max)
    np.minimum.at(best, owner, answers.rank[hit_items])
    cutoffs = settings.rank_cutoffs
    hit_matrix = np.column_stack([hits > 0, *[best <= k for k in cutoffs]]).astype(np.float64)
    users, user_of = np.unique(answers.user[rows], return_inverse=True)
    rng = np.random.default_rng([settings.seed, index])
    replicates = bootstrap_ratios(
        np.stack(
            [np.bincount(user_of, hit_matrix[:, j], users.size) for j in range(1 + len(cutoffs))], 1
        ),
        np.bincount(user_of, minlength=users.size).astype(np.float64),
        settings.bootstrap_samples,
        rng,
    )
    point = hit_matrix.mean(axis=0) if rows.size else np.full(1 + len(cutoffs), math.nan)
    bounds = _intervals(replicates, settings.confidence)
    served = answers.movie[items]
    ranks, counts = np.unique(answers.rank[hit_items], return_counts=True)
    return VariantReport(
        variant=name,
        shown=name != SHADOW,
        answers=int(rows.size),
        users=int(users.size),
        items=int(served.size),
        hits=int(hits.sum()),
        hit_rate=float(point[0]),
        hit_rate_interval=bounds[0],
        hit_rate_at={k: float(point[j + 1]) for j, k in enumerate(cutoffs)},
        hit_rate_at_interval={k: bounds[j + 1] for j, k in enumerate(cutoffs)},
        hits_by_rank={int(r): int(c) for r, c in zip(ranks.tolist(), counts.tolist(), strict=True)},
        by_strategy=_breakdown(answers.strategy[rows], hits),
        by_tier=_breakdown(answers.tier[rows], hits),
        coverage=(
            np.unique(served).size / popularity.catalogue_size
            if popularity.catalogue_size
            else math.nan
        ),
        novelty=float(popularity.self_information(served).mean()) if served.size else math.nan,
        versions=dict(_counts(answers.model_version[rows])),
        replicates=replicates,
    )


def bootstrap_ratios(
    numerators: np.ndarray, denominators: np.ndarray, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """`samples` replicates of sum(numerators) / sum(denominators) over users drawn with
    replacement: a (samples, columns) array (NaN without users).

    Each replicate is a weight per user (how often it was drawn), applied by a matrix
    product, in blocks of replicates that keep the weights under `_CELLS` numbers."""
    numerators = np.asarray(numerators, dtype=np.float64)
    if numerators.ndim == 1:
        numerators = numerators[:, None]
    users = len(denominators)
    out = np.full((samples, numerators.shape[1]), math.nan)
    if users == 0:
        return out
    block = max(1, _CELLS // users)
    for first in range(0, samples, block):
        b = min(block, samples - first)
        drawn = rng.integers(0, users, size=(b, users)) + users * np.arange(b)[:, None]
        weights = np.bincount(drawn.ravel(), minlength=b * users).reshape(b, users)
        weights = weights.astype(np.float64)
        out[first : first + b] = (weights @ numerators) / (weights @ denominators)[:, None]
    return out


def _intervals(replicates: np.ndarray, confidence: float) -> list[Interval]:
    if replicates.size == 0 or np.isnan(replicates).all():
        return [Interval(math.nan, math.nan)] * replicates.shape[1]
    low, high = np.quantile(replicates, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)
    return [Interval(float(a), float(b)) for a, b in zip(low, high, strict=True)]


def _difference(
    champion: VariantReport | None, challenger: VariantReport | None, settings: ReportSettings
) -> Difference | None:
    if champion is None or challenger is None or not (champion.users and challenger.users):
        return None
    replicates = challenger.replicates - champion.replicates
    bounds = _intervals(replicates, settings.confidence)
    cutoffs = settings.rank_cutoffs
    return Difference(
        hit_rate=challenger.hit_rate - champion.hit_rate,
        hit_rate_interval=bounds[0],
        lower_bound=float(np.quantile(replicates[:, 0], 1 - settings.confidence)),
        confidence=settings.confidence,
        hit_rate_at={k: challenger.hit_rate_at[k] - champion.hit_rate_at[k] for k in cutoffs},
        hit_rate_at_interval={k: bounds[j + 1] for j, k in enumerate(cutoffs)},
        replicates=replicates[:, 0],
        champion_users=champion.users,
        challenger_users=challenger.users,
    )


def _breakdown(labels: np.ndarray, hits: np.ndarray) -> dict[str, Breakdown]:
    names, of = np.unique(labels, return_inverse=True)
    answers = np.bincount(of, minlength=names.size)
    with_hit = np.bincount(of, weights=hits > 0, minlength=names.size)
    credited = np.bincount(of, weights=hits, minlength=names.size)
    return {
        str(name): Breakdown(int(a), int(w), int(c))
        for name, a, w, c in zip(names.tolist(), answers, with_hit, credited, strict=True)
    }


def _counts(values: np.ndarray) -> Sequence[tuple[str, int]]:
    names, counts = np.unique(values, return_counts=True)
    return [(str(n), int(c)) for n, c in zip(names.tolist(), counts.tolist(), strict=True)]
