"""Prefect flow `online-report`: an experiment's online metrics from the history and the
ratings that followed, logged to MLflow; with `promote`, the challenger promoted when the
online evidence (and the offline comparison) say so."""

from __future__ import annotations

import math
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import platform_for
from recolab.application.online import (
    Interval,
    OnlineOutcome,
    OnlineReport,
    OnlineReporting,
    VariantReport,
)
from recolab.bootstrap import Platform


def reporting(platform: Platform) -> OnlineReporting:
    """The report's collaborators on the platform's database and MLflow store."""
    return platform.online_reporting()


@task(name="report-and-decide", cache_policy=NO_CACHE)
def report_and_decide(
    platform: Platform, experiment: str | None, promote: bool, since: float | None
) -> OnlineOutcome:
    config = platform.experiments_config
    outcome = reporting(platform).run(
        config,
        experiment=experiment,
        promote=promote,
        since=since,
        bus=platform.bus,
        # as the training gate: fewer same-data rows than this do not judge offline
        min_rows=platform.pipeline_config.promotion.min_comparable_rows,
    )
    logger = get_run_logger()
    for line in _lines(outcome.report):
        logger.info(line)
    if outcome.decision is not None:
        logger.info("version %s: %s", outcome.status.challenger_version, outcome.decision.reason)
    return outcome


@flow(name="online-report", log_prints=True)
def online_report(
    experiment: str | None = None,
    promote: bool = False,
    database_url: str | None = None,
    overrides: list[str] | None = None,
    since: float | None = None,
) -> dict[str, Any]:
    """Report on `experiment` (the running one by default) from the recommendation history
    and the ratings that followed each answer (configs/experiments.yaml: window, cut-offs,
    confidence): per variant hit rate, hit rate at each cut-off, coverage and novelty with
    bootstrap intervals, and the challenger-minus-champion difference. `promote`: the
    challenger becomes champion when it is not worse offline and its online difference is
    above zero at the configured confidence; otherwise the report says why."""
    platform = platform_for(database_url, overrides)
    try:
        outcome = report_and_decide(platform, experiment, promote, since)
    finally:
        platform.close()
    result = outcome_dict(outcome)
    create_markdown_artifact(
        markdown=markdown(outcome),
        key=f"online-report-{outcome.report.experiment}".lower().replace("_", "-")[:100],
        description=f"online report of {outcome.report.experiment}",
    )
    return result


def outcome_dict(outcome: OnlineOutcome) -> dict[str, Any]:
    decision = outcome.decision
    return {
        "experiment": outcome.report.experiment,
        "running": outcome.running,
        "champion_version": outcome.status.champion_version,
        "challenger_version": outcome.status.challenger_version,
        "report": outcome.report.to_dict(),
        "report_run_id": outcome.report_id,
        "promotion_asked": decision is not None,
        "promoted": outcome.promoted,
        "reason": None if decision is None else decision.reason,
        "failed": [] if decision is None else list(decision.failed),
        "offline_source": None if outcome.offline is None else outcome.offline.source,
    }


def _rate(value: float, interval: Interval | None = None) -> str:
    if not math.isfinite(value):
        return "-"
    if interval is None or not math.isfinite(interval.low):
        return f"{value:.4f}"
    return f"{value:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def _row(v: VariantReport, cutoffs: tuple[int, ...]) -> str:
    versions = ", ".join(f"{k} ({n})" for k, n in sorted(v.versions.items())) or "-"
    at = " | ".join(_rate(v.hit_rate_at[k], v.hit_rate_at_interval[k]) for k in cutoffs)
    shown = "" if v.shown else " (not shown)"
    return (
        f"| {v.variant}{shown} | {versions} | {v.answers} | {v.users} | {v.hits} | "
        f"{_rate(v.hit_rate, v.hit_rate_interval)} | {at} | {_rate(v.coverage)} | "
        f"{_rate(v.novelty)} |"
    )


def _lines(report: OnlineReport) -> list[str]:
    every = [*report.variants.values(), *([report.shadow] if report.shadow else [])]
    lines = [
        f"{v.variant}: {v.answers} answers to {v.users} users, hit rate "
        f"{_rate(v.hit_rate, v.hit_rate_interval)}"
        for v in every
    ]
    d = report.difference
    if d is not None:
        low, high = d.hit_rate_interval.low, d.hit_rate_interval.high
        lines.append(
            f"challenger - champion: {d.hit_rate:+.4f} [{low:+.4f}, {high:+.4f}], lower bound "
            f"{d.lower_bound:+.4f} at {d.confidence:.1%}"
        )
    return lines


def markdown(outcome: OnlineOutcome) -> str:
    """The report as a Prefect artefact: the per-variant table, the difference, the decision."""
    report, s = outcome.report, outcome.report.settings
    cutoffs = s.rank_cutoffs
    every = [*report.variants.values(), *([report.shadow] if report.shadow else [])]
    head = " | ".join(f"hit rate@{k}" for k in cutoffs)
    rows = "\n".join(_row(v, cutoffs) for v in every)
    d = report.difference
    difference = (
        "No difference: a shown variant answered nobody."
        if d is None
        else f"Challenger − champion hit rate: **{d.hit_rate:+.4f}**, {d.confidence:.1%} interval "
        f"[{d.hit_rate_interval.low:+.4f}, {d.hit_rate_interval.high:+.4f}], one-sided lower bound "
        f"**{d.lower_bound:+.4f}** ({d.champion_users} and {d.challenger_users} users)."
    )
    decision = outcome.decision
    verdict = (
        "Promotion not asked (`--promote`)."
        if decision is None
        else f"**{'Promoted' if decision.promote else 'Not promoted'}** — {decision.reason}."
    )
    status = outcome.status
    return (
        f"# Online report: `{report.experiment}`\n\n"
        f"Champion version {status.champion_version}, challenger version "
        f"{status.challenger_version}"
        f"{'' if outcome.running else ' (the experiment is not running)'}. A rating within "
        f"{s.window_s:g} s of an answer holding the movie is a hit; intervals at "
        f"{s.confidence:.1%}, bootstrap over users ({s.bootstrap_samples} samples). Shadow "
        "answers were never shown: they say what the challenger would have served.\n\n"
        f"| variant | versions (answers) | answers | users | hits | hit rate | {head} | "
        f"coverage | novelty (bits) |\n"
        f"| --- | --- | ---: | ---: | ---: | --- | {' | '.join('---' for _ in cutoffs)} | "
        "---: | ---: |\n"
        f"{rows}\n\n{difference}\n\n## Decision\n\n{verdict}\n\n"
        f"MLflow run: `{outcome.report_id}` (experiment `recolab-online`). "
        f"{report.open_answers} answers still within their window; "
        f"{report.excluded_answers} served by other model versions left out.\n"
    )
