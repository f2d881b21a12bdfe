"""The learning curve read from the figure's axes: one panel per quantity, the best epoch
marked, the baselines as horizontal lines; and the PNG `experiment.train` writes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from recolab.ml import plots
from recolab.ml.experiment import learning_curve, train
from tests.unit.ml.test_rescoring import TINY, grouped, snapshot_of

IMPLICIT = [  # as `FitResult.history` holds it: a loss near 4-6, metrics near 0.05
    {"epoch": 0.0, "train/loss": 5.7, "val/ndcg@10": 0.031, "val/hr@10": 0.060},
    {"epoch": 1.0, "train/loss": 4.4, "val/ndcg@10": 0.052, "val/hr@10": 0.101},
    {"epoch": 2.0, "train/loss": 3.7, "val/ndcg@10": 0.047, "val/hr@10": 0.097},
]
BASELINES: dict[str, dict[str, Any]] = {
    "bias_only": {"ndcg@10": 0.012, "hr@10": 0.025, "by_tier": {"new": {"ndcg@10": 0.0}}},
    "popularity": {"ndcg@10": 0.041, "hr@10": 0.083, "coverage": 0.3},
}


def titles(figure: Figure) -> list[str]:
    return [ax.get_title() for ax in figure.axes]


def line(ax: Axes, label_start: str) -> list[Line2D]:
    return [ln for ln in ax.get_lines() if str(ln.get_label()).startswith(label_start)]


def xs(ln: Line2D) -> list[float]:
    return [float(x) for x in np.asarray(ln.get_xdata(), dtype=float)]


def ys(ln: Line2D) -> list[float]:
    return [float(y) for y in np.asarray(ln.get_ydata(), dtype=float)]


def test_loss_and_each_validation_metric_get_their_own_panel() -> None:
    figure = plots.learning_curve_figure(IMPLICIT)
    assert titles(figure) == ["loss", "val/ndcg_at_10", "val/hr_at_10"]
    for ax, quantity in zip(figure.axes, ["train/loss", "val/ndcg@10", "val/hr@10"], strict=True):
        (curve,) = ax.get_lines()
        assert curve.get_label() == quantity
        assert xs(curve) == [0.0, 1.0, 2.0]
        assert ys(curve) == pytest.approx([row[quantity] for row in IMPLICIT])
        # Each panel is scaled to its own quantity: the curve spans most of its y-axis.
        low, high = ax.get_ylim()
        assert (max(ys(curve)) - min(ys(curve))) / (high - low) > 0.5


def test_the_best_epoch_is_a_vertical_line_on_every_panel() -> None:
    figure = plots.learning_curve_figure(IMPLICIT, best_epoch=1)
    for ax in figure.axes:
        (marker,) = line(ax, plots.BEST_EPOCH_LABEL)
        assert marker.get_label() == "best epoch 1"
        assert xs(marker) == [1.0, 1.0]
        legend = ax.get_legend()
        assert legend is not None
        assert "best epoch 1" in [t.get_text() for t in legend.get_texts()]
    unmarked = plots.learning_curve_figure(IMPLICIT)
    assert not any(line(ax, plots.BEST_EPOCH_LABEL) for ax in unmarked.axes)


def test_baselines_are_horizontal_lines_on_the_panel_of_the_same_metric() -> None:
    figure = plots.learning_curve_figure(IMPLICIT, best_epoch=1, baselines=BASELINES)
    loss, ndcg, hr = figure.axes
    assert not line(loss, "popularity") and not line(loss, "bias_only")
    for ax, metric in ((ndcg, "ndcg@10"), (hr, "hr@10")):
        for name, figures in BASELINES.items():
            (baseline,) = line(ax, name)
            assert ys(baseline) == pytest.approx([figures[metric]] * 2)
            assert "test split" in str(baseline.get_label())
        low, high = ax.get_ylim()
        assert low <= BASELINES["bias_only"][metric] and BASELINES["popularity"][metric] <= high
    # Figures for metrics without a panel (coverage, by_tier) draw nothing.
    assert len(ndcg.get_lines()) == 1 + 1 + 2  # curve, best epoch, two baselines


def test_explicit_mode_panels_and_a_baseline_named_the_mlflow_way() -> None:
    history = [
        {"epoch": 0.0, "train/loss": 0.9, "val/rmse": 0.95, "val/mae": 0.75},
        {"epoch": 1.0, "train/loss": 0.7, "val/rmse": 0.91, "val/mae": 0.72},
    ]
    figure = plots.learning_curve_figure(
        history, best_epoch=0, baselines={"bias_only": {"rmse": 0.93}}
    )
    assert titles(figure) == ["loss", "val/rmse", "val/mae"]
    (baseline,) = line(figure.axes[1], "bias_only")
    assert ys(baseline) == pytest.approx([0.93, 0.93])
    assert not line(figure.axes[2], "bias_only")
    renamed = plots.learning_curve_figure(
        [{"epoch": 0.0, "val/ndcg_at_10": 0.05}], baselines={"popularity": {"ndcg@10": 0.04}}
    )
    (baseline,) = line(renamed.axes[0], "popularity")
    assert ys(baseline) == pytest.approx([0.04, 0.04])


def test_missing_values_are_skipped_and_losses_share_one_panel() -> None:
    history: list[dict[str, float | None]] = [
        {"epoch": 0.0, "train/loss": 2.0, "val/loss": 2.5, "val/hr@10": None},
        {"epoch": 1.0, "train/loss": 1.5, "val/loss": 2.1, "val/hr@10": math.nan},
        {"epoch": 2.0, "train/loss": 1.2, "val/loss": 2.0, "val/hr@10": 0.2},
    ]
    figure = plots.learning_curve_figure(history)
    assert titles(figure) == ["loss", "val/hr_at_10"]
    assert [ln.get_label() for ln in figure.axes[0].get_lines()] == ["train/loss", "val/loss"]
    (hr,) = figure.axes[1].get_lines()
    assert xs(hr) == [2.0] and ys(hr) == [0.2]


def test_many_quantities_wrap_into_rows_of_three() -> None:
    row = {"epoch": 0.0, "train/loss": 1.0, **{f"val/m{i}": 0.1 * i for i in range(5)}}
    geometry: set[tuple[int, int]] = set()
    figure = plots.learning_curve_figure([row])
    assert len(figure.axes) == 6
    for ax in figure.axes:
        spec = ax.get_subplotspec()
        assert spec is not None
        geometry.add(spec.get_geometry()[:2])
    assert geometry == {(2, 3)}


def test_no_epoch_and_bad_input() -> None:
    empty = plots.learning_curve_figure([])
    (ax,) = empty.axes
    assert [t.get_text() for t in ax.texts] == ["no epoch recorded"]
    with pytest.raises(TypeError, match="sequence of"):
        plots.learning_curve_figure({"epoch": 0.0, "train/loss": 1.0})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sequence of"):
        plots.learning_curve_figure([0.5, 0.4])  # type: ignore[list-item]


def test_save_writes_a_png(tmp_path: Path) -> None:
    path = plots.save(plots.learning_curve_figure(IMPLICIT), tmp_path / "curve.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_train_writes_the_learning_curve_of_its_fit_with_its_baselines(tmp_path: Path) -> None:
    snapshot = snapshot_of(grouped(), tmp_path / "features")
    config = dataclasses.replace(TINY, max_epochs=3)
    run = train(snapshot, "B", config, tmp_path / "out", baselines=True)
    fitted = run.fit_result
    assert fitted.best_epoch is not None and len(fitted.history) == 3

    figure = learning_curve(fitted, run.baselines)
    assert titles(figure) == ["loss", "val/ndcg_at_10", "val/hr_at_10"]
    for ax in figure.axes:
        (marker,) = line(ax, plots.BEST_EPOCH_LABEL)
        assert xs(marker) == [float(fitted.best_epoch)] * 2
    (popularity,) = line(figure.axes[1], "popularity")
    assert ys(popularity) == pytest.approx([run.baselines["popularity"]["ndcg@10"]] * 2)

    written = run.artefacts["learning_curve"]
    assert written == tmp_path / "out" / "learning_curve.png"
    again = plots.save(figure, tmp_path / "again.png")
    assert written.read_bytes() == again.read_bytes()  # the same figure, drawn the same way
    assert run.artefacts["per_tier"].read_bytes().startswith(b"\x89PNG")
