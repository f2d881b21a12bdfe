"""Training settings from configs/model.yaml + trainer.yaml and `model.` / `trainer.` overrides:
the same override parser as every other section, and an unknown key refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from recolab.config import PROJECT_ROOT, ConfigError
from recolab.ml.experiment import PROTOCOLS, load_config
from recolab.ml.fitting import TrainConfig, load_train_config, with_overrides

CONFIGS = PROJECT_ROOT / "configs"


def test_valid_model_and_trainer_overrides_take_effect() -> None:
    shipped = load_config(CONFIGS, PROTOCOLS["B"], [])
    config = load_config(
        CONFIGS,
        PROTOCOLS["B"],
        ["model.gmf_dim=8", "trainer.max_epochs=2", "patience=1", "model.mlp_layers=[8, 4]"],
    )
    assert (config.gmf_dim, config.max_epochs, config.patience) == (8, 2, 1)
    assert config.mlp_layers == (8, 4)
    assert config.lr == shipped.lr  # the rest as shipped
    assert config.mode == "implicit"


def test_an_override_wins_over_the_mode_section_of_the_files() -> None:
    # trainer.yaml sets lr at the top level and again under `implicit:`
    assert load_config(CONFIGS, PROTOCOLS["B"], ["trainer.lr=0.5"]).lr == 0.5
    assert load_config(CONFIGS, PROTOCOLS["A"], ["trainer.lr=0.5"]).lr == 0.5


def test_a_mode_override_applies_to_that_mode_only() -> None:
    changes = ["trainer.lr=0.2", "trainer.implicit.lr=0.01"]
    assert load_config(CONFIGS, PROTOCOLS["B"], changes).lr == 0.01
    assert load_config(CONFIGS, PROTOCOLS["A"], changes).lr == 0.2


def test_other_sections_are_left_to_their_own_loaders() -> None:
    config = load_config(CONFIGS, PROTOCOLS["B"], ["serving.request_threads=2", "max_epochs=1"])
    assert config.max_epochs == 1


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.max_epoch=3", "'max_epoch' (did you mean 'max_epochs'?)"),
        ("model.gmf_dimm=8", "'gmf_dimm'"),
        ("max_epoch=3", "'max_epoch'"),  # a bare key is a trainer key
        ("trainer.implicit.lrr=0.1", "implicit: unknown training setting 'lrr'"),
        # the other mode's section is checked too: a typo there is not silently unused
        ("trainer.explicit.lrr=0.1", "explicit: unknown training setting 'lrr'"),
        ("trainer.optimizer.lr=0.1", "'optimizer'"),
    ],
)
def test_an_unknown_training_key_is_refused_and_named(override: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS, PROTOCOLS["B"], ["trainer.max_epochs=1", override])
    assert named in str(err.value)


def test_an_unknown_section_is_refused_by_the_training_loader_too() -> None:
    with pytest.raises(ConfigError, match="trainr"):
        load_config(CONFIGS, PROTOCOLS["B"], ["trainr.max_epochs=1"])


def test_bad_training_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="steps_per_execution"):
        load_config(CONFIGS, PROTOCOLS["B"], ["trainer.steps_per_execution=0"])
    with pytest.raises(ConfigError, match="mode"):
        load_config(CONFIGS, PROTOCOLS["B"], ["trainer.mode=explicit"])  # set by the protocol


def test_a_typo_in_the_other_modes_yaml_section_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trainer.yaml"
    path.write_text("lr: 0.1\nexplicit:\n  lerning_rate: 0.1\n")
    with pytest.raises(ValueError, match="explicit: unknown training setting 'lerning_rate'"):
        load_train_config(path, mode="implicit")


def test_from_dict_and_with_overrides_name_unknown_keys() -> None:
    with pytest.raises(ValueError, match="'batchsize' \\(did you mean 'batch_size'\\?\\)"):
        TrainConfig.from_dict({"batchsize": 1})
    with pytest.raises(ValueError, match="'epochs'"):
        with_overrides(TrainConfig(), epochs=3)
    assert with_overrides(TrainConfig(), max_epochs=3).max_epochs == 3


def test_platform_train_uses_the_platforms_overrides_and_refuses_a_typo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from recolab.bootstrap import bootstrap

    monkeypatch.setenv("RECOLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECOLAB_OVERRIDES", '["trainer.max_epoch=1"]')
    platform = bootstrap(migrate=False)
    monkeypatch.setattr(platform, "snapshot", lambda snapshot_id=None: object())
    try:
        with pytest.raises(ConfigError, match="max_epoch"):  # nothing is fitted
            platform.train("B")
    finally:
        platform.close()


def test_auto_threads_split_only_large_implicit_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from recolab.ml import fitting, hardware

    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    implicit = load_config(CONFIGS, PROTOCOLS["B"], [])
    explicit = load_config(CONFIGS, PROTOCOLS["A"], [])
    assert implicit.num_threads == explicit.num_threads == "auto"  # as shipped
    assert fitting.fit_threads(implicit, 5_000_000) == 2  # 2048 x 25 pairs a step
    assert fitting.fit_threads(implicit, 100_000) == 1  # a small fit
    assert fitting.fit_threads(explicit, 5_000_000) == 1  # 2048 ratings a step
    assert fitting.fit_threads(with_overrides(implicit, num_threads=3), 10) == 3
    assert fitting.fit_threads(with_overrides(implicit, num_threads=None), 10) is None
    for bad in (0, "two", True):
        with pytest.raises(ValueError, match="num_threads"):
            with_overrides(implicit, num_threads=bad)
