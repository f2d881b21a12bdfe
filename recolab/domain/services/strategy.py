"""Strategy choice: which recommender serves each user tier, and with which weights."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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


def strategy_weights(classification: UserClassification) -> StrategyWeights:
    return _WEIGHTS_BY_TIER.get(classification, StrategyWeights(content_based=1.0))
