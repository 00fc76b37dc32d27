"""The job runner with real worker processes: the queue across workers, SIGKILL + resume.

Each test starts real workers (``python -m lib train``); each cold TensorFlow
import takes 10-30 s on the shared 2-core machine, hence the timeouts. The
quick rules of each action are in tests/unit/test_jobs.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from tiny_runs import REAP_DEADLINE_S, WORKER_TIMEOUT_S, state, tiny_config, wait_for

from lib import jobs, runstore
from lib.workspace import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _events(run_dir) -> list[dict]:
    out = []
    for line in (run_dir / runstore.PROGRESS_FILE).read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def test_queue_holds_the_second_run_until_the_first_ends(monkeypatch):
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "1")
    first = jobs.start_run(tiny_config(name="first"), validate=False)
    second = jobs.start_run(tiny_config(name="second"), validate=False)
    assert state(first) == "running" and state(second) == "queued"
    jobs.poll()
    assert state(second) == "queued"  # one slot, taken
    # No poll from here on: the first worker starts the second when it exits.
    wait_for(lambda: state(first) == "completed", WORKER_TIMEOUT_S, "first run", poll=False)
    # The first worker records its end, then schedules: the second starts without a poll.
    wait_for(lambda: state(second) != "queued", 30, "the second run to start", poll=False)
    wait_for(lambda: state(second) == "completed", WORKER_TIMEOUT_S, "second run", poll=False)
    s1, s2 = (runstore.read_status(runstore.run_dir(r)) for r in (first, second))
    assert s2.started >= s1.ended - 0.5  # never both at once
    assert "run " in (runstore.run_dir(first) / runstore.LOG_FILE).read_text()


def test_sigkill_then_resume_loses_at_most_one_epoch(tmp_path):
    """Kill the CLI worker at a random point after epoch 1, resume, count epochs trained."""
    epochs = 30  # tiny epochs take a fraction of a second: enough of them to kill one
    recipe = tmp_path / "run.json"
    tiny_config(epochs=epochs).save(str(recipe))
    run_dir = runstore.runs_root() / "killed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(tmp_path / "out.txt", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lib", "train", str(recipe), "--run-dir", str(run_dir)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: jobs.read_history(run_dir).get("epoch"),
            WORKER_TIMEOUT_S,
            "the first epoch",
            poll=False,
        )
        time.sleep(random.Random().uniform(0.0, 1.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    epoch_events = [e for e in _events(run_dir) if e["type"] == "epoch"]
    finished_before_kill = max(e["epoch"] for e in epoch_events) + 1
    assert finished_before_kill < epochs, "the run ended before the kill; make it longer"

    t0 = time.monotonic()
    wait_for(lambda: state("killed") == "failed", REAP_DEADLINE_S, "the reaper")
    assert time.monotonic() - t0 < REAP_DEADLINE_S

    # Resume the way the CLI does (`python -m lib train --run-dir DIR`), in this process
    # rather than in a second cold worker.
    from lib import cli

    assert cli.main(["train", "--run-dir", str(run_dir)]) == 0
    assert state("killed") == "completed"

    starts = [e for e in _events(run_dir) if e["type"] == "start"]
    assert len(starts) == 2
    resumed_at = starts[1]["initial_epoch"]
    assert finished_before_kill - 1 <= resumed_at <= finished_before_kill  # ≤ 1 epoch lost
    after = [e for e in _events(run_dir) if e["type"] == "epoch" and e["time"] > starts[1]["time"]]
    assert [e["epoch"] for e in after] == list(range(resumed_at, epochs))
    assert jobs.read_history(run_dir)["epoch"] == list(range(1, epochs + 1))  # each epoch once
    assert runstore.read_metrics(run_dir)["epochs_done"] == epochs
