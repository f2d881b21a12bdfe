"""The `online-report` flow under Prefect's test harness, on a SQLite history and a temporary
MLflow store: the report, its markdown artefact (per-variant table, difference, decision),
the promotion it makes, and `recolab online-report` on top of it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import typer
from sqlalchemy import insert
from typer.testing import CliRunner

from recolab.adapters.mlflow.experiments import read_state, start_experiment
from recolab.adapters.mlflow.registry import set_champion
from recolab.adapters.mlflow.tracking import mlflow_client
from recolab.adapters.sql import schema as s
from recolab.bootstrap import Platform, bootstrap
from recolab.domain.experiments import Experiment
from tests.integration.test_ingest_artifact import latest_markdown, tables
from tests.integration.test_online_mlflow import MODEL, gate_record
from tests.integration.workspace import temp_workspace
from tests.unit.domain.online_data import simulate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def load_history(platform: Platform, seed: int = 4) -> int:
    """A canary in the database: 100 users per variant, the challenger's answers followed by
    ratings far more often; the number of answers."""
    data = simulate(seed, users=100, champion_rate=0.1, challenger_rate=0.6)
    a, f = data.answers, data.feedback
    movies = np.unique(np.concatenate([a.movie, f.movie]))
    with platform.engine.begin() as conn:
        conn.execute(insert(s.users), [{"id": int(u)} for u in np.unique(a.user)])
        conn.execute(
            insert(s.movies),
            [{"id": int(m), "title": f"Movie {m}", "genres": "Drama"} for m in movies],
        )
        conn.execute(
            insert(s.ratings),
            [
                {"user_id": int(u), "movie_id": int(m), "score": 4.5, "timestamp": int(t)}
                for u, m, t in zip(f.user, f.movie, f.timestamp, strict=True)
            ],
        )
        answer = a.item_answer
        conn.execute(
            insert(s.recommendation_history),
            [
                {
                    "user_id": int(a.user[i]),
                    "movie_id": int(m),
                    "rank": int(r),
                    "score": 1.0,
                    "strategy": "hybrid",
                    "source": "cf",
                    "model_version": "1" if a.variant[i] == "champion" else "2",
                    "created_at": datetime.fromtimestamp(float(a.created_at[i]), UTC),
                    "tier": "active",
                    "experiment": "v2-vs-v1",
                    "variant": str(a.variant[i]),
                }
                for i, m, r in zip(answer.tolist(), a.movie.tolist(), a.rank.tolist(), strict=True)
            ],
        )
    return len(a)


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    temp_workspace(tmp_path, monkeypatch, ["experiments.bootstrap_samples=500"])
    platform = bootstrap()
    client = mlflow_client(platform.settings.resolved_tracking_uri)
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=(tmp_path / "model").as_uri())
    set_champion(client, MODEL, "1")
    gate_record(client, "2", champion="1")
    start_experiment(client, MODEL, Experiment("v2-vs-v1", "canary", 0.5), version="2")
    yield platform
    platform.close()


def test_the_flow_reports_promotes_and_leaves_an_artefact(platform: Platform) -> None:
    from flows.online_report import online_report

    n_answers = load_history(platform)
    result = online_report(promote=True)
    assert result["experiment"] == "v2-vs-v1" and result["running"]
    assert result["promoted"] and result["failed"] == [], result["reason"]
    assert result["offline_source"] == "recorded"
    report = result["report"]
    shown = report["variants"]
    assert shown["champion"]["answers"] + shown["challenger"]["answers"] == n_answers
    assert shown["challenger"]["hit_rate"] > shown["champion"]["hit_rate"]
    assert report["settings"]["bootstrap_samples"] == 500  # RECOLAB_OVERRIDES applied
    assert report["difference"]["lower_bound"] > 0

    client = mlflow_client(platform.settings.resolved_tracking_uri)
    state = read_state(client, MODEL)
    assert (state.champion_version, state.challenger_version, state.experiment) == ("2", None, None)
    run = client.get_run(result["report_run_id"])
    assert run.data.tags["online.decision"] == "promoted"

    markdown = latest_markdown("online-report-v2-vs-v1")
    (table,) = tables(markdown)
    assert table[0][:6] == ["variant", "versions (answers)", "answers", "users", "hits", "hit rate"]
    rows = {row[0]: row for row in table[1:]}
    assert set(rows) == {"champion", "challenger"}
    assert int(rows["challenger"][2]) == shown["challenger"]["answers"]
    assert rows["champion"][1] == f"1 ({shown['champion']['answers']})"
    assert "**Promoted**" in markdown and "Challenger − champion hit rate" in markdown
    assert result["report_run_id"] in markdown


def test_the_command_line_prints_the_report_and_refuses_when_nothing_runs(
    platform: Platform,
) -> None:
    from recolab.cli_experiment import online_report

    app = typer.Typer()
    app.command("online-report")(online_report)
    app.command("noop")(lambda: None)  # a group, so the command is named
    load_history(platform)
    done = CliRunner().invoke(app, ["online-report"])
    assert done.exit_code == 0, done.output
    assert "experiment v2-vs-v1: champion 1, challenger 2" in done.output
    assert "challenger - champion: +" in done.output and "decision" not in done.output

    client = mlflow_client(platform.settings.resolved_tracking_uri)
    from recolab.adapters.mlflow.experiments import stop_experiment

    stop_experiment(client, MODEL)
    refused = CliRunner().invoke(app, ["online-report", "--promote"])
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1].startswith("error: no experiment is running")
    bad = CliRunner().invoke(app, ["online-report", "--set", "experiments.confidence=2"])
    assert bad.exit_code == 2 and "confidence" in bad.output
