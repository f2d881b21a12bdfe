"""When a newly trained model may replace the champion.

The rule compares figures only; measuring them is the caller's job. Two comparisons, both
of which the candidate must win strictly:

- against the popularity baseline under the candidate's protocol (a model that ranks no
  better than "most rated first" is never served);
- against the current champion measured on the same data as the candidate (the
  candidate's own test split): a `HeadToHead`. A champion trained under another protocol or
  on another feature snapshot is re-measured, never treated as absent. The rows it was
  trained on are left out of that split; when fewer than `min_rows` remain (a champion
  refitted on all of a snapshot has seen nearly every row of the next one), the comparison
  says too little and the champion stays.

A challenger tried online (the `challenger` alias) is promoted by `decide_online_promotion`:
not worse offline on the same data, and better online with the configured confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class HeadToHead:
    """The candidate and the champion, measured on the same rows by the same code."""

    candidate: float
    champion: float
    rows: int | None = None  # the test rows both were measured on (None: not counted)


# Fewest comparable test rows a head-to-head needs (configs/pipeline.yaml overrides it).
MIN_COMPARABLE_ROWS = 50


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    promote: bool
    reason: str
    candidate: float  # under the candidate's protocol, as its run reports it
    champion: float | None  # the champion on the same data (None: there is no champion)
    baseline: float | None = None  # the baseline under the candidate's protocol
    candidate_same_data: float | None = None  # the candidate on the rows `champion` used


def decide_promotion(
    candidate: float,
    champion: HeadToHead | None,
    baseline: float | None,
    *,
    metric: str,
    higher_is_better: bool,
    baseline_name: str = "popularity",
    min_improvement: float = 0.0,
    min_rows: int = MIN_COMPARABLE_ROWS,
) -> PromotionDecision:
    """Promote only a candidate that strictly beats the baseline and, when there is a
    champion, strictly beats it (by more than `min_improvement`) on the same data, measured
    on at least `min_rows` test rows (when the head-to-head counts them).

    `candidate` and `baseline` are figures under the candidate's protocol (its split, the
    same harness); `champion` is None only when no model holds the champion alias. Any
    figure that is missing or not finite keeps the current champion: a comparison that
    cannot be made is not won.
    """
    same = None if champion is None else champion.candidate
    held = None if champion is None else champion.champion

    def decision(promote: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(promote, reason, candidate, held, baseline, same)

    def beats(a: float, b: float, margin: float = 0.0) -> bool:
        return (a - b if higher_is_better else b - a) > margin

    if not math.isfinite(candidate):
        return decision(False, f"{metric} is not finite ({candidate})")
    if baseline is None or not math.isfinite(baseline):
        return decision(False, f"no {baseline_name} baseline {metric} to compare with")
    if not beats(candidate, baseline):
        return decision(
            False,
            f"{metric} {candidate:.4f} does not beat the {baseline_name} baseline {baseline:.4f}",
        )
    if champion is None:
        return decision(
            True,
            f"no champion; {metric} {candidate:.4f} beats the {baseline_name} baseline "
            f"{baseline:.4f}",
        )
    if champion.rows is not None and champion.rows < min_rows:
        return decision(
            False,
            f"only {champion.rows} test rows can compare the candidate with the champion (it "
            f"was trained on the others); at least {min_rows} are needed",
        )
    if not (math.isfinite(champion.candidate) and math.isfinite(champion.champion)):
        return decision(
            False,
            f"cannot compare with the champion on the same data ({metric}: candidate "
            f"{champion.candidate}, champion {champion.champion})",
        )
    if beats(champion.candidate, champion.champion, min_improvement):
        return decision(
            True,
            f"{metric} {champion.candidate:.4f} beats champion {champion.champion:.4f} on "
            f"the same data (and the {baseline_name} baseline {baseline:.4f})",
        )
    return decision(
        False,
        f"{metric} {champion.candidate:.4f} does not beat champion {champion.champion:.4f} "
        "on the same data",
    )


# -- promotion from online evidence (`recolab online-report --promote`) --------------------


@dataclass(frozen=True, eq=False)
class OnlineEvidence:
    """The challenger's online hit rate minus the champion's, the bootstrap replicates of that
    difference (users resampled), and how many users each variant answered."""

    difference: float
    replicates: np.ndarray
    champion_users: int
    challenger_users: int

    def lower_bound(self, confidence: float) -> float:
        """The one-sided lower bound of the difference at `confidence` (NaN: no replicates)."""
        values = np.asarray(self.replicates, dtype=np.float64)
        values = values[np.isfinite(values)]
        return float(np.quantile(values, 1 - confidence)) if values.size else math.nan


ONLINE_CONDITIONS = ("offline", "online", "users")


@dataclass(frozen=True, slots=True)
class OnlinePromotionDecision:
    """Whether the challenger replaces the champion, why, and the figures judged. `failed`
    names the conditions that were not met (of `ONLINE_CONDITIONS`)."""

    promote: bool
    reason: str
    failed: tuple[str, ...]
    confidence: float
    difference: float | None  # online: challenger - champion hit rate
    lower_bound: float | None  # its one-sided bound at `confidence`
    champion_users: int
    challenger_users: int
    offline_metric: str
    offline_challenger: float | None  # both on the same data (the challenger's test split)
    offline_champion: float | None
    offline_rows: int | None
    offline_judged: bool  # False: no same-data comparison could be made


def decide_online_promotion(
    offline: HeadToHead | None,
    online: OnlineEvidence | None,
    *,
    metric: str,
    higher_is_better: bool,
    confidence: float,
    min_users_per_variant: int,
    offline_tolerance: float = 0.0,
    min_rows: int = MIN_COMPARABLE_ROWS,
    require_offline: bool = False,
) -> OnlinePromotionDecision:
    """Promote the challenger only if all of these hold; otherwise it stays challenger and
    the reason names every condition that failed, with its figures:

    - offline: not worse than the champion on the same data (`offline`, challenger as
      `candidate`) by more than `offline_tolerance`. A comparison that could not be made (no
      figures, a figure not finite, fewer than `min_rows` rows) does not judge: it blocks
      only with `require_offline` (a challenger retrained on the champion's own snapshot has
      no rows the champion did not see: traffic compares what a held-out split cannot);
    - online: the lower bound of the hit-rate difference at `confidence` is above zero;
    - users: each variant answered at least `min_users_per_variant` users.
    """
    judged = (
        offline is not None
        and math.isfinite(offline.candidate)
        and math.isfinite(offline.champion)
        and (offline.rows is None or offline.rows >= min_rows)
    )
    failed: list[str] = []
    notes: list[str] = []
    if judged:
        assert offline is not None
        margin = offline.candidate - offline.champion
        worse_by = -margin if higher_is_better else margin
        text = (
            f"offline {metric} {offline.candidate:.4f} vs champion {offline.champion:.4f} on "
            f"the same data ({_rows(offline.rows)})"
        )
        if worse_by > offline_tolerance:
            failed.append("offline")
            notes.append(f"{text}: worse by more than the tolerance {offline_tolerance:g}")
        else:
            notes.append(text)
    else:
        why = (
            "no comparison"
            if offline is None
            else f"{metric} challenger {offline.candidate}, champion {offline.champion} on "
            f"{_rows(offline.rows)} (at least {min_rows} needed)"
        )
        if require_offline:
            failed.append("offline")
        notes.append(f"offline not judged ({why})")
    champion_users = 0 if online is None else online.champion_users
    challenger_users = 0 if online is None else online.challenger_users
    difference = None if online is None else online.difference
    bound = None if online is None else online.lower_bound(confidence)
    if online is None or bound is None or not (math.isfinite(bound) and bound > 0):
        failed.append("online")
        notes.append(
            "no online evidence: the challenger answered no user (shadow answers are never "
            "evidence)"
            if online is None
            else f"online hit-rate difference {online.difference:+.4f} has its lower bound "
            f"{bound:+.4f} at {confidence:.1%}, not above zero"
        )
    else:
        notes.append(
            f"online hit-rate difference {online.difference:+.4f}, lower bound {bound:+.4f} "
            f"at {confidence:.1%}"
        )
    if min(champion_users, challenger_users) < min_users_per_variant:
        failed.append("users")
        notes.append(
            f"users: champion {champion_users}, challenger {challenger_users}; at least "
            f"{min_users_per_variant} each are needed"
        )
    promote = not failed
    verdict = "promoted" if promote else f"stays challenger ({', '.join(failed)} failed)"
    return OnlinePromotionDecision(
        promote=promote,
        reason=f"{verdict}: {'; '.join(notes)}",
        failed=tuple(failed),
        confidence=confidence,
        difference=difference,
        lower_bound=bound,
        champion_users=champion_users,
        challenger_users=challenger_users,
        offline_metric=metric,
        offline_challenger=None if offline is None else offline.candidate,
        offline_champion=None if offline is None else offline.champion,
        offline_rows=None if offline is None else offline.rows,
        offline_judged=judged,
    )


def _rows(rows: int | None) -> str:
    return "rows not counted" if rows is None else f"{rows} rows"
