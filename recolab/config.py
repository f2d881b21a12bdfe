"""Configuration.

`Settings` holds where things are (URLs, secrets, paths) and comes from the environment
(`RECOLAB_*`, `.env`). Experiment knobs live in YAML files under configs/, one file per
section, validated by the pydantic models below and overridable from the CLI with
`section.key=value`. Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_JWT_SECRET = "dev-insecure-change-me-not-for-production"  # refused outside dev mode
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key and the value."""


class Settings(BaseSettings):
    """Where RecoLab's parts are. Defaults are the embedded ones: nothing to set up."""

    model_config = SettingsConfigDict(env_prefix="RECOLAB_", env_file=".env", extra="ignore")

    env: Literal["dev", "test", "prod"] = "dev"
    data_dir: Path = Path("data")
    config_dir: Path = PROJECT_ROOT / "configs"
    database_url: str | None = None
    redis_url: str | None = None
    redis_namespace: str = "recolab:"  # prefix of every key (cache, rate limits) in Redis
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RECOLAB_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    model_name: str = "recolab-neumf"
    jwt_secret: SecretStr = SecretStr(DEFAULT_JWT_SECRET)
    # The nightly retrain schedule of `recolab deploy`: unset follows configs/deployments.yaml
    # (by default on in prod, off in dev and test); true or false turns it on or off.
    nightly_retrain: bool | None = None
    # `section.key=value` overrides of configs/*.yaml for every process built from these
    # settings, e.g. RECOLAB_OVERRIDES='["serving.champion_poll_interval_s=5"]' (a JSON list).
    overrides: list[str] = Field(default_factory=list)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'recolab.db').resolve()}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.data_dir / "mlartifacts").resolve()

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DemoConfig(_Section):
    n_users: int = Field(default=1000, ge=1)
    n_movies: int = Field(default=2000, ge=1)
    n_ratings: int = Field(default=100_000, ge=1)
    seed: int = 42


class PipelineConfig(_Section):
    dataset: str = "demo"
    source: Path | None = None
    demo: DemoConfig = Field(default_factory=DemoConfig)
    validation_sample_size: int = Field(default=5, ge=1, le=100)


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    cache_ttl_s: int = Field(default=600, ge=0)
    champion_poll_interval_s: float = Field(default=30.0, gt=0)
    mmr_lambda: float = Field(default=0.7, ge=0, le=1)
    shortlist_size: int = Field(default=200, ge=10)
    rate_limit_per_minute: int = Field(default=600, ge=1)
    max_request_bytes: int = Field(default=16_384, ge=256)
    request_threads: int = Field(default=4, ge=1, le=256)


DeployableFlow = Literal["ingest", "features", "train", "pipeline"]


class ScheduleConfig(_Section):
    """A cron schedule attached to one deployment (`recolab deploy`)."""

    enabled: bool | None = None  # None: on when RECOLAB_ENV=prod, off otherwise
    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    flow: DeployableFlow = "pipeline"
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("a cron expression has five fields: minute hour day month weekday")
        return value

    def active(self, settings: Settings) -> bool:
        """Whether the schedule runs: the setting wins, then this file, then the env mode."""
        if settings.nightly_retrain is not None:
            return settings.nightly_retrain
        if self.enabled is not None:
            return self.enabled
        return settings.env == "prod"


class DeploymentsConfig(_Section):
    """The Prefect deployments that `recolab deploy` serves: one per flow."""

    name: str = Field(default="recolab", min_length=1)
    tags: list[str] = Field(default_factory=lambda: ["recolab"])
    limit: int | None = Field(default=None, ge=1)
    parameters: dict[DeployableFlow, dict[str, Any]] = Field(default_factory=dict)
    nightly_retrain: ScheduleConfig = Field(default_factory=ScheduleConfig)


M = TypeVar("M", bound=BaseModel)


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from exc
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML) to nested config data."""
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def _describe(error: ValidationError, origin: str) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input", "<missing>")
        lines.append(f"{origin}: {key} = {value!r}: {err['msg']}")
    return "\n".join(lines)


def load_section(
    model: type[M], name: str, *, config_dir: Path | None = None, overrides: Iterable[str] = ()
) -> M:
    """Load configs/<name>.yaml into `model`, applying the `name.key=value` overrides."""
    path = (config_dir or Settings().config_dir) / f"{name}.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded
    prefix = f"{name}."
    apply_overrides(data, [o[len(prefix) :] for o in overrides if o.startswith(prefix)])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from None


def check_overrides(overrides: Iterable[str], sections: Iterable[str]) -> None:
    """Refuse overrides naming no known section, so a typo is an error, not a no-op."""
    known = set(sections)
    for item in overrides:
        path, _ = _parse_override(item)
        if len(path) < 2 or path[0] not in known:
            raise ConfigError(
                f"override {item!r}: expected section.key=value with section in "
                f"{', '.join(sorted(known))}"
            )
