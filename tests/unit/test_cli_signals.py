"""The CLI's process behaviour: SIGTERM is an orderly exit, Prefect's defaults apply."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from recolab.cli import SIGTERM_EXIT, exit_on_sigterm
from recolab.config import PROJECT_ROOT


def test_sigterm_becomes_system_exit_once_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    restore = exit_on_sigterm()
    try:
        with pytest.raises(SystemExit) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode boundary
        assert raised.value.code == SIGTERM_EXIT == 143
        os.kill(os.getpid(), signal.SIGTERM)  # a second one during the clean-up: ignored
        time.sleep(0.05)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_commands_see_recolabs_prefect_defaults() -> None:
    """Prefect reads its settings when first imported: the CLI sets its defaults before any
    command imports it (flows/common.py alone came too late: the ephemeral server got 20 s)."""
    probe = (
        "from recolab import cli\n"
        "@cli.app.command()\n"
        "def probe() -> None:\n"
        "    from flows.ingest import ingest  # imports prefect, then flows.common\n"
        "    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as S\n"
        "    print(S.value())\n"
        "cli.app(['probe'])\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "180"
