"""`recolab experiment start|stop|status` and `recolab online-report`: ship a challenger model
version to a share of users, and let the feedback decide.

The experiment lives on the registered model in MLflow (the `challenger` alias and tags,
`recolab.adapters.mlflow.experiments`): every service worker follows it without a restart.
`recolab.cli` mounts these: `app.add_typer(experiment_app, name="experiment")` and
`app.command("online-report")(online_report)`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from recolab.adapters.mlflow.experiments import ExperimentState
    from recolab.config import Settings

T = TypeVar("T")
BAD_INPUT = 2  # exit status of a refused command (as a usage error)

experiment_app = typer.Typer(
    help="Online experiments: a challenger model version served to a share of users "
    "(canary) or scored beside the champion without being shown (shadow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _guard(action: Callable[[], T], code: int = BAD_INPUT) -> T:
    """Run `action`; a user error becomes a one-line message and exit status `code`."""
    from mlflow.exceptions import MlflowException

    from recolab.config import ConfigError
    from recolab.domain.errors import DomainError

    try:
        return action()
    except (ConfigError, DomainError) as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, code)
    except MlflowException as exc:
        _fail(exc.message.splitlines()[0] if exc.message else str(exc), code)


def _registry() -> tuple[Settings, Any]:
    from recolab.adapters.mlflow.tracking import mlflow_client
    from recolab.bootstrap import environment_settings

    settings = environment_settings()
    return settings, mlflow_client(settings.resolved_tracking_uri)


def _state(client: Any, model: str) -> ExperimentState:
    from recolab.adapters.mlflow.experiments import read_state

    return _guard(lambda: read_state(client, model))


@experiment_app.command("start")
def start(
    share: Annotated[float, typer.Option(help="the share of users in the experiment, from 0 to 1")],
    version: Annotated[
        str | None,
        typer.Option(help="the model version to try (default: the `challenger` alias)"),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(help="canary: the challenger answers its users; shadow: scored, not shown"),
    ] = "canary",
    name: Annotated[
        str | None,
        typer.Option(
            help="the experiment's name (it decides who is in: a new name reshuffles users); "
            "default: the running experiment's when the challenger is the same, else "
            "v<challenger>-vs-v<champion>"
        ),
    ] = None,
) -> None:
    """Start an experiment, or change the running one's share or mode (no restart)."""
    from recolab.adapters.mlflow.experiments import start_experiment
    from recolab.domain.experiments import Experiment

    if not (math.isfinite(share) and 0.0 <= share <= 1.0):
        _fail(f"--share must be between 0 and 1, got {share}")
    _guard(lambda: Experiment("check", mode, share))  # type: ignore[arg-type]  # checked there
    settings, client = _registry()
    model = settings.model_name
    state = _state(client, model)
    if state.champion_version is None:
        _fail(f"model {model!r} has no champion: train and promote one first")
    if version is not None:
        _guard(lambda: client.get_model_version(model, version))
        if str(version) == state.champion_version:
            _fail(f"version {version} is the champion: a challenger must be another version")
    challenger = version or state.challenger_version
    if challenger is None:
        _fail(f"model {model!r} has no `challenger` alias: give --version")
    running = state.experiment
    if name is None:
        same = running is not None and challenger == state.challenger_version
        name = running.name if same and running else f"v{challenger}-vs-v{state.champion_version}"
    experiment = _guard(lambda: Experiment(name, mode, share))  # type: ignore[arg-type]
    done = _guard(lambda: start_experiment(client, model, experiment, version))
    typer.echo(
        f"experiment {experiment.name!r} ({experiment.mode}): {experiment.share:.0%} of users "
        f"-> challenger version {done.challenger_version} (champion {done.champion_version})"
    )


@experiment_app.command("stop")
def stop(
    drop_challenger: Annotated[
        bool, typer.Option("--drop-challenger", help="also remove the `challenger` alias")
    ] = False,
) -> None:
    """Stop the experiment: everyone is answered by the champion again."""
    from recolab.adapters.mlflow.experiments import stop_experiment

    settings, client = _registry()
    model = settings.model_name
    state = _state(client, model)
    _guard(lambda: stop_experiment(client, model, drop_challenger=drop_challenger))
    what = "stopped" if state.experiment is not None else "no experiment was running"
    alias = (
        "; `challenger` alias removed"
        if drop_challenger and state.challenger_version is not None
        else ""
    )
    typer.echo(f"{what} ({model}: champion {state.champion_version}){alias}")


@experiment_app.command("status")
def status() -> None:
    """The running experiment and the versions holding `champion` and `challenger`."""
    settings, client = _registry()
    state = _state(client, settings.model_name)
    typer.echo(f"model: {settings.model_name}")
    typer.echo(f"champion: {state.champion_version or '-'}")
    typer.echo(f"challenger: {state.challenger_version or '-'}")
    experiment = state.experiment
    if experiment is None:
        typer.echo("experiment: none running")
    else:
        started = (
            dt.datetime.fromtimestamp(state.started_at, dt.UTC).isoformat(timespec="seconds")
            if state.started_at
            else "-"
        )
        typer.echo(
            f"experiment: {experiment.name} ({experiment.mode}, share {experiment.share:g}, "
            f"started {started})"
        )
    if state.error:
        typer.echo(f"warning: {state.error}")


def online_report(
    experiment: Annotated[
        str | None, typer.Option(help="the experiment's name (default: the running one)")
    ] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote",
            help="promote the challenger when it is not worse offline and better online at "
            "the configured confidence (configs/experiments.yaml)",
        ),
    ] = False,
    database_url: Annotated[str | None, typer.Option(help="overrides RECOLAB_DATABASE_URL")] = None,
    override: Annotated[
        list[str] | None,
        typer.Option("--set", help="config override, e.g. experiments.confidence=0.95"),
    ] = None,
) -> None:
    """Online metrics of an experiment from the feedback that followed its answers (the
    `online-report` flow): hit rate per variant with intervals, the difference, and with
    --promote the decision."""
    from recolab.bootstrap import environment_settings
    from recolab.config import check_overrides

    settings = environment_settings()
    overrides = list(override or [])
    _guard(lambda: check_overrides([*settings.overrides, *overrides], settings.config_dir))
    from flows.online_report import online_report as online_report_flow

    result = _guard(
        lambda: online_report_flow(
            experiment=experiment,
            promote=promote,
            database_url=database_url,
            overrides=overrides,
        ),
        code=1,
    )
    _echo_report(result)


def _echo_report(result: dict[str, Any]) -> None:
    report = result["report"]
    typer.echo(
        f"experiment {result['experiment']}: champion {result['champion_version']}, "
        f"challenger {result['challenger_version']}"
    )
    every = [
        *report["variants"].items(),
        *([("shadow", report["shadow"])] if report["shadow"] else []),
    ]
    for name, v in every:
        low, high = v["hit_rate_interval"]
        shown = "" if v["shown"] else " (not shown)"
        typer.echo(
            f"  {name}{shown}: {v['answers']} answers, {v['users']} users, hit rate "
            f"{_figure(v['hit_rate'])} [{_figure(low)}, {_figure(high)}]"
        )
    d = report["difference"]
    if d is not None:
        low, high = d["hit_rate_interval"]
        typer.echo(
            f"  challenger - champion: {d['hit_rate']:+.4f} [{low:+.4f}, {high:+.4f}], lower "
            f"bound {d['lower_bound']:+.4f} at {d['confidence']:.1%}"
        )
    if result["promotion_asked"]:
        typer.echo(f"decision: {result['reason']}")
    typer.echo(f"MLflow run: {result['report_run_id']}")


def _figure(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"
