"""The job runner: reaper, temporary-file cleanup and the state rules of each action.

The tests with real training workers (the queue across workers, SIGKILL + resume)
are in tests/slow/test_jobs_processes.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
from tiny_runs import REAP_DEADLINE_S, state, tiny_config, wait_for

from lib import jobs, runstore


def fake_running(run_id: str, pid: int) -> None:
    runstore.update_status(
        runstore.run_dir(run_id),
        state="running",
        pid=pid,
        pid_start=jobs.process_start_ticks(pid),
        started=time.time(),
    )


def test_reaper_marks_a_dead_worker_failed_within_10_seconds():
    run_id = runstore.create_run(tiny_config()).name
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    fake_running(run_id, proc.pid)
    assert jobs.reap() == [] and state(run_id) == "running"
    proc.kill()  # not waited for: a zombie child must read as dead too
    t0 = time.monotonic()
    wait_for(
        lambda: jobs.reap() or state(run_id) == "failed", REAP_DEADLINE_S, "the reaper", poll=False
    )
    assert time.monotonic() - t0 < REAP_DEADLINE_S
    status = runstore.read_status(runstore.run_dir(run_id))
    assert status.state == "failed" and "Resume" in status.error and status.ended
    proc.wait()


def test_reaper_sees_a_reused_pid():
    run_id = runstore.create_run(tiny_config()).name
    # Our own pid is alive, but with another start time it is not the run's worker.
    runstore.update_status(
        runstore.run_dir(run_id),
        state="running",
        pid=os.getpid(),
        pid_start=jobs.process_start_ticks(os.getpid()) - 1,
    )
    assert jobs.reap() == [run_id]
    assert state(run_id) == "failed"


def test_action_rules_follow_the_run_state():
    busy = runstore.create_run(tiny_config(name="busy")).name
    fake_running(busy, os.getpid())  # holds the only slot: nothing gets spawned here
    other = runstore.create_run(tiny_config(name="other")).name

    assert jobs.schedule(limit=1) == [] and state(other) == "queued"
    with pytest.raises(jobs.JobError, match="stop it before"):
        jobs.delete(busy)
    with pytest.raises(jobs.JobError, match="only stopped or failed"):
        jobs.resume(busy)
    jobs.request_stop(busy)
    assert (runstore.run_dir(busy) / runstore.STOP_FILE).exists()
    assert runstore.read_status(runstore.run_dir(busy)).stop_requested

    assert jobs.request_stop(other).state == "stopped"  # a queued run stops at once
    with pytest.raises(jobs.JobError, match="only queued or running"):
        jobs.request_stop(other)
    jobs.resume(other, limit=1)
    assert state(other) == "queued"

    copy = jobs.clone(other, start=False)
    assert copy != other and state(copy) == "queued"
    assert runstore.read_config(runstore.run_dir(copy)) == tiny_config(name="other")

    jobs.delete(other)
    assert not runstore.run_dir(other).exists()
    with pytest.raises(jobs.JobError, match="no run"):
        jobs.delete(other)
    assert {r.run_id for r in jobs.list_runs()} == {busy, copy}


def test_max_concurrent_reads_the_environment(monkeypatch):
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "3")
    assert jobs.max_concurrent() == 3 and jobs.max_concurrent(2) == 2
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "many")
    with pytest.raises(jobs.JobError, match=jobs.MAX_CONCURRENT_ENV):
        jobs.max_concurrent()


def _events(run_dir) -> list[dict]:
    out = []
    for line in (run_dir / runstore.PROGRESS_FILE).read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


@pytest.mark.parametrize("end", ["completed", "stopped", "failed"])
def test_finish_removes_the_backup_only_after_recording_completed(monkeypatch, end):
    """A kill before the status write must leave a resumable run, not a backup-less one."""
    path = runstore.create_run(tiny_config())
    (path / runstore.BACKUP_DIR).mkdir()
    (path / runstore.BACKUP_DIR / "training_metadata.json").write_text('{"epoch": 2}')
    seen = []
    write_status = runstore.write_status

    def recording(run, status):
        seen.append((status.state, (run / runstore.BACKUP_DIR).exists()))
        write_status(run, status)

    monkeypatch.setattr(runstore, "write_status", recording)
    jobs._finish(path, end)
    assert seen == [(end, True)]  # the backup was still there when the state was written
    assert state(path.name) == end
    assert (path / runstore.BACKUP_DIR).exists() == (end != "completed")


LITTER = [
    ".tmp-4242-model.keras",  # AtomicModelCheckpoint killed mid-save
    ".tmp-17-last.weights.h5",  # LastWeights
    ".status.json.k3_9xq2a.tmp",  # runstore.atomic_write_bytes (mkstemp)
    ".history.csv.abcdefgh.tmp",
    ".predictions.npz.00000000.tmp",
    "backup/.latest.weights.h5.zz_zz_zz.tmp",  # a .bkp restore of lib.training
    "backup/.training_metadata.json.a1b2c3d4.tmp",
]
NOT_LITTER = [
    "notes.tmp",
    ".tmp-model.keras",  # no pid: not a name Kestrel writes
    ".tmp-12-mine.txt",  # a pid, but not one of the run's files
    ".mine.txt.abcdefgh.tmp",
    ".status.json.short.tmp",  # not mkstemp's 8 characters
    "backup/latest.weights.h5.bkp",
    "tensorboard/.tmp-1-model.keras",  # only the run folder and backup/ are cleaned
]


def test_remove_temp_files_deletes_only_kestrels_own_temporaries():
    path = runstore.create_run(tiny_config())
    for name in LITTER + NOT_LITTER:
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_bytes(b"x")
    assert jobs.remove_temp_files(path) == sorted(LITTER)
    assert [n for n in LITTER + NOT_LITTER if (path / n).exists()] == NOT_LITTER
    assert runstore.read_status(path).state == "queued"  # the real files are untouched
    assert jobs.remove_temp_files(path) == []


@pytest.mark.slow
def test_kill_between_training_and_completed_status_resumes_without_retraining():
    """Kill after train_run returned, before _finish: Resume trains no epoch and completes."""
    from lib.training import train_run

    path = runstore.create_run(tiny_config(epochs=2))
    jobs._claim(path)
    assert train_run(path).state == "completed"  # what run_here does before _finish...
    # ...and then the SIGKILL: the status still says running, the reaper marks it failed.
    runstore.update_status(path, state="failed", error="killed")
    meta = json.loads((path / runstore.BACKUP_DIR / "training_metadata.json").read_text())
    assert meta["epoch"] == 2  # the backup survived the end of training
    (path / ".tmp-999999-model.keras").write_bytes(b"half a zip")  # litter of the kill
    metrics_before = runstore.read_metrics(path)

    # Resume the way the CLI does (`python -m lib train --run-dir DIR`), in this process.
    assert jobs.run_here(path, echo=False, claim=True) == 0

    assert state(path.name) == "completed"
    assert not (path / runstore.BACKUP_DIR).exists()
    assert not (path / ".tmp-999999-model.keras").exists()
    starts = [e for e in _events(path) if e["type"] == "start"]
    assert len(starts) == 1  # the resume started no epoch
    assert jobs.read_history(path)["epoch"] == [1, 2]
    metrics = runstore.read_metrics(path)
    assert metrics["epochs_done"] == 2
    assert metrics["test_accuracy"] == pytest.approx(metrics_before["test_accuracy"])
    # The first attempt's training time still counts, though this one wrote no start event.
    assert metrics["train_seconds"] > 0.5 * metrics_before["train_seconds"]


def test_a_worker_finds_itself_recorded_even_when_it_starts_before_the_status_write():
    """The scheduler records the pid under the lock; the worker decides under it too.

    A spawned worker used to read status.json before the scheduler's write and then
    refuse its own run as "already running (pid <its own>)".
    """
    path = runstore.create_run(tiny_config(epochs=1))
    runstore.update_status(
        path,
        state="running",
        pid=os.getpid(),
        pid_start=jobs.process_start_ticks(os.getpid()),
        attempts=1,
    )
    assert jobs.run_here(path, echo=False, claim=True) == 0
    status = runstore.read_status(path)
    assert (status.state, status.attempts) == ("completed", 1)


def test_a_run_of_another_live_worker_is_not_taken_over(tmp_path):
    path = runstore.create_run(tiny_config(epochs=1))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        runstore.update_status(
            path, state="running", pid=other.pid, pid_start=jobs.process_start_ticks(other.pid)
        )
        assert jobs.run_here(path, echo=False, claim=True) == 2
        assert jobs.run_here(path, echo=False, claim=False) == 2
        assert runstore.read_status(path).pid == other.pid
    finally:
        other.kill()
        other.wait()


# ---------------------------------------------------------------------------
# The one way background processes start, and side jobs (health checks, robustness reports)


def test_spawn_worker_starts_a_detached_process_in_the_project_with_the_workspace(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("earlier attempt\n")
    code = (
        "import os, sys; print(os.getcwd()); print(os.environ['KESTREL_HOME']); "
        "print(os.environ['PYTHONUNBUFFERED']); print(os.getsid(0) == os.getpid())"
    )
    proc = jobs.spawn_worker(["-c", code], log)
    assert proc.wait(timeout=30) == 0
    lines = log.read_text().splitlines()
    assert lines == [
        "earlier attempt",  # appended, not truncated
        str(jobs.PROJECT_ROOT),
        os.environ["KESTREL_HOME"],
        "1",
        "True",  # its own session: a Ctrl+C or a closed terminal of the server does not reach it
    ]


def test_a_side_job_runs_reports_and_reads_failed_when_its_process_dies(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    pid = jobs.start_side_job(folder, ["-c", "import time; time.sleep(60)"])
    status = jobs.side_job_status(folder, "the check")
    assert status.state == "running" and status.pid == pid and status.attempts == 1
    assert status.pid_start == jobs.process_start_ticks(pid)
    os.kill(pid, 9)
    wait_for(
        lambda: jobs.side_job_status(folder, "the check").state == "failed",
        REAP_DEADLINE_S,
        "the dead side job",
        poll=False,
    )
    status = runstore.read_status(folder)
    assert status.error == "the check's process ended without finishing; start it again"
    assert status.ended


def test_a_side_job_whose_process_cannot_start_reads_failed_not_queued(tmp_path, monkeypatch):
    def no_process(args, log_path):
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(jobs, "spawn_worker", no_process)
    with pytest.raises(jobs.JobError, match=r"could not start .*Resource temporarily"):
        jobs.start_side_job(tmp_path, ["-c", "pass"])
    status = jobs.side_job_status(tmp_path, "the check")
    assert status.state == "failed" and "start it again" in status.error


def test_run_side_job_records_phases_results_and_each_kind_of_failure(tmp_path, capsys):
    from lib.errors import KestrelError
    from lib.progress import EndEvent, PhaseEvent, read_events

    def good(phase):
        phase("counting")
        assert runstore.read_status(tmp_path / "good").pid == os.getpid()
        return 42

    assert jobs.run_side_job(tmp_path / "good", good, echo=True) == ("completed", "", 42)
    assert capsys.readouterr().out == "counting\n"
    events = read_events(tmp_path / "good")
    assert [type(e) for e in events] == [PhaseEvent, EndEvent]
    assert events[0].phase == "counting" and events[1].state == "completed"
    status = runstore.read_status(tmp_path / "good")
    assert status.state == "completed" and status.ended >= status.started

    def refused(phase):
        raise KestrelError("the dataset has no train images to check")

    state_, error, result = jobs.run_side_job(tmp_path / "refused", refused)
    assert (state_, error, result) == ("failed", "the dataset has no train images to check", None)
    assert runstore.read_status(tmp_path / "refused").error == error

    def bug(phase):
        raise ZeroDivisionError("division by zero")

    state_, error, _ = jobs.run_side_job(tmp_path / "bug", bug)
    assert state_ == "failed" and error == "unexpected error: ZeroDivisionError: division by zero"
    assert "Traceback" in capsys.readouterr().err
    assert read_events(tmp_path / "bug")[-1].error == error
