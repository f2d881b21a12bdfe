"""Prefect flows: thin tasks with retries and typed parameters that call recolab.

Importing this package puts RecoLab's Prefect defaults in the environment first: Prefect
reads its settings once, when `prefect` is first imported, and every flow module imports it.
"""

from __future__ import annotations

import os

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Prefect's temporary API server gets 20 s to start by default: too few on two busy cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def prefect_defaults() -> None:
    """Put RecoLab's Prefect defaults in the environment where unset (before `prefect` is
    imported, or they do not apply to this process)."""
    for var, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(var, value)


prefect_defaults()
