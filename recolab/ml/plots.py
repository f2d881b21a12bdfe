"""Figures of a training run: the learning curve and the primary metric by user tier.

Each `*_figure` function returns a matplotlib `Figure` built without pyplot (no global
figure registry, no GUI backend, nothing to close), so it can be inspected in a test;
`save` writes one as a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from recolab.ml.evaluation.metrics import metric_key

BEST_EPOCH_LABEL = "best epoch"
_PANEL_SIZE = (4.2, 3.2)  # inches per panel
_MAX_COLUMNS = 3


def learning_curve_figure(
    history: Sequence[Mapping[str, float | None]],
    *,
    best_epoch: int | None = None,
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """One panel per quantity of `history` (the rows `FitResult.history` holds: `epoch`
    plus e.g. `train/loss`, `val/ndcg@10`): the losses share one panel, each validation
    metric has its own, so a loss near 4 does not flatten a metric near 0.05.

    `best_epoch` (the epoch whose weights were kept) is a dashed vertical line on every
    panel. `baselines` maps a baseline's name to its figures (`TrainingRun.baselines`, e.g.
    {"popularity": {"ndcg@10": 0.05}}): a figure for a panel's metric (`val/ndcg@10` ->
    `ndcg@10`) is a horizontal line, labelled as measured on the protocol's test split.
    """
    if isinstance(history, Mapping) or not all(isinstance(row, Mapping) for row in history):
        raise TypeError("history must be a sequence of {quantity: value} rows, one per epoch")
    panels = _panels(history)
    figure = Figure(figsize=_figure_size(max(len(panels), 1)), layout="constrained")
    if not panels:
        ax = figure.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no epoch recorded", ha="center", va="center")
        return figure
    columns = min(len(panels), _MAX_COLUMNS)
    rows = math.ceil(len(panels) / columns)
    for position, (title, quantities) in enumerate(panels.items(), start=1):
        ax = figure.add_subplot(rows, columns, position)
        for quantity in quantities:
            epochs, values = _series(history, quantity)
            ax.plot(epochs, values, marker="o", markersize=3, label=quantity)
        if best_epoch is not None:
            ax.axvline(
                best_epoch,
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"{BEST_EPOCH_LABEL} {best_epoch}",
            )
        if title != "loss":
            _baseline_lines(ax, title, baselines or {})
        ax.set_title(title if title == "loss" else metric_key(title), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    figure.suptitle("learning curve", fontsize=11)
    return figure


def per_tier_figure(by_tier: Mapping[str, Mapping[str, float]], metric: str, title: str) -> Figure:
    """`metric` per user tier as bars (tiers without the metric are left out)."""
    names = [tier for tier, values in by_tier.items() if metric in values]
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    ax = figure.add_subplot()
    ax.bar(names, [by_tier[tier][metric] for tier in names])
    ax.set_ylabel(metric)
    ax.set_title(title)
    return figure


def save(figure: Figure, path: Path, dpi: int = 80) -> Path:
    figure.savefig(path, dpi=dpi)
    return path


def _panels(history: Sequence[Mapping[str, float | None]]) -> dict[str, list[str]]:
    """Panel title -> the quantities drawn on it, in the order the history first has them."""
    panels: dict[str, list[str]] = {}
    for row in history:
        for quantity, value in row.items():
            if quantity == "epoch" or value is None or math.isnan(value):
                continue
            title = "loss" if quantity.rsplit("/", 1)[-1] == "loss" else quantity
            drawn = panels.setdefault(title, [])
            if quantity not in drawn:
                drawn.append(quantity)
    return dict(sorted(panels.items(), key=lambda item: item[0] != "loss"))


def _series(
    history: Sequence[Mapping[str, float | None]], quantity: str
) -> tuple[list[float], list[float]]:
    epochs, values = [], []
    for position, row in enumerate(history):
        value = row.get(quantity)
        if value is not None and not math.isnan(value):
            epoch = row.get("epoch")
            epochs.append(float(position if epoch is None else epoch))
            values.append(float(value))
    return epochs, values


def _same_metric(name: str) -> str:
    return name.replace("@", "_at_")


def _baseline_lines(ax: Axes, quantity: str, baselines: Mapping[str, Mapping[str, Any]]) -> None:
    metric = _same_metric(quantity.split("/", 1)[-1])
    for offset, (name, figures) in enumerate(baselines.items()):
        for key, value in figures.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and _same_metric(key) == metric and math.isfinite(value):
                ax.axhline(
                    value,
                    color=f"C{offset + 3}",
                    linestyle=":",
                    linewidth=1.2,
                    label=f"{name} (test split) {value:.4g}",
                )


def _figure_size(count: int) -> tuple[float, float]:
    columns = min(count, _MAX_COLUMNS)
    rows = math.ceil(count / columns)
    return (_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows)


__all__ = ["BEST_EPOCH_LABEL", "learning_curve_figure", "per_tier_figure", "save"]
