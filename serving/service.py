"""The BentoML service: `bentoml serve serving.service:RecoLab` (or `recolab serve`).

A thin shell around the FastAPI app of `serving.app`: at start-up it builds everything
through `recolab.bootstrap.bootstrap_serving()` (settings and overrides from the
environment, serving knobs from configs/serving.yaml), starts following the MLflow
`champion` alias (and an online experiment's `challenger`, canary or shadow, started and
stopped in the registry by `recolab experiment`), and answers BentoML's probes. BentoML
adds `/livez`, `/readyz` (503 until a champion is loaded; `GET /status` says why),
`/metrics` (its own plus `recolab_*`), access logs, tracing and `/docs.json` (in RecoLab's
words: `serving.openapi.DocumentedService`); the page at `/` is `serving.openapi.docs_page`.

Tracing: set an exporter through BentoML's configuration, e.g.
`BENTOML_CONFIG_OPTIONS='services.recolab.tracing.exporter_type=otlp
services.recolab.tracing.sample_rate=1.0 services.recolab.tracing.otlp.protocol=http
services.recolab.tracing.otlp.endpoint=http://localhost:4318/v1/traces'`.
Workers and traffic limits: `services.recolab.workers=2`, `services.recolab.traffic.timeout=10`.

Each worker runs torch on `RECOLAB_TORCH_THREADS` threads (default 1): requests already run
in parallel, and workers that each spin one intra-op pool per core oversubscribe the cores
under load. Set 0 to keep torch's own default (one thread per core).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import bentoml

from recolab.bootstrap import (
    bootstrap,
    bootstrap_serving,
    configure_logging,
    configure_torch_threads,
)
from recolab.config import PROJECT_ROOT
from serving.app import attach, create_app
from serving.middleware import UnroutablePathMiddleware
from serving.openapi import DocumentedService, docs_page

log = logging.getLogger("serving")

api = create_app()


@bentoml.service(
    name="recolab",
    workers=1,  # one process per core is plenty on small machines; raise it via config
    traffic={"timeout": 30, "max_concurrency": 256},
    service_class=DocumentedService,
)
@bentoml.asgi_app(api, name="recolab-api")
@bentoml.asgi_app(docs_page(api.title), name="recolab-docs")  # `/`, ahead of BentoML's page
class RecoLab:
    """RecoLab: movie recommendations from the registered champion model and domain rules."""

    def __init__(self) -> None:
        configure_logging()
        configure_torch_threads()
        self._reasons: list[str] = []
        self.runtime = bootstrap_serving()
        attach(api, self.runtime)
        report = self.runtime.status()
        log.info("serving", extra={"ready": report.ready, "reasons": report.reasons})

    def __is_ready__(self) -> bool:
        report = self.runtime.status()
        if report.reasons != self._reasons:  # log changes, not every probe
            self._reasons = report.reasons
            if report.reasons:
                log.warning("not ready: %s", "; ".join(report.reasons))
            else:
                log.info("ready", extra={"model_version": report.model.version})
        return report.ready

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]
    def shutdown(self) -> None:
        self.runtime.close()


# BentoML mounts the API under a route that stops at a line break: such paths would get
# Starlette's plain-text 404 instead of our JSON one.
RecoLab.add_asgi_middleware(UnroutablePathMiddleware)  # type: ignore[attr-defined]  # a bentoml Service at run time


def serve_command(host: str, port: int, *, reload: bool = False) -> list[str]:
    """The `bentoml serve` command line that runs this service."""
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:RecoLab"]
    command += ["--host", host, "--port", str(port), "--working-dir", str(PROJECT_ROOT)]
    return [*command, "--reload"] if reload else command


def serve(host: str | None = None, port: int | None = None, *, reload: bool = False) -> NoReturn:
    """Run the service in the foreground (`recolab serve`): this process becomes
    `bentoml serve`, so that signals (SIGTERM from a supervisor, Ctrl-C) reach the server
    itself and stop its workers, instead of ending a wrapper and leaving the server behind."""
    config = bootstrap(migrate=False).serving_config
    command = serve_command(host or config.host, port or config.port, reload=reload)
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
