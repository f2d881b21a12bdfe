"""The composition root: Settings in, wired objects out, for the CLI, the flows and the
service alike. Nothing connects until called.

The HTTP layer and the flows reach the adapters only through here: `bootstrap_serving`
(the service's runtime), `bootstrap` (the flows' and the CLI's platform), the database
error classifiers, and the per-request logging context re-exported below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
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
    PipelineConfig,
    ServingConfig,
    Settings,
    check_overrides,
    load_section,
)
from recolab.domain.events import EventBus

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from recolab.adapters.ingest.steps import GxValidator, MovieLensSource, SqlLoader
    from recolab.adapters.mlflow.registry import MlflowModelRegistry
    from recolab.adapters.mlflow.tuning import MlflowTuningLog
    from recolab.adapters.runtime.champion import ChampionWatcher
    from recolab.adapters.runtime.history import BackgroundHistory
    from recolab.adapters.runtime.observability import ServingMetrics
    from recolab.adapters.sql.queries import SqlQueries
    from recolab.adapters.sql.repositories import SqlAlchemyUnitOfWork, SqlCatalogue
    from recolab.application.ingest import IngestReport
    from recolab.application.recommend import Recommender
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
        (the service's metrics and history only in the service)."""
        collaborators: Mapping[str, object | None] = {
            "cache": self.cache,
            "metrics": self.metrics if self.serving else None,
            "history": self.history if self.serving else None,
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
        from recolab.adapters.runtime.history import BackgroundHistory

        cfg = self.serving_config
        return BackgroundHistory(
            self.queries,
            dropped=self.metrics.history_not_recorded,
            max_pending=cfg.history_max_pending,
            batch_size=cfg.history_batch_size,
            interval_s=cfg.history_flush_interval_s,
        )

    @cached_property
    def catalogue(self) -> SqlCatalogue:
        from recolab.adapters.sql.repositories import SqlCatalogue

        catalogue = SqlCatalogue(self.engine)
        catalogue.refresh()
        return catalogue

    def recommender(self, scorer: Callable[[], Scorer | None] = lambda: None) -> Recommender:
        """The recommend use case; `scorer` returns the current model (None: no model yet)."""
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
        )

    @cached_property
    def champion(self) -> ChampionWatcher:
        """Follows `models:/<name>@champion` in MLflow; `.start()` begins polling."""
        import mlflow

        from recolab.adapters.mlflow.model_format import load_scorer
        from recolab.adapters.mlflow.registry import mlflow_champion_version
        from recolab.adapters.runtime.champion import ChampionWatcher

        uri = self.settings.resolved_tracking_uri
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        return ChampionWatcher(
            self.settings.model_name,
            resolve=mlflow_champion_version(client),
            load=lambda name, version: load_scorer(
                f"models:/{name}/{version}", self.settings.resolved_tracking_uri, version
            ),
            interval_s=self.serving_config.champion_poll_interval_s,
        )

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
        """Wire the service's use cases and start following the champion model."""
        from recolab.adapters.runtime.security import (
            TokenVerifier,
            issue_token,
            rate_limiter,
            serving_secret,
        )
        from recolab.adapters.sql.errors import is_conflict
        from recolab.application.access import FailedAuthentications
        from recolab.application.service import ServingRuntime

        if not self.serving:
            raise RuntimeError("the service's platform is built by bootstrap(serving=True)")
        secret = serving_secret(self.settings)  # refuse a default secret before connecting
        config, champion, metrics = self.serving_config, self.champion, self.metrics
        runtime = ServingRuntime(
            recommender=self.recommender(champion.current),
            uow=self.uow,
            reader=self.reader,
            bus=self.bus,
            queries=self.queries,
            champion=champion,
            cache=self.cache,
            verify=TokenVerifier(secret),
            limiter=rate_limiter(self.settings, config.rate_limit_per_minute),
            auth_failures=FailedAuthentications(
                rate_limiter(self.settings, config.auth_failures_per_minute)
            ),
            issue_token=lambda sub, role, ttl: issue_token(sub, role, secret, ttl),
            pending=self.history,
            is_conflict=is_conflict,
            database_backend=self.engine.dialect.name,
            cache_backend="redis" if self.settings.redis_url else "memory",
            max_request_bytes=config.max_request_bytes,
            request_threads=config.request_threads,
            close=self.close,
        )
        champion.on_swap.append(lambda scorer: metrics.model(champion.model_name, scorer.version))
        champion.start()
        champion.on_swap.append(lambda _: self.catalogue.refresh())  # movies added since
        metrics.model(champion.model_name, champion.status().version)
        return runtime

    def close(self) -> None:
        """Stop following the champion, finish the pending history writes, disconnect."""
        if "champion" in self.__dict__:
            self.champion.stop()
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


def is_transient(exc: BaseException) -> bool:
    """Whether an error may pass on retry: lost database connections, timeouts, deadlocks."""
    from recolab.adapters.sql.errors import is_transient as transient

    return transient(exc)


def progress_logged_to(target: Any) -> AbstractContextManager[None]:
    """For a block, progress lines (ingest, training, evaluation, registration) also go to
    `target` (a Prefect task's `get_run_logger()`: the run's logs and UI); see ml.progress."""
    from recolab.ml.progress import forward_to

    return forward_to(target)


def metric_name(name: str) -> str:
    """The one name a metric has wherever it is shown, its MLflow key: `ndcg@10` is
    `ndcg_at_10` (MLflow allows no `@`)."""
    from recolab.adapters.mlflow.tracking import metric_key

    return metric_key(name)


def database_errors() -> tuple[type[Exception], Callable[[BaseException], bool]]:
    """The database's base error type and the classifier of those that may pass on retry."""
    from recolab.adapters.sql.errors import DatabaseError
    from recolab.adapters.sql.errors import is_transient as transient

    return DatabaseError, transient


def configure_torch_threads(environ: Mapping[str, str] | None = None) -> int:
    """Size this worker's torch intra-op pool from `RECOLAB_TORCH_THREADS` (default 1)."""
    from recolab.adapters.runtime.threads import configure_torch_threads as configure

    return configure(environ)


def local_token(
    sub: str, role: str = "user", ttl_s: float = 3600, settings: Settings | None = None
) -> str:
    """A token for local use signed with the configured secret (`recolab token`)."""
    from recolab.adapters.runtime.security import local_token as sign

    return sign(sub, role, ttl_s, settings or Settings())
