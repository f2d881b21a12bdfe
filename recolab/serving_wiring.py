"""The service's part of the composition root: what `recolab.bootstrap.Platform` wires for
`bentoml serve`. The models followed in the registry (the champion, and the challenger of an
online experiment with the users routed between them), shadow scorings, the history writer,
the last answers served (online hit counters), and the use cases behind the routes.

Only `Platform`'s properties call these (this module is bootstrap.py's, split off for size):
each takes the platform and builds one collaborator from its settings and configs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recolab.adapters.runtime.champion import ChampionWatcher
    from recolab.adapters.runtime.history import BackgroundHistory
    from recolab.adapters.runtime.hits import LastServed
    from recolab.adapters.runtime.shadow import ShadowScoring
    from recolab.adapters.runtime.variants import VariantRouter
    from recolab.application.service import ServingRuntime
    from recolab.bootstrap import Platform
    from recolab.domain.events import RecommendationsGenerated


def model_watcher(platform: Platform, alias: str) -> ChampionWatcher:
    """Follows `models:/<name>@<alias>` in MLflow (a challenger is unloaded when its alias
    goes); `.check()` looks once, `.start()` polls."""
    from recolab.adapters.mlflow.model_format import load_scorer
    from recolab.adapters.mlflow.registry import mlflow_champion_version
    from recolab.adapters.mlflow.tracking import mlflow_client
    from recolab.adapters.runtime.champion import ChampionWatcher

    uri = platform.settings.resolved_tracking_uri
    return ChampionWatcher(
        platform.settings.model_name,
        resolve=mlflow_champion_version(mlflow_client(uri), alias),
        load=lambda name, version: load_scorer(f"models:/{name}/{version}", uri, version),
        interval_s=platform.serving_config.champion_poll_interval_s,
        alias=alias,
        release_when_unset=alias != "champion",
    )


def variant_router(platform: Platform) -> VariantRouter:
    """The champion and the experiment's challenger, read from the registry together on
    each poll (`serving.champion_poll_interval_s`)."""
    from recolab.adapters.mlflow.experiments import CHALLENGER_ALIAS, read_state
    from recolab.adapters.mlflow.tracking import mlflow_client
    from recolab.adapters.runtime.variants import VariantRouter

    client = mlflow_client(platform.settings.resolved_tracking_uri)
    name = platform.settings.model_name
    return VariantRouter(
        platform.champion,
        model_watcher(platform, CHALLENGER_ALIAS),
        read_state=lambda: read_state(client, name),
        interval_s=platform.serving_config.champion_poll_interval_s,
    )


def history_writer(platform: Platform) -> BackgroundHistory:
    """Served recommendations, written to the database off the request path."""
    from recolab.adapters.runtime.history import BackgroundHistory

    cfg = platform.serving_config
    return BackgroundHistory(
        platform.queries,
        dropped=platform.metrics.history_not_recorded,
        max_pending=cfg.history_max_pending,
        batch_size=cfg.history_batch_size,
        interval_s=cfg.history_flush_interval_s,
    )


def last_served(platform: Platform) -> LastServed:
    """The last answer served to each recent user, for the online hit counters."""
    from recolab.adapters.runtime.hits import LastServed

    cfg = platform.experiments_config
    return LastServed(
        platform.metrics,
        capacity=cfg.last_served_users,
        window_s=cfg.hit_window_s,
        cutoffs=cfg.rank_cutoffs,
    )


def shadow_scoring(platform: Platform) -> ShadowScoring:
    """Shadow scorings off the request path, recorded in the history (variant shadow) and
    counted; none of the bus's other handlers sees them."""
    from recolab.adapters.runtime.shadow import ShadowScoring

    history, served, metrics = platform.history, platform.last_served, platform.metrics

    def record(event: RecommendationsGenerated) -> None:
        history.record(event)
        served.remember(event)
        metrics.variant_answer(
            experiment=event.experiment, variant=event.variant, version=event.model_version
        )

    return ShadowScoring(
        record,
        max_pending=platform.experiments_config.shadow_max_pending,
        max_busy=platform.experiments_config.shadow_max_busy,
        dropped=metrics.shadow_not_recorded,
    )


def serving_runtime(platform: Platform) -> ServingRuntime:
    """Wire the service's use cases and start following the registry (the champion, and
    the challenger of an experiment)."""
    from recolab.adapters.runtime.security import (
        TokenVerifier,
        issue_token,
        rate_limiter,
        serving_secret,
    )
    from recolab.adapters.sql.errors import is_conflict
    from recolab.application.access import FailedAuthentications
    from recolab.application.service import ServingRuntime

    if not platform.serving:
        raise RuntimeError("the service's platform is built by bootstrap(serving=True)")
    settings = platform.settings
    secret = serving_secret(settings)  # refuse a default secret before connecting
    config, variants, metrics = platform.serving_config, platform.variants, platform.metrics
    champion = variants.champion
    runtime = ServingRuntime(
        recommender=platform.recommender(
            champion.current, route=variants.route, shadow=platform.shadow
        ),
        uow=platform.uow,
        reader=platform.reader,
        bus=platform.bus,
        queries=platform.queries,
        champion=champion,
        cache=platform.cache,
        verify=TokenVerifier(secret),
        limiter=rate_limiter(settings, config.rate_limit_per_minute),
        auth_failures=FailedAuthentications(
            rate_limiter(settings, config.auth_failures_per_minute)
        ),
        issue_token=lambda sub, role, ttl: issue_token(sub, role, secret, ttl),
        pending=platform.history,
        is_conflict=is_conflict,
        database_backend=platform.engine.dialect.name,
        cache_backend="redis" if settings.redis_url else "memory",
        max_request_bytes=config.max_request_bytes,
        request_threads=config.request_threads,
        close=platform.close,
        experiments=variants,
    )
    champion.on_swap.append(lambda scorer: metrics.model(champion.model_name, scorer.version))
    variants.start()
    champion.on_swap.append(lambda _: platform.catalogue.refresh())  # movies added since
    metrics.model(champion.model_name, champion.status().version)
    return runtime
