"""The serving view of a trained NeuMF: the domain's `Scorer` port on CPU.

Everything that does not depend on the user (item embeddings, the item half of the first
MLP layer, item biases) is computed once at load time, so ranking the whole catalogue for a
user is one vectorised pass. Users the model never saw are folded in: their own user vector
is fitted against the frozen item side from the movies they rated.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recolab.domain.model import Rating
from recolab.domain.values import MovieId, UserId

if TYPE_CHECKING:
    import mlflow

    from recolab.adapters.ml.training import FitResult

# Explicit targets are (rating - 0.5) / 4.5 (see recolab.adapters.ml.system).
_RATING_MIN = 0.5
_RATING_SPAN = 4.5


def to_relevance(raw: Tensor, mode: str) -> Tensor:
    """Raw model output to relevance in [0, 1]: sigmoid of the logit (implicit) or the
    normalised rating clipped to [0, 1] (explicit). Monotonic, so ranks are unchanged."""
    return torch.sigmoid(raw) if mode == "implicit" else raw.clamp(0.0, 1.0)


@dataclass(frozen=True)
class FoldInConfig:
    """How an unseen user's vector is fitted: a MAP estimate centred on the mean user."""

    steps: int = 40
    lr: float = 0.05
    negatives: int = 4  # sampled unrated items per rated one (implicit mode)
    prior_weight: float = 1.0  # pull towards the mean user, divided by the number of ratings
    seed: int = 0


@dataclass(frozen=True)
class _UserVector:
    gmf: Tensor | None
    mlp: Tensor | None
    bias: Tensor | None


class NeuMFScorer:
    """A fitted NeuMF behind the `Scorer` port, plus `similar()` for item-to-item lookups.

    Thread-safe for concurrent reads: nothing is mutated after construction.
    """

    def __init__(
        self,
        fit_result: FitResult,
        movies: pd.DataFrame | None = None,
        *,
        version: str = "local",
        fold_in: FoldInConfig | None = None,
    ) -> None:
        self.version = version
        self.fit_result = fit_result
        self.movies = movies
        self.mode = fit_result.config.mode
        self.fold_in_config = fold_in or FoldInConfig()
        model = fit_result.model
        self._user_index = {int(u): i for i, u in enumerate(fit_result.users.ids)}
        self._item_index = {int(m): i for i, m in enumerate(fit_result.items.ids)}
        self._item_ids = np.asarray(fit_result.items.ids, dtype=np.int64)
        self.n_items = len(self._item_ids)
        with torch.no_grad():
            # Plain (not inference-mode) tensors: fold-in back-propagates through them.
            terms = model.item_terms()
            self._item_gmf = _frozen(terms.gmf)
            self._item_first = _frozen(terms.mlp_first)
            self._item_bias = _frozen(terms.bias)
            self._user_gmf = _frozen(_weight(model.user_gmf))
            self._user_mlp = _frozen(_weight(model.user_mlp))
            self._user_bias = _frozen(_weight(model.user_bias))
            fusion = model.fusion.weight.detach().squeeze(0).float()
            gmf_dim = self._item_gmf.shape[1] if self._item_gmf is not None else 0
            self._w_gmf = fusion[:gmf_dim].clone()
            self._w_mlp = fusion[gmf_dim:].clone()
            self._global = float(model.global_bias.detach())
            self._first_user: Tensor | None = None
            self._first_bias: Tensor | None = None
            self._mlp_rest: nn.Module | None = None
            if model.mlp_first is not None and model.mlp_rest is not None:
                d = model.config.mlp_dim
                self._first_user = _frozen(model.mlp_first.weight[:, :d])
                self._first_bias = _frozen(model.mlp_first.bias)
                self._mlp_rest = copy.deepcopy(model.mlp_rest).eval().requires_grad_(False)
            self._prior = _UserVector(
                _mean_row(self._user_gmf), _mean_row(self._user_mlp), _mean_row(self._user_bias)
            )
            self._prior_scores = self._raw_scores(self._prior)
            self._item_unit = _unit_rows(self._item_gmf, self._item_first, self._w_gmf)

    # -- the Scorer port ---------------------------------------------------------------

    def knows_user(self, user_id: UserId) -> bool:
        return int(user_id) in self._user_index

    def top_k(
        self, user_id: UserId, k: int, exclude: Collection[MovieId]
    ) -> list[tuple[MovieId, float]]:
        """The `k` best movies for a user seen in training, never one in `exclude`."""
        idx = self._user_index.get(int(user_id))
        if idx is None:
            raise KeyError(f"{user_id} is not known to model version {self.version}")
        with torch.inference_mode():
            vector = _UserVector(
                _row(self._user_gmf, idx), _row(self._user_mlp, idx), _row(self._user_bias, idx)
            )
            return self._rank(self._raw_scores(vector), k, exclude)

    def fold_in_top_k(
        self, rated: Sequence[Rating], k: int, exclude: Collection[MovieId]
    ) -> list[tuple[MovieId, float]]:
        """Top `k` for a user the model never saw, fitted from their ratings.

        Rated movies the model does not know are ignored; with none it knows, the mean
        user's ranking (popularity as the model learnt it) is returned. Rated movies are
        never returned. Deterministic for the same ratings.
        """
        latest = {int(r.movie_id): float(r.score) for r in rated}
        known = [(self._item_index[m], s) for m, s in latest.items() if m in self._item_index]
        blocked = {*exclude, *(MovieId(m) for m in latest)}
        if not known:
            with torch.inference_mode():
                return self._rank(self._prior_scores, k, blocked)
        items = torch.tensor([i for i, _ in known], dtype=torch.int64)
        stars = torch.tensor([s for _, s in known], dtype=torch.float32)
        vector = self._fit_user(items, stars)
        with torch.inference_mode():
            return self._rank(self._raw_scores(vector), k, blocked)

    # -- item to item --------------------------------------------------------------------

    def similar(self, movie_id: MovieId, k: int) -> list[tuple[MovieId, float]]:
        """The `k` movies whose learnt representation is closest (cosine) to `movie_id`'s.

        The representation is the item as the network sees it: its GMF factor weighted by
        the fusion layer and its half of the first MLP layer, each scaled to unit length.
        """
        idx = self._item_index.get(int(movie_id))
        if idx is None or k <= 0:
            return []
        with torch.inference_mode():
            sims = self._item_unit @ self._item_unit[idx]
            sims[idx] = float("-inf")
            n = min(k, self.n_items - 1)
            values, order = torch.topk(sims, n)
        return [
            (MovieId(int(self._item_ids[i])), float(v))
            for i, v in zip(order.tolist(), values.tolist(), strict=True)
        ]

    # -- internals -----------------------------------------------------------------------

    def _raw_scores(self, user: _UserVector, items: Tensor | None = None) -> Tensor:
        """Raw model output of one user against `items` (all items when None)."""

        def pick(table: Tensor | None) -> Tensor | None:
            return table if table is None or items is None else table[items]

        item_gmf, item_first, item_bias = (
            pick(self._item_gmf),
            pick(self._item_first),
            pick(self._item_bias),
        )
        size = self.n_items if items is None else int(items.numel())
        out = torch.full((size,), self._global)
        if user.gmf is not None and item_gmf is not None:
            out = out + item_gmf @ (user.gmf * self._w_gmf)
        if user.mlp is not None and item_first is not None:
            assert self._first_user is not None and self._mlp_rest is not None
            user_first = self._first_user @ user.mlp + self._first_bias
            out = out + self._mlp_rest(item_first + user_first) @ self._w_mlp
        if user.bias is not None and item_bias is not None:
            out = out + user.bias + item_bias
        return out

    def _rank(
        self, raw: Tensor, k: int, exclude: Iterable[MovieId]
    ) -> list[tuple[MovieId, float]]:
        blocked = {i for m in exclude if (i := self._item_index.get(int(m))) is not None}
        n = min(k, self.n_items - len(blocked))
        if n <= 0:
            return []
        if blocked:
            raw = raw.clone()
            raw[torch.tensor(sorted(blocked), dtype=torch.int64)] = float("-inf")
        values, order = torch.topk(raw, n)
        scores = to_relevance(values, self.mode)
        return [
            (MovieId(int(self._item_ids[i])), float(s))
            for i, s in zip(order.tolist(), scores.tolist(), strict=True)
        ]

    def _fit_user(self, items: Tensor, stars: Tensor) -> _UserVector:
        """Adam on a fresh user vector against the frozen item side; seeded, so repeatable."""
        cfg = self.fold_in_config
        prior = self._prior
        named = (("gmf", prior.gmf), ("mlp", prior.mlp), ("bias", prior.bias))
        fresh = {name: t.clone().requires_grad_(True) for name, t in named if t is not None}
        params = list(fresh.values())
        anchors = [p.detach().clone() for p in params]
        vector = _UserVector(fresh.get("gmf"), fresh.get("mlp"), fresh.get("bias"))
        batches, targets = self._fold_in_batches(items, stars, cfg)
        prior_weight = cfg.prior_weight / items.numel()
        optimiser = torch.optim.Adam(params, lr=cfg.lr)
        with torch.enable_grad():
            for step in range(cfg.steps):
                raw = self._raw_scores(vector, batches[step])
                if self.mode == "implicit":
                    loss = F.binary_cross_entropy_with_logits(raw, targets)
                else:
                    loss = F.mse_loss(raw, targets)
                penalty = sum((p - a).pow(2).sum() for p, a in zip(params, anchors, strict=True))
                loss = loss + prior_weight * penalty
                optimiser.zero_grad(set_to_none=True)
                loss.backward(inputs=params)
                optimiser.step()
        return _UserVector(*(None if p is None else p.detach() for p in _fields(vector)))

    def _fold_in_batches(
        self, items: Tensor, stars: Tensor, cfg: FoldInConfig
    ) -> tuple[Tensor, Tensor]:
        """Items per step [steps, n] and their targets [n]."""
        if self.mode != "implicit":
            targets = (stars - _RATING_MIN) / _RATING_SPAN
            return items.expand(cfg.steps, -1), targets
        unrated = torch.ones(self.n_items, dtype=torch.bool)
        unrated[items] = False
        pool = torch.nonzero(unrated).squeeze(1)
        n_neg = cfg.negatives * int(items.numel()) if pool.numel() else 0
        generator = torch.Generator().manual_seed(cfg.seed)
        draws = torch.randint(0, max(pool.numel(), 1), (cfg.steps, n_neg), generator=generator)
        batches = torch.cat([items.expand(cfg.steps, -1), pool[draws]], dim=1)
        targets = torch.cat([torch.ones(items.numel()), torch.zeros(n_neg)])
        return batches, targets


def _fields(vector: _UserVector) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    return vector.gmf, vector.mlp, vector.bias


def _weight(module: nn.Module | None) -> Tensor | None:
    return None if module is None else module.weight  # type: ignore[return-value]


def _frozen(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach().float().contiguous().clone()


def _row(table: Tensor | None, idx: int) -> Tensor | None:
    if table is None:
        return None
    return table[idx]


def _mean_row(table: Tensor | None) -> Tensor | None:
    return None if table is None else table.mean(dim=0)


def _unit_rows(gmf: Tensor | None, first: Tensor | None, w_gmf: Tensor) -> Tensor:
    blocks = []
    if gmf is not None:
        blocks.append(F.normalize(gmf * w_gmf, dim=1))
    if first is not None:
        blocks.append(F.normalize(first, dim=1))
    return F.normalize(torch.cat(blocks, dim=1), dim=1)


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")


def _artifact_uri(client: mlflow.MlflowClient, model_uri: str) -> str:
    """Where a registered version's files are, resolved with our client.

    MLflow's own `models:/` resolution reads the process-wide registry URI, which the
    serving process does not set, so name/version and name@alias are resolved here.
    """
    match = _MODELS_URI.match(model_uri)
    if match is None:
        return model_uri
    name = match["name"]
    version = match["version"]
    if version is None:
        version = client.get_model_version_by_alias(name, match["alias"]).version
    return str(client.get_model_version_download_uri(name, version))


def load_scorer(model_uri: str, tracking_uri: str, version: str) -> NeuMFScorer:
    """Load a registered NeuMF pyfunc (e.g. ``models:/recolab-neumf/3``) on CPU as a scorer.

    Uses `tracking_uri` for both tracking and registry without touching MLflow's global
    state, and needs no training data: weights, id maps and movie metadata are artefacts.
    """
    import mlflow

    from recolab.adapters.registry import NeuMFPyfunc

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    source = _artifact_uri(client, model_uri)
    with tempfile.TemporaryDirectory(prefix="recolab-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri
        )
        # The installed-package scan behind the requirement-mismatch warning costs seconds.
        wrapper = mlflow.pyfunc.load_model(local, suppress_warnings=True).unwrap_python_model()
    if not isinstance(wrapper, NeuMFPyfunc) or wrapper.fit_result is None:
        raise TypeError(f"{model_uri} is not a RecoLab NeuMF model ({type(wrapper).__name__})")
    return NeuMFScorer(wrapper.fit_result, wrapper.movies, version=version)
