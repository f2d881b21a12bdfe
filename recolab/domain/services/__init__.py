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
    mmr_rerank,
)
from recolab.domain.services.explanations import (
    MAX_ANCHORS,
    UNEXPLAINED,
    Anchor,
    Candidate,
    Reason,
    ReasonKind,
    content_anchors,
    content_reason,
    explain,
)
from recolab.domain.services.scoring import (
    GenreIndex,
    content_based_scores,
    genre_profile,
    hybrid_merge,
    normalize_scores,
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
    "UNEXPLAINED",
    "Anchor",
    "Candidate",
    "GenreIndex",
    "GenreSimilarity",
    "Reason",
    "ReasonKind",
    "Similarity",
    "Strategy",
    "StrategyWeights",
    "content_anchors",
    "content_based_scores",
    "content_reason",
    "diversity_score",
    "explain",
    "favorite_genres",
    "genre_profile",
    "genre_similarity",
    "hybrid_merge",
    "mmr_rerank",
    "normalize_scores",
    "popularity_ranking",
    "select_strategy",
    "strategy_weights",
    "top_genres",
]
