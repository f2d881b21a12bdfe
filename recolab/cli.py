"""The `recolab` command line: each subcommand runs the Prefect flow of the same name."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeVar

import typer

from recolab.cli_experiment import experiment_app, online_report

T = TypeVar("T")

app = typer.Typer(
    name="recolab",
    help="RecoLab: MovieLens files to a live recommendation endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: download MovieLens releases, generate the demo.")
app.add_typer(data_app, name="data")

# The exit status of a process ended by SIGTERM (128 + 15), as a shell reports it.
SIGTERM_EXIT = 128 + signal.SIGTERM


@app.callback()
def _main(ctx: typer.Context) -> None:
    """RecoLab: MovieLens files to a live recommendation endpoint."""
    from flows.common import prefect_defaults

    prefect_defaults()  # before any command imports prefect, which reads them once
    ctx.call_on_close(exit_on_sigterm())  # the caller's handler back (tests invoke `app`)


def exit_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM an orderly exit: `SystemExit` in the main thread, so that context
    managers and atexit hooks run. Python's default handler ends the process on the spot,
    which leaves behind what those hooks stop (Prefect's temporary API server, a uvicorn
    process). Prefect's own bridge, active while a flow runs, re-sends the signal to this
    handler once it has marked the run crashed. A second SIGTERM during that exit is ignored
    rather than interrupting the clean-up; SIGKILL still ends everything. Returns a
    function that puts the previous handler back."""
    received = False

    def terminate(signum: int, _frame: FrameType | None) -> None:
        nonlocal received
        if received:
            return
        received = True
        raise SystemExit(SIGTERM_EXIT)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: signals are not ours to handle
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


@app.command()
def ingest(
    dataset: Annotated[str, typer.Option(help="demo, or a MovieLens release name")] = "demo",
    source: Annotated[
        Path | None, typer.Option(help="a local folder or zip instead of downloading")
    ] = None,
    database_url: Annotated[str | None, typer.Option(help="overrides RECOLAB_DATABASE_URL")] = None,
    override: Annotated[
        list[str] | None, typer.Option("--set", help="config override section.key=value")
    ] = None,
) -> None:
    """Read, validate and load a MovieLens dataset into the database (the `ingest` flow)."""
    from flows.ingest import ingest as ingest_flow

    overrides = _checked(override)
    result = _run_flow(
        lambda: ingest_flow(
            dataset=dataset,
            source=str(source) if source else None,
            database_url=database_url,
            overrides=overrides,
        )
    )
    typer.echo(f"loaded: {result['load']}")
    typer.echo(f"database: {result['statistics']}")


@app.command()
def features(
    dataset: Annotated[
        str, typer.Option(help="the dataset name recorded in the snapshot")
    ] = "demo",
    database_url: Annotated[str | None, typer.Option(help="overrides RECOLAB_DATABASE_URL")] = None,
) -> None:
    """Build a versioned feature snapshot from the database (the `features` flow)."""
    from flows.features import features as features_flow

    manifest = _run_flow(lambda: features_flow(dataset=dataset, database_url=database_url))
    typer.echo(f"snapshot {manifest['id']}: {manifest['rows']}")


Protocol = Annotated[
    str, typer.Option(help="A: RMSE (explicit), B: top-10 nDCG@10, C: leave-one-out HR@10")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="config override section.key=value, e.g. trainer.max_epochs=5 (a bare key is "
        "a trainer key); repeatable",
    ),
]
Tuned = Annotated[
    bool,
    typer.Option(
        "--tuned",
        help="apply the dataset's latest tuned settings (`recolab tune`) under --set",
    ),
]


AsChallenger = Annotated[
    bool,
    typer.Option(
        "--challenger",
        help="a model that passes the promotion gate gets the `challenger` alias, not "
        "`champion` (then `recolab experiment start`)",
    ),
]


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="the dataset name (MLflow experiment)")] = "demo",
    protocol: Protocol = "B",
    snapshot: Annotated[str | None, typer.Option(help="feature snapshot id (latest)")] = None,
    max_epochs: int | None = None,
    override: Overrides = None,
    tuned: Tuned = False,
    challenger: AsChallenger = False,
) -> None:
    """Train NeuMF, evaluate it, log and register it in MLflow (the `train` flow)."""
    from flows.train import train as train_flow

    overrides = _checked(override, [protocol])
    if tuned:
        overrides = [*_tuned_overrides(dataset, protocol), *overrides]
    result = _run_flow(
        lambda: train_flow(
            dataset=dataset,
            protocol=protocol,
            snapshot_id=snapshot,
            max_epochs=max_epochs,
            overrides=overrides,
            challenger=challenger,
        )
    )
    typer.echo(f"model version {result['version']} ({_verdict(result)}): {result['reason']}")
    typer.echo(f"MLflow run: {result['run_url']}")


@app.command()
def evaluate(
    protocol: Annotated[list[str] | None, typer.Option(help="protocols to run")] = None,
    snapshot: Annotated[str | None, typer.Option(help="feature snapshot id (latest)")] = None,
    override: Overrides = None,
) -> None:
    """Evaluate NeuMF and the baselines under protocols A, B and C (nothing is registered)."""
    import json

    from recolab.bootstrap import bootstrap

    protocols = protocol or ["A", "B", "C"]
    overrides = _checked(override, protocols)
    platform = _guard(lambda: bootstrap(overrides=overrides))
    for name in protocols:
        run = _guard(lambda name=name: platform.train(name, snapshot))  # type: ignore[misc]
        figures = {k: round(v, 4) for k, v in run.metrics.items() if not k.startswith("tier_")}
        typer.echo(json.dumps({"protocol": name, **figures}))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (configs/serving.yaml)")] = None,
    port: Annotated[int | None, typer.Option(help="port (configs/serving.yaml)")] = None,
    reload: Annotated[bool, typer.Option(help="restart on code changes")] = False,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="config override, e.g. serving.champion_poll_interval_s=5 (repeatable)"
        ),
    ] = None,
) -> None:
    """Start the BentoML recommendation service (serves the registered champion)."""
    from recolab.config import Settings
    from serving.service import serve as serve_service

    if override:
        # The workers are other processes: they read the overrides from their environment.
        os.environ["RECOLAB_OVERRIDES"] = json.dumps([*Settings().overrides, *_checked(override)])

    serve_service(host, port, reload=reload)  # becomes `bentoml serve`: does not return


@app.command()
def token(
    sub: Annotated[str, typer.Argument(help="the user id the token is for")],
    role: Annotated[str, typer.Option(help="user or admin")] = "user",
    ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 3600,
) -> None:
    """Print a bearer token signed with RECOLAB_JWT_SECRET, for local use."""
    from recolab.bootstrap import local_token

    try:
        typer.echo(local_token(sub, role, ttl))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def pipeline(
    dataset: Annotated[str, typer.Option(help="demo, or a MovieLens release name")] = "demo",
    source: Annotated[Path | None, typer.Option(help="a local folder or zip")] = None,
    protocol: Protocol = "B",
    max_epochs: int | None = None,
    override: Overrides = None,
    tuned: Tuned = False,
    challenger: AsChallenger = False,
) -> None:
    """Run the whole pipeline: ingest, validate, features, train, evaluate, promote."""
    from flows.pipeline import pipeline as pipeline_flow

    overrides = _checked(override, [protocol])
    if tuned:
        _tuned_overrides(dataset, protocol)  # fail now, not after ingesting, when none exists
    result = _run_flow(
        lambda: pipeline_flow(
            dataset=dataset,
            source=str(source) if source else None,
            protocol=protocol,
            max_epochs=max_epochs,
            overrides=overrides,
            use_tuned=tuned,
            challenger=challenger,
        )
    )
    trained = result["train"]
    typer.echo(
        f"snapshot {result['snapshot']}; model version {trained['version']} ({_verdict(trained)})"
    )


def _verdict(result: dict[str, Any]) -> str:
    if result["promoted"]:
        return "champion"
    return "challenger alias" if result.get("challenger") else "not promoted"


@app.command()
def tune(
    dataset: Annotated[
        str | None, typer.Option(help="the snapshot's dataset, checked (default: any)")
    ] = None,
    protocol: Annotated[
        str | None, typer.Option(help="B or C (default: configs/tune.yaml)")
    ] = None,
    snapshot: Annotated[str | None, typer.Option(help="feature snapshot id (latest)")] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="budget in trials (replaces configs/tune.yaml's)")
    ] = None,
    minutes: Annotated[
        float | None, typer.Option(min=0.01, help="budget in minutes (replaces the file's)")
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option("--set", help="config override, e.g. tune.pruner.kind=none (repeatable)"),
    ] = None,
) -> None:
    """Choose training settings for a dataset with Optuna on the protocol's training split
    (the `tune` flow); `train --tuned` and the nightly retrain apply the best."""
    from flows.tune import tune as tune_flow

    overrides = _checked(override, [protocol] if protocol else ["B", "C"])
    _guard(lambda: _check_tune_config(overrides, trials, minutes))
    result = _run_flow(
        lambda: tune_flow(
            dataset=dataset,
            protocol=protocol,
            snapshot_id=snapshot,
            n_trials=trials,
            timeout_minutes=minutes,
            overrides=overrides,
        )
    )
    typer.echo(
        f"best {result['metric']} = {result['best_value']:.4f} ({result['n_complete']} "
        f"trials complete, {result['n_pruned']} pruned); tuned settings version "
        f"{result['version']}, MLflow run {result['run_id']}"
    )
    for item in result["overrides"]:
        typer.echo(f"  {item}")


def _check_tune_config(overrides: list[str], trials: int | None, minutes: float | None) -> None:
    """configs/tune.yaml with the overrides and budget: a bad space or key fails here."""
    from recolab.config import Settings
    from recolab.ml.tuning import load_tune_config

    settings = Settings()
    every = [*settings.overrides, *overrides]
    load_tune_config(settings.config_dir, every, n_trials=trials, timeout_minutes=minutes)


def _tuned_overrides(dataset: str, protocol: str) -> list[str]:
    from recolab.bootstrap import bootstrap

    platform = _guard(bootstrap)
    return _guard(lambda: platform.tuned_overrides(dataset, protocol, required=True))


@app.command()
def deploy(
    nightly: Annotated[
        bool | None,
        typer.Option(
            "--nightly/--no-nightly",
            help="turn the nightly retrain schedule on or off (default: configs/deployments.yaml)",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="flow runs at once (configs/deployments.yaml)")
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option("--set", help="config override deployments.key=value (repeatable)"),
    ] = None,
) -> None:
    """Serve every flow as a Prefect deployment (ingest, features, train, pipeline) with the
    nightly retrain schedule, until interrupted. Needs a Prefect server (PREFECT_API_URL)."""
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url
    if not api_url:
        typer.echo(
            "error: PREFECT_API_URL is not set: start a server (`prefect server start`, or "
            "`make stack`) and export PREFECT_API_URL=http://127.0.0.1:4200/api",
            err=True,
        )
        raise typer.Exit(2)
    from flows.deploy import serve_deployments

    typer.echo(f"serving RecoLab's deployments on {api_url}")
    overrides = _checked(override)
    _guard(lambda: serve_deployments(overrides=overrides, nightly=nightly, limit=limit))


@app.command()
def monitor(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report only: never ask for a retrain")
    ] = False,
    override: Overrides = None,
) -> None:
    """Compare recent data with the champion's training snapshot (the `monitor` flow); past
    a threshold of configs/monitor.yaml, ask once for a retrain (a Prefect event that runs
    the `pipeline` deployment: needs a Prefect server with `recolab deploy`)."""
    from flows.monitor import monitor as monitor_flow

    overrides = _checked(override)
    result = _run_flow(lambda: monitor_flow(overrides=overrides, dry_run=dry_run))
    typer.echo(json.dumps(result, indent=2, default=str))


# Online experiments: `recolab experiment start|stop|status`, `recolab online-report`.
app.add_typer(experiment_app, name="experiment")
app.command("online-report")(online_report)


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="a MovieLens release, e.g. ml-latest-small")],
    source: Annotated[
        Path | None, typer.Option(help="a local zip or folder instead of the network")
    ] = None,
    overwrite: bool = False,
) -> None:
    """Download a MovieLens release, verify its checksum and unpack it under data/raw/."""
    from recolab.adapters.ingest.download import download_dataset
    from recolab.config import Settings

    def progress(done: int, total: int | None) -> None:
        if total:
            typer.echo(f"\r{done / total:6.1%} of {total / 1e6:.1f} MB", nl=False)

    path = _guard(
        lambda: download_dataset(
            name, Settings().data_dir, source=source, overwrite=overwrite, progress=progress
        )
    )
    typer.echo(f"\n{name} is in {path}")


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option(help="folder to write")] = Path("data/raw/demo"),
    n_users: int = 1000,
    n_movies: int = 2000,
    n_ratings: int = 100_000,
    seed: int = 42,
) -> None:
    """Generate the synthetic demo dataset (MovieLens CSV format) deterministically."""
    from recolab.adapters.ingest.demo import generate_demo

    path = _guard(
        lambda: generate_demo(
            out, n_users=n_users, n_movies=n_movies, n_ratings=n_ratings, seed=seed
        )
    )
    typer.echo(f"demo dataset written to {path}")


def _checked(override: list[str] | None, protocols: list[str] | None = None) -> list[str]:
    """The `--set` overrides, checked with RECOLAB_OVERRIDES before anything starts: a bad
    section, key or value exits with a message. Training keys are checked too when the
    command trains (`protocols`), which loads torch."""
    from recolab.config import Settings, check_overrides, training_overrides

    items = list(override or [])
    settings = Settings()
    combined = [*settings.overrides, *items]

    def check() -> None:
        check_overrides(combined, settings.config_dir)
        if protocols and training_overrides(combined):
            from recolab.ml.experiment import PROTOCOLS, load_config

            for name in protocols:
                if name in PROTOCOLS:  # an unknown protocol is refused where it is used
                    load_config(settings.config_dir, PROTOCOLS[name], combined)

    _guard(check)
    return items


def _guard(action: Callable[[], T]) -> T:
    """Run `action`; a user error becomes a message and exit code 1, not a traceback."""
    from recolab.adapters.ingest.movielens import DatasetError
    from recolab.config import ConfigError
    from recolab.domain.errors import DomainError
    from recolab.ml.features import FeaturesError

    try:
        return action()
    except (DatasetError, ConfigError, DomainError, FeaturesError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _run_flow(action: Callable[[], T]) -> T:
    from recolab.adapters.ingest.validation import ValidationFailed

    try:
        return _guard(action)
    except ValidationFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
