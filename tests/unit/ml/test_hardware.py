"""`precision: auto` (configs/trainer.yaml): bf16-mixed on a bfloat16 GPU, else 32-true."""

import pytest
import torch

from recolab.ml.hardware import resolve_precision


@pytest.mark.parametrize(
    ("cuda", "bf16", "accelerator", "expected"),
    [
        (True, True, "auto", "bf16-mixed"),
        (True, False, "auto", "32-true"),  # pre-Ampere GPU
        (False, False, "auto", "32-true"),
        (True, True, "cpu", "32-true"),
        (True, True, "gpu", "bf16-mixed"),
    ],
)
def test_auto_precision_follows_the_device(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, bf16: bool, accelerator: str, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision("auto", accelerator) == expected
    assert resolve_precision("16-mixed", accelerator) == "16-mixed"  # explicit wins
