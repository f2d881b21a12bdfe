"""Multi-GPU training is Lightning DDP: checked here with 2 CPU processes (gloo), as CI can."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_fit.py")


@pytest.mark.slow
def test_fit_under_ddp_with_two_cpu_processes_shards_the_epoch_and_syncs_weights(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in ranks)
    # Each rank trains on its own half of the epoch's permutation: 480 - 20 held out = 460.
    seen = [len(r["users_seen"]) for r in ranks]
    assert seen == [230, 230] and ranks[0]["train_rows"] == 460
    assert ranks[0]["users_seen"] != ranks[1]["users_seen"]
    # Gradients are all-reduced: both replicas end with the same weights.
    assert ranks[0]["weights_checksum"] == pytest.approx(ranks[1]["weights_checksum"], rel=1e-6)
    history = ranks[0]["history"]
    assert len(history) == 2 and all("val/ndcg@10" in row for row in history)
