from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from recolab.cli import app
from recolab.config import (
    PROJECT_ROOT,
    ConfigError,
    DeploymentsConfig,
    PipelineConfig,
    ScheduleConfig,
    ServingConfig,
    Settings,
    apply_overrides,
    check_overrides,
    load_section,
    parse_override,
    parse_overrides,
    training_overrides,
)

CONFIGS = PROJECT_ROOT / "configs"


def test_settings_default_to_embedded_parts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("RECOLAB_DATABASE_URL", "RECOLAB_REDIS_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'data' / 'recolab.db'}"
    assert settings.resolved_tracking_uri.startswith("sqlite:///")
    assert settings.redis_url is None
    assert settings.env == "dev"


def test_settings_from_environment_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RECOLAB_REDIS_URL=redis://127.0.0.1:6379/3\n")
    monkeypatch.setenv("RECOLAB_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    settings = Settings()
    assert settings.resolved_database_url == "postgresql://u@h/db"
    assert settings.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.resolved_tracking_uri == "http://127.0.0.1:5000"


def test_settings_reject_unknown_env_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOLAB_ENV", "staging")
    with pytest.raises(ValueError, match="staging"):
        Settings()


def test_shipped_yaml_files_validate() -> None:
    pipeline = load_section(PipelineConfig, "pipeline", config_dir=CONFIGS)
    assert pipeline.dataset == "demo"
    assert pipeline.demo.n_ratings == 100_000
    serving = load_section(ServingConfig, "serving", config_dir=CONFIGS)
    assert serving.mmr_lambda == 1.0  # chosen on inner splits (seed: 0.7): configs/serving.yaml
    deployments = load_section(DeploymentsConfig, "deployments", config_dir=CONFIGS)
    assert deployments.name == "recolab"
    assert set(deployments.parameters) == {"ingest", "features", "train", "pipeline", "tune"}
    assert deployments.retune.flow == "tune"
    assert deployments.nightly_retrain.flow == "pipeline"
    assert deployments.nightly_retrain.enabled is None


@pytest.mark.parametrize(
    ("env", "setting", "enabled", "active"),
    [
        ("dev", None, None, False),
        ("test", None, None, False),
        ("prod", None, None, True),
        ("dev", None, True, True),
        ("prod", None, False, False),
        ("dev", True, False, True),
        ("prod", False, True, False),
    ],
)
def test_nightly_schedule_follows_setting_then_file_then_env(
    env: str, setting: bool | None, enabled: bool | None, active: bool
) -> None:
    settings = Settings().model_copy(update={"env": env, "nightly_retrain": setting})
    assert ScheduleConfig(enabled=enabled).active(settings) is active


def test_schedule_config_refuses_a_malformed_cron() -> None:
    with pytest.raises(ConfigError, match="five fields"):
        load_section(
            DeploymentsConfig,
            "deployments",
            config_dir=CONFIGS,
            overrides=["deployments.nightly_retrain.cron=0 3 * *"],
        )


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_section(
        PipelineConfig,
        "pipeline",
        config_dir=CONFIGS,
        overrides=["pipeline.demo.n_ratings=5000", "pipeline.dataset=ml-100k", "serving.port=1"],
    )
    assert cfg.demo.n_ratings == 5000
    assert cfg.dataset == "ml-100k"


def test_config_error_names_key_and_value(tmp_path: Path) -> None:
    (tmp_path / "serving.yaml").write_text("port: 99999\nmmr_lambda: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_section(ServingConfig, "serving", config_dir=tmp_path)
    assert "port" in str(err.value) and "99999" in str(err.value)
    with pytest.raises(ConfigError, match=r"mmr_lambda = 'high'"):
        load_section(
            ServingConfig, "serving", config_dir=CONFIGS, overrides=["serving.mmr_lambda=high"]
        )


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    (tmp_path / "serving.yaml").write_text("prot: 3000\n")
    with pytest.raises(ConfigError, match="prot"):
        load_section(ServingConfig, "serving", config_dir=tmp_path)


def test_broken_yaml_and_non_mapping(tmp_path: Path) -> None:
    (tmp_path / "serving.yaml").write_text("port: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_section(ServingConfig, "serving", config_dir=tmp_path)
    (tmp_path / "serving.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_section(ServingConfig, "serving", config_dir=tmp_path)


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_section(ServingConfig, "serving", config_dir=tmp_path) == ServingConfig()


@pytest.mark.parametrize(
    "bad", ["noequals", "=3", "pipeline.dataset", "pipeline..dataset=x", "serving.port=[unclosed"]
)
def test_malformed_overrides(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_override(bad)


def test_override_through_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"demo": 3}, parse_overrides(["pipeline.demo.seed=1"]))


def test_overrides_parse_every_section_the_same_way() -> None:
    parsed = parse_overrides(
        [
            "pipeline.demo.n_ratings=5000",
            "serving.request_threads=2",
            "deployments.nightly_retrain.enabled=true",
            "model.gmf_dim=8",
            "trainer.implicit.lr=0.02",
            "max_epochs=3",  # a bare key is a trainer key
        ]
    )
    assert [(o.section, o.keys, o.value) for o in parsed] == [
        ("pipeline", ("demo", "n_ratings"), 5000),
        ("serving", ("request_threads",), 2),
        ("deployments", ("nightly_retrain", "enabled"), True),
        ("model", ("gmf_dim",), 8),
        ("trainer", ("implicit", "lr"), 0.02),
        ("trainer", ("max_epochs",), 3),
    ]
    assert training_overrides([o.text for o in parsed]) == {
        "gmf_dim": 8,
        "implicit": {"lr": 0.02},
        "max_epochs": 3,
    }


@pytest.mark.parametrize("typo", ["pipelne.dataset=demo", "servng.port=1", "trainr.lr=0.1"])
def test_an_unknown_section_is_refused_and_named(typo: str) -> None:
    section = typo.partition(".")[0]
    with pytest.raises(ConfigError, match=rf"unknown section '{section}' \(did you mean"):
        check_overrides([typo], CONFIGS)
    # load_section parses every override, not only its own section's
    with pytest.raises(ConfigError, match=section):
        load_section(ServingConfig, "serving", config_dir=CONFIGS, overrides=[typo])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("pipeline.datset=ml-100k", "datset"),
        ("pipeline.demo.n_user=10", "demo.n_user"),
        ("serving.request_thread=2", "request_thread"),
        ("deployments.nightly_retrain.cronn=1", "nightly_retrain.cronn"),
    ],
)
def test_an_unknown_key_in_a_platform_section_is_refused_and_named(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides(["serving.port=3001", override], CONFIGS)
    assert f"override {override!r}: {key} = " in str(err.value)
    assert "unknown key" in str(err.value)


def test_check_overrides_checks_values_and_accepts_good_ones() -> None:
    check_overrides(
        ["pipeline.dataset=ml-100k", "serving.request_threads=2", "max_epochs=1"], CONFIGS
    )
    with pytest.raises(ConfigError, match=r"request_threads = 0"):
        check_overrides(["serving.request_threads=0"], CONFIGS)


def test_bootstrap_refuses_a_bad_override_from_either_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from recolab.bootstrap import bootstrap

    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="request_thread "):
        bootstrap(migrate=False, overrides=["serving.request_thread=2"])
    monkeypatch.setenv("RECOLAB_OVERRIDES", '["servng.request_threads=2"]')
    with pytest.raises(ConfigError, match="servng"):
        bootstrap(migrate=False)


def test_a_serving_override_takes_effect(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from recolab.bootstrap import bootstrap

    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path))
    platform = bootstrap(migrate=False, overrides=["serving.request_threads=3"])
    try:
        assert platform.serving_config.request_threads == 3
    finally:
        platform.close()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["ingest", "--set", "pipelne.dataset=demo"], "pipelne"),
        (["ingest", "--set", "pipeline.demo.n_user=5"], "demo.n_user"),
        (["train", "--set", "trainer.max_epoch=3"], "max_epoch"),
        (["evaluate", "--set", "model.gmf_dimm=3"], "gmf_dimm"),
    ],
)
def test_cli_refuses_a_bad_override_before_running_anything(
    args: list[str], named: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert named in result.output
    assert not (tmp_path / "recolab.db").exists()  # nothing was bootstrapped


def test_shared_folder_defaults_beside_the_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RECOLAB_SHARED_DIR", raising=False)
    assert Settings().shared_dir == PROJECT_ROOT.parent / "shared"
    monkeypatch.setenv("RECOLAB_SHARED_DIR", str(tmp_path))
    assert Settings().shared_movielens("ml-100k") == tmp_path / "data" / "movielens" / "ml-100k"


def test_cli_lists_subcommands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "ingest",
        "features",
        "train",
        "evaluate",
        "serve",
        "pipeline",
        "deploy",
        "data",
    ):
        assert command in result.output


def test_overrides_from_the_environment_reach_every_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from recolab.bootstrap import bootstrap

    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECOLAB_OVERRIDES", '["serving.champion_poll_interval_s=2.5"]')
    platform = bootstrap(migrate=False, overrides=["serving.cache_ttl_s=7"])
    try:
        assert platform.serving_config.champion_poll_interval_s == 2.5
        assert platform.serving_config.cache_ttl_s == 7
    finally:
        platform.close()


def test_the_promotion_gates_minimum_rows_is_a_pipeline_setting() -> None:
    pipeline = load_section(PipelineConfig, "pipeline", config_dir=CONFIGS)
    assert pipeline.promotion.min_comparable_rows == 50
    changed = load_section(
        PipelineConfig,
        "pipeline",
        config_dir=CONFIGS,
        overrides=["pipeline.promotion.min_comparable_rows=10"],
    )
    assert changed.promotion.min_comparable_rows == 10
    with pytest.raises(ConfigError, match="min_comparable_rows"):
        load_section(
            PipelineConfig,
            "pipeline",
            config_dir=CONFIGS,
            overrides=["pipeline.promotion.min_comparable_rows=0"],
        )


def test_refit_and_the_progress_bar_are_training_settings() -> None:
    from recolab.ml.experiment import PROTOCOLS, load_config

    shipped = load_config(CONFIGS, PROTOCOLS["B"], [])
    assert shipped.refit is True and shipped.enable_progress_bar is None
    quick = load_config(CONFIGS, PROTOCOLS["B"], ["refit=false", "enable_progress_bar=true"])
    assert quick.refit is False and quick.enable_progress_bar is True


def test_monitor_defaults_are_the_drift_rules_own_and_the_shipped_file_reads() -> None:
    """configs/monitor.yaml's section and the domain's `DriftThresholds` agree by default:
    the thresholds come from one place (the domain), the file may change them."""
    from recolab.application.monitor import drift_thresholds
    from recolab.config import MonitorConfig
    from recolab.domain.services.drift import DriftThresholds

    assert drift_thresholds(MonitorConfig()) == DriftThresholds()
    changed = MonitorConfig(rating_psi=0.4, min_recent_ratings=50)
    assert drift_thresholds(changed) == DriftThresholds(rating_psi=0.4, min_sample=50)
