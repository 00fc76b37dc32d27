"""lib.lr_finder: the exponential sweep, the smoothing, the suggestion, on a tiny real problem."""

from __future__ import annotations

import itertools
import math
import os
import time

import pytest

from lib import jobs, lr_finder, runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig

TINY = RunConfig(
    data=DataConfig(source="digits"),
    model=ModelConfig(
        preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
    ),
    train=TrainConfig(batch_size=32),
)


def test_sweep_is_exponential_between_its_ends():
    rates = lr_finder.sweep_rates(5, 1e-4, 1.0)
    assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1.0)
    assert [b / a for a, b in itertools.pairwise(rates)] == pytest.approx([10.0] * 4)
    with pytest.raises(lr_finder.LRFinderError, match="at least 2 steps"):
        lr_finder.sweep_rates(1)
    with pytest.raises(lr_finder.LRFinderError, match="lowest rate"):
        lr_finder.sweep_rates(10, 1.0, 0.1)


def test_smoothing_is_bias_corrected_and_keeps_divergence():
    assert lr_finder.smooth([2.0] * 5) == pytest.approx([2.0] * 5)
    assert lr_finder.smooth([1.0, math.nan])[-1] == math.inf


def test_suggestion_is_a_tenth_of_the_minimum():
    rates = lr_finder.sweep_rates(101, 1e-5, 1.0)
    # A loss that falls until 1e-2, then rises: a parabola in log10(rate).
    losses = [(math.log10(r) + 2) ** 2 + 1 for r in rates]
    suggestion, at_min = lr_finder.suggest(rates, losses)
    assert at_min == pytest.approx(1e-2, rel=0.15)
    assert suggestion == pytest.approx(at_min / 10)


def test_a_curve_that_diverges_at_once_gives_a_message():
    rates = lr_finder.sweep_rates(20)
    with pytest.raises(lr_finder.LRFinderError, match="diverged at once"):
        lr_finder.suggest(rates, [1.0, 2.0, 3.0] + [math.inf] * 17)


def test_find_lr_on_a_tiny_problem(tmp_path):
    result = lr_finder.find_lr(TINY, steps=80, min_lr=1e-5, max_lr=3.0)
    n = len(result.learning_rates)
    assert 20 < n <= 80 and len(result.losses) == n
    assert result.learning_rates == sorted(result.learning_rates)
    # Adam on 8x8 digits learns between 1e-4 and 1e-1; the minimum lies above the suggestion.
    assert 1e-4 <= result.suggestion <= 1e-1
    assert result.min_loss_lr == pytest.approx(10 * result.suggestion)
    finite = [v for v in result.losses if v is not None]
    assert min(finite) < finite[0]  # the loss did fall along the sweep
    result.save(tmp_path / "r.json")
    assert lr_finder.LRFindResult.load(tmp_path / "r.json") == result


def test_find_lr_stops_when_the_loss_diverges():
    cfg = TINY.replace(train=TINY.train.replace(optimizer="sgd", momentum=0.0))
    result = lr_finder.find_lr(cfg, steps=120, min_lr=1e-3, max_lr=1e4)
    assert result.diverged and len(result.learning_rates) < 120


def test_background_sweep_writes_its_result():
    folder = lr_finder.start_background(TINY, "draft1", steps=30)
    deadline = time.monotonic() + 240
    while lr_finder.state(folder)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
    state = lr_finder.state(folder)
    assert state["state"] == "done", (state, (folder / "log.txt").read_text())
    assert len(state["result"].learning_rates) == 30
    assert (state["done"], state["total"]) == (30, 30)  # its last step event
    assert runstore.read_status(folder).pid not in (None, os.getpid())  # its own process


def test_a_sweep_whose_process_died_reads_failed():
    folder = lr_finder.folder_for("draft4")
    folder.mkdir(parents=True)
    runstore.atomic_write_json(
        folder / runstore.STATUS_FILE, {"state": "running", "pid": 2**22 + 7}
    )
    state = lr_finder.state(folder)
    assert state["state"] == "failed" and "ended without finishing" in state["error"]
    assert lr_finder.state(lr_finder.folder_for("never"))["state"] == "none"


def test_a_result_an_older_version_left_without_a_status_is_still_shown():
    folder = lr_finder.folder_for("draft5")
    folder.mkdir(parents=True)
    result = lr_finder.LRFindResult(
        learning_rates=[1e-3, 1e-2], losses=[2.0, 1.5], raw_losses=[2.0, 1.0],
        suggestion=1e-3, min_loss_lr=1e-2, diverged=False, seconds=1.0,
    )  # fmt: skip
    result.save(folder / lr_finder.RESULT_FILE)
    state = lr_finder.state(folder)
    assert state["state"] == "done" and state["result"].suggestion == 1e-3


def test_a_second_sweep_while_one_runs_is_refused():
    folder = lr_finder.folder_for("draft3")
    folder.mkdir(parents=True)
    me = {"pid": os.getpid(), "pid_start": jobs.process_start_ticks(os.getpid())}
    runstore.atomic_write_json(folder / runstore.STATUS_FILE, {"state": "running", **me})
    assert lr_finder.state(folder)["state"] == "running"
    with pytest.raises(lr_finder.LRFinderError, match="running already"):
        lr_finder.start_background(TINY, "draft3")


def test_background_sweep_of_a_recipe_that_cannot_train_fails_with_its_message():
    bad = TINY.replace(train=TINY.train.replace(batch_size=8000))
    folder = lr_finder.start_background(bad, "draft2", steps=10)
    deadline = time.monotonic() + 240
    while lr_finder.state(folder)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
    state = lr_finder.state(folder)
    assert state["state"] == "failed" and "batch_size" in state["error"]
