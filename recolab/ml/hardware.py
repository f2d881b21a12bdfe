"""Hardware choices resolved at fit time: which precision a run trains in."""

from __future__ import annotations

import torch


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
