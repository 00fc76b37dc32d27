"""progress.jsonl: typed events, one writer, one reader (no TensorFlow here)."""

from __future__ import annotations

import json

import pytest

from lib import jobs, progress, runstore
from lib.progress import (
    BatchEvent,
    EndEvent,
    EpochEvent,
    MetricsEvent,
    PhaseEvent,
    ProgressLog,
    StartEvent,
)


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    return path


def batch(epoch: int, b: int, t: float, **kw) -> BatchEvent:
    return BatchEvent(epoch=epoch, epochs=4, batch=b, steps=10, loss=0.5, time=t, **kw)


EVENTS = [
    PhaseEvent(phase="loading data", time=1.0),
    StartEvent(epochs=4, steps=10, initial_epoch=0, batch_size=32, time=2.0),
    BatchEvent(
        epoch=0,
        epochs=4,
        batch=3,
        steps=10,
        loss=2.1,
        accuracy=0.2,
        lr=0.01,
        images_per_sec=640.0,
        elapsed=1.5,
        eta=18.5,
        time=3.0,
    ),
    EpochEvent(epoch=0, epochs=4, steps=10, logs={"loss": 1.9, "val_accuracy": 0.4}, time=4.0),
    MetricsEvent(metrics={"test_accuracy": 0.9, "class_names": ["a", "b"]}, time=5.0),
    EndEvent(state="completed", time=6.0),
]


def test_every_event_type_round_trips_through_the_file(run_dir):
    log = ProgressLog(run_dir)
    for event in EVENTS[:3]:
        log.write(event)  # opened and closed per line
    log.open()
    for event in EVENTS[3:]:
        log.write(event)  # one handle, flushed per line
    log.close()
    assert progress.read_events(run_dir) == EVENTS
    lines = (run_dir / runstore.PROGRESS_FILE).read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == [
        "phase",
        "start",
        "batch",
        "epoch",
        "metrics",
        "end",
    ]
    assert list(json.loads(lines[2]))[:2] == ["time", "type"]


def test_the_reader_follows_the_latest_attempt(run_dir):
    for event in [
        PhaseEvent(phase="loading data", time=1.0),
        StartEvent(epochs=4, steps=10, time=2.0),
        batch(0, 5, 3.0),
        EpochEvent(epoch=0, epochs=4, steps=10, logs={"loss": 0.4}, time=4.0),
        batch(1, 2, 5.0),
        batch(1, 4, 6.0),
    ]:
        progress.append_event(run_dir, event)
    p = jobs.read_progress(run_dir)
    assert isinstance(p, progress.Progress) and jobs.Progress is progress.Progress
    assert p.phase == "loading data"
    assert [ev.batch for ev in p.live] == [2, 4]  # the epoch in progress only
    assert p.latest is p.batch and p.batch.batch == 4
    assert p.fraction_epochs == pytest.approx((1 + 4 / 10) / 4)
    assert p.epoch_logs == {"loss": 0.4}
    assert p.latest.position == pytest.approx(1.4)

    progress.append_event(run_dir, EpochEvent(epoch=1, epochs=4, steps=10, eta=7.0, time=7.0))
    p = jobs.read_progress(run_dir)
    assert p.latest is p.epoch and p.live == []
    assert p.fraction_epochs == pytest.approx(2 / 4) and p.eta == 7.0
    assert p.latest.batches_done == 10

    # A resume: its start event drops the previous attempt's batch events.
    progress.append_event(run_dir, StartEvent(epochs=4, steps=10, initial_epoch=2, time=8.0))
    p = jobs.read_progress(run_dir)
    assert p.start.initial_epoch == 2 and p.batch is None and p.live == []


def test_the_reader_reads_only_the_tail_and_skips_what_it_cannot_parse(run_dir):
    log = ProgressLog(run_dir).open()
    for i in range(2000):
        log.write(batch(0, i % 10 + 1, float(i)))
    log.close()
    with open(run_dir / runstore.PROGRESS_FILE, "a", encoding="utf-8") as fh:
        fh.write('{"time": 1e9, "type": "from_the_future", "x": 1}\n')
        fh.write('{"time": 1e9, "type": "batch", "epoch": 0, "ba')  # being written
    p = progress.read_progress(run_dir, tail_bytes=4096)
    assert 0 < len(p.live) < 100  # only the tail was read
    assert p.batch.time == 1999.0  # the unknown type and the cut line are skipped
    assert progress.read_progress(run_dir / "missing") == progress.Progress()


def test_events_still_answer_the_raw_json_keys():
    ev = EVENTS[2]
    assert ev["type"] == "batch" and ev["batch"] == 3 and ev["images_per_sec"] == 640.0
    assert ev.get("eta") == 18.5 and ev.get("nothing", 0) == 0
    with pytest.raises(KeyError):
        ev["nothing"]
    epoch = EVENTS[3]
    assert epoch.get("logs", {})["val_accuracy"] == 0.4 and epoch.get("steps", 0) == 10


def test_lines_of_older_runs_parse_and_extra_keys_are_ignored():
    line = '{"time": 5, "type": "epoch", "epoch": 2, "epochs": 3, "logs": {}, "new_key": 1}'
    ev = progress.parse_event(line)
    assert isinstance(ev, EpochEvent) and ev.epoch == 2 and ev.steps == 0
    assert progress.parse_event("not json") is None
    assert progress.parse_event('{"type": "batch", "epoch": 0, "unexpected": [1]}').epoch == 0
    assert progress.parse_event("[1, 2]") is None


def test_attempt_seconds_counts_each_attempt_that_trained_an_epoch(run_dir):
    events = [
        StartEvent(time=1.0),
        EpochEvent(epoch=0, elapsed=3.0, time=2.0),
        EpochEvent(epoch=1, elapsed=6.5, time=3.0),
        StartEvent(initial_epoch=2, time=4.0),
        batch(2, 1, 5.0),
        StartEvent(initial_epoch=2, time=6.0),
        EpochEvent(epoch=2, elapsed=2.0, time=7.0),
    ]
    assert progress.attempt_seconds(events) == [6.5, 0.0, 2.0]
