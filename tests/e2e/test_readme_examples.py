"""The README's examples, run as written on the state `make run` leaves.

The commands are read from README.md's fenced shell blocks (not copied here), so an example
that is edited, added or broken is tested as it reads. `make run`'s state is rebuilt in a
temporary data folder: the `pipeline` flow on the default demo data (SQLite, MLflow on
SQLite, the in-process cache, the development JWT secret), then `recolab serve`. Only the
host and port (a free one instead of 3000), the token the README tells the user to create
(`$TOKEN`) and the virtualenv's location are substituted. Each request must answer 2xx
with JSON (and a list answer must not be empty: an example that finds nothing shows the
reader nothing); each command must exit 0. A command that cannot run in a test is skipped
by name, with its reason, in `NOT_RUN`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from recolab.config import PROJECT_ROOT
from tests.e2e.conftest import (
    SERVICE_STARTUP_TIMEOUT_S,
    free_port,
    start_process,
    stop_process,
    wait_for,
)

README = PROJECT_ROOT / "README.md"
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
README_HOSTS = ("localhost:3000", "127.0.0.1:3000")  # where the README's service listens

# Commands of the README's shell blocks that this test does not run (matched as prefixes).
NOT_RUN = {
    "make run": "this test rebuilds its state: the pipeline on the demo data, then the service",
    "make test": "runs the test suite this test belongs to",
    "make stack": (
        "starts PostgreSQL, Redis, MLflow, Prefect and the service as background processes "
        "on fixed ports; tests/e2e/test_platform.py runs that platform"
    ),
    "make stack-status": "reports on the processes `make stack` started",
    "make stack-stop": "stops the processes `make stack` started",
    "docker compose": "needs Docker; tests/integration/test_compose.py checks the compose file",
}
# CLI commands run here (no download, no server of their own): a token, and the "Ship a
# challenger" loop on `make run`'s state and service (a challenger trained and registered, the
# experiment started, simulated users answered by the live service, the online report).
RUNNABLE_CLI = (
    "recolab token",
    "recolab train --challenger",
    "recolab experiment",
    "python scripts/simulate_traffic.py",
    "recolab online-report",
)
CLI_TIMEOUT_S = 900  # training the challenger takes a minute or two on a busy 2-core machine

ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_]\w*)=\$\((?P<command>[^()]+)\)$")
VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)\}|(?P<bare>[A-Za-z_]\w*))")


@dataclass(frozen=True)
class Example:
    """One command of a fenced shell block, continuation lines joined."""

    line: int  # 1-based line in the Markdown file
    command: str

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.command}"


def shell_examples(markdown: str) -> list[Example]:
    """The commands in `markdown`'s fenced shell blocks (```bash, ```sh, ...), in order:
    lines ending in a backslash joined to the next, comments and blank lines dropped."""
    examples = []
    for token in MarkdownIt().parse(markdown):
        language = token.info.split()[0] if token.info.split() else ""
        if token.type != "fence" or language not in SHELL_LANGUAGES:
            continue
        first = (token.map[0] if token.map else 0) + 2  # the line after the opening fence
        pending: list[str] = []
        start = first
        for offset, raw in enumerate(token.content.splitlines()):
            if not pending:
                start = first + offset
            if raw.rstrip().endswith("\\"):
                pending.append(raw.rstrip()[:-1].strip())
                continue
            command = _without_comment(" ".join([*pending, raw.strip()]))
            pending = []
            if command:
                examples.append(Example(start, command))
    return examples


def _without_comment(command: str) -> str:
    """`command` without a trailing `# comment`: a `#` outside quotes that starts a word."""
    quote = ""
    for i, ch in enumerate(command):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            return command[:i].strip()
    return command.strip()


def skipped_by(example: Example) -> str | None:
    """The NOT_RUN entry that skips `example`, if any."""
    for prefix in NOT_RUN:
        if example.command == prefix or example.command.startswith(prefix + " "):
            return prefix
    return None


def _tool(word: str) -> str:
    """A README executable (`.venv/bin/recolab`, `recolab`, `curl`) on this machine: the
    virtualenv's tools are the running interpreter's neighbours."""
    name = Path(word).name
    beside = Path(sys.executable).parent / name
    if word.startswith(".venv/bin/") or beside.exists():
        return str(beside)
    return word


def _is_runnable_cli(words: list[str]) -> bool:
    text = " ".join([Path(words[0]).name, *words[1:]])
    return any(text == cli or text.startswith(cli + " ") for cli in RUNNABLE_CLI)


@dataclass
class Session:
    """A shell as a README reader has it: the variables earlier lines set."""

    service_url: str
    env: dict[str, str]
    variables: dict[str, str]

    def expand(self, word: str, example: Example) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group("braced") or match.group("bare")
            if name not in self.variables:
                pytest.fail(f"{example}: ${name} is not set by an earlier README line")
            return self.variables[name]

        expanded = VARIABLE.sub(value, word)
        for host in README_HOSTS:
            expanded = expanded.replace(host, self.service_url.removeprefix("http://"))
        return expanded

    def run(self, example: Example) -> str | None:
        """Run one example; the failure's description, or None when it worked."""
        assigned = ASSIGNMENT.match(example.command)
        words = shlex.split(assigned["command"] if assigned else example.command)
        words = [self.expand(word, example) for word in words]
        if words[0] == "curl":
            return self._curl(example, words)
        if _is_runnable_cli(words):
            done = subprocess.run(
                [_tool(words[0]), *words[1:]],
                capture_output=True,
                text=True,
                env=self.env,
                cwd=PROJECT_ROOT,
                timeout=CLI_TIMEOUT_S,
                check=False,
            )
            if done.returncode != 0 or not done.stdout.strip():
                return f"{example}: exit {done.returncode}, stdout {done.stdout!r}\n{done.stderr}"
            if assigned:
                self.variables[assigned["name"]] = done.stdout.strip()
            return None
        return f"{example}: neither run by this test nor in NOT_RUN (add it, with the reason)"

    def _curl(self, example: Example, words: list[str]) -> str | None:
        body = Path(self.env["RECOLAB_DATA_DIR"]) / "curl-body"
        done = subprocess.run(
            [*words, "--max-time", "60", "--output", str(body), "--write-out", "%{http_code}"],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        answer = body.read_text(errors="replace") if body.exists() else ""
        status = done.stdout.strip()
        if done.returncode != 0 or not status.startswith("2"):
            return f"{example}: curl exit {done.returncode}, HTTP {status}: {answer[:500]}"
        try:
            data = json.loads(answer)
        except ValueError:
            return f"{example}: HTTP {status} but not JSON: {answer[:500]}"
        if isinstance(data, dict) and data.get("items") == []:  # a search that finds nothing
            return f"{example}: HTTP {status} but no items: an example should show some"
        return None


# --- the README, parsed (no service needed) --------------------------------------------------


def test_shell_examples_joins_continuations_and_drops_comments() -> None:
    markdown = (
        "Text with `inline code`.\n\n"
        "```bash\n"
        "make run    # set up\n"
        "\n"
        "curl -s -X POST localhost:3000/x \\\n"
        '     -d \'{"a": "#1"}\'   # the body\n'
        "```\n\n"
        "```\nnot a shell block\n```\n\n"
        "```python\nprint('no')\n```\n"
    )
    assert shell_examples(markdown) == [
        Example(4, "make run"),
        Example(6, 'curl -s -X POST localhost:3000/x -d \'{"a": "#1"}\''),
    ]


def test_every_readme_command_is_run_or_skipped_by_name() -> None:
    examples = shell_examples(README.read_text(encoding="utf-8"))
    unhandled = [
        str(e)
        for e in examples
        if skipped_by(e) is None
        and not ASSIGNMENT.match(e.command)
        and shlex.split(e.command)[0] != "curl"
        and not _is_runnable_cli(shlex.split(e.command))
    ]
    assert unhandled == [], "README commands this test neither runs nor skips by name"
    stale = set(NOT_RUN) - {skipped_by(e) for e in examples}
    assert stale == set(), "NOT_RUN names commands the README no longer has"
    assert any(shlex.split(e.command)[0] == "curl" for e in examples), "no HTTP example found"


# --- the README, run against a live service ---------------------------------------------------


def _make_run_env(root: Path) -> dict[str, str]:
    """`make run`'s environment: embedded defaults under `root` (SQLite, MLflow on SQLite,
    the in-process cache, the development JWT secret), nothing else configured."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECOLAB_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))
    }
    env.update(
        {
            "RECOLAB_ENV": "dev",
            "RECOLAB_DATA_DIR": str(root / "data"),
            "BENTOML_HOME": str(root / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    return env


@pytest.fixture(scope="module")
def make_run_state(
    tmp_path_factory: pytest.TempPathFactory, prefect_api: None
) -> Iterator[dict[str, str]]:
    """The `pipeline` flow as `make run` runs it, with its defaults (the README's ids are the
    demo data's, and the champion must beat the baselines as it does there); the environment
    it ran in."""
    root = tmp_path_factory.mktemp("make-run")
    env = _make_run_env(root)
    with pytest.MonkeyPatch.context() as mp:
        for name in os.environ:
            if name not in env and name.startswith(("RECOLAB_", "MLFLOW_")):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        from flows.pipeline import pipeline

        result = pipeline(dataset="demo")
        trained = result["train"]
        assert trained["promoted"], f"`make run` leaves no champion: {trained['reason']}"
        yield env


@pytest.fixture(scope="module")
def make_run_service(make_run_state: dict[str, str]) -> Iterator[str]:
    """`recolab serve`, as `make run` ends, on a free port; its URL once a champion is loaded."""
    port = free_port()
    log = Path(make_run_state["RECOLAB_DATA_DIR"]) / "serve.log"
    command = [_tool("recolab"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = start_process(command, make_run_state, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/readyz", process, log, SERVICE_STARTUP_TIMEOUT_S)
        yield url
    finally:
        stop_process(process)


@pytest.mark.e2e
@pytest.mark.slow
def test_readme_examples_work_as_written(
    make_run_state: dict[str, str], make_run_service: str
) -> None:
    session = Session(make_run_service, make_run_state, {})
    examples = shell_examples(README.read_text(encoding="utf-8"))
    ran: list[str] = []
    failures: list[Any] = []
    for example in examples:
        if skipped_by(example) is not None:
            continue
        problem = session.run(example)
        ran.append(example.command)
        if problem:
            failures.append(problem)
    assert failures == [], "\n".join(failures)
    assert any(command.startswith("curl") for command in ran), ran
