"""The trainer: fit one run's model from its run directory and write its artifacts.

``train_run(run_dir)`` reads ``config.json`` and goes through its stages:

1. :func:`prepare_data`: load the dataset once, check the config against it
   (:func:`validate_run`) and build the training and validation pipelines, each
   yielding a fixed number of batches per epoch (:func:`exact_steps`);
2. :func:`prepare_resume`: repair ``backup/`` and trim history.csv when a
   previous attempt left them (lib.training.resume);
3. :func:`build_and_compile`: the model, its optimizer and schedule;
4. :func:`fit`: Keras fit with Kestrel's callbacks (lib.training.callbacks);
5. :func:`record_results`: predict the validation and test splits once, with
   the best weights; metrics.json from those probabilities, predictions.npz
   from the evaluation split's.

A failure a user can act on (a bad config, an unreadable dataset, NaN loss, out
of memory) comes back as a failed :class:`TrainOutcome` whose message
:func:`failure_message` wrote; anything else is raised. It is what a worker
process (``python -m lib train --run-dir DIR``) and the CLI run; it never writes
``status.json`` itself: it returns the outcome and the caller (lib.jobs)
records it.

This module imports Keras at the top: import it only in processes that train.
"""

from __future__ import annotations

import math
import os
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lib import fine_tune, runstore
from lib.config import TRANSFER_PRESETS, RunConfig, TrainConfig
from lib.errors import KestrelError
from lib.progress import EndEvent, MetricsEvent, PhaseEvent, append_event
from lib.training import batchnorm, harden, transfer
from lib.training.callbacks import ProgressWriter, build_callbacks
from lib.training.resume import (
    best_epoch,
    best_from_rows,
    mark_fit_finished,
    previous_train_seconds,
    read_backup_epoch,
    read_rows,
    repair_backup,
    trim_history,
)
from lib.training.schedules import lr_plan, make_optimizer

EVAL_BATCH_MAX = 256  # images per model call when predicting the held-out splits


class RunConfigError(KestrelError):
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
    try:
        fine_tune.check_source(config, list(ds.class_names))
    except fine_tune.StartFromError as exc:
        raise RunConfigError(str(exc)) from None
    return ds


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Weights n / (K · count_k): every class contributes equally to the loss."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    n = counts.sum()
    return {k: float(n / (num_classes * c)) for k, c in enumerate(counts) if c > 0}


# ---------------------------------------------------------------------------
# Steps per epoch


def epoch_steps(n_images: int, batch_size: int) -> int:
    """Batches in one pass over ``n_images`` (the last one may be smaller)."""
    return max(1, math.ceil(n_images / batch_size))


def exact_steps(data, steps: int):
    """``data`` (a batched tf.data.Dataset) made to yield exactly ``steps`` batches per pass.

    A streamed split drops files that fail to decode, which makes the number of
    batches unknown to tf.data; Keras then runs each epoch until the iterator is
    exhausted, and the probe that finds it exhausted still advances the
    optimizer's step, so a schedule planned over ``epochs × steps`` reached its
    floor epochs early. Here a pass that comes up short is topped up from the
    next (reshuffled) pass, and the count is declared, so Keras knows it, every
    epoch has ``steps`` optimizer steps, and the schedule ends at the last one.
    When every file fails, tf.data raises (no endless loop): :func:`failure_message`
    reports it.
    """
    import tensorflow as tf

    if int(data.cardinality()) == steps:
        return data  # in-memory splits: known already
    data = data.repeat().take(steps)
    return data.apply(tf.data.experimental.assert_cardinality(steps))


# ---------------------------------------------------------------------------
# Stages of a run


@dataclass
class TrainingData:
    """What :func:`prepare_data` built: the dataset and the pipelines fit iterates."""

    dataset: Any  # lib.data.Dataset, loaded once per run
    train: Any  # tf.data.Dataset of exactly ``steps`` batches per epoch
    val: Any  # tf.data.Dataset of the validation split (every image once); None without one
    steps: int  # optimizer steps per epoch
    class_weight: dict[int, float] | None

    @property
    def num_classes(self) -> int:
        return len(self.dataset.class_names)

    @property
    def has_val(self) -> bool:
        return self.val is not None

    @property
    def monitor(self) -> str:
        """The history column that decides the best epoch."""
        return "val_accuracy" if self.has_val else "accuracy"


def prepare_data(cfg: RunConfig) -> TrainingData:
    """Load and check the dataset, and build the training and validation pipelines.

    Raises:
        RunConfigError, lib.data.DatasetError: the config cannot train on it.
    """
    from lib.augment import make_augmenter
    from lib.data import make_pipeline

    tc = cfg.train
    ds = validate_run(cfg)
    num_classes = len(ds.class_names)
    steps = epoch_steps(len(ds.splits["train"]), tc.batch_size)
    augmenter = make_augmenter(cfg.augment, tuple(ds.image_shape), num_classes, tc.seed)
    train = make_pipeline(
        ds,
        "train",
        batch_size=tc.batch_size,
        shuffle=True,
        seed=tc.seed,
        augment=augmenter,
        one_hot=True,
    )
    val = None
    if len(ds.splits.get("val", ())) > 0:
        val = make_pipeline(
            ds, "val", batch_size=tc.batch_size, shuffle=False, seed=tc.seed, one_hot=True
        )
    class_weight = (
        balanced_class_weights(ds.splits["train"].labels, num_classes)
        if tc.class_weights == "balanced"
        else None
    )
    return TrainingData(ds, exact_steps(train, steps), val, steps, class_weight)


@dataclass
class ResumeState:
    """Where this attempt starts: the epoch, and what earlier attempts left."""

    epoch: int  # 0-based epoch to start at (0: a fresh run)
    best_so_far: float | None  # best monitored value of the kept epochs, if model.keras exists
    warning: str  # for status.json: the resume checkpoint was lost


def prepare_resume(run_dir: Path, data: TrainingData, phase: Callable[[str], None]) -> ResumeState:
    """Make backup/ and history.csv consistent with each other before fit reads them."""
    note, warning = repair_backup(run_dir)
    if note or warning:
        phase(f"note: {note or warning}")
    epoch = read_backup_epoch(run_dir)
    kept_rows = trim_history(run_dir, epoch)
    best = best_from_rows(kept_rows, data.monitor)
    if not (run_dir / runstore.MODEL_FILE).exists():
        best = None
    return ResumeState(epoch, best, warning)


def build_and_compile(cfg: RunConfig, data: TrainingData, hw) -> keras.Model:
    """The run's model under the hardware's strategy, compiled with its optimizer."""
    from lib import hardware
    from lib.architectures import build_model

    tc = cfg.train
    # Fine-tuning: the weights come from the start_from run, not from a download.
    model_cfg = cfg.model.replace(weights="none") if cfg.model.start_from else cfg.model
    with hw.strategy.scope():
        model = build_model(model_cfg, tuple(data.dataset.image_shape), data.num_classes)
        if cfg.model.start_from:
            try:
                fine_tune.load_source_weights(model, cfg)
            except fine_tune.StartFromError as exc:
                raise RunConfigError(str(exc)) from None
        batchnorm.install(model)  # the same arithmetic, in TensorFlow's fused kernel
        batchnorm.fit_momentum(model, data.steps)  # moving statistics that keep up
        model.compile(
            optimizer=make_optimizer(tc, data.steps),
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=tc.label_smoothing
            ),
            metrics=["accuracy"],
        )
    if _multi_worker(hw):
        hardware.patch_keras_for_multi_worker(model, hw.strategy)
    return model


def fit(
    run_dir: Path,
    cfg: RunConfig,
    model: keras.Model,
    data: TrainingData,
    resume: ResumeState,
    *,
    echo: bool,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[float, ProgressWriter]:
    """Keras fit over the remaining epochs; returns (seconds, the progress callback)."""
    callbacks, progress = build_callbacks(
        run_dir,
        cfg,
        steps=data.steps,
        has_val=data.has_val,
        best_so_far=resume.best_so_far,
        echo=echo,
    )
    t0 = time.monotonic()
    with warnings.catch_warnings():
        # A streamed validation split (every image once, broken files dropped) has no
        # known length, so Keras learns it by reading to the end, and then warns "Your
        # input ran out of data; interrupting training" into the run's log, once, with
        # nothing wrong. The training split cannot run short: exact_steps declares its
        # length and tf.data raises when a pass comes up short.
        warnings.filterwarnings(
            "ignore", message="Your input ran out of data", category=UserWarning
        )
        model.fit(
            data.train,
            validation_data=data.val,
            epochs=cfg.train.epochs,
            callbacks=[*callbacks, *extra_callbacks],
            class_weight=data.class_weight,
            shuffle=False,  # the pipeline shuffles
            verbose=0,
        )
    return time.monotonic() - t0, progress


def split_scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float | int]:
    """Accuracy, mean cross-entropy and count of one split from its probabilities."""
    y = np.asarray(labels, np.int64)
    n = len(y)
    correct = int((probs.argmax(axis=1) == y).sum()) if n else 0
    nll = float(-np.log(np.clip(probs[np.arange(n), y], 1e-12, 1.0)).sum()) if n else 0.0
    return {"accuracy": correct / max(n, 1), "loss": nll / max(n, 1), "count": n}


def predict_held_out(
    model: keras.Model, data: TrainingData, tc: TrainConfig, *, distributed: bool
) -> dict[str, np.ndarray]:
    """Probabilities (float64) of the validation and test splits that have images.

    ``distributed=False`` (several workers) makes every worker predict the whole
    split in its own process: ``model.predict`` would give each only its shard.
    """
    from lib.evaluation import predict_probs

    out = {}
    for name in ("val", "test"):
        split = data.dataset.splits.get(name)
        if split is None or len(split) == 0:
            continue
        out[name] = predict_probs(
            model,
            split,
            batch_size=min(tc.batch_size, EVAL_BATCH_MAX),
            tta_flip=tc.tta_flip,
            distributed=distributed,
            dtype=np.float64,
        )
    return out


def record_results(
    run_dir: Path,
    cfg: RunConfig,
    model: keras.Model,
    data: TrainingData,
    hw,
    *,
    train_seconds: float,
    started: float,
    first_attempt_epoch: int | None,
    phase: Callable[[str], None],
    path_facts: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Evaluate the best weights and write metrics.json and predictions.npz.

    Returns:
        (metrics, warnings): the warnings are for status.json (predictions that
        could not be stored never fail the run).
    """
    from lib import hardware

    tc = cfg.train
    phase("evaluating")
    if (run_dir / runstore.MODEL_FILE).exists():
        model.load_weights(str(run_dir / runstore.MODEL_FILE))
    if hw.device == "cpu" and hw.precision != "float32":
        from lib.registry import float32_model

        # The scores and predictions of the model as Predict and the exports run it.
        model = float32_model(model)
    rows = read_rows(run_dir)
    ds = data.dataset
    metrics: dict[str, Any] = {
        "epochs_done": len(rows),
        "epochs_planned": tc.epochs,
        "stopped_early": len(rows) < tc.epochs,
        "train_seconds": round(
            train_seconds
            + previous_train_seconds(run_dir, include_last=first_attempt_epoch is None),
            3,
        ),
        "total_seconds": round(time.monotonic() - started, 3),
        "best_val_accuracy": best_from_rows(rows, "val_accuracy"),
        "best_epoch": best_epoch(rows, data.monitor),
        "tta_flip": tc.tta_flip,
        "precision": hw.precision,
        "device": hw.describe(),
        # Views (Compare, the registry) read these instead of reloading data or the model.
        "class_names": list(ds.class_names),
        "params": int(model.count_params()),
        # "images", or "cached_features" (lib.training.transfer) with the cache's facts
        "training_path": "images",
        **(path_facts or {}),
    }
    probs = predict_held_out(model, data, tc, distributed=not _multi_worker(hw))
    for name, split_probs in probs.items():
        scores = split_scores(ds.splits[name].labels, split_probs)
        for key, value in scores.items():
            metrics[f"{name}_{key}"] = value
    metrics["eval_split"] = "test" if "test" in probs else "val"
    runstore.atomic_write_json(run_dir / runstore.METRICS_FILE, metrics)
    append_event(run_dir, MetricsEvent(metrics=metrics))

    warnings = []
    if hardware.is_chief():  # the other workers share the chief's run directory
        phase("computing predictions")
        try:
            from lib.evaluation import compute_predictions

            compute_predictions(run_dir, dataset=ds, probs=probs.get(metrics["eval_split"]))
        except Exception as exc:  # predictions are a convenience: never fail the run
            warnings.append(f"predictions could not be computed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        warnings += fit_unknown_detection(run_dir, model, ds, phase)
    return metrics, warnings


def fit_unknown_detection(run_dir: Path, model, dataset, phase) -> list[str]:
    """Fit lib.ood's statistics into the run folder; a failure is a warning, never a failed run."""
    from lib import ood

    phase("fitting unknown detection")
    try:
        ood.fit_for_run(run_dir, model, dataset)
    except ood.OODError as exc:  # too little data: the model predicts without it
        phase(f"no unknown detection: {exc}")
    except Exception as exc:
        traceback.print_exc()
        return [f"unknown detection could not be fitted: {type(exc).__name__}: {exc}"]
    return []


def _multi_worker(hw) -> bool:
    return hw.strategy_name == "multi-worker mirrored"


# ---------------------------------------------------------------------------
# Failures


def failure_message(exc: BaseException, run_dir: Path, cfg: RunConfig) -> str | None:
    """The message a user gets for a failure they can act on; None for a bug (re-raise).

    The one place that sorts training failures: a user-fixable error (config,
    dataset, hardware; lib.errors.KestrelError), a NaN or infinite loss
    (TerminateOnNaN), a streamed split whose files all fail to decode, and
    running out of memory.
    """
    if isinstance(exc, KestrelError):
        return str(exc)
    text = str(exc)
    if isinstance(exc, RuntimeError) and "NaN or Inf loss" in text:
        return _nan_message(run_dir, cfg.train)
    if _is_oom(exc):
        return _oom_message(cfg)
    if _is_short_dataset(exc):
        return (
            "the training split yielded fewer batches than its size promises: its image "
            "files could not be decoded. Check the dataset on the Data page (skipped files "
            "are listed there) and train again."
        )
    return None


def _is_oom(exc: BaseException) -> bool:
    import tensorflow as tf

    return isinstance(exc, (tf.errors.ResourceExhaustedError, MemoryError)) or (
        "out of memory" in str(exc).lower() or "OOM when allocating" in str(exc)
    )


def _is_short_dataset(exc: BaseException) -> bool:
    """tf.data's assert_cardinality (:func:`exact_steps`) found fewer batches."""
    import tensorflow as tf

    return isinstance(exc, tf.errors.OpError) and "was expected to contain" in str(exc)


# ---------------------------------------------------------------------------
# The run


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
    run_dir = Path(run_dir)

    def phase(text: str) -> None:
        append_event(run_dir, PhaseEvent(phase=text))
        if on_phase:
            on_phase(text)
        if echo:
            print(text, flush=True)

    from lib import hardware

    with hardware.keep_dtype_policy():
        outcome = _train(run_dir, phase, echo=echo, extra_callbacks=extra_callbacks)
    append_event(run_dir, EndEvent(state=outcome.state, error=outcome.error))
    return outcome


def _train(
    run_dir: Path,
    phase: Callable[[str], None],
    *,
    echo: bool,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> TrainOutcome:
    from lib import hardware

    started = time.monotonic()
    cfg = runstore.read_config(run_dir)
    tc = cfg.train
    resume = ResumeState(0, None, "")
    try:
        hw = hardware.configure(
            tc.device, tc.mixed_precision, imagenet_backbone=cfg.model.preset in TRANSFER_PRESETS
        )
        phase(f"hardware: {hw.describe()}")
        keras.utils.set_random_seed(tc.seed)

        phase("loading data")
        data = prepare_data(cfg)
        resume = prepare_resume(run_dir, data, phase)
        runstore.atomic_write_json(run_dir / runstore.LR_PLAN_FILE, lr_plan(tc, data.steps))

        phase(
            "building model"
            if resume.epoch == 0
            else f"building model (resuming at epoch {resume.epoch + 1})"
        )
        model = build_and_compile(cfg, data, hw)
        harden.install(model, cfg.augment, tc.seed)  # adversarial / corruption training, if set
        fused = batchnorm.fused_layers(model)
        if fused:
            phase(f"BatchNorm: {fused} layers train through TensorFlow's fused kernel")
        path_facts: dict[str, Any] = {}
        if transfer.cached_path_reason(cfg) is None:
            phase("training on cached backbone features")
            train_seconds, progress, path_facts = transfer.fit_cached(
                run_dir, cfg, model, data, resume, hw, echo=echo, extra_callbacks=extra_callbacks
            )
        else:
            phase("training")
            train_seconds, progress = fit(
                run_dir, cfg, model, data, resume, echo=echo, extra_callbacks=extra_callbacks
            )
    except Exception as exc:
        message = failure_message(exc, run_dir, cfg)
        if message is None:
            raise
        return TrainOutcome("failed", error=message, warning=resume.warning)

    epochs_done = len(read_rows(run_dir))
    if progress.stop_seen:
        return TrainOutcome("stopped", metrics={"epochs_done": epochs_done}, warning=resume.warning)
    # Training is over (early stopping included): should the worker be killed before
    # lib.jobs records "completed", the resume trains no epoch and only finishes.
    mark_fit_finished(run_dir, tc.epochs)

    path_facts = {**path_facts, "batchnorm_fused_layers": fused}
    metrics, warnings = record_results(
        run_dir,
        cfg,
        model,
        data,
        hw,
        train_seconds=train_seconds,
        started=started,
        first_attempt_epoch=progress.initial_epoch,
        phase=phase,
        path_facts=path_facts,
    )
    # backup/ stays: lib.jobs removes it once status.json says "completed", so a kill
    # before that leaves a run that resumes (and finishes) instead of retraining.
    warnings = [w for w in (resume.warning, *warnings) if w]
    return TrainOutcome("completed", metrics=metrics, warning="; ".join(warnings))


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
