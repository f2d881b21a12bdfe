"""Recommendation metrics in plain numpy, one value per user (average them yourself).

Ranking metrics take a boolean `hits` matrix [users, k] (True where the item at that rank
is relevant) and, where needed, the number of relevant items per user. Binary relevance
throughout; discounts are log2(rank + 1) with ranks starting at 1.
"""

from __future__ import annotations

import re

import numpy as np

FloatArray = np.ndarray


def hits_matrix(
    topk_items: np.ndarray, relevant_users: np.ndarray, relevant_items: np.ndarray
) -> np.ndarray:
    """Boolean [users, k]: is topk_items[u, r] among the relevant pairs of row u?

    Rows are users 0..n-1; `relevant_users` holds row indices (not ids) of relevant pairs.
    """
    topk = np.asarray(topk_items, dtype=np.int64)
    n_users, k = topk.shape
    if n_users == 0 or k == 0:
        return np.zeros((n_users, k), dtype=bool)
    width = int(max(topk.max(initial=0), np.max(relevant_items, initial=0))) + 1
    rows = np.repeat(np.arange(n_users, dtype=np.int64), k)
    ranked = rows * width + topk.reshape(-1)
    wanted = np.asarray(relevant_users, dtype=np.int64) * width + np.asarray(relevant_items)
    return np.isin(ranked, wanted).reshape(n_users, k)


def _discounts(k: int) -> FloatArray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def precision_at_k(hits: np.ndarray) -> FloatArray:
    """Relevant items in the top k divided by k."""
    return np.asarray(hits, dtype=np.float64).sum(axis=1) / hits.shape[1]


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> FloatArray:
    """Relevant items in the top k divided by all relevant items (0 when there are none)."""
    found = np.asarray(hits, dtype=np.float64).sum(axis=1)
    return _safe_divide(found, np.asarray(n_relevant, dtype=np.float64))


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> FloatArray:
    """Sum of precision@r over the ranks r that hold a relevant item, divided by n_relevant.

    The divisor is the number of relevant items (not min(n_relevant, k)), so a user with
    more relevant items than k cannot reach 1.
    """
    h = np.asarray(hits, dtype=np.float64)
    ranks = np.arange(1, h.shape[1] + 1, dtype=np.float64)
    precision_at_rank = np.cumsum(h, axis=1) / ranks
    return _safe_divide((precision_at_rank * h).sum(axis=1), np.asarray(n_relevant, np.float64))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> FloatArray:
    """DCG of the ranked list over the DCG of an ideal list with min(n_relevant, k) hits."""
    h = np.asarray(hits, dtype=np.float64)
    k = h.shape[1]
    discounts = _discounts(k)
    dcg = h @ discounts
    ideal_cumulative = np.concatenate([[0.0], np.cumsum(discounts)])
    idcg = ideal_cumulative[np.minimum(np.asarray(n_relevant, dtype=np.int64), k)]
    return _safe_divide(dcg, idcg)


def hit_rate_at_k(hits: np.ndarray) -> FloatArray:
    """1 when any relevant item is in the top k."""
    return np.asarray(hits, dtype=bool).any(axis=1).astype(np.float64)


def rank_of_positive(scores: np.ndarray) -> np.ndarray:
    """0-based rank of column 0 among each row; ties count against it (pessimistic)."""
    s = np.asarray(scores, dtype=np.float64)
    return (s[:, 1:] >= s[:, :1]).sum(axis=1)


def loo_hit_rate(ranks: np.ndarray, k: int) -> FloatArray:
    """Leave-one-out hit rate: 1 when the single held-out item ranks within the top k."""
    return (np.asarray(ranks) < k).astype(np.float64)


def loo_ndcg(ranks: np.ndarray, k: int) -> FloatArray:
    """Leave-one-out nDCG: 1/log2(rank + 2) for a 0-based rank within the top k, else 0."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def catalogue_coverage(topk_items: np.ndarray, n_catalogue: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    if n_catalogue <= 0:
        return 0.0
    return float(np.unique(np.asarray(topk_items)).size / n_catalogue)


def novelty(topk_items: np.ndarray, item_popularity: np.ndarray) -> FloatArray:
    """Mean self-information -log2 p(i) of each list, p(i) = share of users who rated i.

    `item_popularity[i]` must be in (0, 1]; items are column indices into it.
    """
    p = np.asarray(item_popularity, dtype=np.float64)[np.asarray(topk_items)]
    return (-np.log2(p)).mean(axis=1)


def intra_list_diversity(topk_items: np.ndarray, item_genres: np.ndarray) -> FloatArray:
    """1 - mean pairwise Jaccard similarity of genre sets within each list.

    `item_genres` is a boolean multi-hot matrix [items, genres]. Lists with fewer than two
    items have no pairs and get 0 diversity.
    """
    g = np.asarray(item_genres, dtype=np.float64)[np.asarray(topk_items)]  # [u, k, genres]
    k = g.shape[1]
    if k < 2:
        return np.zeros(g.shape[0])
    inter = np.einsum("ukg,ujg->ukj", g, g)
    sizes = g.sum(axis=2)
    union = sizes[:, :, None] + sizes[:, None, :] - inter
    jaccard = _safe_divide(inter, union)
    off_diagonal = ~np.eye(k, dtype=bool)
    mean_similarity = jaccard[:, off_diagonal].mean(axis=1)
    return 1.0 - mean_similarity


def bootstrap_ci(
    values: np.ndarray, *, level: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one per user), seeded.

    For figures measured on a random sample of users: the range the mean over all users
    is likely in. An empty input has no interval (NaN, NaN).
    """
    v = np.asarray(values, dtype=np.float64)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    step = max(1, (1 << 22) // v.size)  # resamples drawn at once: ~32 MB of indices
    for start in range(0, n_resamples, step):
        stop = min(start + step, n_resamples)
        means[start:stop] = v[rng.integers(0, v.size, size=(stop - start, v.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.mean(np.abs(diff)))


def _safe_divide(num: np.ndarray, den: np.ndarray) -> FloatArray:
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metric_key(name: str) -> str:
    """The one name a metric has wherever it is shown (MLflow, artefacts, plots, logs):
    MLflow allows no `@`, so `val/ndcg@10` is `val/ndcg_at_10`."""
    return re.sub(r"[^/\w.\- ]", "_", name.replace("@", "_at_"))
