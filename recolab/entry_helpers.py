"""Small functions the entry points (flows, the service, the CLI) reach through
`recolab.bootstrap`, which re-exports them: each defers its adapter's import to the call,
so importing bootstrap stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any


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
