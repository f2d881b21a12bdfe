"""Progress of long work: a log line per training epoch with its metrics and the time left,
evaluation progress every few seconds, the lines forwarded to a flow's run logger, and
Lightning's progress bar only on a terminal."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recolab.ml import progress
from recolab.ml.experiment import train
from recolab.ml.fitting import TrainConfig, fit
from recolab.ml.hardware import build_trainer
from recolab.ml.progress import (
    EpochProgress,
    Progress,
    Reporting,
    distinct_runs,
    duration,
    forward_to,
)
from tests.unit.ml.test_metric_names import tiny_snapshot
from tests.unit.ml.tiny import tiny_ratings as shared_tiny_ratings

LOGGER = "recolab.progress"
TINY = TrainConfig(
    mode="implicit", gmf_dim=4, mlp_dim=4, mlp_layers=(8, 4), max_epochs=2, val_negatives=10
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0.4 s"),
        (9.96, "10 s"),
        (42, "42 s"),
        (185, "3 min 05 s"),
        (7620, "2 h 07 min"),
        (float("nan"), "?"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, list[str]]]:
    """A logger of the test's own (INFO) and the messages it logged."""
    logger = logging.getLogger(f"test.{request.node.name}")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, records
    logger.removeHandler(handler)


def test_an_epoch_line_has_the_metrics_and_the_time_left_at_most(
    captured: tuple[logging.Logger, list[str]],
) -> None:
    clock = FakeClock()
    logger, records = captured
    trainer: Any = SimpleNamespace(
        is_global_zero=True, max_epochs=5, current_epoch=0, callback_metrics={}
    )
    callback = EpochProgress("fit", logger=logger, clock=clock)
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    for epoch, seconds in enumerate((10.0, 20.0)):
        trainer.current_epoch = epoch
        callback.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
        clock.now += seconds
        callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
        # the module logs the epoch's loss after the callbacks' on_train_epoch_end
        trainer.callback_metrics = {"train/loss": 0.5 - epoch / 10, "val/hr@10": 0.25}
    assert records == [
        "fit epoch 1/5: train/loss=0.5000 val/hr_at_10=0.2500 (10 s; at most 40 s left)"
    ]
    callback.on_train_end(trainer, None)  # type: ignore[arg-type]
    # mean epoch 15 s, 3 epochs left
    assert (
        records[1]
        == "fit epoch 2/5: train/loss=0.4000 val/hr_at_10=0.2500 (20 s; at most 45 s left)"
    )


def test_a_long_epoch_says_how_far_it_is_every_interval(
    captured: tuple[logging.Logger, list[str]],
) -> None:
    clock = FakeClock()
    logger, records = captured
    trainer: Any = SimpleNamespace(
        is_global_zero=True,
        max_epochs=2,
        current_epoch=0,
        callback_metrics={},
        num_training_batches=2000,
    )
    callback = EpochProgress("fit", logger=logger, clock=clock, every=60.0)
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    callback.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
    for batch in range(2000):
        clock.now += 0.125  # 250 s in all: a line at 60, 120, 180 and 240 s
        callback.on_train_batch_end(trainer, None, None, None, batch)  # type: ignore[arg-type]
    trainer.num_training_batches = float("inf")  # an iterable of unknown length
    clock.now += 60
    callback.on_train_batch_end(trainer, None, None, None, 2000)  # type: ignore[arg-type]
    assert len(records) == 5
    assert records[0] == (
        "fit epoch 1/2 at 24%: 480/2,000 batches, 1 min 00 s so far, "
        "about 3 min 10 s left in the epoch"
    )
    assert records[3] == (
        "fit epoch 1/2 at 96%: 1,920/2,000 batches, 4 min 00 s so far, about 10 s left in the epoch"
    )
    assert records[4] == "fit epoch 1/2 at 2,001 batches, 5 min 10 s so far"
    # none of them reads as an epoch's end line ("fit epoch N/M:")
    assert not any(re.search(r"fit epoch \d+/\d+:", line) for line in records)


def tiny_ratings() -> pd.DataFrame:
    return shared_tiny_ratings(n_users=30, per_user=10, n_movies=60, first_timestamp=1000)


def test_a_fit_logs_one_line_per_epoch_with_its_metrics(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    result = fit(tiny_ratings(), TINY, label="tiny fit")
    found = lines(caplog)
    assert len(found) == len(result.history) == 2
    for epoch, line in enumerate(found, start=1):
        assert line.startswith(f"tiny fit epoch {epoch}/2: ")
        assert re.search(r"train/loss=\d\.\d{4}", line) and "val/ndcg_at_10=" in line
        assert re.search(r"\([\d.]+ s; at most [\d.]+ s left\)$", line)
    assert found[-1].endswith("at most 0.0 s left)")


def test_progress_is_logged_every_few_seconds_and_at_the_end(
    captured: tuple[logging.Logger, list[str]],
) -> None:
    clock = FakeClock()
    logger, records = captured
    counter = Progress("scoring", 100, "users ranked", every_s=5, logger=logger, clock=clock)
    counter.start()
    for _ in range(9):  # 10 users a second
        clock.now += 1
        counter.advance(10)
    clock.now += 1
    counter.advance(30)  # past the total: counted up to it, logged once
    counter.advance(5)
    assert records == [
        "scoring: 50/100 users ranked (50%), 5.0 s so far, about 5.0 s left",
        "scoring: 100/100 users ranked (100%), 10 s so far",
    ]


def test_bad_progress_totals_are_refused() -> None:
    with pytest.raises(ValueError, match="total"):
        Progress("x", -1, "rows")


def test_reporting_counts_the_users_of_each_score_call() -> None:
    class Model:
        def fit(self, ratings: Any) -> Model:
            return self

        def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
            return np.zeros(users.size)

        def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
            return np.zeros(users.size)

    counter = Progress("x", 1000, "users")
    model = Reporting(Model(), counter).fit(None)
    model.score(np.repeat([3, 1, 2], 4), np.zeros(12))
    assert counter.done == 3 == distinct_runs(np.repeat([3, 1, 2], 4))
    model.predict(np.array([1, 1, 2]), np.zeros(3))
    assert counter.done == 6  # rows predicted
    assert distinct_runs(np.array([], dtype=np.int64)) == 0


@pytest.mark.parametrize(("protocol", "unit"), [("B", "users ranked"), ("A", "ratings predicted")])
def test_an_evaluation_reports_its_progress(
    protocol: str, unit: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    snapshot = tiny_snapshot(tmp_path / "features")
    mode = "explicit" if protocol == "A" else "implicit"
    config = TrainConfig(mode=mode, gmf_dim=4, mlp_dim=4, mlp_layers=(8, 4), max_epochs=1)
    run = train(snapshot, protocol, config, tmp_path / "out", baselines=False)
    total = len(snapshot.ratings) if protocol == "A" else run.summary["n_users"]
    done = [line for line in lines(caplog) if line.startswith(f"protocol {protocol}, neumf:")]
    assert done and re.fullmatch(
        rf"protocol {protocol}, neumf: {total}/{total} {unit} \(100%\), [\d.]+ s so far", done[-1]
    ), done


def test_forward_to_sends_the_lines_to_a_run_logger_for_a_block() -> None:
    received: list[tuple[int, str]] = []

    class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
        def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
            received.append((level, str(msg)))

    source = logging.getLogger(LOGGER)
    before = (source.level, source.propagate, list(source.handlers))
    with forward_to(RunLogger(logging.getLogger("run"), {})):
        progress.log.info("epoch %d done", 3)
        assert source.propagate is False  # a console showing the run's logs prints it once
    progress.log.info("not forwarded")
    assert received == [(logging.INFO, "epoch 3 done")]
    assert (source.level, source.propagate, list(source.handlers)) == before


@pytest.mark.parametrize(
    ("tty", "setting", "bar"),
    [(True, None, True), (False, None, False), (True, False, False), (False, True, True)],
)
def test_the_progress_bar_is_on_when_the_output_is_a_terminal(
    monkeypatch: pytest.MonkeyPatch, tty: bool, setting: bool | None, bar: bool
) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setattr("sys.stdout", Stream())
    config = TrainConfig(enable_progress_bar=setting, accelerator="cpu", devices=1)
    trainer = build_trainer(config, [])
    assert (trainer.progress_bar_callback is not None) is bar
