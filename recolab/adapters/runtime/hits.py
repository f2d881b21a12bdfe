"""Online hits for Prometheus: a rating of a movie that an answer showed the user shortly
before (within `experiments.hit_window_s`) is a hit for that answer's experiment, variant,
model version, strategy and tier, at the movie's rank.

Each worker remembers the last answer it served to each of the last
`experiments.last_served_users` users (least recently served forgotten first), plus the
last shadow answer scored for them, and checks each rating it stores against them. The
counters are therefore per worker and approximate: a rating stored by another worker than
the one that answered, an answer forgotten under memory pressure or lost in a restart, is
not counted; an answer served again from the cache restarts its window. The exact figures
(hit rate per variant and cut-off, with confidence intervals) come from the history and
ratings tables: the `online-report` flow.
"""

from __future__ import annotations

import logging
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from recolab.domain.events import MovieRated, RecommendationsGenerated
from recolab.domain.experiments import SHADOW

log = logging.getLogger(__name__)

_SERVED, _SHADOW = 0, 1  # a user's two slots: the answer shown, and its shadow


class HitMetrics(Protocol):
    def online_hit(
        self,
        *,
        experiment: str | None,
        variant: str,
        version: str | None,
        strategy: str,
        tier: str,
        within: Sequence[int],
    ) -> None: ...


@dataclass(slots=True)
class _Answer:
    experiment: str | None
    variant: str
    version: str | None
    strategy: str
    tier: str
    served_at: float  # epoch seconds
    movies: array[int]  # movie ids in rank order (compact: no int object per movie)
    hits: set[int] | None = None  # movies already counted (a re-rating is not a new hit)


class LastServed:
    """The last answers served per user, bounded (LRU), and the hits ratings make on them."""

    def __init__(
        self,
        metrics: HitMetrics,
        *,
        capacity: int = 100_000,
        window_s: float = 86_400,
        cutoffs: Sequence[int] = (1, 3, 5, 10),
    ) -> None:
        if capacity < 1 or window_s <= 0:
            raise ValueError("capacity must be >= 1 and window_s > 0")
        self._metrics = metrics
        self._capacity = capacity
        self._window = float(window_s)
        self._cutoffs = tuple(sorted(set(cutoffs)))
        self._users: OrderedDict[int, list[_Answer | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def remember(self, event: RecommendationsGenerated) -> None:
        """Keep `event` as the user's last answer (or last shadow answer)."""
        if not event.items:
            return
        answer = _Answer(
            event.experiment,
            event.variant,
            event.model_version,
            event.strategy,
            event.tier,
            event.occurred_at.value.timestamp(),
            array("q", [item.movie_id for item in event.items]),
        )
        slot = _SHADOW if event.variant == SHADOW else _SERVED
        user = event.user_id.value
        with self._lock:
            slots = self._users.get(user)
            if slots is None:
                slots = self._users[user] = [None, None]
                if len(self._users) > self._capacity:
                    self._users.popitem(last=False)
            else:
                self._users.move_to_end(user)
            slots[slot] = answer

    def rated(self, event: MovieRated) -> int:
        """Count the hits of a rating on the user's remembered answers; how many."""
        movie, at = event.movie_id.value, event.occurred_at.value.timestamp()
        found: list[tuple[_Answer, int]] = []
        with self._lock:
            for answer in self._users.get(event.user_id.value) or ():
                if answer is None or not 0.0 <= at - answer.served_at <= self._window:
                    continue
                try:
                    rank = answer.movies.index(movie) + 1
                except ValueError:
                    continue
                if answer.hits is None:
                    answer.hits = set()
                if movie not in answer.hits:
                    answer.hits.add(movie)
                    found.append((answer, rank))
        for answer, rank in found:
            try:
                self._metrics.online_hit(
                    experiment=answer.experiment,
                    variant=answer.variant,
                    version=answer.version,
                    strategy=answer.strategy,
                    tier=answer.tier,
                    within=[k for k in self._cutoffs if rank <= k],
                )
            except Exception:  # a metric must never fail the rating that was stored
                log.debug("could not count an online hit", exc_info=True)
        return len(found)
