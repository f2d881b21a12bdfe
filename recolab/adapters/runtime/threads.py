"""Process-wide thread settings of a serving worker (torch's intra-op pool, numpy's BLAS)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from threadpoolctl import threadpool_limits

from recolab.config import ConfigError

log = logging.getLogger(__name__)


def set_torch_threads(count: int) -> None:
    """Set this process's torch intra-op CPU threads (process-wide; call once per worker).

    One thread per serving worker is what we recommend when several workers share the
    cores: a user's full-catalogue pass is a few small ops, too short to split across threads,
    and a second thread that waits for a busy core slows every request down.
    """
    if count < 1:
        raise ValueError("torch_threads must be at least 1")
    # Always set: OpenMP keeps a count per thread, so this thread's reading may be stale.
    torch.set_num_threads(count)
    # numpy's BLAS keeps a pool of its own, one thread per core by default, whose waiting
    # threads spin on the cores the other requests need: the same count applies.
    threadpool_limits(limits=count, user_api="blas")


TORCH_THREADS_ENV = "RECOLAB_TORCH_THREADS"
DEFAULT_TORCH_THREADS = 1


def configure_torch_threads(environ: Mapping[str, str] | None = None) -> int:
    """Size this worker's torch intra-op pool from `RECOLAB_TORCH_THREADS`; the size in use.

    Called at service start-up (once per worker), never at import of `recolab`; 0 keeps
    torch's own default (one thread per core)."""
    raw = (os.environ if environ is None else environ).get(TORCH_THREADS_ENV, "").strip()
    try:
        wanted = int(raw) if raw else DEFAULT_TORCH_THREADS
    except ValueError:
        raise ConfigError(f"{TORCH_THREADS_ENV}={raw!r}: expected a whole number >= 0") from None
    if wanted < 0:
        raise ConfigError(f"{TORCH_THREADS_ENV}={raw!r}: expected a whole number >= 0")
    if wanted:
        set_torch_threads(wanted)
    threads = torch.get_num_threads()
    log.info("torch intra-op threads: %d", threads)
    return threads
