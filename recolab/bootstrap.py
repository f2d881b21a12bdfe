"""The composition root: Settings in, wired objects out. Nothing connects until called."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recolab.config import ConfigError, PipelineConfig, ServingConfig, Settings, load_section
from recolab.domain.events import EventBus, MovieRated

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from recolab.adapters.ingest.steps import GxValidator, MovieLensSource, SqlLoader
    from recolab.adapters.mlflow.registry import MlflowModelRegistry
    from recolab.adapters.runtime.champion import ChampionWatcher
    from recolab.adapters.sql.repositories import SqlAlchemyUnitOfWork, SqlCatalogue
    from recolab.application.ingest import IngestReport
    from recolab.application.recommend import Recommender
    from recolab.domain.ports import Cache, Scorer
    from recolab.ml.experiment import TrainingRun
    from recolab.ml.features import FeatureSnapshot


@dataclass
class Platform:
    """Everything RecoLab's entry points need, built lazily from `Settings`."""

    settings: Settings
    overrides: tuple[str, ...] = ()
    migrate: bool = True
    _closers: list[object] = field(default_factory=list, repr=False)

    @property
    def _config_args(self) -> dict[str, Any]:
        return {"config_dir": self.settings.config_dir, "overrides": self.overrides}

    @cached_property
    def pipeline_config(self) -> PipelineConfig:
        return load_section(
            PipelineConfig,
            "pipeline",
            config_dir=self.settings.config_dir,
            overrides=self.overrides,
        )

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
        from recolab.application.recommend import cache_group

        def invalidate(event: MovieRated) -> None:
            self.cache.drop(cache_group(event.user_id.value))

        bus = EventBus()
        bus.subscribe(MovieRated, invalidate)
        return bus

    # ---- serving
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
        self, protocol: str = "B", snapshot_id: str | None = None, overrides: Iterable[str] = ()
    ) -> TrainingRun:
        """Fit and evaluate NeuMF on a snapshot (the latest by default) under `protocol`."""
        from recolab.ml.experiment import PROTOCOLS, load_config, train

        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol = {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        snapshot = self.snapshot(snapshot_id)
        config = load_config(self.settings.config_dir, PROTOCOLS[protocol], list(overrides))
        return train(snapshot, protocol, config, self.report_dir("train", snapshot.id))

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

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def is_transient(exc: BaseException) -> bool:
    """Whether an error may pass on retry: lost database connections, timeouts, deadlocks."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | TimeoutError | ConnectionError)


def bootstrap(
    settings: Settings | None = None, *, overrides: Iterable[str] = (), migrate: bool = True
) -> Platform:
    """Build the platform from settings (the environment by default).

    The settings' own overrides (``RECOLAB_OVERRIDES``) come first, ``overrides`` after them.
    """
    settings = settings or Settings()
    return Platform(settings, (*settings.overrides, *overrides), migrate)
