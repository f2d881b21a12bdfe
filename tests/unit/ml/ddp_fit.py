"""Fits a tiny implicit NeuMF under Lightning DDP on CPU; run by test_ddp.py as a script.

Usage: python ddp_fit.py OUT_DIR. Lightning's DDP launcher starts rank 1 by running this
same command line again; each rank writes OUT_DIR/rank<r>.json (world size, train batches
it saw, the fitted weights' checksum, the validation history).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl

from recolab.ml.fitting import TrainConfig, fit


class _Seen(pl.Callback):
    def __init__(self) -> None:
        self.users: list[int] = []
        self.world = 0
        self.rank = -1

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.world, self.rank = trainer.world_size, trainer.global_rank
        if trainer.current_epoch == 0:
            self.users += batch[0].tolist()


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [(u, int(m), 4.0, 0) for u in range(40) for m in rng.choice(60, 12, replace=False)]
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    config = TrainConfig(
        mode="implicit",
        gmf_dim=8,
        mlp_dim=4,
        mlp_layers=(8, 4),
        num_negatives=2,
        batch_size=32,
        steps_per_execution=4,  # DDP keeps one step per loop iteration
        max_epochs=2,
        patience=5,
        val_max_users=20,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        num_nodes=1,
        enable_progress_bar=False,
    )
    seen = _Seen()
    result = fit(ratings, config, callbacks=[seen])
    weights = sum(float(t.double().abs().sum()) for t in result.model.state_dict().values())
    report = {
        "world_size": seen.world,
        "rank": seen.rank,
        "users_seen": seen.users,
        "train_rows": result.train_rows,
        "weights_checksum": weights,
        "history": result.history,
    }
    (out / f"rank{seen.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
