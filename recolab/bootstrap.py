"""The composition root: Settings in, wired objects out, for the CLI, the flows and the
service alike. Nothing connects until called.

The HTTP layer and the flows reach the adapters only through here: `bootstrap_serving`
(the service's runtime), `bootstrap` (the flows' and the CLI's platform), the database
error classifiers, and the per-request logging context re-exported below. The service's
own wiring is in `recolab.serving_wiring`, which the platform's serving properties call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recolab.adapters.runtime.observability import (
    configure_logging,
    current_request_id,
    current_trace_ids,
    request_context,
    request_id_from,
)
from recolab.application.handlers import message_bus
from recolab.config import (
    ExperimentsConfig,
    MonitorConfig,
    PipelineConfig,
    ServingConfig,
    Settings,
    check_overrides,
    load_section,
)
from recolab.domain.events import EventBus
from recolab.entry_helpers import (
    configure_torch_threads,
    database_errors,
    is_transient,
    metric_name,
    progress_logged_to,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from recolab.adapters.ingest.steps import GxValidator, MovieLensSource, SqlLoader
    from recolab.adapters.mlflow.registry import MlflowModelRegistry
    from recolab.adapters.mlflow.tuning import MlflowTuningLog
    from recolab.adapters.runtime.champion import ChampionWatcher
    from recolab.adapters.runtime.history import BackgroundHistory
    from recolab.adapters.runtime.hits import LastServed
    from recolab.adapters.runtime.observability import ServingMetrics
    from recolab.adapters.runtime.shadow import ShadowScoring
    from recolab.adapters.runtime.variants import VariantRouter
    from recolab.adapters.sql.queries import SqlQueries
    from recolab.adapters.sql.repositories import SqlAlchemyUnitOfWork, SqlCatalogue
    from recolab.application.ingest import IngestReport
    from recolab.application.monitor import MonitorSources
    from recolab.application.online import OnlineReporting
    from recolab.application.recommend import Recommender, Route, ShadowJobs
    from recolab.application.service import ServingRuntime
    from recolab.application.tuning import TuningOutcome
    from recolab.domain.ports import Cache, Scorer
    from recolab.ml.experiment import TrainingRun
    from recolab.ml.features import FeatureSnapshot

__all__ = [
    "Platform",
    "bootstrap",
    "bootstrap_serving",
    "configure_logging",
    "configure_torch_threads",
    "current_request_id",
    "current_trace_ids",
    "database_errors",
    "environment_settings",
    "is_transient",
    "local_token",
    "metric_name",
    "progress_logged_to",
    "request_context",
    "request_id_from",
]


@dataclass
class Platform:
    """Everything RecoLab's entry points need, built lazily from `Settings`."""

    settings: Settings
    overrides: tuple[str, ...] = ()
    migrate: bool = True
    serving: bool = False  # the service's own collaborators (metrics, history) exist

    @property
    def _config_args(self) -> dict[str, Any]:
        return {"config_dir": self.settings.config_dir, "overrides": self.overrides}

    @cached_property
    def pipeline_config(self) -> PipelineConfig:
        return load_section(PipelineConfig, "pipeline", **self._config_args)

    @cached_property
    def serving_config(self) -> ServingConfig:
        return load_section(ServingConfig, "serving", **self._config_args)

    @cached_property
    def experiments_config(self) -> ExperimentsConfig:
        return load_section(ExperimentsConfig, "experiments", **self._config_args)

    @cached_property
    def monitor_config(self) -> MonitorConfig:
        return load_section(MonitorConfig, "monitor", **self._config_args)

    @cached_property
    def engine(self) -> Engine:
        from recolab.adapters.sql.engine import make_engine
        from recolab.adapters.sql.migrate import upgrade

        url = self.settings.resolved_database_url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if self.migrate:
            upgrade(url)
        return make_engine(url)

    def uow(self) -> SqlAlchemyUnitOfWork:
        from recolab.adapters.sql.repositories import SqlAlchemyUnitOfWork

        return SqlAlchemyUnitOfWork(self.engine)

    def reader(self) -> SqlAlchemyUnitOfWork:
        """A unit of work for reads only (it cannot commit; cheaper on PostgreSQL)."""
        from recolab.adapters.sql.repositories import SqlAlchemyUnitOfWork

        return SqlAlchemyUnitOfWork(self.engine, read_only=True)

    @cached_property
    def cache(self) -> Cache:
        from recolab.adapters.runtime.cache import InMemoryCache, RedisCache, ResilientCache

        if self.settings.redis_url:
            return ResilientCache(
                RedisCache.from_url(self.settings.redis_url, self.settings.redis_namespace)
            )
        return InMemoryCache()

    @cached_property
    def bus(self) -> EventBus:
        """The application's event-handler table, bound to this platform's collaborators
        (the service's metrics, history and last answers served only in the service)."""
        collaborators: Mapping[str, object | None] = {
            "cache": self.cache,
            "metrics": self.metrics if self.serving else None,
            "history": self.history if self.serving else None,
            "last_served": self.last_served if self.serving else None,
        }
        return message_bus(collaborators)

    # ---- serving
    @cached_property
    def queries(self) -> SqlQueries:
        from recolab.adapters.sql.queries import SqlQueries

        return SqlQueries(self.engine)

    @cached_property
    def metrics(self) -> ServingMetrics:
        from recolab.adapters.runtime.observability import serving_metrics

        return serving_metrics()

    @cached_property
    def history(self) -> BackgroundHistory:
        """Served recommendations, written to the database off the request path."""
        from recolab.serving_wiring import history_writer

        return history_writer(self)

    @cached_property
    def last_served(self) -> LastServed:
        """The last answer served to each recent user (online hit counters, per worker)."""
        from recolab.serving_wiring import last_served

        return last_served(self)

    @cached_property
    def shadow(self) -> ShadowScoring:
        """Shadow scorings of an experiment's challenger, run off the request path."""
        from recolab.serving_wiring import shadow_scoring

        return shadow_scoring(self)

    @cached_property
    def catalogue(self) -> SqlCatalogue:
        from recolab.adapters.sql.repositories import SqlCatalogue

        catalogue = SqlCatalogue(self.engine)
        catalogue.refresh()
        return catalogue

    def recommender(
        self,
        scorer: Callable[[], Scorer | None] = lambda: None,
        *,
        route: Callable[[int], Route] | None = None,
        shadow: ShadowJobs | None = None,
    ) -> Recommender:
        """The recommend use case; `scorer` returns the current model (None: no model yet),
        `route` each user's model while an experiment runs, `shadow` runs shadow scorings."""
        from recolab.application.recommend import Recommender

        cfg = self.serving_config
        return Recommender(
            uow_factory=self.reader,
            catalogue=self.catalogue,
            scorer=scorer,
            cache=self.cache,
            bus=self.bus,
            ttl_s=cfg.cache_ttl_s,
            shortlist=cfg.shortlist_size,
            default_lambda=cfg.mmr_lambda,
            hybrid_weights=cfg.policy_weights(),
            route=route,
            shadow=shadow,
        )

    @cached_property
    def champion(self) -> ChampionWatcher:
        """Follows `models:/<name>@champion` in MLflow; `.start()` begins polling."""
        from recolab.serving_wiring import model_watcher

        return model_watcher(self, "champion")

    @cached_property
    def variants(self) -> VariantRouter:
        """Routes users between the champion and an online experiment's challenger,
        following both in MLflow (one read per poll); `.start()` begins polling."""
        from recolab.serving_wiring import variant_router

        return variant_router(self)

    # ---- features and training
    def build_features(self, dataset: str) -> FeatureSnapshot:
        from recolab.adapters.sql.features import read_feature_tables
        from recolab.ml.features import build_snapshot

        return build_snapshot(
            read_feature_tables(self.engine),
            self.settings.features_dir,
            dataset=dataset,
            database=self.engine.url.render_as_string(hide_password=True),
        )

    def snapshot(self, snapshot_id: str | None = None) -> FeatureSnapshot:
        from recolab.ml.features import latest_snapshot, open_snapshot

        root = self.settings.features_dir
        return open_snapshot(root, snapshot_id) if snapshot_id else latest_snapshot(root)

    def monitor_sources(self) -> MonitorSources:
        """The `monitor` flow's collaborators: the champion and its training snapshot
        (MLflow, the feature store), the recent ratings and answers (the database)."""
        from recolab.adapters.mlflow.monitor import monitor_sources

        s = self.settings
        return monitor_sources(self.engine, s.resolved_tracking_uri, s.model_name, s.features_dir)

    def online_reporting(self) -> OnlineReporting:
        """The `online-report` flow's collaborators: the experiment's answers and ratings
        (the database), the registry and the report runs (MLflow), the feature store."""
        from recolab.adapters.mlflow.online import online_reporting

        s = self.settings
        return online_reporting(
            self.engine,
            tracking_uri=s.resolved_tracking_uri,
            model_name=s.model_name,
            artifact_root=s.artifact_root,
            features_root=s.features_dir,
        )

    def model_registry(self) -> MlflowModelRegistry:
        from recolab.adapters.mlflow.registry import MlflowModelRegistry

        return MlflowModelRegistry(
            self.settings.resolved_tracking_uri,
            self.settings.model_name,
            self.settings.artifact_root,
        )

    def train(
        self,
        protocol: str = "B",
        snapshot_id: str | None = None,
        overrides: Iterable[str] = (),
        *,
        refit: bool = False,
    ) -> TrainingRun:
        """Fit and evaluate NeuMF on a snapshot (the latest by default) under `protocol`;
        `refit`: then refit the model to register on all its ratings, if its config says so."""
        from recolab.application.training import fit_model
        from recolab.ml.experiment import PROTOCOLS, load_config, train
        from recolab.ml.experiment import refit as on_all_ratings

        run = fit_model(
            protocol,
            PROTOCOLS,
            snapshot=lambda: self.snapshot(snapshot_id),
            # the platform's overrides (RECOLAB_OVERRIDES, bootstrap's), then this run's
            configure=lambda p: load_config(
                self.settings.config_dir, p, [*self.overrides, *overrides]
            ),
            fit=lambda snapshot, name, config: self._with_policy_table(
                train(snapshot, name, config, self.report_dir("train", snapshot.id))
            ),
        )
        return on_all_ratings(run) if refit else run

    def _with_policy_table(self, run: TrainingRun) -> TrainingRun:
        """Log the served policy's per-tier table with the run (its split and model)."""
        from recolab.application.policy_eval import configured_systems
        from recolab.ml.evaluation.policy import run_policy_table

        cfg = self.serving_config
        systems = configured_systems(cfg.mmr_lambda, cfg.shortlist_size, cfg.policy_weights())
        run.artefacts["policy"] = run_policy_table(run, systems)
        return run

    # ---- settings selection (Optuna on a protocol's training split, recorded in MLflow)
    def tuning_log(self) -> MlflowTuningLog:
        from recolab.adapters.mlflow.tuning import MlflowTuningLog

        return MlflowTuningLog(self.settings.resolved_tracking_uri, self.settings.artifact_root)

    def tune(
        self,
        protocol: str | None = None,
        snapshot_id: str | None = None,
        overrides: Iterable[str] = (),
        *,
        dataset: str | None = None,
        n_trials: int | None = None,
        timeout_minutes: float | None = None,
        progress: Callable[[Mapping[str, Any]], object] = lambda _: None,
        **trainer_overrides: Any,
    ) -> TuningOutcome:
        """Search training settings on a snapshot (the latest by default) under `protocol`
        (configs/tune.yaml's by default); the best becomes the dataset's latest tuned one.
        `progress` sees every trial once it is recorded."""
        from recolab.application.tuning import tune_settings
        from recolab.ml.experiment import PROTOCOLS, load_config
        from recolab.ml.tuning import load_tune_config, run_search, selection_data

        every = [*self.overrides, *overrides]
        config = load_tune_config(
            self.settings.config_dir, every, n_trials=n_trials, timeout_minutes=timeout_minutes
        )
        name = protocol or config.protocol

        def search(snapshot: FeatureSnapshot, on_trial: Any) -> dict[str, Any]:
            data = selection_data(snapshot.ratings, name, snapshot.manifest["splits"])
            base = load_config(self.settings.config_dir, PROTOCOLS[name], every)

            def record(trial: Any) -> None:
                on_trial(trial.to_dict())
                progress(trial.to_dict())

            return run_search(data, base, config, record, **trainer_overrides).to_dict()

        return tune_settings(
            name,
            PROTOCOLS,
            snapshot=lambda: self.snapshot(snapshot_id),
            identify=lambda s: (str(s.manifest.get("dataset", "unknown")), s.id),
            settings=config.model_dump(),
            search=search,
            log=self.tuning_log(),
            dataset=dataset,
        )

    def tuned_overrides(self, dataset: str, protocol: str, *, required: bool) -> list[str]:
        """The latest tuned configuration of `dataset` under `protocol`, as overrides."""
        from recolab.application.tuning import tuned_overrides

        return list(tuned_overrides(self.tuning_log(), dataset, protocol, required=required))

    # ---- ingestion
    def dataset_source(self) -> MovieLensSource:
        from recolab.adapters.ingest.steps import MovieLensSource

        return MovieLensSource(self.settings.data_dir, self.pipeline_config.demo)

    def validator(self) -> GxValidator:
        from recolab.adapters.ingest.steps import GxValidator

        return GxValidator(self.pipeline_config.validation_sample_size)

    def loader(self) -> SqlLoader:
        from recolab.adapters.ingest.steps import SqlLoader

        return SqlLoader(self.engine)

    def ingest(self, dataset: str, source: Path | None) -> IngestReport:
        """Run the ingest use case without an orchestrator (the flow runs it as tasks)."""
        from recolab.application.ingest import ingest

        return ingest(
            dataset,
            source,
            self.dataset_source(),
            self.validator(),
            self.loader(),
            report_dir=self.report_dir("ingest", dataset),
            clock=time.perf_counter,
        )

    def report_dir(self, kind: str, name: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        return self.settings.reports_dir / kind / f"{name}-{stamp}"

    def serving_runtime(self) -> ServingRuntime:
        """Wire the service's use cases and start following the registry's models."""
        from recolab.serving_wiring import serving_runtime

        return serving_runtime(self)

    def close(self) -> None:
        """Stop following the registry, finish the pending shadow scorings and history
        writes (in that order: shadows are recorded in the history), disconnect."""
        if "champion" in self.__dict__:
            self.champion.stop()
        if "variants" in self.__dict__:
            self.variants.stop()
        if "shadow" in self.__dict__:
            self.shadow.close()
        if "history" in self.__dict__:
            self.history.close()
        if "engine" in self.__dict__:
            self.engine.dispose()


def environment_settings() -> Settings:
    """The settings from the environment (for entry points that need no platform)."""
    return Settings()


def bootstrap(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    overrides: Iterable[str] = (),
    migrate: bool = True,
    serving: bool = False,
) -> Platform:
    """Build the platform from settings (the environment by default).

    `database_url` replaces the settings' database. The settings' own overrides
    (``RECOLAB_OVERRIDES``) come first, ``overrides`` after them.
    """
    settings = settings or Settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    every = (*settings.overrides, *overrides)
    check_overrides(every, settings.config_dir)  # a mistyped key fails here, named
    return Platform(settings, every, migrate, serving)


def bootstrap_serving(
    settings: Settings | None = None, *, overrides: Iterable[str] = ()
) -> ServingRuntime:
    """The service's runtime, from settings (the environment by default): the use cases
    wired, the champion model followed, every serving knob read from the configs."""
    return bootstrap(settings, overrides=overrides, serving=True).serving_runtime()


def local_token(
    sub: str, role: str = "user", ttl_s: float = 3600, settings: Settings | None = None
) -> str:
    """A token for local use signed with the configured secret (`recolab token`)."""
    from recolab.adapters.runtime.security import local_token as sign

    return sign(sub, role, ttl_s, settings or Settings())
