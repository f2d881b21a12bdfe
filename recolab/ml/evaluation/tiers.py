"""User tiers for evaluation breakdowns, by the number of ratings a user has in TRAINING."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recolab.domain.model import TIER_UPPER_BOUNDS, UserClassification

TIERS: tuple[str, ...] = tuple(tier.value for tier in UserClassification)
# Upper bounds (inclusive) of every tier but the last: UserClassification.from_count's.
_UPPER_BOUNDS = np.array(TIER_UPPER_BOUNDS)


def user_tiers(n_ratings: np.ndarray) -> np.ndarray:
    """Tier name per user: 0 cold_start, 1-5 new, 6-20 casual, 21-100 active, >100 power_user."""
    counts = np.asarray(n_ratings, dtype=np.int64)
    if (counts < 0).any():
        raise ValueError("n_ratings cannot be negative")
    return np.asarray(TIERS, dtype=object)[np.searchsorted(_UPPER_BOUNDS, counts, side="left")]


def by_tier(
    values: Mapping[str, np.ndarray], tiers: np.ndarray
) -> dict[str, dict[str, float | int]]:
    """Mean of every per-user metric within each tier, plus the tier's user count.

    Every tier is present; an empty tier has n_users 0 and no metric keys.
    """
    out: dict[str, dict[str, float | int]] = {}
    for tier in TIERS:
        mask = tiers == tier
        row: dict[str, float | int] = {"n_users": int(mask.sum())}
        if mask.any():
            row.update({name: float(np.mean(v[mask])) for name, v in values.items()})
        out[tier] = row
    return out
