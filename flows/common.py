"""What every flow shares: platform construction, transient-error retries, telemetry off."""

from __future__ import annotations

from typing import Any

from flows import PREFECT_DEFAULTS, prefect_defaults
from recolab.bootstrap import Platform, bootstrap

__all__ = ["PREFECT_DEFAULTS", "platform_for", "prefect_defaults", "retry_if_transient"]


def platform_for(database_url: str | None = None, overrides: list[str] | None = None) -> Platform:
    """The platform a flow runs on: settings from the environment, `database_url` and
    `overrides` on top."""
    return bootstrap(database_url=database_url, overrides=overrides or ())


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only errors that may pass (lost connections, timeouts), never bad data."""
    from recolab.bootstrap import is_transient

    try:
        state.result()
    except Exception as exc:  # the task's own error, re-raised by the state
        return is_transient(exc)
    return False
