"""Observability for the service: JSON logs with request and trace ids, business metrics.

Trace ids come from the current OpenTelemetry span (BentoML opens one per request);
request ids from `request_context`, which the HTTP layer sets per request. Metrics are
plain `prometheus_client` objects, created on first use (never at import) so that they
see BentoML's multiprocess directory and show up in its `/metrics` endpoint.

Online experiments: `recolab_experiment_answers_total` counts answers by experiment,
variant and model version (variant `shadow`: scored off the request path and recorded,
never shown), `recolab_shadow_dropped_total` the shadow scorings not recorded, and
`recolab_online_hits_total` / `recolab_online_hits_at_rank_total` the ratings of a movie an
answer showed shortly before (`recolab.adapters.runtime.hits`). The hit counters are per
worker and approximate (each worker remembers its own answers, a bounded number of them);
the `online-report` flow computes the exact figures from the database. Experiment and
version are `none` when no experiment runs or no model answered.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any

_request_id: ContextVar[str | None] = ContextVar("recolab_request_id", default=None)
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_JSON_FIELDS = ("levelname", "name", "message")


def request_id_from(header: str | None) -> str:
    """The caller's request id when it is sane, a fresh one otherwise."""
    if header and _VALID_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


@contextmanager
def request_context(request_id: str) -> Iterator[str]:
    """Make `request_id` the current request's id (for logs) within the block."""
    token = _request_id.set(request_id)
    try:
        yield request_id
    finally:
        _request_id.reset(token)


def current_request_id() -> str | None:
    return _request_id.get()


def current_trace_ids() -> tuple[str | None, str | None]:
    """(trace id, span id) of the current OpenTelemetry span, hex; None outside one."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class ContextFilter(logging.Filter):
    """Adds `request_id`, `trace_id` and `span_id` to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        record.trace_id, record.span_id = current_trace_ids()
        return True


def json_handler(stream: Any = None) -> logging.Handler:
    """A handler writing one JSON object per record, with the request context."""
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            _JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger"}, timestamp=True
        )
    )
    handler.addFilter(ContextFilter())
    handler.set_name("recolab-json")
    return handler


def configure_logging(
    level: int | str = logging.INFO, loggers: tuple[str, ...] = ("recolab", "serving")
) -> None:
    """Send RecoLab's loggers to stderr as JSON lines (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(h.get_name() == "recolab-json" for h in logger.handlers):
            logger.addHandler(json_handler())
        logger.propagate = False


class ServingMetrics:
    """Business metrics of the recommendation service (Prometheus)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.recommendations = Counter(
            "recolab_recommendations",
            "Recommendation responses by strategy used and user tier",
            ["strategy", "tier"],
        )
        self.fallbacks = Counter(
            "recolab_recommendation_fallbacks",
            "Responses whose requested strategy could not be used as is",
            ["requested", "used"],
        )
        self.cache = Counter(
            "recolab_recommendation_cache",
            "Recommendation cache lookups by result",
            ["result"],
        )
        self.ratings = Counter(
            "recolab_ratings", "Ratings stored, new or replacing an earlier one", ["kind"]
        )
        self.registrations = Counter("recolab_users_registered", "Users registered")
        self.history_dropped = Counter(
            "recolab_history_dropped",
            "Answers whose recommendation history was not recorded: the writer's buffer "
            "was full, the database failed, or the service was shutting down",
            ["reason"],
        )
        self.model_loaded = Gauge(
            "recolab_model_loaded",
            "1 when a champion model is loaded",
            multiprocess_mode="livemax",
        )
        self.model_info = Gauge(
            "recolab_model_info",
            "The champion model version being served (value 1)",
            ["model", "version"],
            multiprocess_mode="livemax",
        )
        experiment = ["experiment", "variant", "version"]
        self.experiment_answers = Counter(
            "recolab_experiment_answers",
            "Answers by experiment, variant (champion, challenger; shadow: scored off the "
            "request path, recorded, not shown) and model version",
            experiment,
        )
        self.shadow_dropped = Counter(
            "recolab_shadow_dropped",
            "Shadow scorings not recorded: the queue was full, the job failed, or the "
            "service was shutting down",
            ["reason"],
        )
        self.online_hits = Counter(
            "recolab_online_hits",
            "Ratings of a movie an answer showed within the hit window (per worker, "
            "approximate: the online-report flow is exact)",
            [*experiment, "strategy", "tier"],
        )
        self.online_hits_at = Counter(
            "recolab_online_hits_at_rank",
            "Online hits whose movie was ranked at or above `cutoff` (per worker, approximate)",
            [*experiment, "cutoff"],
        )
        self._version: tuple[str, str] | None = None

    def recommendation(
        self, *, strategy: str, tier: str, cached: bool, requested: str, fallback: bool
    ) -> None:
        self.recommendations.labels(strategy=strategy, tier=tier).inc()
        self.cache.labels(result="hit" if cached else "miss").inc()
        if fallback:
            self.fallbacks.labels(requested=requested, used=strategy).inc()

    def variant_answer(self, *, experiment: str | None, variant: str, version: str | None) -> None:
        self.experiment_answers.labels(_label(experiment), variant, _label(version)).inc()

    def shadow_not_recorded(self, reason: str) -> None:
        """Count a shadow scoring dropped (`reason`: full, error or closed)."""
        self.shadow_dropped.labels(reason=reason).inc()

    def online_hit(
        self,
        *,
        experiment: str | None,
        variant: str,
        version: str | None,
        strategy: str,
        tier: str,
        within: Sequence[int],
    ) -> None:
        """Count a hit; `within`: the rank cut-offs its rank is within."""
        labels = (_label(experiment), variant, _label(version))
        self.online_hits.labels(*labels, strategy, tier).inc()
        for cutoff in within:
            self.online_hits_at.labels(*labels, str(cutoff)).inc()

    def rating(self, *, replaced: bool) -> None:
        self.ratings.labels(kind="update" if replaced else "new").inc()

    def registration(self) -> None:
        self.registrations.inc()

    def history_not_recorded(self, reason: str, answers: int) -> None:
        """Count answers the history writer dropped (`reason`: full, error or closed)."""
        self.history_dropped.labels(reason=reason).inc(answers)

    def model(self, name: str, version: str | None) -> None:
        """Record which model version is served (None: none)."""
        if self._version is not None:
            self.model_info.labels(*self._version).set(0)
        self._version = None if version is None else (name, version)
        if self._version is not None:
            self.model_info.labels(*self._version).set(1)
        self.model_loaded.set(0 if version is None else 1)


def _label(value: str | None) -> str:
    return "none" if value is None else value


@cache
def serving_metrics() -> ServingMetrics:
    """The process's metrics (Prometheus refuses to register a name twice)."""
    return ServingMetrics()
