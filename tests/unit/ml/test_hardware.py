"""Hardware choices: `precision: auto` (configs/trainer.yaml) is bf16-mixed on a bfloat16 GPU,
else 32-true; the C heap's freed pages are handed back as a fit grows (`release_memory`), and
blocks up to `heap_reuse_mb` stay in the heap between steps."""

import subprocess
import sys

import pytest
import torch

from recolab.ml import hardware
from recolab.ml.fitting import TrainConfig, fit
from recolab.ml.hardware import resolve_precision
from tests.unit.ml.tiny import tiny_ratings


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


def test_the_c_librarys_malloc_trim_is_found_on_linux() -> None:
    trim = hardware.malloc_trim()
    if not sys.platform.startswith("linux"):
        assert trim is None
        return
    assert trim is not None
    assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release


def test_glibcs_thresholds_take_the_heap_reuse_size_on_linux() -> None:
    if not sys.platform.startswith("linux"):
        assert hardware.mallopt() is None
        return
    # In a process of its own: the thresholds are process-wide and stay set.
    script = (
        "from recolab.ml import hardware as h; s = h.mallopt(); "
        "print(s(h.M_MMAP_THRESHOLD, 1 << 30), s(h.M_TRIM_THRESHOLD, 1 << 30))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]  # glibc accepted both


@pytest.mark.parametrize("reuse", [4096, 0, True, "big"])
def test_a_heap_reuse_size_glibc_cannot_take_is_refused(reuse: object) -> None:
    with pytest.raises(ValueError, match="heap_reuse_mb"):
        TrainConfig.from_dict({"heap_reuse_mb": reuse})
    assert TrainConfig.from_dict({"heap_reuse_mb": None}).heap_reuse_mb is None


@pytest.mark.parametrize(("release", "reuse"), [(True, 1024), (True, None), (False, 1024)])
def test_a_fit_releases_freed_memory_as_it_grows_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, release: bool, reuse: int | None
) -> None:
    calls: list[int] = []
    options: list[tuple[int, int]] = []
    monkeypatch.setattr(hardware, "mallopt", lambda: lambda *o: options.append(o) or 1)

    def trim(pad: int) -> int:
        calls.append(pad)
        return 0

    grown = iter(range(0, 10**12, 300 * 2**20))  # 300 MiB more at every reading: over budget
    monkeypatch.setattr(hardware, "malloc_trim", lambda: trim)
    monkeypatch.setattr(hardware, "resident_bytes", lambda: next(grown))
    config = TrainConfig(
        mode="implicit",
        gmf_dim=4,
        mlp_dim=4,
        mlp_layers=(8, 4),
        batch_size=16,
        max_epochs=2,
        patience=5,
        val_negatives=10,
        release_memory=release,
        heap_reuse_mb=reuse,
        accelerator="cpu",
        devices=1,
    )
    result = fit(tiny_ratings(), config)
    # 160 ratings, one held out per user: 140 rows, 9 batches of 16 an epoch, the resident set
    # 300 MiB more at each: every batch after the one that set the floor trims (batches 2, 4,
    # 6, 8); each epoch's validation (run at its end) ends with a release too, and the epoch's
    # end, with no batch trained since, does not trim again
    assert result.train_rows == 140
    assert calls == ([0] * (2 * (4 + 1)) if release else [])
    # the thresholds raised once, at the fit's start, only with the trims to bound the heap
    kept = [(hardware.M_MMAP_THRESHOLD, 2**30), (hardware.M_TRIM_THRESHOLD, 2**30)]
    assert options == (kept if release and reuse else [])


def test_the_heap_is_trimmed_once_the_resident_set_grew_by_the_budget() -> None:
    calls: list[int] = []
    readings = iter([1000, 1100, 1201, 1500, 1600, 1700, 1750, 1800])
    callback = hardware.ReleaseFreedMemory(
        lambda pad: calls.append(pad) or 0, budget_mb=200 / 2**20, resident=lambda: next(readings)
    )
    trainer = None
    for _ in range(7):
        callback.on_train_batch_end(trainer)  # type: ignore[arg-type]
    # batch 1 (1000) sets the floor; batch 2 (1100) within 200 of it; batch 3 (1201) over ->
    # trim; batch 4 (1500: the trimmed blocks taken again) sets the floor, no trim; batches
    # 5-6 (1600, 1700) within; batch 7 (1750) over -> trim
    assert callback.trims == 2 and calls == [0, 0] and callback.floor is None
    callback.on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert callback.trims == 3 and calls == [0, 0, 0]
    # the epoch ends right after its validation: nothing trained since, no second trim
    callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert callback.trims == 3
    # a batch trained after the last release (no validation this epoch): the epoch's end trims
    callback.on_train_batch_end(trainer)  # type: ignore[arg-type]
    callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert callback.trims == 4


def test_without_the_c_librarys_trim_the_release_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hardware, "malloc_trim", lambda: None)  # macOS, musl: no malloc_trim
    callback = hardware.ReleaseFreedMemory(resident=lambda: 10**12)
    assert callback.trim is None
    callback.on_train_batch_end(None)  # type: ignore[arg-type]
    callback.release()  # nothing to call, no error
    assert callback.trims == 0


def test_the_resident_set_is_read_on_linux() -> None:
    resident = hardware.resident_bytes()
    if sys.platform.startswith("linux"):
        assert resident is not None and resident > 10 * 2**20  # this process: > 10 MiB
