"""Evaluation breakdowns use the domain's user tiers, not a copy of them."""

from __future__ import annotations

import numpy as np

from recolab.domain.model import TIER_UPPER_BOUNDS, UserClassification
from recolab.ml.evaluation.tiers import TIERS, user_tiers


def test_user_tiers_equal_the_domain_classification_at_every_count() -> None:
    counts = np.arange(0, TIER_UPPER_BOUNDS[-1] + 50)
    expected = [UserClassification.from_count(int(n)).value for n in counts]
    assert user_tiers(counts).tolist() == expected
    assert tuple(t.value for t in UserClassification) == TIERS
