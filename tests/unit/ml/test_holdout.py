"""The validation slices a fit holds out (recolab.ml.holdout)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from recolab.ml import fitting
from recolab.ml.datamodule import HeldOut, HeldOutBatches, Interactions
from recolab.ml.fitting import TrainConfig
from recolab.ml.holdout import AUTO_MAX_PER_USER, holdout_ranking, per_user
from recolab.ml.neumf import NeuMF, NeuMFConfig
from recolab.ml.system import NeuMFSystem
from tests.unit.ml.tiny import tiny_ratings

BASE = TrainConfig(mode="implicit", val_max_users=5000)


def _interactions(counts: list[int], n_items: int = 400) -> Interactions:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(len(counts)), counts)
    items = np.concatenate([rng.choice(n_items, c, replace=False) for c in counts])
    return Interactions(users, items, np.ones(len(users), np.float32))


def _held_per_user(held: HeldOut, n_users: int) -> np.ndarray:
    return np.bincount(held.users, minlength=n_users)


def test_auto_holds_out_as_many_as_fit_the_row_budget() -> None:
    assert per_user("auto", 610, 5000) == 8
    assert per_user("auto", 31_000, 5000) == 1  # past the budget: one each, as before
    assert per_user("auto", 10, 5000) == AUTO_MAX_PER_USER
    assert per_user(3, 10, 5000) == 3


@pytest.mark.parametrize("setting", [1, 4, "auto"])
def test_held_out_rows_leave_each_user_enough_to_train_on(setting: int | str) -> None:
    counts = [2, 3, 5, 10, 20, 40, 100]
    data = _interactions(counts)
    config = replace(BASE, val_per_user=setting)  # type: ignore[arg-type]
    train, held = holdout_ranking(data, 400, config, np.random.default_rng(1))
    assert held is not None
    got = _held_per_user(held, len(counts))
    n = per_user(setting, 6, 5000)  # type: ignore[arg-type]
    want = [0 if c < 3 else min(n, max(int(c * 0.2), 1), c - 2) if n > 1 else 1 for c in counts]
    assert got.tolist() == want
    # Nothing lost, nothing twice: the held-out pairs and the training pairs are the data.
    pairs = set(zip(data.users.tolist(), data.items.tolist(), strict=True))
    kept = list(zip(train.users.tolist(), train.items.tolist(), strict=True))
    out = list(zip(held.users.tolist(), held.items.tolist(), strict=True))
    assert len(kept) + len(out) == len(pairs) and set(kept) | set(out) == pairs


def test_one_per_user_caps_the_users_and_is_seeded() -> None:
    data = _interactions([5] * 50)
    config = replace(BASE, val_max_users=20, val_per_user="auto")
    _, held = holdout_ranking(data, 400, config, np.random.default_rng(3))
    _, again = holdout_ranking(data, 400, config, np.random.default_rng(3))
    assert held is not None and again is not None
    assert len(held.users) == 20 == len(set(held.users.tolist()))  # 20 // 50 users: one each
    assert held.items.tolist() == again.items.tolist()


def test_several_rows_of_a_user_each_rank_their_item_alone() -> None:
    """Each row is ranked against the items the user neither trained on nor holds out in
    another row, so a user's held-out items never push each other down."""
    torch.manual_seed(0)
    model = NeuMF(NeuMFConfig(n_users=3, n_items=12, gmf_dim=4, mlp_dim=3, mlp_layers=(6, 3)))
    system = NeuMFSystem(model.eval(), mode="implicit", top_k=3)
    train = Interactions(np.array([0, 0, 1, 2]), np.array([1, 2, 3, 4]), np.ones(4, np.float32))
    held = HeldOut(np.array([0, 0, 0, 1, 2, 2]), np.array([5, 6, 7, 8, 9, 10]))
    with torch.no_grad():
        system.on_validation_epoch_start()
        for i, batch in enumerate(HeldOutBatches(held, train, batch_size=4)):
            system.validation_step(batch, i)
        scores = model.score_all_items(torch.arange(3))
    ranks = []
    for user, item in zip(held.users.tolist(), held.items.tolist(), strict=True):
        row = scores[user].clone()
        row[train.items[train.users == user]] = -torch.inf
        others = held.items[(held.users == user) & (held.items != item)]
        row[others] = -torch.inf
        ranks.append(int((row >= row[item]).sum()) - 1)
    hits = [r < 3 for r in ranks]
    ndcg = sum(1 / np.log2(r + 2) for r, h in zip(ranks, hits, strict=True) if h)
    np.testing.assert_allclose(system._val_sums.tolist(), [ndcg, sum(hits), 6], rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "all"])
def test_a_bad_val_per_user_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="val_per_user"):
        TrainConfig.from_dict({"mode": "implicit", "val_per_user": bad})


@pytest.mark.parametrize("setting", [1, 4])
def test_latest_order_holds_out_each_users_latest_positives(setting: int) -> None:
    counts = [3, 10, 40]
    data = _interactions(counts)
    rng = np.random.default_rng(5)
    times = rng.permutation(len(data)).astype(np.int64)
    times[data.users == 2] = 7  # one user's ratings all share a timestamp: ties in random order
    config = replace(BASE, val_per_user=setting, val_order="latest")
    train, held = holdout_ranking(data, 400, config, np.random.default_rng(1), times)
    assert held is not None
    for user in (0, 1):
        mine = data.users == user
        out = held.items[held.users == user]
        latest = data.items[mine][np.argsort(-times[mine], kind="stable")][: len(out)]
        assert sorted(out.tolist()) == sorted(latest.tolist())
    assert _held_per_user(held, 3).tolist() == [1, min(setting, 2), setting]
    _, random_pick = holdout_ranking(
        data, 400, replace(config, val_order="random"), np.random.default_rng(1)
    )
    assert random_pick is not None and len(random_pick.items) == len(held.items)
    assert len(train) + len(held.items) == len(data)


def test_a_bad_val_order_is_refused() -> None:
    with pytest.raises(ValueError, match="val_order"):
        TrainConfig.from_dict({"mode": "implicit", "val_order": "newest"})


def test_fit_with_latest_order_validates_on_each_users_latest_rating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held: list[HeldOut | None] = []
    real = holdout_ranking

    def spy(*args: object) -> tuple[Interactions, HeldOut | None]:
        out = real(*args)  # type: ignore[arg-type]
        held.append(out[1])
        return out

    monkeypatch.setattr(fitting, "holdout_ranking", spy)
    ratings = tiny_ratings().sample(frac=1.0, random_state=0)  # rows not in time order
    config = TrainConfig(
        mode="implicit", max_epochs=1, val_per_user=1, val_order="latest", gmf_dim=4,
        mlp_dim=4, mlp_layers=(8, 4), num_negatives=1, batch_size=32,
    )  # fmt: skip
    result = fitting.fit(ratings, config, enable_progress_bar=False)
    assert held and held[0] is not None
    got = dict(zip(result.users.ids[held[0].users], result.items.ids[held[0].items], strict=True))
    latest = ratings.sort_values("timestamp").groupby("user_id")["movie_id"].last()
    assert len(got) == ratings["user_id"].nunique()
    assert got == {int(u): int(m) for u, m in latest.items()}
