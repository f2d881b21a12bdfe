"""Process-wide thread settings of a serving worker (torch's intra-op pool, numpy's BLAS)."""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_limits


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
