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
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
