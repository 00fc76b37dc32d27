"""Kestrel's Keras callbacks, and the list one run trains with (:func:`build_callbacks`).

In the order they run at each epoch end:

- :class:`ProgressWriter`: throttled batch events (≤ 5 per second) and epoch
  events in ``progress.jsonl`` (through lib.progress); adds the learning rate to
  the epoch logs; turns a stop request into ``model.stop_training`` after the
  current batch.
- :class:`ScheduleClock`: at the first epoch of an attempt, sets the optimizer's
  step counter to where the schedule plans that epoch to start (a stop mid-epoch
  leaves it short), so a resumed run still ends its schedule at its last step.
- TerminateOnNaN(raise_error=True): a NaN loss aborts fit before any callback
  saves the diverged weights, so the last good checkpoint stays as it was.
- EarlyStopping, ReduceLROnPlateau when configured.
- :class:`AtomicModelCheckpoint`: ``model.keras``, best by validation accuracy,
  written to a temporary name and renamed.
- :class:`LastWeights`: ``last.weights.h5`` every epoch, atomically.
- CSVLogger (``history.csv``, appended on resume), :class:`EpochTensorBoard`
  (``tensorboard/``, epoch scalars).
- BackupAndRestore(``backup/``, every epoch): a killed run resumes at the last
  finished epoch. It runs last, so an epoch is only counted once everything
  else about it is on disk.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

from lib import runstore
from lib.config import RunConfig
from lib.progress import BatchEvent, EpochEvent, ProgressLog, StartEvent
from lib.training.schedules import current_lr, inner_optimizer

PROGRESS_INTERVAL_S = 0.2  # at most 5 progress events per second
STOP_CHECK_INTERVAL_S = 0.25  # how often a batch checks for a stop request


class ProgressWriter(keras.callbacks.Callback):
    """Throttled progress events for the UI, and graceful stop on request.

    Writes a batch event at most every ``interval`` seconds (loss, accuracy,
    learning rate, images/s, elapsed, ETA) and an epoch event at every epoch end.
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
        self.initial_epoch: int | None = None  # None until this attempt trains an epoch
        self._log = ProgressLog(self.run_dir)

    def _steps_done(self, epoch: int, batch: int) -> int:
        return (epoch - self.initial_epoch) * self.steps + batch + 1

    def _eta(self, elapsed: float, done: int) -> float:
        total = (self.epochs - self.initial_epoch) * self.steps
        return elapsed / max(done, 1) * max(0, total - done)

    # -- keras hooks
    def on_train_begin(self, logs=None):
        self._log.open()
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
            self._log.write(
                StartEvent(
                    epochs=self.epochs,
                    steps=self.steps,
                    initial_epoch=epoch,
                    batch_size=self.batch_size,
                )
            )

    def on_train_batch_end(self, batch, logs=None):
        now, wall = time.monotonic(), time.time()
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
        window = max(now - self._last_write_t, 1e-9)
        self._log.write(
            BatchEvent(
                epoch=self.epoch,
                epochs=self.epochs,
                batch=batch + 1,
                steps=self.steps,
                loss=_number(logs.get("loss")),
                accuracy=_number(logs.get("accuracy")),
                lr=current_lr(self.model.optimizer),
                images_per_sec=(done - self._last_steps) * self.batch_size / window,
                elapsed=elapsed,
                eta=self._eta(elapsed, done),
                time=wall,  # when throttling measured, so events are ≥ interval apart
            )
        )
        self._last_write = now
        self._last_write_t = now
        self._last_steps = done

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_lr(self.model.optimizer)
        elapsed = time.monotonic() - self.t0
        self._log.write(
            EpochEvent(
                epoch=epoch,
                epochs=self.epochs,
                steps=self.steps,
                logs={k: float(v) for k, v in (logs or {}).items() if np.isscalar(v)},
                elapsed=elapsed,
                eta=self._eta(elapsed, self._steps_done(epoch, self.steps - 1)),
                stopped=self.stop_seen,
            )
        )

    def on_train_end(self, logs=None):
        self._log.close()


def _number(value) -> float | None:
    return None if value is None else float(value)


class ScheduleClock(keras.callbacks.Callback):
    """Start each attempt with the optimizer's step at ``initial_epoch × steps_per_epoch``.

    Schedules are functions of that step. An epoch ended by a stop request trains
    fewer batches than planned, yet counts as done for BackupAndRestore; without
    this the resumed run would end its schedule early (never reaching the floor).
    It acts in ``on_epoch_begin`` of the first epoch: BackupAndRestore has restored
    the optimizer by then.
    """

    def __init__(self, steps_per_epoch: int):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch

    def on_train_begin(self, logs=None):
        self._aligned = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._aligned:
            return
        self._aligned = True
        iterations = inner_optimizer(self.model.optimizer).iterations
        planned = epoch * self.steps_per_epoch
        if int(keras.ops.convert_to_numpy(iterations)) != planned:
            iterations.assign(planned)


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
        # The model written, when it is not the one being fit: a head trained on cached
        # features shares its layers with the whole model (backbone + head) saved here.
        self.saved_model = None

    def _save_model(self, epoch, batch, logs):
        if self.monitor_op is None:
            self._set_monitor_op()
        target = str(self.final_path)
        if not self._should_save_model(epoch, batch, logs, target):
            return
        tmp = self.final_path.with_name(f".tmp-{os.getpid()}-{self.final_path.name}")
        try:
            (self.saved_model or self.model).save(str(tmp), include_optimizer=False)
            os.replace(tmp, self.final_path)
        finally:
            if tmp.exists():
                tmp.unlink()


class LastWeights(keras.callbacks.Callback):
    """Save the weights after every epoch to ``last.weights.h5``, atomically."""

    def __init__(self, filepath: str | Path):
        super().__init__()
        self.path = Path(filepath)
        self.saved_model = None  # as AtomicModelCheckpoint.saved_model

    def on_epoch_end(self, epoch, logs=None):
        tmp = self.path.with_name(f".tmp-{os.getpid()}-{self.path.name}")
        try:
            (self.saved_model or self.model).save_weights(str(tmp))
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard writing epoch scalars only, without its per-batch cost.

    With ``update_freq="epoch"`` (and no profiling, no graph), Keras 3.15's batch hook
    still calls ``summary.scalar`` for every batch metric, with no writer set at that
    frequency, so nothing is written: about 0.6 ms a batch, 2.7 % of an epoch of the
    progress benchmark's CNN (bench/bench_progress.py). This skips that hook, and
    writes exactly the same event files (tests/unit/test_training.py compares them).
    """

    def __init__(self, log_dir: str):
        super().__init__(log_dir, update_freq="epoch", profile_batch=0, write_graph=False)

    def on_train_batch_end(self, batch, logs=None):
        return None


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
    callbacks: list = [progress, ScheduleClock(steps), cb.TerminateOnNaN(raise_error=True)]
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
            EpochTensorBoard(str(run_dir / runstore.TENSORBOARD_DIR)),
        )
    elif echo:
        print("note: the tensorboard package is not installed; no TensorBoard logs", flush=True)
    return callbacks, progress


def tensorboard_available() -> bool:
    """Whether tf.summary has its TensorBoard implementation (TF 2.21 made it optional)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None
