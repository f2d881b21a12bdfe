"""The served policy's knobs come from configs/serving.yaml; a bad value is refused, named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recolab.bootstrap import bootstrap
from recolab.config import PROJECT_ROOT, ConfigError, ServingConfig, Settings, load_section
from recolab.domain.errors import InvalidValue
from recolab.domain.model import UserClassification
from recolab.domain.services.strategy import StrategyWeights, hybrid_weights, strategy_weights

CONFIGS = PROJECT_ROOT / "configs"


def test_the_shipped_file_sets_every_policy_knob() -> None:
    raw = yaml.safe_load((CONFIGS / "serving.yaml").read_text())
    cfg = load_section(ServingConfig, "serving", config_dir=CONFIGS)
    assert {"mmr_lambda", "shortlist_size", "hybrid_weights"} <= set(raw)
    assert cfg.hybrid_weights == raw["hybrid_weights"]
    assert set(cfg.hybrid_weights) == {"casual", "active"}
    assert (cfg.mmr_lambda, cfg.shortlist_size) == (raw["mmr_lambda"], raw["shortlist_size"])


def test_the_seed_weights_stay_the_default_of_the_domain() -> None:
    assert strategy_weights(UserClassification.CASUAL) == StrategyWeights(0.6, 0.4)
    assert strategy_weights(UserClassification.ACTIVE) == StrategyWeights(0.8, 0.2)
    table = {UserClassification.CASUAL: StrategyWeights(1.0, 0.0)}
    assert strategy_weights(UserClassification.CASUAL, table) == StrategyWeights(1.0, 0.0)
    assert strategy_weights(UserClassification.ACTIVE, table) == StrategyWeights(0.8, 0.2)


def test_the_recommender_is_built_with_the_configured_knobs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'r.db'}")
    overrides = [
        "serving.hybrid_weights.casual.collaborative=1.0",
        "serving.hybrid_weights.casual.content_based=0.0",
        "serving.mmr_lambda=0.9",
        "serving.shortlist_size=120",
    ]
    platform = bootstrap(settings, overrides=overrides)
    try:
        rec = platform.recommender()
    finally:
        platform.close()
    assert rec.hybrid_weights is not None
    assert rec.hybrid_weights[UserClassification.CASUAL] == StrategyWeights(1.0, 0.0)
    assert rec.hybrid_weights[UserClassification.ACTIVE] == strategy_weights(
        UserClassification.ACTIVE,
        hybrid_weights(load_section(ServingConfig, "serving", config_dir=CONFIGS).hybrid_weights),
    )
    assert (rec.default_lambda, rec.shortlist) == (0.9, 120)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("serving.hybrid_weights.casual.collaborative=0.9", "must sum to 1"),
        ("serving.hybrid_weights.active.collaborative=-0.2", "not in \\[0, 1\\]"),
        (
            "serving.hybrid_weights.power_user={collaborative: 1, content_based: 0}",
            "not served hybrid",
        ),
        ("serving.hybrid_weights.pro={collaborative: 1, content_based: 0}", "unknown tier 'pro'"),
        (
            "serving.hybrid_weights.casual={collaborative: 1}",
            "expected collaborative and content_based",
        ),
        ("serving.hybrid_weights.casual.collaborative=lots", "hybrid_weights"),
        ("serving.mmr_lambda=1.5", "mmr_lambda"),
        ("serving.shortlist_size=3", "shortlist_size"),
    ],
)
def test_a_bad_knob_is_refused_with_its_name(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_section(ServingConfig, "serving", config_dir=CONFIGS, overrides=[override])


def test_the_domain_refuses_non_numbers() -> None:
    with pytest.raises(InvalidValue, match="not a number"):
        hybrid_weights({"casual": {"collaborative": True, "content_based": 0.0}})
