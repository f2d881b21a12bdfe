"""NeuMF (He et al., 2017): GMF and MLP paths over separate embeddings, fused by one linear layer.

The module is plain PyTorch: it knows nothing about training. It returns an unbounded score
(a logit in implicit mode, a normalised rating in explicit mode) so that the loss decides the
link function. Serving rebuilds it from `config.to_dict()` and a state_dict, precomputes
`item_terms()` once and scores users against every item with `score_users()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# Bounds the [users, items, hidden] activation of a full-catalogue pass (~64 MiB in fp32).
_MAX_PAIR_CELLS = 1 << 24


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

    # -- pairwise scoring ---------------------------------------------------------------

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """Score pairs: users [b] with items [b] -> [b], or with candidate lists [b, c] -> [b, c].

        With candidate lists the user side (embeddings, first MLP half) is computed once per row.
        """
        grouped = items.dim() == users.dim() + 1
        parts: list[Tensor] = []
        if self.user_gmf is not None and self.item_gmf is not None:
            user_gmf = self.user_gmf(users)
            parts.append((user_gmf.unsqueeze(-2) if grouped else user_gmf) * self.item_gmf(items))
        if self.user_mlp is not None and self.item_mlp is not None:
            assert self.mlp_first is not None and self.mlp_rest is not None
            d = self.config.mlp_dim
            weight = self.mlp_first.weight
            user_half = self.user_mlp(users) @ weight[:, :d].T + self.mlp_first.bias
            item_half = self.item_mlp(items) @ weight[:, d:].T
            first = (user_half.unsqueeze(-2) if grouped else user_half) + item_half
            parts.append(self.mlp_rest(first))
        fused = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        out = self.fusion(fused).squeeze(-1) + self.global_bias
        if self.user_bias is not None and self.item_bias is not None:
            user_bias = self.user_bias(users)  # [b, 1] broadcasts over candidates when grouped
            out = (
                out
                + (user_bias if grouped else user_bias.squeeze(-1))
                + self.item_bias(items).squeeze(-1)
            )
        return out

    def embedding_l2(self, users: Tensor, items: Tensor) -> Tensor:
        """Squared norms of the rows a batch touched, per scored pair (MF-style L2).

        With candidate lists [b, c], each user row is counted once per candidate.
        """
        total = torch.zeros((), device=users.device)
        per_user = items.numel() // max(users.numel(), 1)
        for table, idx, weight in (
            (self.user_gmf, users, per_user),
            (self.item_gmf, items, 1),
            (self.user_mlp, users, per_user),
            (self.item_mlp, items, 1),
            (self.user_bias, users, per_user),
            (self.item_bias, items, 1),
        ):
            if table is not None:
                total = total + table(idx).pow(2).sum() * weight
        return total / items.numel()

    # -- full-catalogue scoring (serving, ranking evaluation) ----------------------------

    def item_terms(self) -> ItemTerms:
        """Precompute the user-independent item side of the network."""
        gmf = self.item_gmf.weight if self.item_gmf is not None else None
        first = None
        if self.item_mlp is not None and self.mlp_first is not None:
            d = self.config.mlp_dim
            first = self.item_mlp.weight @ self.mlp_first.weight[:, d:].T
        bias = self.item_bias.weight.squeeze(-1) if self.item_bias is not None else None
        return ItemTerms(gmf=gmf, mlp_first=first, bias=bias)

    def score_users(self, users: Tensor, terms: ItemTerms) -> Tensor:
        """Scores of `users` against every item, shape [len(users), n_items], in one pass each."""
        n_items = self.config.n_items
        hidden = self.config.mlp_layers[0] if self.mlp_first is not None else 1
        chunk = max(1, _MAX_PAIR_CELLS // (n_items * hidden))
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
            hidden = user_first.unsqueeze(1) + terms.mlp_first.unsqueeze(0)
            out = out + self.mlp_rest(hidden) @ weight[gmf_dim:]
        out = out + self.global_bias
        if self.user_bias is not None and terms.bias is not None:
            out = out + self.user_bias(users) + terms.bias.unsqueeze(0)
        return out
