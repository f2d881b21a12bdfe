"""NeuMF (He et al., 2017): GMF and MLP paths over separate embeddings, fused by one linear layer.

The module is plain PyTorch: it knows nothing about training. It returns an unbounded score
(a logit in implicit mode, a normalised rating in explicit mode) so that the loss decides the
link function. Serving rebuilds it from `config.to_dict()` and a state_dict, precomputes
`item_terms()` once and scores users against every item with `score_users()`.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# Bounds the [users, items, hidden] activation of a full-catalogue pass (~64 MiB in fp32).
_MAX_PAIR_CELLS = 1 << 24
# Pairs per tile of a CPU full-catalogue pass: ~2 MiB of 32-wide activations (see _add_mlp_tiles).
_CPU_TILE_PAIRS = 1 << 14


@dataclass(frozen=True)
class NeuMFConfig:
    """Shape of a NeuMF network: everything needed to rebuild it before loading a state_dict."""

    n_users: int
    n_items: int
    gmf_dim: int = 32  # 0 disables the GMF path
    mlp_dim: int = 32  # 0 disables the MLP path
    mlp_layers: tuple[int, ...] = field(default=(128, 64, 32))
    dropout: float = 0.2
    use_bias: bool = True  # user/item biases and a global offset
    global_mean: float = 0.0  # initial global offset (mean normalised rating in explicit mode)
    init_std: float = 0.01  # embeddings start as N(0, init_std^2)
    # Ranking adds popularity_weight * log(1 + training count) per item (0 = off).
    popularity_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1:
            raise ValueError("n_users and n_items must be positive")
        if self.gmf_dim <= 0 and self.mlp_dim <= 0:
            raise ValueError("at least one of gmf_dim and mlp_dim must be positive")
        if self.mlp_dim > 0 and not self.mlp_layers:
            raise ValueError("the MLP path needs at least one layer")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mlp_layers"] = list(self.mlp_layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NeuMFConfig:
        values = dict(data)
        values["mlp_layers"] = tuple(values.get("mlp_layers", ()))
        return cls(**values)


@dataclass(frozen=True)
class ItemTerms:
    """Item-side quantities that do not depend on the user, precomputed for full-catalogue scoring.

    `mlp_first` is the item half of the first MLP layer: W_item @ item_mlp_emb, shape [items, h1].
    """

    gmf: Tensor | None
    mlp_first: Tensor | None
    bias: Tensor | None


class NeuMF(nn.Module):
    """Neural matrix factorisation: b + b_u + b_i + w·[gmf_u ⊙ gmf_i, MLP(mlp_u, mlp_i)]."""

    item_log_count: Tensor  # buffer: log(1 + training count) per item, for the ranking prior

    def __init__(self, config: NeuMFConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.user_gmf = nn.Embedding(c.n_users, c.gmf_dim) if c.gmf_dim > 0 else None
        self.item_gmf = nn.Embedding(c.n_items, c.gmf_dim) if c.gmf_dim > 0 else None
        self.user_mlp = nn.Embedding(c.n_users, c.mlp_dim) if c.mlp_dim > 0 else None
        self.item_mlp = nn.Embedding(c.n_items, c.mlp_dim) if c.mlp_dim > 0 else None
        fused = 0
        self.mlp_first: nn.Linear | None = None
        self.mlp_rest: nn.Sequential | None = None
        if c.mlp_dim > 0:
            # Kept as one Linear over concat(user, item) so that it splits into two halves.
            self.mlp_first = nn.Linear(2 * c.mlp_dim, c.mlp_layers[0])
            rest: list[nn.Module] = [nn.ReLU(), nn.Dropout(c.dropout)]
            for size_in, size_out in zip(c.mlp_layers[:-1], c.mlp_layers[1:], strict=True):
                rest += [nn.Linear(size_in, size_out), nn.ReLU(), nn.Dropout(c.dropout)]
            self.mlp_rest = nn.Sequential(*rest)
            fused += c.mlp_layers[-1]
        fused += max(c.gmf_dim, 0)
        self.fusion = nn.Linear(fused, 1, bias=False)
        self.user_bias = nn.Embedding(c.n_users, 1) if c.use_bias else None
        self.item_bias = nn.Embedding(c.n_items, 1) if c.use_bias else None
        self.global_bias = nn.Parameter(torch.tensor(float(c.global_mean)))
        # Saved with the weights so that serving ranks exactly as evaluation did.
        self.register_buffer("item_log_count", torch.zeros(c.n_items))
        self.register_load_state_dict_pre_hook(_default_missing_prior)  # type: ignore[no-untyped-call]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            if emb is not None:
                nn.init.normal_(emb.weight, std=self.config.init_std)
        for emb in (self.user_bias, self.item_bias):
            if emb is not None:
                nn.init.zeros_(emb.weight)
        with torch.no_grad():
            self.global_bias.fill_(float(self.config.global_mean))

    def set_item_counts(self, counts: Tensor) -> None:
        """Record how often each item occurs in training (for the ranking prior)."""
        self.item_log_count.copy_(torch.log1p(counts.to(self.item_log_count)))

    def _prior(self, items: Tensor) -> Tensor | float:
        weight = self.config.popularity_weight
        return weight * self.item_log_count[items] if weight else 0.0

    # -- pairwise scoring ---------------------------------------------------------------

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """Score pairs: users [b] with items [b] -> [b], or with candidate lists [b, c] -> [b, c].

        With candidate lists the user side (embeddings, first MLP half) is computed once per row.
        """
        return self._pairs(users, items, with_l2=False)[0]

    def forward_with_l2(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """`forward` and `embedding_l2` from one lookup of the embedding rows (training)."""
        return self._pairs(users, items, with_l2=True)

    def _pairs(self, users: Tensor, items: Tensor, *, with_l2: bool) -> tuple[Tensor, Tensor]:
        # The fusion layer is applied per path (w_gmf · gmf + w_mlp · mlp, the same sum as one
        # Linear over their concatenation) so that the [b, c, gmf_dim] product and the
        # concatenation are never materialised: on CPU they cost more than the rest of a step.
        grouped = items.dim() == users.dim() + 1
        per_user = items.numel() // max(users.numel(), 1)
        weight = self.fusion.weight.squeeze(0)
        gmf_dim = max(self.config.gmf_dim, 0)
        squares: list[Tensor] = []
        out: Tensor | None = None
        if self.user_gmf is not None and self.item_gmf is not None:
            user_gmf, item_gmf = self.user_gmf(users), self.item_gmf(items)
            if with_l2:
                squares += [
                    squared_norm(user_gmf) * per_user,
                    _rows_l2(self.item_gmf, items, item_gmf),
                ]
            scaled = user_gmf * weight[:gmf_dim]
            # Grouped, a product and a sum, not a batched matrix-vector product: `bmm` over
            # 2048 [24 x 128] x [128 x 1] problems and its backward took a third of a CPU
            # training step (5M ratings; mul + sum, forward and backward: 28 -> 17 ms).
            out = (item_gmf * (scaled.unsqueeze(-2) if grouped else scaled)).sum(-1)
        if self.user_mlp is not None and self.item_mlp is not None:
            assert self.mlp_first is not None and self.mlp_rest is not None
            d = self.config.mlp_dim
            user_mlp, item_mlp = self.user_mlp(users), self.item_mlp(items)
            if with_l2:
                squares += [
                    squared_norm(user_mlp) * per_user,
                    _rows_l2(self.item_mlp, items, item_mlp),
                ]
            first_weight = self.mlp_first.weight
            user_half = user_mlp @ first_weight[:, :d].T + self.mlp_first.bias
            item_half = item_mlp @ first_weight[:, d:].T
            first = (user_half.unsqueeze(-2) if grouped else user_half) + item_half
            mlp = self.mlp_rest(first) @ weight[gmf_dim:]
            out = mlp if out is None else out + mlp
        assert out is not None  # NeuMFConfig requires at least one path
        out = out + self.global_bias
        if self.user_bias is not None and self.item_bias is not None:
            user_bias = self.user_bias(users)  # [b, 1] broadcasts over candidates when grouped
            item_bias = self.item_bias(items)
            if with_l2:
                squares += [
                    squared_norm(user_bias) * per_user,
                    _rows_l2(self.item_bias, items, item_bias),
                ]
            out = out + (user_bias if grouped else user_bias.squeeze(-1)) + item_bias.squeeze(-1)
        l2 = torch.stack(squares).sum() / items.numel() if squares else out.new_zeros(())
        return out, l2

    def ranking_score(self, users: Tensor, items: Tensor) -> Tensor:
        """`forward` plus the popularity prior: what ranking (evaluation, serving) sorts by.

        The prior is not trained (the item bias would absorb it); it tilts a sampled-negative
        model back towards popular items, which full-catalogue ranking rewards.
        """
        return self(users, items) + self._prior(items)

    def embedding_l2(self, users: Tensor, items: Tensor) -> Tensor:
        """Squared norms of the rows a batch touched, per scored pair (MF-style L2).

        With candidate lists [b, c], each user row is counted once per candidate.
        """
        return self._pairs(users, items, with_l2=True)[1]

    # -- full-catalogue scoring (serving, ranking evaluation) ----------------------------

    def item_terms(self) -> ItemTerms:
        """Precompute the user-independent item side of the network."""
        gmf = self.item_gmf.weight if self.item_gmf is not None else None
        first = None
        if self.item_mlp is not None and self.mlp_first is not None:
            d = self.config.mlp_dim
            first = self.item_mlp.weight @ self.mlp_first.weight[:, d:].T
        bias = self.item_bias.weight.squeeze(-1) if self.item_bias is not None else None
        if self.config.popularity_weight:
            prior: Tensor = self.config.popularity_weight * self.item_log_count
            bias = prior if bias is None else bias + prior
        return ItemTerms(gmf=gmf, mlp_first=first, bias=bias)

    def pair_bytes(self) -> int:
        """Bytes a full-catalogue pass holds per scored (user, item) pair at its peak.

        The output and its mask, plus the widest two consecutive MLP activations (a Linear's
        input and output are alive together); sizes user blocks for a memory budget.
        """
        widths = list(self.config.mlp_layers) if self.mlp_first is not None else []
        peak = max((a + b for a, b in itertools.pairwise(widths)), default=0)
        return 4 * (max(peak, widths[0] if widths else 0) + 3)

    def score_users(
        self, users: Tensor, terms: ItemTerms, *, max_rows: int | None = None
    ) -> Tensor:
        """`ranking_score` of `users` against every item, shape [len(users), n_items].

        Users are scored `max_rows` at a time (default: a block of about 64 MiB of activations).
        """
        n_items = self.config.n_items
        hidden = self.config.mlp_layers[0] if self.mlp_first is not None else 1
        chunk = max_rows or max(1, _MAX_PAIR_CELLS // (n_items * hidden))
        blocks = [
            self._score_block(users[start : start + chunk], terms)
            for start in range(0, users.numel(), chunk)
        ]
        if not blocks:
            return torch.empty((0, n_items), device=users.device)
        return torch.cat(blocks, dim=0)

    def score_all_items(self, users: Tensor) -> Tensor:
        """Convenience: `score_users` with freshly computed item terms."""
        return self.score_users(users, self.item_terms())

    def _score_block(self, users: Tensor, terms: ItemTerms) -> Tensor:
        weight = self.fusion.weight.squeeze(0)
        gmf_dim = max(self.config.gmf_dim, 0)
        out = torch.zeros((users.numel(), self.config.n_items), device=users.device)
        if self.user_gmf is not None and terms.gmf is not None:
            out = out + (self.user_gmf(users) * weight[:gmf_dim]) @ terms.gmf.T
        if self.user_mlp is not None and terms.mlp_first is not None:
            assert self.mlp_first is not None and self.mlp_rest is not None
            d = self.config.mlp_dim
            user_first = self.user_mlp(users) @ self.mlp_first.weight[:, :d].T + self.mlp_first.bias
            if users.device.type == "cpu" and not torch.is_grad_enabled():
                _add_mlp_tiles(out, user_first, terms.mlp_first, self.mlp_rest, weight[gmf_dim:])
            else:  # one pass: a GPU wants big kernels; autograd wants one graph
                hidden = user_first.unsqueeze(1) + terms.mlp_first.unsqueeze(0)
                out = out + rest_of_mlp(self.mlp_rest, hidden) @ weight[gmf_dim:]
        out = out + self.global_bias
        if self.user_bias is not None:
            out = out + self.user_bias(users)
        if terms.bias is not None:
            out = out + terms.bias.unsqueeze(0)
        return out


def _add_mlp_tiles(
    out: Tensor, user_first: Tensor, item_first: Tensor, rest: nn.Sequential, fusion: Tensor
) -> None:
    """`out += rest(relu(user_first + item_first)) @ fusion` for every (user, item), in tiles
    of about `_CPU_TILE_PAIRS` pairs.

    The [users, items, width] activations of a whole block do not fit in a CPU's caches, and
    moving them through memory costs more than the arithmetic: on 2 cores, ranking 31k users
    against 13.7k items took 47 s in one pass per block of ~100 users and about a fifth of
    that in tiles of 16k pairs (`benchmarks/eval_scale.py`). A tile is a few users against
    the whole catalogue, or one user against a slice of a large one.
    """
    n_users, n_items = out.shape
    rows = max(1, _CPU_TILE_PAIRS // max(1, n_items))
    cols = n_items if rows > 1 else min(n_items, _CPU_TILE_PAIRS)
    width = item_first.shape[1]
    for r0 in range(0, n_users, rows):
        user = user_first[r0 : r0 + rows].unsqueeze(1)
        for c0 in range(0, n_items, cols):
            hidden = (user + item_first[c0 : c0 + cols].unsqueeze(0)).view(-1, width)
            tile = rest_of_mlp(rest, hidden) @ fusion
            out[r0 : r0 + rows, c0 : c0 + cols] += tile.view(user.shape[0], -1)


def rest_of_mlp(rest: nn.Sequential, hidden: Tensor) -> Tensor:
    """`rest(hidden)`, with the ReLUs in place when nothing is differentiated (evaluation).

    `hidden` must be a fresh activation. A full-catalogue pass holds users x items x width
    of them; in-place ReLUs spare two such allocations and their memory traffic.
    """
    if rest.training or torch.is_grad_enabled():
        return rest(hidden)
    for layer in rest:
        if isinstance(layer, nn.ReLU):
            hidden = torch.relu_(hidden)
        elif not isinstance(layer, nn.Dropout):  # dropout is the identity in eval mode
            hidden = layer(hidden)
    return hidden


class _SquaredNorm(torch.autograd.Function):
    """Sum of squares in one pass, its gradient `2 g x` in one more.

    `x.pow(2).sum()` materialises x², and autograd's backward expands the gradient and
    multiplies twice: with ml-32m's item table (87,585 rows, more than the 51,200 a step looks
    up, so the per-lookup sum) those passes over the [2048, 25, 128] rows cost ~10 ms of a
    ~115 ms step (alternated runs: 117 -> 107 ms; at the 5M demo's shape 73 -> 69 ms).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        flat = x.reshape(-1)
        return torch.dot(flat, flat)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return x * (2 * grad)


def squared_norm(x: Tensor) -> Tensor:
    """`x.pow(2).sum()`, the same value and gradient, in fewer passes over `x`."""
    out: Tensor = _SquaredNorm.apply(x)  # type: ignore[no-untyped-call]
    return out


def _rows_l2(table: nn.Embedding, rows: Tensor, looked_up: Tensor) -> Tensor:
    """Sum of the squared norms of `table`'s rows at `rows`, repeats counted (`looked_up`: them).

    A batch with sampled negatives looks up many more item rows than the table holds: then
    each table row's squared norm weighted by how often the batch used it gives the same sum
    (and gradient) from table-sized work instead of batch-sized; on ml-latest-small with 32
    negatives this L2 and its backward had been ~40% of a training step. A table trained with
    sparse gradients (`table.sparse`) keeps the per-lookup sum: a table-sized term would give
    it a dense gradient.
    """
    if table.sparse or rows.numel() <= table.num_embeddings:
        return squared_norm(looked_up)
    counts = torch.bincount(rows.reshape(-1), minlength=table.num_embeddings)
    return counts.to(table.weight.dtype) @ table.weight.pow(2).sum(-1)


def _default_missing_prior(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Let weights saved before `item_log_count` existed load (the prior is then all zeros).

    Such models had no popularity prior; one that claims a prior without its counts is
    refused with a clear message instead of ranking silently without it.
    """
    key = prefix + "item_log_count"
    if key in state_dict or not isinstance(module, NeuMF):
        return
    if module.config.popularity_weight:
        raise ValueError(
            f"the checkpoint has popularity_weight={module.config.popularity_weight} but no "
            f"'{key}' item counts; retrain the model or load it with popularity_weight=0"
        )
    state_dict[key] = torch.zeros_like(module.item_log_count)
