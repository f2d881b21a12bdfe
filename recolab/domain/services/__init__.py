"""Domain services: strategy choice, candidate scoring and merging, diversity, MMR, explanations.

Everything here is pure: inputs in, values out. Candidates carry a `Reason`, so explanations
name what actually put a movie on the list. One module per concern:

- `strategy`: which strategy serves each user tier, and the hybrid weights;
- `scoring`: popularity, content-based (genre profile) and the hybrid merge;
- `diversity`: the diversity score and MMR re-ranking;
- `explanations`: candidates, their reasons and the sentences that name them.
"""

from recolab.domain.model import FAVORITE_GENRES_K, favorite_genres, top_genres
from recolab.domain.services.diversity import (
    GenreSimilarity,
    Similarity,
    diversity_score,
    genre_similarity,
    mmr_order,
    mmr_rerank,
)
from recolab.domain.services.explanations import (
    MAX_ANCHORS,
    MAX_COLLABORATIVE_ANCHORS,
    UNEXPLAINED,
    Anchor,
    Candidate,
    Reason,
    ReasonKind,
    closest_anchors,
    collaborative_anchor_rows,
    collaborative_anchors,
    collaborative_reason,
    content_anchor_rows,
    content_anchors,
    content_reason,
    explain,
)
from recolab.domain.services.index import CatalogueIndex, GenreIndex
from recolab.domain.services.scoring import (
    content_based_arrays,
    content_based_scores,
    genre_profile,
    hybrid_merge,
    hybrid_merge_arrays,
    normalize_scores,
    normalized,
    popular_arrays,
    popularity_ranking,
)
from recolab.domain.services.strategy import (
    DEFAULT_MMR_LAMBDA,
    Strategy,
    StrategyWeights,
    select_strategy,
    strategy_weights,
)

__all__ = [
    "DEFAULT_MMR_LAMBDA",
    "FAVORITE_GENRES_K",
    "MAX_ANCHORS",
    "MAX_COLLABORATIVE_ANCHORS",
    "UNEXPLAINED",
    "Anchor",
    "Candidate",
    "CatalogueIndex",
    "GenreIndex",
    "GenreSimilarity",
    "Reason",
    "ReasonKind",
    "Similarity",
    "Strategy",
    "StrategyWeights",
    "closest_anchors",
    "collaborative_anchor_rows",
    "collaborative_anchors",
    "collaborative_reason",
    "content_anchor_rows",
    "content_anchors",
    "content_based_arrays",
    "content_based_scores",
    "content_reason",
    "diversity_score",
    "explain",
    "favorite_genres",
    "genre_profile",
    "genre_similarity",
    "hybrid_merge",
    "hybrid_merge_arrays",
    "mmr_order",
    "mmr_rerank",
    "normalize_scores",
    "normalized",
    "popular_arrays",
    "popularity_ranking",
    "select_strategy",
    "strategy_weights",
    "top_genres",
]
