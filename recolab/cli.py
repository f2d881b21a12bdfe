"""The `recolab` command line: each subcommand runs the Prefect flow of the same name."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="recolab",
    help="RecoLab: MovieLens files to a live recommendation endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: download MovieLens releases, generate the demo.")
app.add_typer(data_app, name="data")


def _not_yet(what: str, issue: int) -> None:
    typer.echo(f"error: `recolab {what}` is not available yet (planned in issue #{issue})", err=True)
    raise typer.Exit(2)


@app.command()
def ingest() -> None:
    """Read, validate and load a MovieLens dataset into the database."""
    _not_yet("ingest", 3)


@app.command()
def features() -> None:
    """Build a versioned feature snapshot from the database."""
    _not_yet("features", 4)


@app.command()
def train() -> None:
    """Train NeuMF, evaluate it, log and register it in MLflow."""
    _not_yet("train", 4)


@app.command()
def evaluate() -> None:
    """Evaluate a registered model under the configured protocols."""
    _not_yet("evaluate", 4)


@app.command()
def serve() -> None:
    """Start the BentoML recommendation service."""
    _not_yet("serve", 5)


@app.command()
def pipeline() -> None:
    """Run the whole pipeline: ingest, validate, features, train, evaluate, promote."""
    _not_yet("pipeline", 6)


@data_app.command("download")
def data_download() -> None:
    """Download a MovieLens release and verify its checksum."""
    _not_yet("data download", 3)


if __name__ == "__main__":
    app()
