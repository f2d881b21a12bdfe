"""The validation slices a fit holds out of its training rows, for early stopping and selection.

Explicit mode holds out a random share of the ratings (RMSE). Implicit mode holds out random
positives of each user and ranks each one, alone, against the items that user has not
trained on (nDCG@k / HR@k of one relevant item per row). With one positive per user the
figure on a small dataset rests on a few hundred rankings (610 on ml-latest-small), too few
to tell settings apart; `val_per_user` holds out several from each user there, so that early
stopping and the Optuna selection (recolab.ml.tuning) judge on thousands.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import torch

from recolab.ml.datamodule import HeldOut, Interactions, known_pairs, sample_negatives
from recolab.ml.evaluation.splits import by_user_then_key

# val_per_user "auto": at most this many positives of one user are held out.
AUTO_MAX_PER_USER = 10
MIN_TRAINING_POSITIVES = 2  # a validated user keeps at least this many to train on
MAX_SHARE = 0.2  # and past the first, at most this share of their positives is held out


class RankingSettings(Protocol):
    """The TrainConfig settings the ranking slice reads."""

    @property
    def val_negatives(self) -> int | None: ...
    @property
    def val_max_users(self) -> int: ...
    @property
    def val_per_user(self) -> int | Literal["auto"]: ...
    @property
    def seed(self) -> int: ...


def holdout_explicit(
    data: Interactions, fraction: float, rng: np.random.Generator
) -> tuple[Interactions, Interactions | None]:
    """A random `fraction` of the ratings, held out (None when it is empty)."""
    if fraction <= 0:
        return data, None
    is_val = rng.random(len(data)) < fraction
    train = Interactions(data.users[~is_val], data.items[~is_val], data.targets[~is_val])
    val = Interactions(data.users[is_val], data.items[is_val], data.targets[is_val])
    return train, (val if len(val) else None)


def per_user(setting: int | Literal["auto"], validated_users: int, max_rows: int) -> int:
    """Positives held out per validated user: `setting`, or for "auto" as many as keep the
    held-out rows within `max_rows` (at least 1, at most AUTO_MAX_PER_USER)."""
    if setting != "auto":
        return setting
    return int(np.clip(max_rows // max(validated_users, 1), 1, AUTO_MAX_PER_USER))


def holdout_ranking(
    data: Interactions,
    n_items: int,
    config: RankingSettings,
    rng: np.random.Generator,
    times: np.ndarray | None = None,
) -> tuple[Interactions, HeldOut | None]:
    """Random positives of each user with at least 3 (up to `val_max_users` users), each a
    validation row: `val_per_user` of them per user, but no more than a fifth of the user's
    positives (at least one) and always leaving 2 to train on. With `times` (a timestamp per
    row; `trainer.val_order: latest`) they are each user's latest, ties in random order.

    `val_negatives` None ranks each against the whole catalogue (less the user's training
    items and other held-out ones), N > 0 against N sampled unrated items, 0 turns ranking
    validation off. With one per user the rows are the ones earlier versions held out.
    """
    if config.val_negatives == 0 or config.val_max_users <= 0:
        return data, None
    key = rng.random(len(data))
    if times is not None:  # latest first; a tie keeps the random order (key < 1 second)
        key = key - np.asarray(times, dtype=np.float64)
    order = by_user_then_key(data.users, key)  # np.lexsort's order
    users_sorted = data.users[order]
    counts = np.bincount(data.users)
    user_counts = counts[users_sorted]
    starts_user = np.r_[True, users_sorted[1:] != users_sorted[:-1]]
    # the first positive in that order (random, or the latest) of each user with enough to train on
    first = order[starts_user & (user_counts >= MIN_TRAINING_POSITIVES + 1)]
    if first.size > config.val_max_users:
        first = np.sort(rng.choice(first, config.val_max_users, replace=False))
    if first.size == 0:
        return data, None
    n = per_user(config.val_per_user, first.size, config.val_max_users)
    pick = first
    if n > 1:  # the user's next n - 1 rows in the random order too, within their room
        chosen = np.zeros(counts.size, dtype=bool)
        chosen[data.users[first]] = True
        position = np.arange(len(order)) - np.r_[0, np.cumsum(counts)[:-1]][users_sorted]
        share = np.maximum((user_counts * MAX_SHARE).astype(np.int64), 1)
        room = np.minimum(share, user_counts - MIN_TRAINING_POSITIVES)
        pick = order[chosen[users_sorted] & (position < np.minimum(n, room))]
    keep = np.ones(len(data), dtype=bool)
    keep[pick] = False
    train = Interactions(data.users[keep], data.items[keep], data.targets[keep])
    candidates = None
    if config.val_negatives is not None:
        known = known_pairs(torch.from_numpy(data.users), torch.from_numpy(data.items), n_items)
        users = torch.from_numpy(data.users[pick]).repeat_interleave(config.val_negatives)
        generator = torch.Generator().manual_seed(config.seed)
        negatives = sample_negatives(users, n_items, known, generator).view(pick.size, -1)
        candidates = np.concatenate([data.items[pick, None], negatives.numpy()], axis=1)
    return train, HeldOut(data.users[pick], data.items[pick], candidates)
