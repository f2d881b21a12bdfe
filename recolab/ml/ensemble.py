"""Averages of NeuMF networks, merged into one NeuMF that scores exactly their weighted mean.

Every term of NeuMF's score is linear in the output of a path whose parameters it alone
uses: the GMF products, the MLP tower, the biases, the popularity prior. Stacking the members'
embeddings side by side, their MLP layers block-diagonally (each tower still sees only its
own member's embeddings) and scaling the fusion weights by the member weights therefore gives
one network, of the same architecture, whose score is `sum_j w_j * score_j` for every pair.
Serving, the factorised full-catalogue ranking and the checkpoint format need nothing new;
the merged network is as wide as the members together (scoring costs their sum).

Used to register the early-stopped fit with its refits (`trainer.ensemble`): fits of the same
data from different seeds and row sets, whose errors partly cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor, nn

from recolab.ml.datamodule import IdIndex
from recolab.ml.neumf import NeuMF


def merge(models: Sequence[NeuMF], weights: Sequence[float] | None = None) -> NeuMF:
    """One NeuMF whose score (`forward`, `ranking_score`) is the weighted mean of `models`'.

    The members must share their architecture and their user and item indices (fits of the
    same ratings); `weights` default to equal and must sum to 1. Returned in eval mode on CPU.
    """
    if not models:
        raise ValueError("merge needs at least one model")
    first = models[0].config
    for model in models[1:]:
        other = model.config
        if replace(other, global_mean=first.global_mean) != first:
            raise ValueError(
                "only NeuMF models of one shape over the same users and items can be merged: "
                f"{first} vs {other}"
            )
    k = len(models)
    shares = [1.0 / k] * k if weights is None else [float(w) for w in weights]
    if len(shares) != k or abs(sum(shares) - 1.0) > 1e-6 or min(shares) < 0:
        raise ValueError(f"weights must be {k} non-negative numbers summing to 1, got {weights}")
    members = [model.cpu().eval() for model in models]
    merged = NeuMF(
        replace(
            first,
            gmf_dim=first.gmf_dim * k if first.gmf_dim > 0 else first.gmf_dim,
            mlp_dim=first.mlp_dim * k if first.mlp_dim > 0 else first.mlp_dim,
            mlp_layers=tuple(size * k for size in first.mlp_layers),
            global_mean=sum(w * m.config.global_mean for w, m in zip(shares, members, strict=True)),
        )
    )
    with torch.no_grad():
        _copy_paths(merged, members, shares)
    return merged.eval()


def align(
    model: NeuMF,
    users: np.ndarray,
    items: np.ndarray,
    to_users: np.ndarray,
    to_items: np.ndarray,
) -> NeuMF:
    """`model` (whose rows are the sorted ids `users`, `items`) re-indexed to the sorted ids
    `to_users`, `to_items`, so that it can be merged with models fitted on them.

    A user or item it never saw gets zero embeddings, a zero bias and a zero training count:
    what that member knows of it (the MLP's response to a zero embedding included)."""
    if np.array_equal(users, to_users) and np.array_equal(items, to_items):
        return model
    config = replace(model.config, n_users=int(to_users.size), n_items=int(to_items.size))
    user_rows, item_rows = IdIndex(users).lookup(to_users), IdIndex(items).lookup(to_items)
    state = model.state_dict()
    aligned = NeuMF(config)
    target = aligned.state_dict()
    for key, value in state.items():
        # per-user and per-item tables are the `user_*` and `item_*` entries (item_log_count too)
        if not key.startswith(("user_", "item_")):
            target[key] = value
            continue
        index = user_rows if key.startswith("user_") else item_rows
        known = torch.from_numpy(index >= 0)
        table = torch.zeros((index.size, *value.shape[1:]), dtype=value.dtype)
        table[known] = value[torch.from_numpy(index[index >= 0])]
        target[key] = table
    aligned.load_state_dict(target)
    return aligned.eval()


def _copy_paths(merged: NeuMF, members: list[NeuMF], shares: list[float]) -> None:
    def weighted_sum(get: Callable[[NeuMF], Tensor]) -> Tensor:
        return sum((w * get(m) for w, m in zip(shares, members, strict=True)), torch.zeros(()))

    fusion_parts: list[Tensor] = []
    gmf_dim = max(members[0].config.gmf_dim, 0)
    if merged.user_gmf is not None and merged.item_gmf is not None:
        merged.user_gmf.weight.copy_(torch.cat([_table(m.user_gmf) for m in members], dim=1))
        merged.item_gmf.weight.copy_(torch.cat([_table(m.item_gmf) for m in members], dim=1))
        fusion_parts += [
            w * m.fusion.weight[0, :gmf_dim] for w, m in zip(shares, members, strict=True)
        ]
    if merged.mlp_first is not None and merged.mlp_rest is not None:
        assert merged.user_mlp is not None and merged.item_mlp is not None
        merged.user_mlp.weight.copy_(torch.cat([_table(m.user_mlp) for m in members], dim=1))
        merged.item_mlp.weight.copy_(torch.cat([_table(m.item_mlp) for m in members], dim=1))
        _merge_first_layer(merged.mlp_first, members)
        for index, layer in enumerate(merged.mlp_rest):
            if isinstance(layer, nn.Linear):
                parts = [_rest_layer(m, index) for m in members]
                layer.weight.copy_(torch.block_diag(*(p.weight for p in parts)))  # type: ignore[no-untyped-call]
                layer.bias.copy_(torch.cat([p.bias for p in parts]))
        fusion_parts += [
            w * m.fusion.weight[0, gmf_dim:] for w, m in zip(shares, members, strict=True)
        ]
    merged.fusion.weight.copy_(torch.cat(fusion_parts).unsqueeze(0))
    merged.global_bias.copy_(weighted_sum(lambda m: m.global_bias))
    if merged.user_bias is not None and merged.item_bias is not None:
        merged.user_bias.weight.copy_(weighted_sum(lambda m: _table(m.user_bias)))
        merged.item_bias.weight.copy_(weighted_sum(lambda m: _table(m.item_bias)))
    # The prior is linear in the log counts: their weighted mean gives the members' mean prior.
    merged.item_log_count.copy_(weighted_sum(lambda m: m.item_log_count))


def _merge_first_layer(first: nn.Linear, members: list[NeuMF]) -> None:
    """Member j's first layer reads only its own slices of the user and item halves."""
    k = len(members)
    d = members[0].config.mlp_dim
    hidden = members[0].config.mlp_layers[0]
    first.weight.zero_()
    for j, member in enumerate(members):
        assert member.mlp_first is not None
        rows = slice(j * hidden, (j + 1) * hidden)
        first.weight[rows, j * d : (j + 1) * d] = member.mlp_first.weight[:, :d]
        first.weight[rows, k * d + j * d : k * d + (j + 1) * d] = member.mlp_first.weight[:, d:]
    first.bias.copy_(torch.cat([m.mlp_first.bias for m in members if m.mlp_first is not None]))


def _rest_layer(member: NeuMF, index: int) -> nn.Linear:
    assert member.mlp_rest is not None
    layer = member.mlp_rest[index]
    assert isinstance(layer, nn.Linear)
    return layer


def _table(embedding: nn.Embedding | None) -> Tensor:
    assert embedding is not None
    return embedding.weight
