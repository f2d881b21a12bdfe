"""Drift: how far recent data has moved from the champion's training snapshot, and whether
that asks for a retrain.

The figures (`DriftReport`) compare the ratings that arrived after the snapshot with the
snapshot's own, and the recent answers' mix:

- rating PSI: the population stability index of the rating values (half-star bins);
- popularity PSI: how recent ratings spread over the snapshot's movie-popularity deciles
  (movies by their number of ratings in the snapshot; a movie the snapshot lacks is in the
  least popular decile) against how the snapshot's own ratings spread over them;
- unseen users / movies: the shares of recent ratings by users, or of movies, that the
  champion never saw (absent from its snapshot, so absent from its id maps);
- fallback / cold-start shares: of the recent answers, those that fell back to another
  strategy, and those to users with no ratings;
- new ratings: how many arrived after the snapshot.

`decide_retrain` asks for one retrain when a judged figure passes its threshold or enough
new ratings arrived, and never twice for the same champion version and snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from recolab.domain.errors import InvalidValue

# A bin's share is floored at EPSILON before the logarithm, so that an empty bin (on either
# side) gives a finite index: a bin empty on both sides adds nothing, and one empty only in
# the snapshot adds (share - EPSILON) * ln(share / EPSILON), large but finite. 1e-4 is the
# usual choice: it weighs an empty bin like one rating in ten thousand.
EPSILON = 1e-4
# Rating values 0.5..5.0 in half stars: one bin each (edges halfway between values).
RATING_EDGES = np.arange(0.25, 5.26, 0.5)
N_POPULARITY_BINS = 10


def population_stability_index(
    expected: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    epsilon: float = EPSILON,
) -> float:
    """PSI = sum over bins of (a - e) * ln(a / e), where e and a are each bin's share of
    `expected` (the reference: the snapshot) and of `actual` (the recent data), given as
    counts (or shares) per bin. Shares are floored at `epsilon` (see EPSILON). 0 when the
    two distributions are the same; never negative. Rule of thumb: below 0.1 stable,
    0.1 to 0.25 a slight shift, above 0.25 a major one."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or len(e) == 0:
        raise InvalidValue(f"PSI needs two count vectors of one length, got {e.shape}, {a.shape}")
    if (e < 0).any() or (a < 0).any() or e.sum() <= 0 or a.sum() <= 0:
        raise InvalidValue("PSI needs non-negative counts with a positive total on each side")
    e_share = np.maximum(e / e.sum(), epsilon)
    a_share = np.maximum(a / a.sum(), epsilon)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def rating_histogram(scores: np.ndarray) -> np.ndarray:
    """Counts of rating values per half-star bin (0.5, 1.0, ..., 5.0)."""
    counts, _ = np.histogram(np.asarray(scores, dtype=np.float64), bins=RATING_EDGES)
    return counts


def popularity_bins(
    snapshot_movies: np.ndarray, recent_movies: np.ndarray, n_bins: int = N_POPULARITY_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the snapshot's ratings and of the recent ratings per popularity bin of the
    snapshot's movies (deciles of their rating counts there; the least popular first).

    Bin edges are quantiles of the movies' counts, so movies with the same count share a
    bin (a long tail of rarely rated movies may make fewer than `n_bins` non-empty bins).
    A recent rating of a movie the snapshot lacks (count 0) falls in the first bin."""
    movies, counts = np.unique(np.asarray(snapshot_movies), return_counts=True)
    edges = np.quantile(counts, np.arange(1, n_bins) / n_bins)
    movie_bin = np.searchsorted(edges, counts, side="right")
    expected = np.bincount(movie_bin, weights=counts, minlength=n_bins)
    recent = np.asarray(recent_movies)
    pos = np.minimum(np.searchsorted(movies, recent), len(movies) - 1)
    known = movies[pos] == recent
    recent_bin = np.where(known, movie_bin[pos], 0)
    actual = np.bincount(recent_bin, minlength=n_bins).astype(np.float64)
    return expected, actual


@dataclass(frozen=True, slots=True)
class RatingSample:
    """Ratings as column arrays (one entry per rating)."""

    user_ids: np.ndarray
    movie_ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.user_ids) == len(self.movie_ids) == len(self.scores):
            raise InvalidValue("a rating sample's columns must have one length")

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True, slots=True)
class AnswerCounts:
    """Recent answers served (shadow scorings excluded), how many fell back, how many went
    to cold-start users."""

    answers: int = 0
    fallbacks: int = 0
    cold_start: int = 0


@dataclass(frozen=True, slots=True)
class DriftThresholds:
    """When a figure says "retrain" (configs/monitor.yaml). Shares and PSIs are judged only
    on at least `min_sample` observations: recent ratings for the rating figures, recent
    answers for the answer shares."""

    min_sample: int = 200
    rating_psi: float = 0.2
    popularity_psi: float = 0.2
    unseen_users_share: float = 0.3
    unseen_movies_share: float = 0.2
    fallback_share: float = 0.2
    cold_start_share: float = 0.5
    new_ratings: int = 10_000


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure against its threshold: `judged` False when too few observations."""

    name: str
    value: float | None
    threshold: float
    observations: int
    unit: str  # what the observations are: "ratings" or "answers"
    judged: bool

    @property
    def over(self) -> bool:
        return self.judged and self.value is not None and self.value > self.threshold


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The figures of recent data against the champion's training snapshot (see module)."""

    model_version: str
    snapshot_id: str
    snapshot_ratings: int
    new_ratings: int
    answers: int
    rating_psi: float | None = None
    popularity_psi: float | None = None
    unseen_users_share: float | None = None
    unseen_movies_share: float | None = None
    fallback_share: float | None = None
    cold_start_share: float | None = None

    def figures(self, thresholds: DriftThresholds) -> list[Figure]:
        """Every figure with its threshold, in the order a report shows them."""
        t, n, k = thresholds, self.new_ratings, self.answers
        rated = n >= t.min_sample
        served = k >= t.min_sample
        r, a = "ratings", "answers"
        return [
            Figure("rating PSI", self.rating_psi, t.rating_psi, n, r, rated),
            Figure("popularity PSI", self.popularity_psi, t.popularity_psi, n, r, rated),
            Figure(
                "unseen users share", self.unseen_users_share, t.unseen_users_share, n, r, rated
            ),
            Figure(
                "unseen movies share", self.unseen_movies_share, t.unseen_movies_share, n, r, rated
            ),
            Figure("fallback share", self.fallback_share, t.fallback_share, k, a, served),
            Figure("cold-start share", self.cold_start_share, t.cold_start_share, k, a, served),
        ]


def drift_report(
    snapshot: RatingSample,
    recent: RatingSample,
    answers: AnswerCounts,
    *,
    model_version: str,
    snapshot_id: str,
) -> DriftReport:
    """The figures of `recent` (the ratings after the snapshot) and `answers` (the recent
    answers) against `snapshot` (the champion's training ratings). Figures that have no
    observation (no recent rating, no answer) are None."""
    if len(snapshot) == 0:
        raise InvalidValue(f"snapshot {snapshot_id} holds no ratings: nothing to compare")
    report = DriftReport(
        model_version=model_version,
        snapshot_id=snapshot_id,
        snapshot_ratings=len(snapshot),
        new_ratings=len(recent),
        answers=answers.answers,
    )
    if answers.answers > 0:
        report = replace(
            report,
            fallback_share=answers.fallbacks / answers.answers,
            cold_start_share=answers.cold_start / answers.answers,
        )
    if len(recent) == 0:
        return report
    return replace(
        report,
        rating_psi=population_stability_index(
            rating_histogram(snapshot.scores), rating_histogram(recent.scores)
        ),
        popularity_psi=population_stability_index(
            *popularity_bins(snapshot.movie_ids, recent.movie_ids)
        ),
        unseen_users_share=_unseen_share(snapshot.user_ids, recent.user_ids),
        unseen_movies_share=_unseen_share(snapshot.movie_ids, recent.movie_ids),
    )


def _unseen_share(known: np.ndarray, recent: np.ndarray) -> float:
    return float(1.0 - np.isin(recent, np.unique(known)).mean())


@dataclass(frozen=True, slots=True)
class RetrainRequest:
    """A retrain the monitor asked for: for which champion version and snapshot, and why.
    `id` and `requested_at` are set once it is recorded."""

    model_version: str
    snapshot_id: str
    reason: str
    new_ratings: int
    requested_at: datetime | None = None
    flow_run_id: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class RetrainDecision:
    """Whether to ask for a retrain, the reasons (each figure past its threshold, in
    words), the figures left unjudged, and the earlier request that makes this one moot."""

    retrain: bool
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    already_requested: RetrainRequest | None = field(default=None)

    @property
    def summary(self) -> str:
        if self.retrain:
            return "retrain: " + "; ".join(self.reasons)
        if self.already_requested is not None:
            asked = self.already_requested
            when = asked.requested_at.isoformat() if asked.requested_at else "earlier"
            return (
                f"no retrain: already asked ({when}, request {asked.id}) for model version "
                f"{asked.model_version} on snapshot {asked.snapshot_id}; a new champion "
                f"must serve first. Still true: " + "; ".join(self.reasons)
            )
        return "no retrain: every judged figure is within its threshold"


def decide_retrain(
    report: DriftReport,
    thresholds: DriftThresholds,
    last_request: RetrainRequest | None = None,
) -> RetrainDecision:
    """Retrain when a judged figure passes its threshold, or when at least
    `thresholds.new_ratings` ratings arrived since the snapshot; but never twice for one
    champion version and snapshot on the same data: a request recorded for them
    (`last_request`) means "already asked" until a new champion (another version, or another
    snapshot) serves or another `thresholds.new_ratings` ratings arrived (`already_asked`)."""
    reasons: list[str] = []
    notes: list[str] = []
    for figure in report.figures(thresholds):
        if figure.over:
            reasons.append(
                f"{figure.name} {_fmt(figure.value)} > {_fmt(figure.threshold)} "
                f"(on {figure.observations} {figure.unit})"
            )
        elif not figure.judged and figure.value is not None:
            notes.append(
                f"{figure.name} {_fmt(figure.value)} not judged: {figure.observations} "
                f"{figure.unit} < {thresholds.min_sample}"
            )
    if report.new_ratings >= thresholds.new_ratings:
        reasons.append(
            f"{report.new_ratings} new ratings since snapshot {report.snapshot_id} "
            f">= {thresholds.new_ratings}"
        )
    if not reasons:
        return RetrainDecision(False, (), tuple(notes))
    if already_asked(
        last_request,
        report.model_version,
        report.snapshot_id,
        report.new_ratings,
        thresholds.new_ratings,
    ):
        return RetrainDecision(False, tuple(reasons), tuple(notes), last_request)
    return RetrainDecision(True, tuple(reasons), tuple(notes))


def already_asked(
    last: RetrainRequest | None,
    model_version: str,
    snapshot_id: str,
    new_ratings: int,
    every: int,
) -> bool:
    """Whether `last` already asked for this champion and snapshot: it did, unless `every`
    more new ratings arrived since (a retrain that was asked for and not promoted leaves the
    same champion serving; the data it missed keeps growing, so the monitor may ask again
    once per `every` ratings, never once per run)."""
    if last is None or (last.model_version, last.snapshot_id) != (model_version, snapshot_id):
        return False
    return new_ratings < last.new_ratings + every


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}"
