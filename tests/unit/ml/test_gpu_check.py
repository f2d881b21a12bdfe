"""benchmarks/gpu_check.py is safe to run anywhere: without a GPU it says so and exits 0."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the check would train")
def test_gpu_check_without_a_gpu_says_so_and_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["gpu"] is None and "no CUDA GPU" in report["note"]
