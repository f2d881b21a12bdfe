"""Hardware choices resolved at fit time: which precision a run trains in, on how many CPU
threads, and the C heap's freed memory handed back to the system while it trains."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import pytorch_lightning as pl
import torch

from recolab.ml.progress import output_is_terminal

if TYPE_CHECKING:
    from recolab.ml.fitting import TrainConfig

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


def build_trainer(
    config: TrainConfig, callbacks: list[pl.Callback], **overrides: Any
) -> pl.Trainer:
    """A Trainer without per-step overhead: no logger, summary, sanity steps or checkpoints."""
    options: dict[str, Any] = {
        "accelerator": config.accelerator,
        "devices": config.devices,
        "num_nodes": config.num_nodes,
        "strategy": config.strategy,
        "precision": resolve_precision(config.precision, config.accelerator),
        "deterministic": config.deterministic,
        "max_epochs": config.max_epochs,
        "min_epochs": config.min_epochs,
        "callbacks": (
            [*callbacks, ReleaseFreedMemory(reuse_mb=config.heap_reuse_mb)]
            if config.release_memory
            else callbacks
        ),
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": (
            output_is_terminal()
            if config.enable_progress_bar is None
            else config.enable_progress_bar
        ),
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1_000_000,
    }
    options.update(overrides)
    return pl.Trainer(**options)


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _c_library_function(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    """`name` from the C library the process runs on, returning a C int (None off Linux or
    where that library has no such function: macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


@functools.cache
def mallopt() -> Callable[[int, int], int] | None:
    """glibc's `mallopt` (None where the C library has none)."""
    return _c_library_function("mallopt", [ctypes.c_int, ctypes.c_int])


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim` (None where the C library has none: macOS, musl, Windows)."""
    return _c_library_function("malloc_trim", [ctypes.c_size_t])


def resident_bytes() -> int | None:
    """This process's resident set in bytes (None where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class ReleaseFreedMemory(pl.Callback):
    """Hands the C heap's free pages back to the system once a fit's resident set has grown by
    `budget_mb` since the last time (glibc's `malloc_trim`), and when an epoch's training or
    validation ends (once when both end together); with `reuse_mb`, first lets glibc keep
    blocks up to that size in its heap.

    A step's tensors are a few MB each (at 32M ratings' shape: 2,048 users x 25 items x 32
    dims, 6.5 MB), so glibc serves them from its heaps, not from mmap (its mmap threshold
    rises to 32 MB after the first such block is freed); with the lazy user tables' sparse
    gradients, whose size changes every step, the heaps fragment and the freed pages stay
    resident: at ml-32m's table shape the process grew 0.2-0.3 MB a step (+2-3 GB over the
    32M demo's epoch of 11,728 steps); it stayed flat with a trim after every batch, but those
    steps were 5-10% slower in alternated runs (a trim takes about 8 ms; the rest is likely
    the released pages faulted in again). Hence the budget: a trim about every 1,000 steps at
    that rate (benchmarks/results/fit_memory.json, the budget rule against no trim). Nothing to do
    without glibc or /proc.

    `reuse_mb` (`trainer.heap_reuse_mb`): glibc serves a block over 32 MB from fresh mmap
    pages and unmaps it when freed, and returns a freed heap top over 128 kB (its thresholds
    once set). At ml-32m's shape a step's dense gradient of an item table (87,585 x 128
    floats, 45 MB) is such a block: its pages were faulted in and zeroed every step, 37 ms of
    a 183 ms step (`torch.zeros` of it: 37 ms, 4 ms from the heap). Raising both thresholds
    to `reuse_mb` at the fit's start keeps those blocks in the heap for the next step; the
    trims above still bound what stays resident. Process-wide and left so after the fit.

    The growth is counted from the resident set at the end of the first batch after a trim,
    not from the trim itself: a trim hands the kept blocks back too, and the next steps take
    them again (hundreds of MB at these shapes), which counted from the trim would be over
    the budget at once and trim again every batch (seen at 5M: 1.4% of a fit's samples in
    `malloc_trim`, and each trim's pages faulted in again).
    """

    def __init__(
        self,
        trim: Callable[[int], int] | None = None,
        *,
        budget_mb: float = 256,
        resident: Callable[[], int | None] | None = None,
        reuse_mb: float | None = None,
        set_option: Callable[[int, int], int] | None = None,
    ) -> None:
        self.trim = trim if trim is not None else malloc_trim()
        self.budget = int(budget_mb * 2**20)
        self.resident = resident if resident is not None else resident_bytes
        self.floor: int | None = None  # the resident set a batch after the last trim
        self.trims = 0
        self.trained_since_release = False
        self.reuse = int(reuse_mb * 2**20) if reuse_mb else None
        self.set_option = set_option if set_option is not None else mallopt()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.reuse is None or self.set_option is None or self.trim is None:
            return  # without trims, a heap that keeps big blocks would only grow
        self.set_option(M_MMAP_THRESHOLD, self.reuse)
        self.set_option(M_TRIM_THRESHOLD, self.reuse)

    def release(self) -> None:
        if self.trim is not None:
            self.trim(0)
            self.trims += 1
            self.floor = None  # set at the next batch's end, once its blocks are back
            self.trained_since_release = False

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.trim is None:
            return
        self.trained_since_release = True
        now = self.resident()
        if now is None:
            return
        if self.floor is None:
            self.floor = now
        elif now - self.floor > self.budget:
            self.release()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning validates at an epoch's end before this hook: that release, just done,
        # has left nothing for a second one unless batches trained since
        if self.trained_since_release:
            self.release()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.release()
