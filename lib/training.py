"""The trainer: fit one run's model from its run directory, with Keras' own callbacks.

``train_run(run_dir)`` reads ``config.json``, sets up the hardware, builds the data
pipeline (lib.data), augmentation (lib.augment) and model (lib.architectures),
fits it and writes every artifact of the run directory (see lib/runstore.py).
It is what a worker process (``python -m lib train --run-dir DIR``) and the CLI
run; it never writes ``status.json`` itself, it returns the outcome and the
caller (lib.jobs) records it.

Callbacks, in the order they run at each epoch end:

- :class:`ProgressWriter` (ours): throttled batch events (≤ 5 per second) and
  epoch events in ``progress.jsonl``; adds the learning rate to the epoch logs;
  turns a stop request into ``model.stop_training`` after the current batch.
- TerminateOnNaN(raise_error=True): a NaN loss aborts fit before any callback
  saves the diverged weights, so the last good checkpoint stays as it was.
- EarlyStopping, ReduceLROnPlateau when configured.
- :class:`AtomicModelCheckpoint`: ``model.keras``, best by validation accuracy,
  written to a temporary name and renamed.
- :class:`LastWeights`: ``last.weights.h5`` every epoch, atomically.
- CSVLogger (``history.csv``, appended on resume), TensorBoard (``tensorboard/``).
- BackupAndRestore(``backup/``, every epoch): a killed run resumes at the last
  finished epoch. It runs last, so an epoch is only counted once everything
  else about it is on disk. A checkpoint a kill left half-written is replaced by
  the previous epoch's copy before a resume reads it (:func:`repair_backup`), and
  lib.jobs deletes ``backup/`` only once the run is recorded as completed.

This module imports Keras at the top: import it only in processes that train.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lib import runstore
from lib.config import RunConfig, TrainConfig

PROGRESS_INTERVAL_S = 0.2  # at most 5 progress events per second
STOP_CHECK_INTERVAL_S = 0.25  # how often a batch checks for a stop request
LR_PLAN_POINTS = 200


class RunConfigError(ValueError):
    """A RunConfig that cannot train on its dataset; the message says what to change."""


@dataclass
class TrainOutcome:
    """How a training attempt ended."""

    state: str  # "completed", "stopped" or "failed"
    error: str = ""
    warning: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Validation


def validate_run(config: RunConfig, dataset: Any = None) -> Any:
    """Check that ``config`` can train on its dataset, before any worker starts.

    Args:
        config: the recipe.
        dataset: the loaded lib.data Dataset, if the caller has it already.

    Returns:
        The loaded dataset.

    Raises:
        RunConfigError: batch larger than the training split, too few classes,
            model incompatible with the input.
        lib.data.DatasetError: the dataset cannot be loaded.
    """
    from lib.architectures import check_model_config
    from lib.data import load_dataset

    ds = dataset if dataset is not None else load_dataset(config.data)
    n_train = len(ds.splits["train"])
    if n_train == 0:
        raise RunConfigError(
            "the training split is empty; lower DataConfig.val_fraction/test_fraction or add images"
        )
    if len(ds.class_names) < 2:
        raise RunConfigError(
            f"the dataset has {len(ds.class_names)} class(es); a classifier needs at least 2"
        )
    if config.train.batch_size > n_train:
        raise RunConfigError(
            f"TrainConfig.batch_size ({config.train.batch_size}) is larger than the training "
            f"split ({n_train} images); choose a batch size of at most {n_train}"
        )
    if os.environ.get("TF_CONFIG") and (
        config.train.early_stopping_patience or config.train.schedule == "reduce_on_plateau"
    ):
        # Each worker logs metrics of its own shard (see lib.hardware), so decisions
        # taken from them could differ between workers and leave one waiting forever.
        raise RunConfigError(
            "early stopping and reduce_on_plateau are not available with several workers "
            "(TF_CONFIG is set); set TrainConfig.early_stopping_patience to 0 and pick "
            "another schedule"
        )
    try:
        check_model_config(config.model, tuple(ds.image_shape), len(ds.class_names))
    except ValueError as exc:
        raise RunConfigError(f"the model does not fit the data: {exc}") from None
    return ds


# ---------------------------------------------------------------------------
# Optimizer and learning-rate schedule


@keras.saving.register_keras_serializable(package="kestrel")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle policy: cosine warm-up to ``max_lr``, then cosine annealing.

    Starts at ``max_lr / div_factor``, peaks after ``pct_start`` of the steps and
    ends at ``max_lr / (div_factor * final_div_factor)`` (Smith, 2018; fastai's defaults).
    """

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = max(1.0, self.pct_start * self.total_steps)
        rest = max(1.0, self.total_steps - warm)
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor
        up = start + (self.max_lr - start) * (1.0 - ops.cos(math.pi * step / warm)) / 2.0
        t = ops.clip((step - warm) / rest, 0.0, 1.0)
        down = end + (self.max_lr - end) * (1.0 + ops.cos(math.pi * t)) / 2.0
        return ops.where(step < warm, up, down)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


def make_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The learning rate of ``cfg``: a float, or a schedule over optimizer steps."""
    lr = cfg.learning_rate
    total = max(1, cfg.epochs * steps_per_epoch)
    schedules = keras.optimizers.schedules
    if cfg.schedule in ("constant", "reduce_on_plateau"):
        return lr  # plateau reduction is a callback acting on this value
    if cfg.schedule == "cosine":
        return schedules.CosineDecay(lr, decay_steps=total)
    if cfg.schedule == "warmup_cosine":
        warmup = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))
        if warmup <= 0:
            return schedules.CosineDecay(lr, decay_steps=total)
        return schedules.CosineDecay(
            lr / 100.0, decay_steps=total - warmup, warmup_target=lr, warmup_steps=warmup
        )
    if cfg.schedule == "one_cycle":
        return OneCycle(lr, total)
    if cfg.schedule == "step":
        return schedules.ExponentialDecay(
            lr,
            decay_steps=cfg.step_epochs * steps_per_epoch,
            decay_rate=cfg.step_factor,
            staircase=True,
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer of ``cfg`` with its schedule and decoupled weight decay.

    Weight decay leaves biases and normalisation parameters alone, as is usual.
    """
    lr = make_schedule(cfg, steps_per_epoch)
    wd = cfg.weight_decay or None
    if cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate=lr, weight_decay=wd)
    elif cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(
            learning_rate=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd
        )
    elif cfg.optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(learning_rate=lr, momentum=cfg.momentum, weight_decay=wd)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    if cfg.weight_decay:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def lr_plan(cfg: TrainConfig, steps_per_epoch: int, points: int = LR_PLAN_POINTS) -> dict:
    """The planned learning rate over training, sampled for the LR chart."""
    schedule = make_schedule(cfg, steps_per_epoch)
    total = max(1, cfg.epochs * steps_per_epoch)
    steps = np.unique(np.linspace(0, total, min(points, total + 1)).astype(int))
    if callable(schedule):
        lrs = [float(keras.ops.convert_to_numpy(schedule(int(s)))) for s in steps]
    else:
        lrs = [float(schedule)] * len(steps)
    return {
        "steps_per_epoch": steps_per_epoch,
        "epoch": [float(s) / steps_per_epoch for s in steps],
        "learning_rate": lrs,
        "adaptive": cfg.schedule == "reduce_on_plateau",
    }


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Weights n / (K · count_k): every class contributes equally to the loss."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    n = counts.sum()
    return {k: float(n / (num_classes * c)) for k, c in enumerate(counts) if c > 0}


def current_lr(optimizer) -> float:
    """The optimizer's learning rate right now (schedules evaluated at its step)."""
    opt = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer wraps
    return float(keras.ops.convert_to_numpy(opt.learning_rate))


# ---------------------------------------------------------------------------
# Callbacks


def append_event(run_dir: Path, event: dict) -> None:
    """Append one JSON line to ``progress.jsonl`` (one write call per line)."""
    event = {"time": time.time(), **event}
    line = json.dumps(event, default=float) + "\n"
    with open(Path(run_dir) / runstore.PROGRESS_FILE, "a", encoding="utf-8") as fh:
        fh.write(line)


class ProgressWriter(keras.callbacks.Callback):
    """Throttled progress events for the UI, and graceful stop on request.

    Writes a ``batch`` event at most every ``interval`` seconds (loss, accuracy,
    learning rate, images/s, elapsed, ETA) and an ``epoch`` event at every epoch end.
    Between batches it checks (at most every 0.25 s) for ``stop.request`` in the
    run directory and, when it appears, sets ``model.stop_training``: Keras then
    finishes the current batch, runs the epoch-end callbacks (so the backup is
    saved) and returns.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        epochs: int,
        steps: int,
        batch_size: int,
        interval: float = PROGRESS_INTERVAL_S,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.epochs = epochs
        self.steps = steps
        self.batch_size = batch_size
        self.interval = interval
        self.stop_path = self.run_dir / runstore.STOP_FILE
        self.stop_seen = False
        self._fh = None

    # -- helpers
    def _write(self, event: dict) -> None:
        event = {"time": time.time(), **event}
        self._fh.write(json.dumps(event, default=float) + "\n")
        self._fh.flush()

    def _steps_done(self, epoch: int, batch: int) -> int:
        return (epoch - self.initial_epoch) * self.steps + batch + 1

    # -- keras hooks
    def on_train_begin(self, logs=None):
        self._fh = open(self.run_dir / runstore.PROGRESS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self.initial_epoch = None  # known at the first epoch (BackupAndRestore sets it later)
        self.t0 = time.monotonic()
        self._last_write = 0.0
        self._last_check = 0.0
        self._last_steps = 0
        self._last_write_t = self.t0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.initial_epoch is None:
            self.initial_epoch = epoch
            self._write(
                {
                    "type": "start",
                    "epochs": self.epochs,
                    "steps": self.steps,
                    "initial_epoch": epoch,
                    "batch_size": self.batch_size,
                }
            )

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last_check >= STOP_CHECK_INTERVAL_S:
            self._last_check = now
            if self.stop_path.exists():
                self.stop_seen = True
                self.model.stop_training = True
        if now - self._last_write < self.interval:
            return
        logs = logs or {}
        done = self._steps_done(self.epoch, batch)
        elapsed = now - self.t0
        total = (self.epochs - self.initial_epoch) * self.steps
        window = max(now - self._last_write_t, 1e-9)
        rate = (done - self._last_steps) * self.batch_size / window
        self._write(
            {
                "type": "batch",
                "epoch": self.epoch,
                "epochs": self.epochs,
                "batch": batch + 1,
                "steps": self.steps,
                "loss": logs.get("loss"),
                "accuracy": logs.get("accuracy"),
                "lr": current_lr(self.model.optimizer),
                "images_per_sec": rate,
                "elapsed": elapsed,
                "eta": elapsed / done * max(0, total - done),
            }
        )
        self._last_write = now
        self._last_write_t = now
        self._last_steps = done

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_lr(self.model.optimizer)
        now = time.monotonic()
        done = self._steps_done(epoch, self.steps - 1)
        elapsed = now - self.t0
        total = (self.epochs - self.initial_epoch) * self.steps
        self._write(
            {
                "type": "epoch",
                "epoch": epoch,
                "epochs": self.epochs,
                "steps": self.steps,
                "logs": {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v)},
                "elapsed": elapsed,
                "eta": elapsed / done * max(0, total - done),
                "stopped": self.stop_seen,
            }
        )

    def on_train_end(self, logs=None):
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class TerminalProgress(keras.callbacks.Callback):
    """A plain-text progress bar for the CLI and the worker's log.

    On a terminal it redraws one line; otherwise (a log file) it prints a line
    at most every ``interval`` seconds and one per epoch, so logs stay readable.
    """

    def __init__(self, *, epochs: int, steps: int, stream=None, interval: float | None = None):
        super().__init__()
        self.epochs = epochs
        self.steps = steps
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.1 if self.tty else 10.0)

    def on_train_begin(self, logs=None):
        self.t0 = time.monotonic()
        self._last = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _line(self, batch: int, logs: dict) -> str:
        width = 24
        filled = int(width * batch / max(1, self.steps))
        bar = "#" * filled + "." * (width - filled)
        parts = [f"epoch {self.epoch + 1}/{self.epochs} [{bar}] {batch}/{self.steps}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if logs.get(key) is not None:
                parts.append(f"{key} {float(logs[key]):.4f}")
        parts.append(f"{time.monotonic() - self.t0:.0f}s")
        return "  ".join(parts)

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        line = self._line(batch + 1, logs or {})
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        line = self._line(self.steps, logs or {})
        self.stream.write(("\r" if self.tty else "") + line + "\n")
        self.stream.flush()


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint (best only) that never leaves a half-written model.keras.

    The model is saved to a temporary name in the same folder and renamed over
    the target. The optimizer is left out: the file is for evaluation, prediction
    and export (resume uses the BackupAndRestore checkpoint), and leaving it out
    keeps the file loadable without Kestrel's schedule classes.
    """

    def __init__(self, filepath: str | Path, **kwargs):
        super().__init__(str(filepath), **kwargs)
        self.final_path = Path(filepath)

    def _save_model(self, epoch, batch, logs):
        if self.monitor_op is None:
            self._set_monitor_op()
        target = str(self.final_path)
        if not self._should_save_model(epoch, batch, logs, target):
            return
        tmp = self.final_path.with_name(f".tmp-{os.getpid()}-{self.final_path.name}")
        try:
            self.model.save(str(tmp), include_optimizer=False)
            os.replace(tmp, self.final_path)
        finally:
            if tmp.exists():
                tmp.unlink()


class LastWeights(keras.callbacks.Callback):
    """Save the weights after every epoch to ``last.weights.h5``, atomically."""

    def __init__(self, filepath: str | Path):
        super().__init__()
        self.path = Path(filepath)

    def on_epoch_end(self, epoch, logs=None):
        tmp = self.path.with_name(f".tmp-{os.getpid()}-{self.path.name}")
        try:
            self.model.save_weights(str(tmp))
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()


# ---------------------------------------------------------------------------
# History (resume bookkeeping)


# The files of keras.callbacks.BackupAndRestore in backup/; with double_checkpoint=True
# it copies both to ``<name>.bkp`` (the previous epoch) before writing the new ones.
BACKUP_METADATA = "training_metadata.json"
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_PREVIOUS = ".bkp"


def read_backup_epoch(run_dir: Path) -> int:
    """The epoch a resume starts at: what BackupAndRestore recorded, else 0."""
    path = Path(run_dir) / runstore.BACKUP_DIR / BACKUP_METADATA
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _metadata_epoch(path: Path) -> int | None:
    """The epoch in a BackupAndRestore metadata file; None if missing or unreadable."""
    try:
        epoch = json.loads(path.read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return None
    return epoch


def _weights_readable(path: Path) -> bool:
    """Whether an .h5 weights file opens and every dataset in it reads to the end."""
    import h5py

    def read(name, obj):
        if isinstance(obj, h5py.Dataset):
            obj[()]  # a file cut short fails here, not only at open

    try:
        with h5py.File(path, "r") as fh:
            fh.visititems(read)
    except Exception:  # h5py raises OSError, KeyError, ValueError... for damaged files
        return False
    return True


def repair_backup(run_dir: Path) -> tuple[str, str]:
    """Make ``backup/`` something BackupAndRestore can resume from, before it is read.

    A SIGKILL while BackupAndRestore writes its checkpoint can leave
    ``training_metadata.json`` empty or ``latest.weights.h5`` cut short; Keras
    would then fail every resume (JSONDecodeError) and the run could never finish.
    The previous epoch's pair (``*.bkp``, from ``double_checkpoint=True``) is copied
    back over the damaged one; when that pair is missing or damaged too, backup/
    is deleted and the run starts again from epoch 0.

    Returns:
        (note, warning): ``note`` says which checkpoint was restored (for the
        log), ``warning`` that the run restarts from scratch (for status.json);
        both empty when the backup was fine or absent.
    """
    backup = Path(run_dir) / runstore.BACKUP_DIR
    if not backup.is_dir():
        return "", ""
    meta, weights = backup / BACKUP_METADATA, backup / BACKUP_WEIGHTS
    prev_meta = backup / (BACKUP_METADATA + BACKUP_PREVIOUS)
    prev_weights = backup / (BACKUP_WEIGHTS + BACKUP_PREVIOUS)
    if _metadata_epoch(meta) is not None and _weights_readable(weights):
        return "", ""
    if not any(p.exists() for p in (meta, weights, prev_meta, prev_weights)):
        _remove_tree(backup)  # created, but killed before the first file: nothing to lose
        return "", ""
    epoch = _metadata_epoch(prev_meta)
    if epoch is not None and _weights_readable(prev_weights):
        # Each copy is atomic, weights first: a kill in between leaves the metadata
        # still damaged, so the next attempt repairs again from the same .bkp pair.
        runstore.atomic_write_bytes(weights, prev_weights.read_bytes())
        runstore.atomic_write_bytes(meta, prev_meta.read_bytes())
        return (
            f"the last checkpoint in backup/ was incomplete (the worker was killed while "
            f"writing it); resuming from the one before it, after epoch {epoch}",
            "",
        )
    _remove_tree(backup)
    return "", (
        "the resume checkpoint in backup/ was damaged (the worker was killed while writing "
        "it) and no earlier copy was usable, so training restarted from epoch 1"
    )


def trim_history(run_dir: Path, keep_epochs: int) -> list[dict[str, str]]:
    """Drop history rows of epochs ≥ ``keep_epochs`` (they will be trained again).

    A worker killed between writing an epoch's CSV row and its backup would
    otherwise leave that epoch in the history twice. Returns the kept rows.
    """
    path = Path(run_dir) / runstore.HISTORY_FILE
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        rows = [r for r in reader if r.get("epoch", "").isdigit() and int(r["epoch"]) < keep_epochs]
    buf = io.StringIO()
    if fields and rows:
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    runstore.atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return rows


def _best_from_rows(rows: list[dict[str, str]], key: str) -> float | None:
    values = []
    for r in rows:
        try:
            v = float(r.get(key, "nan"))
        except ValueError:
            continue
        if math.isfinite(v):
            values.append(v)
    return max(values) if values else None


# ---------------------------------------------------------------------------
# Evaluation


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def evaluate_split(
    model, ds, split_name: str, *, batch_size: int, tta_flip: bool, distributed: bool = True
) -> dict:
    """Accuracy and cross-entropy of ``model`` on one split (softmax of logits).

    With ``tta_flip`` the probabilities are averaged with those of the mirrored images.
    ``distributed=False`` calls the model batch by batch in this process, so that
    under the multi-worker strategy every worker sees the whole split (``predict``
    would shard it).
    """
    import tensorflow as tf

    from lib.data import make_pipeline

    pipe = make_pipeline(
        ds, split_name, batch_size=batch_size, shuffle=False, seed=0, one_hot=False
    )
    images = pipe.map(lambda x, y: x)

    def logits(data) -> np.ndarray:
        if distributed:
            return np.asarray(model.predict(data, verbose=0), np.float64)
        return np.concatenate([np.asarray(model(x, training=False), np.float64) for x in data])

    probs = _softmax(logits(images))
    if tta_flip:
        probs = (probs + _softmax(logits(images.map(lambda x: tf.reverse(x, axis=[2]))))) / 2
    y = np.asarray(ds.splits[split_name].labels, np.int64)
    n = len(y)
    correct = int((probs.argmax(axis=1) == y).sum())
    nll = float(-np.log(np.clip(probs[np.arange(n), y], 1e-12, 1.0)).sum())
    return {"accuracy": correct / max(n, 1), "loss": nll / max(n, 1), "count": n}


# ---------------------------------------------------------------------------
# The run


def build_callbacks(
    run_dir: Path,
    cfg: RunConfig,
    *,
    steps: int,
    has_val: bool,
    best_so_far: float | None,
    echo: bool,
) -> tuple[list, ProgressWriter]:
    """Kestrel's callback list for one run (see the module docstring for the order)."""
    cb = keras.callbacks
    monitor = "val_accuracy" if has_val else "accuracy"
    progress = ProgressWriter(
        run_dir, epochs=cfg.train.epochs, steps=steps, batch_size=cfg.train.batch_size
    )
    callbacks: list = [progress, cb.TerminateOnNaN(raise_error=True)]
    if echo:
        callbacks.append(TerminalProgress(epochs=cfg.train.epochs, steps=steps))
    if cfg.train.early_stopping_patience:
        callbacks.append(
            cb.EarlyStopping(
                monitor=monitor, mode="max", patience=cfg.train.early_stopping_patience
            )
        )
    if cfg.train.schedule == "reduce_on_plateau":
        callbacks.append(
            cb.ReduceLROnPlateau(
                monitor=monitor,
                mode="max",
                factor=cfg.train.step_factor,
                patience=max(1, cfg.train.step_epochs),
                min_lr=cfg.train.learning_rate * 1e-4,
            )
        )
    callbacks += [
        AtomicModelCheckpoint(
            run_dir / runstore.MODEL_FILE,
            monitor=monitor,
            mode="max",
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        LastWeights(run_dir / runstore.LAST_WEIGHTS_FILE),
        cb.CSVLogger(str(run_dir / runstore.HISTORY_FILE), append=True),
        # double_checkpoint: a kill during the write leaves the previous epoch's copy.
        cb.BackupAndRestore(
            str(run_dir / runstore.BACKUP_DIR),
            save_freq="epoch",
            double_checkpoint=True,
            delete_checkpoint=False,
        ),
    ]
    if tensorboard_available():
        callbacks.insert(
            -1,
            cb.TensorBoard(
                str(run_dir / runstore.TENSORBOARD_DIR),
                update_freq="epoch",
                profile_batch=0,
                write_graph=False,
            ),
        )
    elif echo:
        print("note: the tensorboard package is not installed; no TensorBoard logs", flush=True)
    return callbacks, progress


def tensorboard_available() -> bool:
    """Whether tf.summary has its TensorBoard implementation (TF 2.21 made it optional)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _is_oom(exc: BaseException) -> bool:
    import tensorflow as tf

    return isinstance(exc, (tf.errors.ResourceExhaustedError, MemoryError)) or (
        "out of memory" in str(exc).lower() or "OOM when allocating" in str(exc)
    )


def train_run(
    run_dir: Path | str,
    *,
    echo: bool = False,
    on_phase: Callable[[str], None] | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainOutcome:
    """Train the run in ``run_dir`` to the end (or until stopped) and write its artifacts.

    Resumes from ``backup/`` when a previous attempt left one.

    Args:
        run_dir: the run directory holding config.json.
        echo: print a plain-text progress bar to stdout.
        on_phase: called with a short description of each preparation phase.
        extra_callbacks: Keras callbacks run after Kestrel's own at every hook
            (the time-to-accuracy benchmark evaluates the test set with one).

    Returns:
        The outcome; failures a user can act on (bad config, NaN loss, out of
        memory) come back as ``state="failed"`` with a message, not as exceptions.
    """
    from lib import hardware

    run_dir = Path(run_dir)
    t_start = time.monotonic()

    def phase(text: str) -> None:
        append_event(run_dir, {"type": "phase", "phase": text})
        if on_phase:
            on_phase(text)
        if echo:
            print(text, flush=True)

    cfg = runstore.read_config(run_dir)
    tc = cfg.train
    try:
        hw = hardware.configure(tc.device, tc.mixed_precision)
    except hardware.HardwareError as exc:
        return TrainOutcome("failed", error=str(exc))
    phase(f"hardware: {hw.describe()}")
    keras.utils.set_random_seed(tc.seed)

    phase("loading data")
    backup_warning = ""  # for status.json: the resume checkpoint was lost
    try:
        from lib.augment import make_augmenter
        from lib.data import DatasetError, make_pipeline

        try:
            ds = validate_run(cfg)
        except (RunConfigError, DatasetError) as exc:
            return TrainOutcome("failed", error=str(exc))
        num_classes = len(ds.class_names)
        n_train = len(ds.splits["train"])
        has_val = len(ds.splits.get("val", ())) > 0
        steps = math.ceil(n_train / tc.batch_size)
        augmenter = make_augmenter(cfg.augment, tuple(ds.image_shape), num_classes, tc.seed)
        train_ds = make_pipeline(
            ds,
            "train",
            batch_size=tc.batch_size,
            shuffle=True,
            seed=tc.seed,
            augment=augmenter,
            one_hot=True,
        )
        val_ds = (
            make_pipeline(
                ds, "val", batch_size=tc.batch_size, shuffle=False, seed=tc.seed, one_hot=True
            )
            if has_val
            else None
        )
        class_weight = (
            balanced_class_weights(ds.splits["train"].labels, num_classes)
            if tc.class_weights == "balanced"
            else None
        )

        note, backup_warning = repair_backup(run_dir)
        if note or backup_warning:
            phase(f"note: {note or backup_warning}")
        resume_epoch = read_backup_epoch(run_dir)
        kept_rows = trim_history(run_dir, resume_epoch)
        best_so_far = _best_from_rows(kept_rows, "val_accuracy" if has_val else "accuracy")
        if not (run_dir / runstore.MODEL_FILE).exists():
            best_so_far = None
        runstore.atomic_write_json(run_dir / runstore.LR_PLAN_FILE, lr_plan(tc, steps))

        phase(
            "building model"
            if resume_epoch == 0
            else f"building model (resuming at epoch {resume_epoch + 1})"
        )
        from lib.architectures import build_model

        with hw.strategy.scope():
            model = build_model(cfg.model, tuple(ds.image_shape), num_classes)
            model.compile(
                optimizer=make_optimizer(tc, steps),
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=tc.label_smoothing
                ),
                metrics=["accuracy"],
            )
        multi_worker = hw.strategy_name == "multi-worker mirrored"
        if multi_worker:
            hardware.patch_keras_for_multi_worker(model, hw.strategy)
        callbacks, progress = build_callbacks(
            run_dir, cfg, steps=steps, has_val=has_val, best_so_far=best_so_far, echo=echo
        )
        callbacks += list(extra_callbacks)
        phase("training")
        t_fit = time.monotonic()
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=tc.epochs,
            callbacks=callbacks,
            class_weight=class_weight,
            shuffle=False,
            verbose=0,
        )  # the pipeline shuffles
        train_seconds = time.monotonic() - t_fit
    except RuntimeError as exc:
        if "NaN or Inf loss" in str(exc):
            return TrainOutcome("failed", error=_nan_message(run_dir, tc), warning=backup_warning)
        if _is_oom(exc):
            return TrainOutcome("failed", error=_oom_message(cfg), warning=backup_warning)
        raise
    except Exception as exc:
        if _is_oom(exc):
            return TrainOutcome("failed", error=_oom_message(cfg), warning=backup_warning)
        raise

    rows = _read_rows(run_dir)
    epochs_done = len(rows)
    if progress.stop_seen:
        return TrainOutcome("stopped", metrics={"epochs_done": epochs_done}, warning=backup_warning)
    # Training is over (early stopping included): should the worker be killed before
    # lib.jobs records "completed", the resume trains no epoch and only finishes.
    _mark_fit_finished(run_dir, tc.epochs)

    phase("evaluating")
    if (run_dir / runstore.MODEL_FILE).exists():
        model.load_weights(str(run_dir / runstore.MODEL_FILE))
    metrics: dict[str, Any] = {
        "epochs_done": epochs_done,
        "epochs_planned": tc.epochs,
        "stopped_early": epochs_done < tc.epochs,
        "train_seconds": round(
            train_seconds
            + _previous_train_seconds(run_dir, include_last=progress.initial_epoch is None),
            3,
        ),
        "total_seconds": round(time.monotonic() - t_start, 3),
        "best_val_accuracy": _best_from_rows(rows, "val_accuracy"),
        "best_epoch": _best_epoch(rows, "val_accuracy" if has_val else "accuracy"),
        "tta_flip": tc.tta_flip,
        "precision": hw.precision,
        "device": hw.describe(),
        # Views (Compare, the registry) read these instead of reloading data or the model.
        "class_names": list(ds.class_names),
        "params": int(model.count_params()),
    }
    eval_bs = min(tc.batch_size, 256)
    for split_name in ("val", "test"):
        if len(ds.splits.get(split_name, ())) == 0:
            continue
        result = evaluate_split(
            model,
            ds,
            split_name,
            batch_size=eval_bs,
            tta_flip=tc.tta_flip,
            distributed=not multi_worker,
        )
        metrics[f"{split_name}_accuracy"] = result["accuracy"]
        metrics[f"{split_name}_loss"] = result["loss"]
        metrics[f"{split_name}_count"] = result["count"]
    metrics["eval_split"] = "test" if "test_accuracy" in metrics else "val"
    runstore.atomic_write_json(run_dir / runstore.METRICS_FILE, metrics)
    append_event(run_dir, {"type": "metrics", "metrics": metrics})

    warnings = [backup_warning] if backup_warning else []
    if hardware.is_chief():
        phase("computing predictions")
        try:
            from lib.evaluation import compute_predictions

            compute_predictions(run_dir)
        except Exception as exc:  # predictions are a convenience: never fail the run
            warnings.append(f"predictions could not be computed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    # backup/ stays: lib.jobs removes it once status.json says "completed", so a kill
    # before that leaves a run that resumes (and finishes) instead of retraining.
    return TrainOutcome("completed", metrics=metrics, warning="; ".join(warnings))


def _mark_fit_finished(run_dir: Path, epochs: int) -> None:
    """Record in backup/ that every epoch is done, so a resume starts none."""
    meta = Path(run_dir) / runstore.BACKUP_DIR / BACKUP_METADATA
    if _metadata_epoch(meta) is not None:  # replaced atomically: never left half-written
        runstore.atomic_write_json(meta, {"epoch": epochs, "batch": 0})


def _read_rows(run_dir: Path) -> list[dict[str, str]]:
    path = Path(run_dir) / runstore.HISTORY_FILE
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def _best_epoch(rows: list[dict[str, str]], key: str) -> int | None:
    best, best_epoch = -math.inf, None
    for r in rows:
        try:
            v = float(r.get(key, "nan"))
        except ValueError:
            continue
        if math.isfinite(v) and v > best:
            best, best_epoch = v, int(r["epoch"]) + 1
    return best_epoch


def _previous_train_seconds(run_dir: Path, *, include_last: bool = False) -> float:
    """Training time of earlier attempts (from their progress events), for resumed runs.

    The last attempt's time is left out (it is the current one) unless
    ``include_last``: an attempt that trained no epoch wrote no ``start`` event.
    """
    total, last_elapsed = 0.0, 0.0
    try:
        with open(Path(run_dir) / runstore.PROGRESS_FILE, encoding="utf-8") as fh:
            for line in fh:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("type") == "start":
                    total += last_elapsed
                    last_elapsed = 0.0
                elif ev.get("type") == "epoch":
                    last_elapsed = float(ev.get("elapsed", 0.0))
    except OSError:
        pass
    return total + last_elapsed if include_last else total


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _nan_message(run_dir: Path, tc: TrainConfig) -> str:
    kept = "model.keras (the best epoch) and the backup of the last good epoch are kept"
    if not (Path(run_dir) / runstore.MODEL_FILE).exists():
        kept = "no epoch finished before it, so there is no checkpoint yet"
    return (
        f"the loss became NaN or infinite: training diverged. Lower the learning rate "
        f"(TrainConfig.learning_rate is {tc.learning_rate:g}), use a warm-up schedule or "
        f"batch normalisation, or check the data; {kept}."
    )


def _oom_message(cfg: RunConfig) -> str:
    size = cfg.data.image_size or "the source size"
    return (
        f"out of memory while training: choose a smaller TrainConfig.batch_size (now "
        f"{cfg.train.batch_size}) or a smaller DataConfig.image_size (now {size}), or a "
        f"smaller model."
    )
