"""The run store: one directory per run, the single source of truth for its state.

Layout of ``<workspace>/runs/<run_id>/``::

    config.json      the RunConfig (the whole recipe)
    status.json      state, timestamps, pid, error message (see RunStatus)
    history.csv      per-epoch metrics (keras CSVLogger)
    progress.jsonl   throttled batch/epoch progress events, one JSON per line
    model.keras      best model by validation metric
    last.weights.h5  weights after the last finished epoch
    backup/          keras BackupAndRestore checkpoint (resume): training_metadata.json
                     and latest.weights.h5, each with a ".bkp" copy of the previous one
    tensorboard/     TensorBoard logs
    metrics.json     final test/validation metrics
    predictions.npz  y_true, probabilities and image references of the test split
    log.txt          the worker's stdout and stderr
    lr_plan.json     the planned learning-rate curve (for the LR chart)
    stop.request     present while a graceful stop is asked for
    trial.json       a tuning trial's run: its study, storage and trial number (lib.tuning)
    ood.npz          unknown-detection statistics (lib.ood): class means, precision, threshold
    robustness.json  the robustness report (lib.robustness): accuracy per corruption and attack
    robustness/      the report job's status.json, progress and log

Files are written to a temporary name and renamed, so a reader never sees half a
file and a crash never leaves a half-written one behind as if complete.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lib.config import RunConfig
from lib.workspace import WorkspaceError, area, new_id, safe_join

STATES = ("queued", "running", "completed", "failed", "stopped")
ACTIVE_STATES = ("queued", "running")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
HISTORY_FILE = "history.csv"
PROGRESS_FILE = "progress.jsonl"
MODEL_FILE = "model.keras"
LAST_WEIGHTS_FILE = "last.weights.h5"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
LOG_FILE = "log.txt"
LR_PLAN_FILE = "lr_plan.json"
STOP_FILE = "stop.request"
TRIAL_FILE = "trial.json"
OOD_FILE = "ood.npz"
ROBUSTNESS_FILE = "robustness.json"
ROBUSTNESS_DIR = "robustness"

# Inside BACKUP_DIR: keras.callbacks.BackupAndRestore's pair, and the suffix of the
# copy of the previous pair that lib.training keeps (a kill mid-write leaves one good).
BACKUP_METADATA = "training_metadata.json"
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_PREVIOUS = ".bkp"
BACKUP_FILES = frozenset(
    name + suffix for name in (BACKUP_METADATA, BACKUP_WEIGHTS) for suffix in ("", BACKUP_PREVIOUS)
)


@dataclass
class RunStatus:
    """What status.json holds."""

    state: str = "queued"
    created: float = 0.0  # unix time the run was created
    started: float | None = None  # unix time the current attempt began
    ended: float | None = None
    pid: int | None = None  # worker process of the current attempt
    error: str = ""  # a message a user can act on, for failed runs
    attempts: int = 0  # how many times a worker started (resume adds one)
    stop_requested: bool = False
    pid_start: int | None = None  # start time of ``pid`` (/proc ticks): detects pid reuse
    warning: str = ""  # a non-fatal problem (e.g. predictions could not be computed)
    finished_epochs: int = 0  # epochs completed so far, across attempts


def runs_root() -> Path:
    return area("runs")


def run_dir(run_id: str) -> Path:
    """The directory of ``run_id``; refuses ids that would leave the runs folder."""
    return safe_join(runs_root(), run_id)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def create_run(config: RunConfig, *, root: Path | None = None, run_id: str | None = None) -> Path:
    """Make a new run directory holding ``config`` and a queued status."""
    root = root or runs_root()
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + new_id()
    path = safe_join(root, run_id)
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        raise WorkspaceError(f"run {run_id} already exists") from None
    except OSError as exc:
        raise WorkspaceError(f"cannot create run folder {path}: {exc.strerror}") from None
    atomic_write_bytes(path / CONFIG_FILE, (config.to_json() + "\n").encode("utf-8"))
    write_status(path, RunStatus(created=time.time()))
    return path


def read_config(path: Path) -> RunConfig:
    return RunConfig.load(str(Path(path) / CONFIG_FILE))


def read_status(path: Path) -> RunStatus:
    """The run's status; a missing or unreadable file reads as a failed run."""
    try:
        data = json.loads((Path(path) / STATUS_FILE).read_text(encoding="utf-8"))
        known = RunStatus.__dataclass_fields__
        return RunStatus(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        return RunStatus(state="failed", error="status.json is missing or unreadable")


def write_status(path: Path, status: RunStatus) -> None:
    atomic_write_json(Path(path) / STATUS_FILE, asdict(status))


def update_status(path: Path, **changes: Any) -> RunStatus:
    """Read, change and write back the status (single writer per field by design)."""
    status = read_status(path)
    for key, value in changes.items():
        if not hasattr(status, key):
            raise AttributeError(f"RunStatus has no field {key}")
        setattr(status, key, value)
    write_status(path, status)
    return status


def list_run_dirs(root: Path | None = None) -> list[Path]:
    """Run directories, newest first (by creation time in status.json)."""
    root = root or runs_root()
    dirs = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG_FILE).exists()]
    return sorted(dirs, key=lambda p: (read_status(p).created, p.name), reverse=True)


def read_metrics(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_trial(path: Path) -> dict[str, Any]:
    """trial.json of a tuning trial's run ({} for a run that is no trial, or unreadable)."""
    try:
        data = json.loads((Path(path) / TRIAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as columns, ``epoch`` 1-based (the end of that epoch); {} if none yet.

    Rows whose epoch is not a whole number (a line being written) are skipped, and
    a value that is not a number reads as NaN.
    """
    try:
        with open(Path(path) / HISTORY_FILE, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return {}
    columns: dict[str, list[float]] = {}
    for row in rows:
        if not str(row.get("epoch", "")).isdigit():
            continue
        for key, value in row.items():
            if key is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            columns.setdefault(key, []).append(number + 1 if key == "epoch" else number)
    return columns
