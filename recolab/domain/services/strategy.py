"""Strategy choice: which recommender serves each user tier, and with which weights."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from recolab.domain.errors import InvalidValue
from recolab.domain.model import UserClassification

# Relevance weight of MMR for power users (diversity gets the rest).
DEFAULT_MMR_LAMBDA = 0.7


class Strategy(StrEnum):
    POPULAR = "popular"
    CONTENT_BASED = "content_based"
    COLLABORATIVE = "collaborative"
    HYBRID = "hybrid"
    COLLABORATIVE_WITH_DIVERSITY = "collaborative_with_diversity"


@dataclass(frozen=True, slots=True)
class StrategyWeights:
    """Weights of the hybrid merge; `diversity` is 1 - MMR lambda for power users."""

    collaborative: float = 0.0
    content_based: float = 0.0
    diversity: float = 0.0


_STRATEGY_BY_TIER = {
    UserClassification.COLD_START: Strategy.POPULAR,
    UserClassification.NEW: Strategy.CONTENT_BASED,
    UserClassification.CASUAL: Strategy.HYBRID,
    UserClassification.ACTIVE: Strategy.HYBRID,
    UserClassification.POWER_USER: Strategy.COLLABORATIVE_WITH_DIVERSITY,
}

_WEIGHTS_BY_TIER = {
    UserClassification.CASUAL: StrategyWeights(collaborative=0.6, content_based=0.4),
    UserClassification.ACTIVE: StrategyWeights(collaborative=0.8, content_based=0.2),
    UserClassification.POWER_USER: StrategyWeights(
        collaborative=DEFAULT_MMR_LAMBDA, diversity=round(1.0 - DEFAULT_MMR_LAMBDA, 9)
    ),
}


def select_strategy(classification: UserClassification) -> Strategy:
    """cold_start -> popular, new -> content-based, casual/active -> hybrid, power -> CF + MMR."""
    return _STRATEGY_BY_TIER[classification]


# The tiers whose strategy is the hybrid merge: the only ones whose weights are a knob.
HYBRID_TIERS = tuple(t for t, s in _STRATEGY_BY_TIER.items() if s is Strategy.HYBRID)
HybridWeights = Mapping[UserClassification, StrategyWeights]


def strategy_weights(
    classification: UserClassification, hybrid: HybridWeights | None = None
) -> StrategyWeights:
    """The tier's weights: `hybrid`'s for a hybrid tier it names (a configured policy),
    else the seed's."""
    if hybrid is not None and classification in hybrid:
        return hybrid[classification]
    return _WEIGHTS_BY_TIER.get(classification, StrategyWeights(content_based=1.0))


def hybrid_weights(
    table: Mapping[str, Mapping[str, float]],
) -> dict[UserClassification, StrategyWeights]:
    """Per-tier hybrid weights from configuration ({tier: {collaborative, content_based}}):
    only hybrid tiers, both weights finite and in [0, 1], summing to 1. Tiers left out keep
    the seed's weights. Raises InvalidValue naming the bad entry."""
    out: dict[UserClassification, StrategyWeights] = {}
    names = ", ".join(t.value for t in HYBRID_TIERS)
    for name, weights in table.items():
        try:
            tier = UserClassification(name)
        except ValueError:
            raise InvalidValue(
                f"hybrid weights: unknown tier {name!r} (hybrid tiers: {names})"
            ) from None
        if tier not in HYBRID_TIERS:
            raise InvalidValue(f"hybrid weights: tier {name!r} is not served hybrid ({names} are)")
        if set(weights) != {"collaborative", "content_based"}:
            raise InvalidValue(
                f"hybrid weights of {name}: expected collaborative and content_based, "
                f"got {sorted(weights)}"
            )
        cf, cb = weights["collaborative"], weights["content_based"]
        for value in (cf, cb):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidValue(f"hybrid weights of {name}: {value!r} is not a number")
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise InvalidValue(f"hybrid weights of {name}: {value!r} is not in [0, 1]")
        if not math.isclose(cf + cb, 1.0, abs_tol=1e-9):
            raise InvalidValue(f"hybrid weights of {name}: {cf} + {cb} must sum to 1")
        out[tier] = StrategyWeights(collaborative=float(cf), content_based=float(cb))
    return out
