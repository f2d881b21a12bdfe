"""Configuration.

`Settings` holds where things are (URLs, secrets, paths) and comes from the environment
(`RECOLAB_*`, `.env`). Experiment knobs live in YAML files under configs/, one file per
section: pipeline, serving and deployments are validated by the pydantic models below;
model and trainer both feed one `recolab.ml.fitting.TrainConfig`.

Every section is overridable with `section.key=value` (the value parsed as YAML; nested keys
with more dots, e.g. `pipeline.demo.n_ratings=5000` or `trainer.implicit.lr=0.02`), from the
CLI's `--set`, `RECOLAB_OVERRIDES` and the flows' `overrides` parameter alike. A key without a
section is a training setting: `max_epochs=5` means `trainer.max_epochs=5`. An unknown section
or an unknown key is an error that names it. Nothing here runs at import time.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
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

from recolab.domain.promotion import MIN_COMPARABLE_ROWS
from recolab.domain.services.drift import DriftThresholds
from recolab.domain.services.strategy import (
    DEFAULT_MMR_LAMBDA,
    HYBRID_TIERS,
    HybridWeights,
    hybrid_weights,
    strategy_weights,
)

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
    # The shared folder (by default `shared/` beside the repository) holding the MovieLens
    # releases that the benchmarks and the real-data tests read.
    shared_dir: Path = PROJECT_ROOT.parent / "shared"

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
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    def shared_movielens(self, release: str = "ml-latest-small") -> Path:
        """The folder of a MovieLens release in the shared folder (it may be absent)."""
        return self.shared_dir / "data" / "movielens" / release


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DemoConfig(_Section):
    n_users: int = Field(default=1000, ge=1)
    n_movies: int = Field(default=2000, ge=1)
    n_ratings: int = Field(default=100_000, ge=1)
    seed: int = 42


class PromotionConfig(_Section):
    """The promotion gate (recolab.domain.promotion)."""

    # Fewest test rows of the candidate's split the champion was not trained on: below it
    # the comparison says too little, and the champion stays.
    min_comparable_rows: int = Field(default=MIN_COMPARABLE_ROWS, ge=1)


class PipelineConfig(_Section):
    dataset: str = "demo"
    source: Path | None = None
    demo: DemoConfig = Field(default_factory=DemoConfig)
    validation_sample_size: int = Field(default=5, ge=1, le=100)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    cache_ttl_s: int = Field(default=600, ge=0)
    champion_poll_interval_s: float = Field(default=30.0, gt=0)
    mmr_lambda: float = Field(default=DEFAULT_MMR_LAMBDA, ge=0, le=1)
    shortlist_size: int = Field(default=200, ge=10)
    # Per-tier weights of the hybrid merge ({tier: {collaborative, content_based}}, summing
    # to 1); the seed's by default. Validated by recolab.domain.services.strategy.
    hybrid_weights: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            tier.value: {
                "collaborative": strategy_weights(tier).collaborative,
                "content_based": strategy_weights(tier).content_based,
            }
            for tier in HYBRID_TIERS
        }
    )
    rate_limit_per_minute: int = Field(default=600, ge=1)
    # Failed authentications (a bad token) per client address; past it, 429 for a while.
    auth_failures_per_minute: int = Field(default=20, ge=1)
    max_request_bytes: int = Field(default=16_384, ge=256)
    request_threads: int = Field(default=4, ge=1, le=256)
    # Recommendation history is written behind the answers, in batches (see
    # recolab.adapters.runtime.history); answers past max_pending are dropped and counted.
    history_flush_interval_s: float = Field(default=0.25, gt=0, le=60)
    history_batch_size: int = Field(default=500, ge=1)
    history_max_pending: int = Field(default=10_000, ge=1)

    @field_validator("hybrid_weights")
    @classmethod
    def _valid_hybrid_weights(
        cls, value: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        hybrid_weights(value)  # raises InvalidValue (a ValueError) naming the bad entry
        return value

    def policy_weights(self) -> HybridWeights:
        """`hybrid_weights` as the domain's per-tier weights (the Recommender's knob)."""
        return hybrid_weights(self.hybrid_weights)


DeployableFlow = Literal[
    "ingest", "features", "train", "pipeline", "tune", "monitor", "online-report"
]


class ExperimentsConfig(_Section):
    """Online experiments (configs/experiments.yaml): how answers are judged by feedback and
    when online evidence promotes a challenger. Which experiment runs (name, mode, share)
    is not here: it is set on the registered model in MLflow (`recolab experiment start`),
    so the service follows it without a restart."""

    # A rating this long after an answer that contained the movie counts as a hit for the
    # answer's variant (and its rank as the hit's position).
    hit_window_s: int = Field(default=86_400, ge=1)
    rank_cutoffs: list[int] = Field(default_factory=lambda: [1, 3, 5, 10], min_length=1)
    # Promotion from online evidence: the challenger's hit-rate difference over the champion
    # must be above zero at this confidence (a one-sided bootstrap bound over users).
    confidence: float = Field(default=0.999, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(default=10_000, ge=100)
    min_users_per_variant: int = Field(default=30, ge=1)
    # "Not worse offline": the challenger's figure on the same data as the champion's may be
    # at most this much worse (0: at least as good).
    offline_tolerance: float = Field(default=0.0, ge=0.0)
    # Shadow scorings waiting off the request path; past it they are dropped and counted.
    shadow_max_pending: int = Field(default=256, ge=1)
    # Share of a worker's time the shadow thread may score (it pauses in between): on a
    # saturated worker the champion's answers lose at most about this much throughput.
    shadow_max_busy: float = Field(default=0.1, gt=0, le=1)
    # Answers remembered per worker to count hits in Prometheus (the report is exact).
    last_served_users: int = Field(default=100_000, ge=1)

    @field_validator("rank_cutoffs")
    @classmethod
    def _positive_cutoffs(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError("rank cut-offs are positive ranks (1 = the first item)")
        return sorted(set(value))


_DRIFT = DriftThresholds()


class MonitorConfig(_Section):
    """Drift and event-driven retraining (configs/monitor.yaml, the `monitor` flow)."""

    # Recent data: ratings that arrived after the champion's training snapshot, and the
    # answers served in the last `recent_hours`.
    recent_hours: float = Field(default=24.0, gt=0)
    # Distribution shifts are judged only on at least this many recent ratings.
    # (Every threshold's default is the domain rule's own: `DriftThresholds`.)
    min_recent_ratings: int = Field(default=_DRIFT.min_sample, ge=1)
    # Population stability index above which a distribution has drifted (0.1 slight,
    # 0.25 major, by the usual rule of thumb).
    rating_psi: float = Field(default=_DRIFT.rating_psi, gt=0)
    popularity_psi: float = Field(default=_DRIFT.popularity_psi, gt=0)
    # Shares of recent ratings by users / of movies the champion has never seen.
    unseen_users_share: float = Field(default=_DRIFT.unseen_users_share, ge=0, le=1)
    unseen_movies_share: float = Field(default=_DRIFT.unseen_movies_share, ge=0, le=1)
    # Shares of recent answers that fell back or went to cold-start users.
    fallback_share: float = Field(default=_DRIFT.fallback_share, ge=0, le=1)
    cold_start_share: float = Field(default=_DRIFT.cold_start_share, ge=0, le=1)
    # Retrain after this many new ratings since the champion's snapshot, drift or not.
    new_ratings: int = Field(default=_DRIFT.new_ratings, ge=1)
    # The `pipeline` deployment it triggers and that run's parameters (the last tuned
    # configuration, on what the database holds).
    deployment: str = "pipeline/recolab"
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"skip_ingest": True, "use_tuned": True}
    )


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
    # The re-selection of settings (the `tune` flow), on a schedule of its own (weekly).
    retune: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(cron="0 1 * * 0", flow="tune")
    )
    # The drift monitor (the `monitor` flow, configs/monitor.yaml), hourly.
    monitor: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(cron="0 * * * *", flow="monitor")
    )


M = TypeVar("M", bound=BaseModel)

# The sections of configs/ that the models above validate, and those TrainConfig reads.
PLATFORM_SECTIONS: dict[str, type[_Section]] = {
    "pipeline": PipelineConfig,
    "serving": ServingConfig,
    "deployments": DeploymentsConfig,
    "experiments": ExperimentsConfig,
    "monitor": MonitorConfig,
}
TRAINING_SECTIONS = ("model", "trainer")
# configs/tune.yaml: validated where it is used (recolab.ml.tuning.TuneConfig needs torch).
TUNING_SECTION = "tune"
SECTIONS = (*PLATFORM_SECTIONS, *TRAINING_SECTIONS, TUNING_SECTION)
BARE_KEY_SECTION = "trainer"  # `max_epochs=5` is `trainer.max_epochs=5`


@dataclass(frozen=True)
class Override:
    """One `section.key=value` override: the text given, where it goes, its parsed value."""

    text: str
    section: str
    keys: tuple[str, ...]
    value: Any

    def covers(self, loc: tuple[str | int, ...]) -> bool:
        """Whether this override set the value at `loc` (a path inside its section)."""
        return tuple(str(p) for p in loc[: len(self.keys)]) == self.keys


def parse_override(item: str) -> Override:
    """Parse `section.key=value`; an unknown section is an error that lists the known ones."""
    key, sep, raw = item.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise ConfigError(f"override {item!r} must look like section.key=value")
    section, keys = (parts[0], parts[1:]) if len(parts) > 1 else (BARE_KEY_SECTION, parts)
    if section not in SECTIONS:
        raise ConfigError(
            f"override {item!r}: unknown section {section!r}{_suggest(section, SECTIONS)}; "
            f"expected section.key=value with section in {', '.join(SECTIONS)}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from exc
    return Override(item, section, tuple(keys), value)


def parse_overrides(items: Iterable[str]) -> list[Override]:
    return [parse_override(item) for item in items]


def apply_overrides(data: dict[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """Set each override's keys (nested: one dict per dot) in one section's data, in order."""
    for override in overrides:
        node = data
        for part in override.keys[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override.text!r}: {part!r} is not a section")
            node = child
        node[override.keys[-1]] = override.value
    return data


def training_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """The `model.` and `trainer.` overrides (and bare keys) as one mapping for TrainConfig:
    flat keys, plus an `explicit` / `implicit` mapping for a mode's own keys. Other sections'
    overrides are checked for a known section and left out."""
    chosen = [o for o in parse_overrides(overrides) if o.section in TRAINING_SECTIONS]
    return apply_overrides({}, chosen)


def _suggest(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(error: ValidationError, origin: str, overrides: list[Override]) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input", "<missing>")
        setter = next((o for o in reversed(overrides) if o.covers(err["loc"])), None)
        where = f"override {setter.text!r}" if setter else origin
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where}: {key} = {value!r}: {message}")
    return "\n".join(lines)


def load_section(
    model: type[M], name: str, *, config_dir: Path | None = None, overrides: Iterable[str] = ()
) -> M:
    """Load configs/<name>.yaml into `model`, applying the `name.key=value` overrides.

    Every override is parsed, so one naming an unknown section is refused here too."""
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
    mine = [o for o in parse_overrides(overrides) if o.section == name]
    apply_overrides(data, mine)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path), mine)) from None


def check_overrides(overrides: Iterable[str], config_dir: Path | None = None) -> None:
    """Refuse bad overrides where they enter, before anything runs: a malformed one, an
    unknown section, and an unknown key or bad value in pipeline, serving or deployments
    (each section named is loaded). Training keys are checked when TrainConfig is loaded
    (`recolab.ml.experiment.load_config`): that needs torch."""
    items = list(overrides)
    named = {o.section for o in parse_overrides(items)}
    for name, model in PLATFORM_SECTIONS.items():
        if name in named:
            load_section(model, name, config_dir=config_dir, overrides=items)
