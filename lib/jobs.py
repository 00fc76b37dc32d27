"""The job runner: background training processes, a queue, a reaper, stop/resume/clone/delete.

Every run trains in its own process (``python -m lib train --run-dir DIR``), started
in a new session so it outlives the Streamlit script, the browser tab and the
server. There is no long-lived scheduler thread: :func:`schedule` is called
whenever something might have freed a slot (a page poll, a new run, a worker
exiting) and starts queued runs while fewer than N are running. A lock file
(``fcntl.flock``) makes every status change mutually exclusive across processes.

:func:`reap` marks a "running" run whose process is gone (or whose pid now
belongs to another process: the start time in /proc differs) as failed, so no
run stays "running" forever, also after a server restart. Pages call
:func:`poll` (reap + schedule) every time their live panel refreshes.

Reading runs (tables, labels, history) is the job of :mod:`lib.runs`; this module controls
processes. It does not import TensorFlow; pages import it freely.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib import progress, runs, runstore
from lib.config import RunConfig
from lib.errors import KestrelError
from lib.runstore import RunStatus
from lib.workspace import PROJECT_ROOT, workspace_root

MAX_CONCURRENT_ENV = "KESTREL_MAX_CONCURRENT_RUNS"
LOCK_FILE = ".jobs.lock"
PROGRESS_TAIL_BYTES = 64 * 1024


class JobError(KestrelError):
    """An action that does not fit the run's state (e.g. deleting a running run)."""


# ---------------------------------------------------------------------------
# Locking and process checks


def max_concurrent(value: int | None = None) -> int:
    """How many runs may train at once: ``value``, else $KESTREL_MAX_CONCURRENT_RUNS, else 1."""
    if value is None:
        raw = os.environ.get(MAX_CONCURRENT_ENV, "").strip()
        try:
            value = int(raw) if raw else 1
        except ValueError:
            raise JobError(f"{MAX_CONCURRENT_ENV} must be a whole number, got {raw!r}") from None
    return max(1, int(value))


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Hold the workspace-wide job lock (one status change at a time, across processes)."""
    path = runstore.runs_root() / LOCK_FILE
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of the whole line


def process_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether ``pid`` is still the process that was started (not dead, not reused)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # collect our own exited children (no zombies)
    ticks = process_start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks


# ---------------------------------------------------------------------------
# Starting, scheduling, reaping


def spawn_worker(args: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``python ARGS`` as a detached worker; its output is appended to ``log_path``.

    Every background process of Kestrel starts here: training runs, health checks,
    robustness reports, compression jobs, learning-rate sweeps and study workers. The
    worker runs in a new session from the project root, so it outlives the Streamlit
    script, the browser tab and the server; it sees the same workspace
    ($KESTREL_HOME) and writes its log unbuffered.
    """
    env = os.environ.copy()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["KESTREL_HOME"] = str(workspace_root())
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=str(PROJECT_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _spawn(run_dir: Path) -> subprocess.Popen:
    """Start the training worker of ``run_dir``; its output goes to log.txt."""
    return spawn_worker(
        ["-m", "lib", "train", "--run-dir", str(run_dir)], run_dir / runstore.LOG_FILE
    )


# ---------------------------------------------------------------------------
# Side jobs: one background process per folder, with a status.json like a run's
# (health checks, robustness reports, compression jobs, learning-rate sweeps). They are
# not queued: they start at once.


def start_side_job(folder: Path, args: list[str]) -> int:
    """Start the worker ``python ARGS`` for ``folder`` and record it as running; its pid.

    The folder's status.json goes from "queued" to "running" with the worker's pid and
    start time, so :func:`side_job_status` can tell later whether it is still alive; to
    "failed" when no process could be started (JobError).
    """
    folder = Path(folder)
    runstore.write_status(folder, RunStatus(state="queued", created=time.time()))
    try:
        proc = spawn_worker(args, folder / runstore.LOG_FILE)
    except OSError as exc:  # no process to wait for: say so, rather than "queued" for good
        message = f"the background process could not start ({exc}); start it again"
        runstore.update_status(folder, state="failed", ended=time.time(), error=message)
        raise JobError(message) from None
    runstore.update_status(
        folder, state="running", started=time.time(), pid=proc.pid,
        pid_start=process_start_ticks(proc.pid), attempts=1,
    )  # fmt: skip
    return proc.pid


def side_job_status(folder: Path, what: str) -> RunStatus:
    """The side job's status; a "running" one whose process is gone is marked failed.

    ``what`` names the job in the message ("the check", "the report").
    """
    status = runstore.read_status(folder)
    if status.state == "running" and not process_alive(status.pid, status.pid_start):
        # The worker may have just finished: read again before calling it dead.
        status = runstore.read_status(folder)
        if status.state == "running":
            status = runstore.update_status(
                folder, state="failed", ended=time.time(),
                error=f"{what}'s process ended without finishing; start it again",
            )  # fmt: skip
    return status


def run_side_job(folder: Path, work, *, echo: bool = False) -> tuple[str, str, Any]:
    """Run ``work(phase)`` as the side job of ``folder``; (state, error, result).

    ``phase(text)`` records a phase event (and prints it with ``echo``);
    ``phase(text, done=n, total=N)`` one that counts (n of N done). The status is
    "running" with this process' pid while ``work`` runs; afterwards it is "completed",
    or "failed" with the error (a KestrelError's message as it is, anything else with its
    type and the traceback in the log). The end is recorded as an event too.
    """
    from lib.progress import EndEvent, PhaseEvent, append_event

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    has_status = (folder / runstore.STATUS_FILE).is_file()
    status = runstore.read_status(folder) if has_status else None
    if status is None or status.state != "running" or status.pid != os.getpid():
        now = time.time()
        created = status.created if status is not None and status.created else now
        runstore.write_status(
            folder, RunStatus(state="running", created=created, started=now, pid=os.getpid(),
                              pid_start=process_start_ticks(os.getpid()), attempts=1),
        )  # fmt: skip

    def phase(text: str, done: int = 0, total: int = 0) -> None:
        append_event(folder, PhaseEvent(phase=text, done=done, total=total))
        if echo:
            print(text, flush=True)

    result = None
    try:
        result = work(phase)
        state, error = "completed", ""
    except KestrelError as exc:
        state, error = "failed", str(exc)
    except BaseException as exc:
        traceback.print_exc()
        state, error = "failed", f"unexpected error: {type(exc).__name__}: {exc}"
    append_event(folder, EndEvent(state=state, error=error))
    runstore.update_status(folder, state=state, error=error, ended=time.time())
    return state, error, result


def _reap_locked() -> list[str]:
    reaped = []
    for path in runstore.list_run_dirs():
        status = runstore.read_status(path)
        if status.state != "running" or process_alive(status.pid, status.pid_start):
            continue
        runstore.update_status(
            path,
            state="failed",
            ended=time.time(),
            error=(
                f"the training process (pid {status.pid}) ended without reporting: it was "
                "killed, crashed or the machine restarted. Resume continues from the last "
                f"finished epoch.{_last_log_line(path)}"
            ),
        )
        reaped.append(path.name)
    return reaped


def _last_log_line(path: Path) -> str:
    """The last line of the worker log when it looks like an error, for the message."""
    try:
        with open(path / runstore.LOG_FILE, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    if lines and ("Error" in lines[-1] or "Killed" in lines[-1]):
        return f" Last log line: {lines[-1][:300]}"
    return ""


def reap() -> list[str]:
    """Mark running runs whose process is gone as failed; returns their ids."""
    with _lock():
        return _reap_locked()


def schedule(limit: int | None = None) -> list[str]:
    """Start queued runs, oldest first, while fewer than ``limit`` are running.

    Safe to call from any process at any time (pages on every poll, workers at exit).
    Returns the ids of the runs it started.
    """
    limit = max_concurrent(limit)
    started = []
    with _lock():
        _reap_locked()
        statuses = [(p, runstore.read_status(p)) for p in runstore.list_run_dirs()]
        running = sum(1 for _, s in statuses if s.state == "running")
        queued = sorted(
            ((p, s) for p, s in statuses if s.state == "queued"), key=lambda ps: ps[1].created
        )
        for path, status in queued[: max(0, limit - running)]:
            try:
                proc = _spawn(path)
            except OSError as exc:
                runstore.update_status(
                    path,
                    state="failed",
                    ended=time.time(),
                    error=f"could not start the training process: {exc}",
                )
                continue
            runstore.update_status(
                path,
                state="running",
                pid=proc.pid,
                pid_start=process_start_ticks(proc.pid),
                started=time.time(),
                ended=None,
                error="",
                attempts=status.attempts + 1,
            )
            started.append(path.name)
    return started


def poll(limit: int | None = None) -> list[str]:
    """What a page calls on every refresh: reap dead runs and start queued ones."""
    return schedule(limit)


def start_run(config: RunConfig, *, limit: int | None = None, validate: bool = True) -> str:
    """Check ``config``, create its run directory, queue it and schedule.

    Args:
        config: the recipe.
        limit: concurrent-run limit for this scheduling pass (default: env or 1).
        validate: check the config against its dataset first (loads the dataset).

    Returns:
        The new run id.

    Raises:
        lib.training.RunConfigError, lib.data.DatasetError, lib.preflight.StartRefused:
            the config cannot train (weights that cannot be had included);
            nothing was created.
    """
    if validate:
        from lib.preflight import check_startable

        check_startable(config)
    path = runstore.create_run(config)
    schedule(limit)
    return path.name


def request_stop(run_id: str) -> RunStatus:
    """Ask a run to stop gracefully (after the current batch, with a checkpoint).

    A queued run is stopped at once. Raises JobError for runs that are not active.
    """
    path = _existing(run_id)
    with _lock():
        status = runstore.read_status(path)
        if status.state == "queued":
            return runstore.update_status(
                path, state="stopped", ended=time.time(), stop_requested=True
            )
        if status.state != "running":
            raise JobError(f"run {run_id} is {status.state}; only queued or running runs stop")
        runstore.atomic_write_bytes(path / runstore.STOP_FILE, b"stop\n")
        return runstore.update_status(path, stop_requested=True)


def resume(run_id: str, *, limit: int | None = None) -> None:
    """Queue a stopped or failed run again; it continues from its last finished epoch."""
    path = _existing(run_id)
    with _lock():
        status = runstore.read_status(path)
        if status.state not in ("stopped", "failed"):
            raise JobError(
                f"run {run_id} is {status.state}; only stopped or failed runs can be resumed"
            )
        (path / runstore.STOP_FILE).unlink(missing_ok=True)
        runstore.update_status(
            path,
            state="queued",
            error="",
            warning="",
            ended=None,
            stop_requested=False,
            pid=None,
            pid_start=None,
        )
    schedule(limit)


def clone(run_id: str, *, start: bool = True, limit: int | None = None) -> str:
    """A new run with ``run_id``'s recipe; queued (and scheduled) when ``start``."""
    config = runstore.read_config(_existing(run_id))
    if start:
        return start_run(config, limit=limit)
    return runstore.create_run(config).name


def delete(run_id: str) -> None:
    """Delete a run and its files; refused while it is running (stop it first)."""
    path = _existing(run_id)
    with _lock():
        status = runstore.read_status(path)
        if status.state == "running" and process_alive(status.pid, status.pid_start):
            raise JobError(f"run {run_id} is running; stop it before deleting it")
        shutil.rmtree(path)


def _existing(run_id: str) -> Path:
    path = runstore.run_dir(run_id)
    if not (path / runstore.CONFIG_FILE).is_file():
        raise JobError(f"there is no run {run_id!r}")
    return path


# ---------------------------------------------------------------------------
# Worker side (python -m lib train)


def _claim(path: Path) -> None:
    runstore.update_status(
        path,
        state="running",
        pid=os.getpid(),
        pid_start=process_start_ticks(os.getpid()),
        started=time.time(),
        ended=None,
        error="",
        attempts=runstore.read_status(path).attempts + 1,
    )


def _finish(path: Path, state: str, error: str = "", warning: str = "") -> None:
    """Record how the attempt ended; a completed run's resume checkpoint goes after that.

    The order matters: a worker killed before the status write leaves a run that
    reads failed and still has backup/, so Resume sees every epoch done and only
    finishes, instead of training again from epoch 1.
    """
    with _lock():
        (path / runstore.STOP_FILE).unlink(missing_ok=True)
        runstore.update_status(
            path, state=state, ended=time.time(), error=error, warning=warning, stop_requested=False
        )
    if state == "completed":
        # The backup only serves resume, and a completed run is not resumed.
        shutil.rmtree(path / runstore.BACKUP_DIR, ignore_errors=True)


# Temporary names Kestrel's own atomic writes use in a run folder: ".tmp-<pid>-<name>"
# (lib.training's checkpoints) and ".<name>.<8 random chars>.tmp" (runstore, mkstemp).
_TMP_PID_NAME = re.compile(r"\.tmp-\d+-(?P<name>.+)")
_TMP_MKSTEMP_NAME = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp")
# The files those temporaries stand for: the run folder's own, and backup/'s
# (BackupAndRestore's pair and their ".bkp" copies, restored by lib.training).
_RUN_FILES = frozenset(
    value for key, value in vars(runstore).items() if key.endswith("_FILE") and "." in value
)
_BACKUP_FILES = runstore.BACKUP_FILES


def remove_temp_files(path: Path) -> list[str]:
    """Delete temporary files a killed worker left in run folder ``path`` (and its backup/).

    Only names Kestrel's own atomic writes create for the run's known files match;
    anything else in the folder is left alone. Call it while no other process
    writes into the run (at the start of a worker attempt, under the job lock).

    Returns:
        The removed files, relative to ``path``.
    """
    removed = []
    for folder, known in ((path, _RUN_FILES), (path / runstore.BACKUP_DIR, _BACKUP_FILES)):
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = _TMP_PID_NAME.fullmatch(entry.name) or _TMP_MKSTEMP_NAME.fullmatch(entry.name)
            if not match or match["name"] not in known or not entry.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(str(entry.relative_to(path)))
    return sorted(removed)


def _stop_on_sigterm(path: Path) -> None:
    """SIGTERM (a shutdown) becomes a graceful stop: finish the batch, checkpoint, exit."""

    def handler(signum, frame):
        with contextlib.suppress(OSError):
            (path / runstore.STOP_FILE).write_bytes(b"sigterm\n")

    signal.signal(signal.SIGTERM, handler)


def run_here(path: Path, *, echo: bool = True, claim: bool = True) -> int:
    """Train the run at ``path`` in this process and record the outcome in status.json.

    Args:
        path: the run directory.
        echo: print a progress bar.
        claim: mark the run as running under this process unless the scheduler
            spawned this process for it (then it is marked already); False refuses
            to train a run this process was not spawned for.

    Returns:
        A process exit code: 0 completed or stopped, 1 failed.
    """
    path = Path(path)
    with _lock():
        # Decided under the lock: the scheduler records a worker's pid before it
        # releases the lock, so a spawned worker always finds itself here.
        status = runstore.read_status(path)
        spawned_for_it = status.state == "running" and status.pid == os.getpid()
        if not spawned_for_it:
            if not claim:
                print(f"run {path.name} belongs to pid {status.pid}; not training", file=sys.stderr)
                return 2
            if status.state == "running" and process_alive(status.pid, status.pid_start):
                print(f"run {path.name} is already running (pid {status.pid})", file=sys.stderr)
                return 2
            _claim(path)
        # This process is the run's only worker now; status writers hold the lock.
        litter = remove_temp_files(path)
    if litter and echo:
        print(f"removed temporary files of an earlier attempt: {', '.join(litter)}", flush=True)
    _stop_on_sigterm(path)
    try:
        from lib.training import train_run

        extra = []
        if (path / runstore.TRIAL_FILE).is_file():  # a tuning trial: report to its study
            from lib.tuning import run_callbacks

            extra = run_callbacks(path)
        outcome = train_run(path, echo=echo, extra_callbacks=extra)
        state, error, warning = outcome.state, outcome.error, outcome.warning
    except BaseException as exc:  # record every way a run can end, then exit non-zero
        traceback.print_exc()
        state, error, warning = "failed", f"unexpected error: {type(exc).__name__}: {exc}", ""
        if isinstance(exc, KeyboardInterrupt):
            state, error = "stopped", ""
    _finish(path, state, error, warning)
    if echo:
        print(f"run {path.name}: {state}" + (f" — {error}" if error else ""), flush=True)
    with contextlib.suppress(Exception):
        schedule()  # a slot is free now: start the next queued run
    return 0 if state in ("completed", "stopped") else 1


# ---------------------------------------------------------------------------
# Reading runs is lib.runs' job (the cached read model); these names stay so that
# callers written against them keep working. New code uses lib.runs directly.

RunSummary = runs.RunView
summarize = runs.view_of
list_runs = runs.list_views
describe_dataset = runs.describe_dataset
read_history = runstore.read_history


# Progress events: lib.progress holds their schema, writer and reader.
Progress = progress.Progress


def read_progress(path: Path, tail_bytes: int = PROGRESS_TAIL_BYTES) -> Progress:
    """The run's latest progress from the tail of progress.jsonl (see lib.progress)."""
    return progress.read_progress(path, tail_bytes)


def read_lr_plan(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(path) / runstore.LR_PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_log_tail(path: Path, max_bytes: int = 8000) -> str:
    """The end of the worker's log, for the page's "log" expander."""
    try:
        with open(Path(path) / runstore.LOG_FILE, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
