"""Progress of long work, in the logs: a line per training epoch (its metrics, its time and an
estimate of the time left) and, every few seconds, how much of an evaluation is done.

Everything logs through the standard `logging` module at INFO, to the logger `recolab.progress`
(`PROGRESS_LOGGER`) or one of its children: `recolab.progress.ingest` and
`recolab.progress.registry` carry the ingest's and the registration's lines, from the
adapters. A Prefect task shows them all in its run's logs (console and UI) with
`forward_to(get_run_logger())`; a terminal also gets Lightning's progress bar
(`TrainConfig.enable_progress_bar`, on by default when the output is a terminal).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl

from recolab.ml.evaluation.metrics import metric_key
from recolab.ml.ranking import catalogue_scorer

PROGRESS_LOGGER = "recolab.progress"  # every layer's progress lines, under one name
log = logging.getLogger(PROGRESS_LOGGER)
Clock = Callable[[], float]


def duration(seconds: float) -> str:
    """`0.4 s`, `42 s`, `3 min 05 s`, `2 h 07 min`; `?` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def output_is_terminal() -> bool:
    """Whether Lightning's progress bar has a terminal to draw on (it writes to stdout): off
    in a Prefect worker, under a pipe or a redirect, where it would only add noise."""
    stream = sys.stdout
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


class EpochProgress(pl.Callback):
    """Logs one line per epoch once its metrics are in, e.g.
    `fit epoch 3/20: train/loss=0.4102 val/ndcg@10=0.3120 (12 s; at most 3 min 24 s left)`.

    Lightning calls a callback's `on_train_epoch_end` before the LightningModule's (where the
    epoch's training loss is logged), so an epoch's line is written as the next epoch starts
    or as training ends. The time left is the mean epoch time so far (validation included)
    times the epochs left until `max_epochs`; early stopping may end sooner, hence "at most".
    Rank 0 only under DDP.

    A long epoch (5M ratings: minutes; 32M: tens of minutes) also says how far it is every
    `every` seconds, e.g. `fit epoch 1/6 at 41%: 1,000/2,441 batches, 4 min 10 s so far, about
    6 min left in the epoch` (" at", not ":", after the epoch: a line with a colon there is
    the epoch's end, as log readers such as benchmarks/scale.py expect).
    """

    def __init__(
        self,
        label: str = "fit",
        *,
        logger: logging.Logger = log,
        clock: Clock = time.monotonic,
        every: float = 60.0,
    ) -> None:
        self.label = label
        self.logger = logger
        self.clock = clock
        self.every = every
        self.durations: list[float] = []
        self._epoch_start = 0.0
        self._last_line = 0.0
        self._pending: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.durations = []
        self._pending = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)
        self._epoch_start = self._last_line = self.clock()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = self.clock()
        if now - self._last_line < self.every or not trainer.is_global_zero:
            return
        self._last_line = now
        done, total = batch_idx + 1, trainer.num_training_batches
        elapsed = now - self._epoch_start
        epochs = trainer.max_epochs
        of = f"{trainer.current_epoch + 1}/{epochs}" if epochs and epochs > 0 else "1"
        if math.isfinite(total) and total > 0:
            self.logger.info(
                "%s epoch %s at %d%%: %s/%s batches, %s so far, about %s left in the epoch",
                self.label,
                of,
                int(100 * done / total),
                f"{done:,}",
                f"{int(total):,}",
                duration(elapsed),
                duration(elapsed / done * (total - done)),
            )
        else:
            self.logger.info(
                "%s epoch %s at %s batches, %s so far",
                self.label,
                of,
                f"{done:,}",
                duration(elapsed),
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.durations.append(self.clock() - self._epoch_start)
        self._pending = int(trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)

    def _report(self, trainer: pl.Trainer) -> None:
        epoch, self._pending = self._pending, None
        if epoch is None or not trainer.is_global_zero or not self.durations:
            return
        done, total = epoch + 1, trainer.max_epochs
        mean = sum(self.durations) / len(self.durations)
        figures = " ".join(
            f"{metric_key(name)}={float(value):.4f}"
            for name, value in sorted(trainer.callback_metrics.items())
        )
        if total is not None and total > 0:
            left = f"at most {duration(mean * max(total - done, 0))} left"
            of = f"{done}/{total}"
        else:
            left, of = "no epoch limit", str(done)
        self.logger.info(
            "%s epoch %s: %s (%s; %s)",
            self.label,
            of,
            figures or "no metrics",
            duration(self.durations[-1]),
            left,
        )


class Progress:
    """Work done toward a known total, logged at most every `every_s` seconds and once when
    the total is reached: `evaluation of neumf: 1200/6040 users ranked (20%), 14 s so far,
    about 56 s left`. The clock starts at `start()` (or the first `advance`)."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        *,
        every_s: float = 5.0,
        logger: logging.Logger = log,
        clock: Clock = time.monotonic,
    ) -> None:
        if total < 0 or every_s < 0:
            raise ValueError(f"total and every_s must be >= 0, got {total} and {every_s}")
        self.what, self.total, self.unit = what, total, unit
        self.every_s = every_s
        self.logger = logger
        self.clock = clock
        self.done = 0
        self._start: float | None = None
        self._last = 0.0
        self._finished = False

    def start(self) -> None:
        if self._start is None:
            self._start = self._last = self.clock()

    def advance(self, n: int) -> None:
        self.start()
        assert self._start is not None
        self.done = min(self.total, self.done + max(int(n), 0))
        now = self.clock()
        complete = self.done >= self.total
        if self._finished or not (complete or now - self._last >= self.every_s):
            return
        self._last, self._finished = now, complete
        elapsed = now - self._start
        left = elapsed / self.done * (self.total - self.done) if self.done else math.nan
        self.logger.info(
            "%s: %d/%d %s (%.0f%%), %s so far%s",
            self.what,
            self.done,
            self.total,
            self.unit,
            100.0 * self.done / self.total if self.total else 100.0,
            duration(elapsed),
            "" if complete else f", about {duration(left)} left",
        )


def distinct_runs(ids: np.ndarray) -> int:
    """Runs of equal consecutive ids: the users in a protocol's `score` call, which asks for
    each user's pairs together (`np.repeat` of the users)."""
    ids = np.asarray(ids)
    return 0 if ids.size == 0 else int(np.count_nonzero(ids[1:] != ids[:-1])) + 1


class Reporting:
    """An evaluated model (`fit` / `score` / `predict`) that counts its work in `progress`:
    the users of each `score` call (`distinct_runs`), the rows of each `predict` call."""

    def __init__(self, inner: Any, progress: Progress) -> None:
        self.inner = inner
        self.progress = progress

    def fit(self, ratings: Any) -> Reporting:
        self.inner.fit(ratings)
        return self

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        self.progress.start()
        out: np.ndarray = self.inner.score(user_ids, item_ids)
        self.progress.advance(distinct_runs(user_ids))
        return out

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        self.progress.start()
        out: np.ndarray = self.inner.predict(user_ids, item_ids)
        self.progress.advance(len(user_ids))
        return out

    # Full-catalogue ranking (recolab.ml.ranking): blocks of users, each counted.

    def score_catalogue(self, user_ids: np.ndarray, catalogue: np.ndarray) -> Any:
        self.progress.start()
        out = catalogue_scorer(self.inner).score_catalogue(user_ids, catalogue)
        self.progress.advance(len(user_ids))
        return out

    def score_candidates(self, user_ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        self.progress.start()
        out = catalogue_scorer(self.inner).score_candidates(user_ids, candidates)
        self.progress.advance(len(user_ids))
        return out

    def pair_bytes(self) -> int:
        return catalogue_scorer(self.inner).pair_bytes()


class _Forward(logging.Handler):
    def __init__(self, target: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, record.getMessage())


@contextlib.contextmanager
def forward_to(target: logging.Logger | logging.LoggerAdapter[Any]) -> Iterator[None]:
    """Send the progress lines (`recolab.progress` and its children) to `target` for a block,
    e.g. a Prefect task's `get_run_logger()`, which shows them in the run's logs and the UI.

    Meanwhile the lines are logged at INFO whatever the root level, and not propagated, so a
    console that shows the run's logs prints each once. Prefect's own
    `PREFECT_LOGGING_EXTRA_LOGGERS` is not used: it copies only the API handler, leaves the
    level at the root's WARNING, and warns about every line logged outside a run.
    """
    handler = _Forward(target)
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


__all__ = [
    "PROGRESS_LOGGER",
    "EpochProgress",
    "Progress",
    "Reporting",
    "distinct_runs",
    "duration",
    "forward_to",
    "output_is_terminal",
]
