"""Hardware choices resolved at fit time: which precision a run trains in, on how many CPU
threads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import torch

# "auto" threads: every core once an epoch has this many rows and a step this many scored
# pairs. At 5M ratings (implicit, 24 negatives: 51k pairs a step) 2 threads trained 1.3-1.7x
# faster than 1 on 2 idle cores; a small fit keeps one (see `TrainConfig.num_threads`).
AUTO_THREADS_MIN_ROWS = 1_000_000
AUTO_THREADS_MIN_STEP_PAIRS = 16_384


def uses_cuda(accelerator: str) -> bool:
    """Whether Lightning's `accelerator` setting ends up on a CUDA GPU on this machine."""
    if accelerator in ("cuda", "gpu"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str) -> str:
    """`precision` for `pl.Trainer`; "auto" is bf16-mixed on a CUDA GPU that supports
    bfloat16 (Ampere and later), else 32-true (CPUs, older GPUs)."""
    if precision != "auto":
        return precision
    if uses_cuda(accelerator) and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def fit_threads(
    setting: int | Literal["auto"] | None, n_rows: int, pairs_per_step: int
) -> int | None:
    """The torch CPU threads for a fit of `n_rows` ratings scoring `pairs_per_step` pairs a
    step under `trainer.num_threads` = `setting` (None: leave torch's setting)."""
    if setting != "auto":
        return setting
    big = n_rows >= AUTO_THREADS_MIN_ROWS and pairs_per_step >= AUTO_THREADS_MIN_STEP_PAIRS
    return usable_cores() if big else 1


def usable_cores() -> int:
    """Cores this process may run on (its affinity), not the host's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with `count` torch intra-op threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
