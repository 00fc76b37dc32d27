"""The run read model: one :class:`RunView` per run folder, for every page and the CLI.

A view is what a run folder says at one moment: its recipe (config.json), status
(status.json), final metrics (metrics.json), per-epoch history (history.csv) and
whether it left a model. Everything a table, a picker or a chart shows about a
run is read from a view, so each fact is worked out once (best validation
accuracy, duration, the dataset's short description).

Views are cached by the folder and the identity of every file they read (size,
modification time, inode): a live panel that lists the runs every second stats a
few files per run and parses only what changed. Views are shared between callers;
treat them as read-only.

Usage::

    from lib import runs

    for view in runs.list_views():          # newest first
        print(runs.run_label(view), view.state, view.best_val_accuracy)
    best = runs.best_completed()            # None when nothing completed yet
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib import runstore
from lib.config import DataConfig, RunConfig
from lib.errors import KestrelError
from lib.runstore import RunStatus
from lib.workspace import WorkspaceError

# The files a view is built from; a change to any of them makes a new view.
VIEW_FILES = (
    runstore.CONFIG_FILE,
    runstore.STATUS_FILE,
    runstore.HISTORY_FILE,
    runstore.METRICS_FILE,
    runstore.MODEL_FILE,
    runstore.TRIAL_FILE,
)
NO_ACCURACY = "–"  # what a label shows for a run without an accuracy yet


class RunNotFoundError(KestrelError):
    """A run id that names no run folder (deleted, or never made)."""


class RunReadError(KestrelError):
    """A run folder whose recipe (config.json) cannot be read."""


@dataclass(frozen=True, eq=False)
class RunView:
    """One run as its folder describes it; read-only, shared through the cache."""

    run_id: str  # the folder name
    path: Path  # the run folder
    config: RunConfig  # the recipe; RunConfig() when config.json is unreadable
    status: RunStatus
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json ({} until written)
    history: dict[str, list[float]] = field(default_factory=dict)  # history.csv columns
    has_model: bool = False  # model.keras exists
    config_error: str = ""  # why config.json could not be read, else ""
    trial: dict[str, Any] = field(default_factory=dict)  # trial.json of a tuning trial, else {}

    @property
    def name(self) -> str:
        """The name the user gave, or "" (see :func:`run_label` for a display name)."""
        return self.config.name

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def created(self) -> float:
        return self.status.created

    @property
    def started(self) -> float | None:
        return self.status.started

    @property
    def ended(self) -> float | None:
        return self.status.ended

    @property
    def error(self) -> str:
        return self.status.error

    @property
    def warning(self) -> str:
        return self.status.warning

    @property
    def stop_requested(self) -> bool:
        return self.status.stop_requested

    @property
    def dataset(self) -> str:
        """The dataset's short description ("digits", "shapes 64px →32px")."""
        return describe_dataset(self.config.data)

    @property
    def study(self) -> str:
        """The name of the tuning study this run is a trial of ("" for an ordinary run)."""
        return str(self.trial.get("study", "")) if self.trial else ""

    @property
    def study_label(self) -> str:
        """The study and trial: "lr sweep · trial 3 (pruned at epoch 2)"; "" for an ordinary run."""
        if not self.study:
            return ""
        label = f"{self.study} · trial {self.trial.get('trial_number', '?')}"
        if self.trial.get("pruned_epoch"):
            label += f" (pruned at epoch {self.trial['pruned_epoch']})"
        return label

    @property
    def model(self) -> str:
        """The model's short description: its preset."""
        return self.config.model.preset

    @property
    def epochs_done(self) -> int:
        """Epochs finished so far (rows of history.csv)."""
        return len(self.history.get("epoch", []))

    @property
    def epochs(self) -> int:
        """Epochs the recipe plans."""
        return self.config.train.epochs

    @property
    def best_val_accuracy(self) -> float | None:
        """The best validation accuracy of any epoch; None without validation data."""
        best = best_value(self.history.get("val_accuracy"))
        if best is None:
            best = _number(self.metrics.get("best_val_accuracy"))
        return best

    @property
    def test_accuracy(self) -> float | None:
        """The final model's test accuracy (metrics.json); None until completed or without a test split."""
        return _number(self.metrics.get("test_accuracy"))

    @property
    def accuracy(self) -> float | None:
        """The accuracy to rank and label a run by: test accuracy, else best validation accuracy."""
        test = self.test_accuracy
        return test if test is not None else self.best_val_accuracy

    @property
    def duration_s(self) -> float | None:
        """Training time: the trainer's own count once completed, else since the attempt began."""
        seconds = _number(self.metrics.get("train_seconds"))
        if self.state == "completed" and seconds is not None:
            return seconds
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def best_value(values: list[float] | None) -> float | None:
    """The largest finite value, or None when there is none."""
    finite = [v for v in values or [] if math.isfinite(v)]
    return max(finite) if finite else None


def describe_dataset(cfg: DataConfig) -> str:
    """A short dataset label for tables ("digits", "shapes 64px", "folder:x →32px", "pets@3")."""
    label = cfg.source
    if cfg.source == "shapes":
        label += f" {cfg.shapes_size}px"
    if cfg.source == "dataset":  # a built dataset: its name and version say it all
        label = cfg.path
    elif cfg.source in ("folder", "upload", "csv_files", "pixel_csv"):
        label += f":{Path(cfg.path).name or cfg.path}"
    if cfg.image_size:
        label += f" →{cfg.image_size}px"
    return label


# ---------------------------------------------------------------------------
# Loading, with the cache


_cache: dict[str, tuple[tuple, RunView]] = {}
_cache_lock = threading.Lock()


def _signature(path: Path) -> tuple:
    """What identifies the current contents of the files a view reads."""
    sig = []
    for name in VIEW_FILES:
        try:
            st = os.stat(path / name)
        except OSError:
            sig.append(None)
        else:
            sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(sig)


def _load(path: Path) -> RunView:
    try:
        config, config_error = runstore.read_config(path), ""
    except ValueError as exc:
        config, config_error = RunConfig(), str(exc)
    return RunView(
        run_id=path.name,
        path=path,
        config=config,
        status=runstore.read_status(path),
        metrics=runstore.read_metrics(path),
        history=runstore.read_history(path),
        has_model=(path / runstore.MODEL_FILE).is_file(),
        config_error=config_error,
        trial=runstore.read_trial(path),
    )


def view_of(path: Path | str) -> RunView:
    """The view of the run folder ``path`` (cached until one of its files changes)."""
    path = Path(path)
    key = str(path)
    sig = _signature(path)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    view = _load(path)
    # Keyed by the signature taken before reading: a write during the read makes
    # the next call read again rather than keep a mixed view.
    with _cache_lock:
        _cache[key] = (sig, view)
    return view


def get_view(run_id: str) -> RunView:
    """The view of run ``run_id`` in the workspace.

    Raises:
        RunNotFoundError: there is no such run.
        WorkspaceError: ``run_id`` would leave the runs folder.
    """
    path = runstore.run_dir(run_id)
    if not (path / runstore.CONFIG_FILE).is_file():
        raise RunNotFoundError(f"there is no run {run_id!r}")
    return view_of(path)


def list_views(root: Path | None = None) -> list[RunView]:
    """Every run under ``root`` (default: the workspace's runs), newest first."""
    try:
        root = root or runstore.runs_root()
        dirs = [p for p in root.iterdir() if p.is_dir() and (p / runstore.CONFIG_FILE).exists()]
    except (OSError, WorkspaceError):
        return []
    views = [view_of(p) for p in dirs]
    with _cache_lock:  # forget deleted runs
        gone = [k for k in _cache if Path(k).parent == root and not Path(k).is_dir()]
        for key in gone:
            del _cache[key]
    return sorted(views, key=lambda v: (v.created, v.run_id), reverse=True)


def completed_views(root: Path | None = None) -> list[RunView]:
    """Completed runs that left a model (what can be evaluated, compared, predicted with), newest first."""
    return [v for v in list_views(root) if v.state == "completed" and v.has_model]


def best_completed(root: Path | None = None) -> RunView | None:
    """The completed run with the highest test accuracy (else best validation accuracy)."""
    scored = [v for v in completed_views(root) if v.accuracy is not None]
    return max(scored, key=lambda v: v.accuracy) if scored else None


def run_label(view: RunView) -> str:
    """``name · dataset · accuracy · date``, e.g. ``digits cnn · digits · 97.2% · 2026-12-01 14:03``.

    The name falls back to the run id, the accuracy (test, else best validation)
    to "–", and the date is when the run was created, in local time.
    """
    accuracy = view.accuracy
    acc_text = NO_ACCURACY if accuracy is None else f"{accuracy:.1%}"
    date = time.strftime("%Y-%m-%d %H:%M", time.localtime(view.created)) if view.created else "–"
    return " · ".join((view.name or view.run_id, view.dataset, acc_text, date))


def clear_cache() -> None:
    """Forget every cached view (tests; a workspace switch)."""
    with _cache_lock:
        _cache.clear()
