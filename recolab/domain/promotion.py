"""When a newly trained model may replace the champion."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    promote: bool
    reason: str
    candidate: float
    champion: float | None


def decide_promotion(
    candidate: float,
    champion: float | None,
    *,
    metric: str,
    higher_is_better: bool,
    min_improvement: float = 0.0,
) -> PromotionDecision:
    """Promote when there is no comparable champion, or the candidate beats it strictly.

    `champion` is None when there is no champion or it was measured under another protocol
    or feature snapshot (not comparable: the first model under the new terms wins).
    """
    if not math.isfinite(candidate):
        return PromotionDecision(
            False, f"{metric} is not finite ({candidate})", candidate, champion
        )
    if champion is None:
        return PromotionDecision(True, "no comparable champion", candidate, None)
    gain = candidate - champion if higher_is_better else champion - candidate
    if gain > min_improvement:
        return PromotionDecision(
            True, f"{metric} {candidate:.4f} beats champion {champion:.4f}", candidate, champion
        )
    return PromotionDecision(
        False,
        f"{metric} {candidate:.4f} does not beat champion {champion:.4f}",
        candidate,
        champion,
    )
