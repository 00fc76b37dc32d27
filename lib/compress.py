"""Compression variants of a model and their trade-off table, computed as a background job.

    from lib import compress
    opts = compress.CompressOptions(sparsity=0.8)
    data = compress.convert(model, "int8", representative=train_images)   # TFLite bytes
    job = compress.start(entry, opts)              # a process; its folder is the truth
    compress.read_job(job).state, compress.read_job(job).table

Variants (:data:`VARIANTS`), all TensorFlow Lite so one interpreter runs them:

- ``tflite``: float32, the baseline every ratio is measured against;
- ``float16``: float16 weights (about half the size, float compute);
- ``dynamic``: dynamic-range quantisation (int8 weights, float activations);
- ``int8``: full-integer quantisation calibrated on train-split images (int8
  weights and activations; with ``int8_io`` the input and output are int8 too,
  else float in and out around an int8 body);
- ``pruned``: magnitude pruning as a short fine-tuning run to a target sparsity
  on a schedule, exported as float32 TFLite; zeros cost nothing once the file is
  gzipped, so its compressed size is what it saves.

The trade-off table (:func:`tradeoff`) runs every variant and the Keras model
on the test split: accuracy, per-class accuracy change against Keras (a class
losing more than :data:`FLAG_POINTS` points is flagged), size raw and gzipped,
single-image latency p50/p95 (TFLite interpreter with its default XNNPACK
delegate; Keras for reference; rounds interleave the variants so a busy machine
slows all alike) and top-1 agreement with the Keras model. The job
(``python -m lib.compress JOB_DIR``, started by :func:`start`) writes the
variant files and ``tradeoff.json`` into the job folder, which lives with the
model: ``<run>/compress`` for a run, ``<saved model>/compress`` for a model
saved in the workspace, and the workspace's ``compress/<name>-<hash>`` for the
shipped (read-only, in git) and uploaded models. It is a side job of
:mod:`lib.jobs` (``status.json``, ``log.txt``), its stages phase events with their
share done in ``progress.jsonl``; :func:`read_job` reads them back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib import runstore
from lib.errors import KestrelError
from lib.registry import ModelCard, ModelEntry, load_model, sanitize_name
from lib.runstore import atomic_write_bytes, atomic_write_json
from lib.workspace import area

VARIANTS: dict[str, tuple[str, str]] = {
    # kind: (label, file suffix)
    "tflite": ("TFLite float32", ".tflite"),
    "float16": ("TFLite float16", "_float16.tflite"),
    "dynamic": ("TFLite dynamic-range", "_dynamic.tflite"),
    "int8": ("TFLite full-integer int8", "_int8.tflite"),
    "pruned": ("Pruned, TFLite float32", "_pruned.tflite"),
}
SCHEDULES = ("polynomial", "constant")
OPTION_LIMITS: dict[str, tuple[float, float]] = {
    "representative_images": (10, 2000),
    "sparsity": (0.05, 0.95),
    "prune_epochs": (0.1, 20.0),
    "prune_learning_rate": (1e-6, 1e-1),
    "prune_train_images": (64, 1_000_000),
    "test_images": (16, 1_000_000),
    "latency_repeats": (5, 10_000),
}
MIN_PRUNABLE_WEIGHTS = 1024  # smaller kernels are not pruned (see prunable_kernels)
FLAG_POINTS = 5.0  # a class losing more accuracy than this (percentage points) is flagged
JOB_FOLDER = "compress"
JOB_FILE = "job.json"
STATUS_FILE = runstore.STATUS_FILE  # a side job's status (lib.jobs.start_side_job)
TABLE_FILE = "tradeoff.json"
LOG_FILE = runstore.LOG_FILE
PROGRESS_FILE = runstore.PROGRESS_FILE  # phase events: the stage and its share done
SHARE_STEPS = 1000  # a stage's share done is recorded as done/SHARE_STEPS
PRUNED_MODEL_FILE = "pruned.keras"


class CompressError(KestrelError):
    """A compression that cannot be made; the message says why and what to do."""


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class CompressOptions:
    """What to build and how; every field is checked by :meth:`validate`."""

    variants: tuple[str, ...] = tuple(VARIANTS)
    int8_io: bool = False  # int8 input/output tensors (else float in/out around int8)
    representative_images: int = 200  # train images calibrating int8 activations
    sparsity: float = 0.8  # share of each kernel's weights set to zero by pruning
    schedule: str = "polynomial"  # sparsity ramps up (TFMOT's PolynomialDecay) or is set at once
    prune_epochs: float = 2.0  # fine-tuning length, in passes over the train images used
    prune_learning_rate: float = 1e-3  # Adam; below a usual training rate, the model is trained
    prune_train_images: int = 60000  # train images the fine-tuning uses at most
    test_images: int = 10000  # test images the table is measured on at most
    latency_repeats: int = 100  # timed single-image calls per variant

    def validate(self) -> CompressOptions:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise CompressError(
                f"variants: unknown {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"choose from {', '.join(VARIANTS)}"
            )
        if self.schedule not in SCHEDULES:
            raise CompressError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        for name, (lo, hi) in OPTION_LIMITS.items():
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not lo <= value <= hi
            ):
                raise CompressError(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "variants" in kwargs:
            kwargs["variants"] = tuple(kwargs["variants"])
        return cls(**kwargs).validate()


# ---------------------------------------------------------------- conversion


def convert(
    model: Any,
    kind: str,
    representative: np.ndarray | None = None,
    int8_io: bool = False,
) -> bytes:
    """The TFLite flatbuffer of ``model`` as variant ``kind`` (``pruned``: of a pruned model).

    Args:
        model: a Keras model taking raw pixels (B, H, W, C).
        kind: one of :data:`VARIANTS`.
        representative: uint8 images (N, H, W, C) of the train split; ``int8`` needs them.
        int8_io: for ``int8``, make the input and output tensors int8 too.
    """
    import tensorflow as tf

    if kind not in VARIANTS:
        raise CompressError(f"unknown variant {kind!r}; choose one of {', '.join(VARIANTS)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif kind == "int8":
        if representative is None or not len(representative):
            raise CompressError("int8 quantisation needs representative train images")
        samples = np.asarray(representative, np.float32)

        def calibration():
            for i in range(len(samples)):
                yield [samples[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        # Keras prints the traced signature; the converter warns that float inputs carry
        # no quantisation statistics, which is the point of float in/out.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    except Exception as exc:
        from lib import export

        raise CompressError(export.conversion_failure(VARIANTS[kind][0], exc)) from None


def _interpreter(data: bytes, threads: int):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        # The default op resolver applies the XNNPACK delegate (float and int8 kernels).
        return tf.lite.Interpreter(model_content=data, num_threads=threads)


class TFLiteModel:
    """A TFLite model taking raw pixels, quantising the input and dequantising the output if int8."""

    def __init__(self, data: bytes, threads: int = 1):
        self.data = data
        self._batch = _interpreter(data, threads)
        self._single = _interpreter(data, threads)
        self.input = self._batch.get_input_details()[0]
        self.output = self._batch.get_output_details()[0]
        shape = tuple(int(d) for d in self.input["shape"][1:])
        self._single.resize_tensor_input(self.input["index"], (1, *shape))
        self._single.allocate_tensors()

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return np.ascontiguousarray(x, np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.output["dtype"] == np.float32:
            return y.astype(np.float32)
        scale, zero = self.output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def __call__(self, x: np.ndarray, chunk: int = 64) -> np.ndarray:
        """Outputs (logits or probabilities, as the model gives) for a batch of raw pixels."""
        parts, interp = [], self._batch
        for start in range(0, len(x), chunk):
            part = self._quantize(x[start : start + chunk])
            interp.resize_tensor_input(self.input["index"], part.shape)
            interp.allocate_tensors()
            interp.set_tensor(self.input["index"], part)
            interp.invoke()
            parts.append(self._dequantize(interp.get_tensor(self.output["index"])))
        return np.concatenate(parts)

    def one(self, image: np.ndarray) -> np.ndarray:
        """One image (1, H, W, C) through the pre-allocated single-image interpreter."""
        interp = self._single
        interp.set_tensor(self.input["index"], self._quantize(image))
        interp.invoke()
        return interp.get_tensor(self.output["index"])


def tensor_dtypes(data: bytes) -> dict[str, int]:
    """How many tensors of each dtype a TFLite model holds (e.g. ``{"int8": 20, ...}``)."""
    interp = _interpreter(data, 1)
    counts: dict[str, int] = {}
    for t in interp.get_tensor_details():
        name = np.dtype(t["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    return counts


def gzip_size(data: bytes) -> int:
    """Bytes of ``data`` gzipped at level 9 (how much a download or an app bundle carries)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


# ---------------------------------------------------------------- pruning


def prunable_kernels(model: Any, min_size: int = MIN_PRUNABLE_WEIGHTS) -> list[Any]:
    """The kernels magnitude pruning zeroes: of Conv, DepthwiseConv and Dense layers.

    Kernels under ``min_size`` weights (typically the first convolution) are left
    whole: they hold almost none of the file and much of the accuracy.
    """
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    found: list[Any] = []
    for layer in _all_layers(model):
        if isinstance(layer, kinds):
            for v in layer.trainable_weights:
                big = int(np.prod(v.shape)) >= min_size
                if v.path.endswith("kernel") and big and all(v is not f for f in found):
                    found.append(v)
    return found


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):  # a nested model (e.g. a backbone)
            out.extend(_all_layers(layer))
    return out


def sparsity_of(model: Any) -> float:
    """Share of exact zeros among the prunable kernels' weights."""
    kernels = [np.asarray(k.numpy()) for k in prunable_kernels(model)]
    total = sum(k.size for k in kernels)
    return float(sum(int(np.sum(k == 0)) for k in kernels) / max(total, 1))


def sparsity_at(step: int, total_steps: int, target: float, schedule: str = "polynomial") -> float:
    """Scheduled sparsity after ``step`` of ``total_steps`` fine-tuning steps.

    ``polynomial`` is TensorFlow Model Optimization's PolynomialDecay (power 3): it
    rises fast, then settles, reaching ``target`` at 70 % of the steps so the
    last 30 % recover accuracy at the final mask. ``constant`` prunes to
    ``target`` at once.
    """
    if schedule == "constant":
        return target
    end = max(1, round(0.7 * total_steps))
    progress = min(1.0, step / end)
    return target * (1.0 - (1.0 - progress) ** 3)


def magnitude_masks(kernels: list[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """Per kernel, a 0/1 mask zeroing its ``sparsity`` share of smallest-magnitude weights."""
    masks = []
    for w in kernels:
        k = round(sparsity * w.size)
        mask = np.ones(w.size, w.dtype)
        if k > 0:
            order = np.argpartition(np.abs(w).ravel(), k - 1)[:k]
            mask[order] = 0
        masks.append(mask.reshape(w.shape))
    return masks


def _pruning_callback_class():
    import keras

    class MagnitudePruning(keras.callbacks.Callback):
        """Magnitude pruning for Keras 3 models: masks per kernel, reapplied after every batch.

        TensorFlow Model Optimization's ``prune_low_magnitude`` does not support
        Keras 3 (tensorflow/model-optimization#1119) and no maintained Keras 3
        pruning library exists, so this small callback does what it does: every
        ``frequency`` steps it recomputes each kernel's mask at the scheduled
        sparsity (:func:`sparsity_at`) from the weights' magnitudes, and after
        every batch it multiplies the kernels by their masks, so the optimizer's
        update never revives a pruned weight for long. Training ends on the
        target mask.
        """

        def __init__(self, target: float, total_steps: int, schedule: str, frequency: int = 50):
            super().__init__()
            self.target, self.total_steps = target, max(1, total_steps)
            self.schedule, self.frequency = schedule, max(1, frequency)
            self.step, self.kernels, self.masks = 0, [], []

        def on_train_begin(self, logs=None):
            self.kernels = prunable_kernels(self.model)
            self._update(sparsity_at(0, self.total_steps, self.target, self.schedule))

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % self.frequency == 0:
                self._update(sparsity_at(self.step, self.total_steps, self.target, self.schedule))
            else:
                self._apply()

        def on_train_end(self, logs=None):
            self._update(self.target)

        def _update(self, sparsity: float) -> None:
            values = [np.asarray(k.numpy()) for k in self.kernels]
            self.masks = magnitude_masks(values, sparsity)
            self._apply()

        def _apply(self) -> None:
            for k, m in zip(self.kernels, self.masks, strict=True):
                k.assign(k.numpy() * m)

    return MagnitudePruning


def _batches(images: np.ndarray, labels: np.ndarray, batch: int, steps: int):
    """``steps`` shuffled batches of (float32 pixels, labels), repeating the images as needed."""
    import tensorflow as tf

    from lib.data.pipeline import without_autotune

    ds = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int32)))
    ds = ds.shuffle(min(len(images), 10_000), seed=0).repeat().batch(batch)
    batches = ds.map(lambda x, y: (tf.cast(x, tf.float32), y)).take(steps).prefetch(2)
    return without_autotune(batches)


def prune(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    options: CompressOptions,
    output: str = "logits",
    on_progress: Callable[[float], None] | None = None,
) -> Any:
    """A magnitude-pruned copy of ``model``, fine-tuned on ``images``/``labels``.

    Args:
        model: the trained Keras model (left unchanged).
        images: uint8 train images (N, H, W, C), raw pixels.
        labels: int class indices (N,).
        options: sparsity, schedule, epochs, learning rate.
        output: "logits" or "probabilities" (the model's last layer).
        on_progress: called with the share of fine-tuning done.

    Returns:
        the pruned Keras model; its prunable kernels hold ``options.sparsity`` zeros.
    """
    import keras

    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    # BatchNorm keeps its trained statistics and runs in inference mode, as in Keras'
    # fine-tuning guide: a short fine-tune on the batch statistics of a network whose
    # weights are being zeroed moved them far (the shapes-demo recipe's 4-block BatchNorm
    # CNN on 3000 shapes lost 64 points at 80 % sparsity; with BatchNorm frozen, and masks
    # updated at least 20 times on the schedule, it lost 18, and none at 50 %).
    for layer in _all_layers(pruned):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    batch = 64
    total_steps = max(1, round(options.prune_epochs * len(images) / batch))
    pruned.compile(
        optimizer=keras.optimizers.Adam(options.prune_learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=output != "probabilities"),
    )
    # The mask follows the schedule every 50 steps (every 1/20 of a shorter fine-tune,
    # so a small dataset's few steps still prune gradually, not in one cliff).
    frequency = max(1, min(50, total_steps // 20))
    callback = _pruning_callback_class()(
        options.sparsity, total_steps, options.schedule, frequency=frequency
    )
    callbacks: list[Any] = [callback]
    if on_progress is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_batch_end=lambda b, logs: on_progress(min(1.0, callback.step / total_steps))
            )
        )
    pruned.fit(
        _batches(images, labels, batch, total_steps),
        epochs=1,
        steps_per_epoch=total_steps,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,  # the pipeline shuffles
    )
    return pruned


# ---------------------------------------------------------------- data


def dataset_config(card: ModelCard):
    """The DataConfig the model was trained on, from its card."""
    from lib.config import DataConfig

    for raw in ((card.training_config or {}).get("data"), (card.dataset or {}).get("config")):
        if isinstance(raw, dict):
            with contextlib.suppress(ValueError, TypeError):
                return DataConfig.from_dict(raw)
    raise CompressError(
        f"the card of {card.name!r} names no dataset, so there is no train split to "
        "calibrate on and no test split to measure on; compress a model trained in Kestrel"
    )


def model_images(split, card: ModelCard, indices: np.ndarray) -> np.ndarray:
    """uint8 images of ``split`` at ``indices``, shaped as the model takes them."""
    from lib.predict import preprocess

    images = split.images(indices)
    if tuple(images.shape[1:]) == tuple(card.input_shape):
        return images
    return np.stack([preprocess(img, card) for img in images])


def _pick(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def load_splits(card: ModelCard, options: CompressOptions):
    """(train images, train labels, test images, test labels) for ``card``'s dataset."""
    from lib.data import load_dataset

    ds = load_dataset(dataset_config(card))
    if ds.num_classes != card.num_classes:
        raise CompressError(
            f"the dataset in the card has {ds.num_classes} classes but the model "
            f"{card.num_classes}; the dataset changed since training"
        )
    train = ds.splits["train"]
    test = ds.splits.get("test")
    if test is None or not len(test):
        test = ds.splits["val"]
    train_idx = _pick(len(train), max(options.prune_train_images, options.representative_images), 1)
    test_idx = _pick(len(test), options.test_images, 2)
    return (
        model_images(train, card, train_idx),
        train.labels[train_idx],
        model_images(test, card, test_idx),
        test.labels[test_idx],
    )


# ---------------------------------------------------------------- the trade-off table


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Accuracy of each of ``k`` classes (NaN for a class without test images)."""
    out = np.full(k, np.nan)
    for c in range(k):
        mask = labels == c
        if mask.any():
            out[c] = float(np.mean(pred[mask] == c))
    return out


def _row(name, label, data, ref_pred, pred, labels, class_names) -> dict[str, Any]:
    k = len(class_names)
    ref_class = per_class_accuracy(ref_pred, labels, k)
    own_class = per_class_accuracy(pred, labels, k)
    per_class = []
    for c in range(k):
        change = (own_class[c] - ref_class[c]) * 100
        per_class.append(
            {
                "class": class_names[c],
                "accuracy": None if np.isnan(own_class[c]) else round(float(own_class[c]), 5),
                "change_points": None if np.isnan(change) else round(float(change), 3),
                "flagged": bool(not np.isnan(change) and change < -FLAG_POINTS),
            }
        )
    return {
        "variant": name,
        "label": label,
        "size_bytes": len(data),
        "gzip_bytes": gzip_size(data),
        "accuracy": round(float(np.mean(pred == labels)), 5),
        "accuracy_change_points": round(
            float(np.mean(pred == labels) - np.mean(ref_pred == labels)) * 100, 3
        ),
        "top1_agreement": round(float(np.mean(pred == ref_pred)), 5),
        "per_class": per_class,
        "flagged_classes": [p["class"] for p in per_class if p["flagged"]],
    }


def interleaved_latency(
    runners: dict[str, Callable[[np.ndarray], Any]],
    images: np.ndarray,
    repeats: int,
    warmup: int = 10,
) -> dict[str, dict[str, float]]:
    """Single-image latency of each runner in ms, rounds interleaving the runners.

    Each round calls every runner once on the same image, so a machine that gets
    busier slows every variant alike.
    """
    names = list(runners)
    for i in range(warmup):
        for name in names:
            runners[name](images[i % len(images)][None])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        image = images[r % len(images)][None]
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            t0 = time.perf_counter()
            runners[name](image)
            times[name].append((time.perf_counter() - t0) * 1000)
    return {
        n: {
            "p50_ms": round(float(np.percentile(t, 50)), 4),
            "p95_ms": round(float(np.percentile(t, 95)), 4),
            "repeats": len(t),
        }
        for n, t in times.items()
    }


def tradeoff(
    entry: ModelEntry,
    options: CompressOptions,
    out_dir: Path | None = None,
    on_progress: Callable[[str, float], None] | None = None,
    data: tuple | None = None,
) -> dict[str, Any]:
    """Build the variants of ``entry`` and measure them against its Keras model.

    Args:
        entry: the model.
        options: which variants and how.
        out_dir: where the variant files go (``<file stem><suffix>``); none if None.
        on_progress: called with (stage, share of the whole done).
        data: (train x, train y, test x, test y) instead of the card's dataset.

    Returns:
        the table: ``rows`` (one per variant, Keras first) and how it was measured.
    """
    from lib.predict import Predictor, softmax

    options.validate()
    say = on_progress or (lambda stage, share: None)
    say("loading the data", 0.0)
    train_x, train_y, test_x, test_y = (
        data if data is not None else load_splits(entry.card, options)
    )
    card = entry.card
    model = load_model(entry)
    predictor = Predictor(model, card)

    def top1(fn, x):
        out = np.asarray(fn(x), np.float32)
        return (out if card.output == "probabilities" else softmax(out)).argmax(axis=1)

    say("Keras reference", 0.05)
    ref_pred = np.concatenate(
        [
            predictor.raw_logits(test_x[i : i + 256]).argmax(axis=1)
            for i in range(0, len(test_x), 256)
        ]
    )
    keras_bytes = Path(entry.model_path).read_bytes()
    rows = [
        _row(
            "keras", "Keras (reference)", keras_bytes, ref_pred, ref_pred, test_y, card.class_names
        )
    ]
    runners: dict[str, Callable[[np.ndarray], Any]] = {"keras": predictor.raw_logits}
    rep = train_x[: options.representative_images]
    stem = sanitize_name(entry.name.rsplit(".keras", 1)[0] or "model")
    files: dict[str, str] = {}
    extra: dict[str, Any] = {}
    kinds = [k for k in VARIANTS if k in options.variants]
    for i, kind in enumerate(kinds):
        share = 0.1 + 0.7 * i / len(kinds)
        if kind == "pruned":
            say("pruning (fine-tuning)", share)
            span = 0.7 / len(kinds)
            pruned = prune(
                model,
                train_x,
                train_y,
                options,
                card.output,
                on_progress=lambda f, s=share, w=span: say("pruning (fine-tuning)", s + w * f),
            )
            extra["pruned_sparsity"] = round(sparsity_of(pruned), 4)
            blob = convert(pruned, "tflite")
            if out_dir is not None:
                pruned.save(out_dir / PRUNED_MODEL_FILE)
        else:
            say(f"converting {VARIANTS[kind][0]}", share)
            blob = convert(model, kind, rep, int8_io=options.int8_io)
        runner = TFLiteModel(blob)
        row = _row(
            kind, VARIANTS[kind][0], blob, ref_pred, top1(runner, test_x), test_y, card.class_names
        )
        if kind == "pruned":
            row["sparsity"] = extra["pruned_sparsity"]
        rows.append(row)
        runners[kind] = runner.one
        if out_dir is not None:
            files[kind] = stem + VARIANTS[kind][1]
            atomic_write_bytes(out_dir / files[kind], blob)
    say("timing single images", 0.85)
    lat = interleaved_latency(runners, test_x[:32], options.latency_repeats)
    for row in rows:
        row["latency_p50_ms"] = lat[row["variant"]]["p50_ms"]
        row["latency_p95_ms"] = lat[row["variant"]]["p95_ms"]
        row["file"] = files.get(row["variant"], "")
    say("done", 1.0)
    return {
        "model": entry.name,
        "model_file": str(entry.model_path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "test_images": len(test_x),
        "flag_points": FLAG_POINTS,
        "options": options.to_dict(),
        "latency": (
            "single image, model call only (preprocessing excluded), after 10 warm-up calls; "
            f"{options.latency_repeats} rounds interleaving the variants; TFLite interpreter, "
            "1 thread, XNNPACK delegate; Keras: one traced tf.function call"
        ),
        "rows": rows,
    }


def baseline_ratios(table: dict[str, Any], baseline: str = "tflite") -> dict[str, dict[str, float]]:
    """Each variant's size, gzipped size and p50 latency as a ratio to ``baseline``'s."""
    rows = {r["variant"]: r for r in table["rows"]}
    base = rows.get(baseline)
    if base is None:
        return {}
    return {
        name: {
            "size_ratio": r["size_bytes"] / base["size_bytes"],
            "gzip_ratio": r["gzip_bytes"] / base["gzip_bytes"],
            "latency_ratio": r["latency_p50_ms"] / base["latency_p50_ms"],
            "accuracy_drop_points": (base["accuracy"] - r["accuracy"]) * 100,
        }
        for name, r in rows.items()
    }


# ---------------------------------------------------------------- the job


@dataclass
class JobStatus:
    state: str = "none"  # none, running, completed, failed
    stage: str = ""
    progress: float = 0.0
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    pid_start: int | None = None
    error: str = ""
    table: dict[str, Any] | None = None
    folder: Path | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


def job_dir(entry: ModelEntry, create: bool = True) -> Path:
    """The folder of ``entry``'s compression job (see the module docstring)."""
    folder = Path(entry.model_path).parent
    if entry.source in ("run", "saved"):
        path = folder / JOB_FOLDER
    else:
        digest = hashlib.sha256(Path(entry.model_path).read_bytes()).hexdigest()[:12]
        stem = sanitize_name(entry.name.rsplit(".keras", 1)[0] or "model")
        path = area(JOB_FOLDER) / f"{stem}-{digest}"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def read_job(folder: Path) -> JobStatus:
    """The job's state from its folder; a "running" job whose process is gone is marked failed.

    The status is a side job's (lib.jobs); the stage and its share done are the newest
    phase event's, and a completed job's table is read with it.
    """
    from lib import jobs
    from lib.progress import PhaseEvent, iter_events

    folder = Path(folder)
    if not (folder / STATUS_FILE).is_file():
        return JobStatus(folder=folder)
    run = jobs.side_job_status(folder, "the compression job")
    status = JobStatus(
        state=run.state, started=run.started, ended=run.ended, pid=run.pid,
        pid_start=run.pid_start, error=run.error, folder=folder,
    )  # fmt: skip
    phases = [e for e in iter_events(folder, 16_384) if isinstance(e, PhaseEvent)]
    if phases:
        status.stage = phases[-1].phase
        status.progress = phases[-1].done / phases[-1].total if phases[-1].total else 0.0
    if status.state == "completed":
        status.stage, status.progress = "done", 1.0
        with contextlib.suppress(OSError, ValueError):
            status.table = json.loads((folder / TABLE_FILE).read_text(encoding="utf-8"))
    return status


def start(entry: ModelEntry, options: CompressOptions) -> Path:
    """Start the trade-off job of ``entry`` in its own process; returns the job folder.

    Raises:
        CompressError: bad options, no dataset in the card, or a job already running.
    """
    from lib.jobs import start_side_job

    options.validate()
    dataset_config(entry.card)  # refuse a card without a dataset before starting anything
    folder = _new_job_folder(entry)
    job = {
        "name": entry.name,
        "source": entry.source,
        "model_path": str(entry.model_path),
        "card": entry.card.to_dict(),
        "options": options.to_dict(),
    }
    atomic_write_json(folder / JOB_FILE, job)
    start_side_job(folder, ["-m", "lib.compress", str(folder)])
    return folder


def _new_job_folder(entry: ModelEntry) -> Path:
    """``entry``'s job folder, cleared of the last job's table and stages.

    Raises:
        CompressError: a job for ``entry`` is running.
    """
    folder = job_dir(entry)
    if read_job(folder).running:
        raise CompressError("a compression job for this model is already running; wait for it")
    for old in (TABLE_FILE, PROGRESS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (folder / old).unlink()
    return folder


def _stage_recorder(phase, echo: bool = False):
    """``say(stage, share)`` for :func:`tradeoff`: a phase event at most every 0.5 s."""
    last = [0.0, ""]

    def say(stage: str, share: float) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or share >= 1.0 or stage != last[1]:
            last[0], last[1] = now, stage
            phase(stage, done=round(share * SHARE_STEPS), total=SHARE_STEPS)
            if echo:
                print(f"{share:4.0%} {stage}", flush=True)

    return say


def run_job(folder: Path) -> int:
    """The job process: build, measure, write ``tradeoff.json``; status says how it went."""
    from lib.jobs import run_side_job

    folder = Path(folder)

    def work(phase) -> dict[str, Any]:
        job = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
        entry = ModelEntry(
            job["name"], job["source"], Path(job["model_path"]), ModelCard.from_dict(job["card"])
        )
        options = CompressOptions.from_dict(job["options"])
        table = tradeoff(entry, options, folder, _stage_recorder(phase))
        atomic_write_json(folder / TABLE_FILE, table)
        return table

    state, _, _ = run_side_job(folder, work)
    return 0 if state == "completed" else 1


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1])))


# ---------------------------------------------------------------- command line


def resolve_model(name: str) -> ModelEntry:
    """A registry model by name, or a completed run by id."""
    from lib import registry, runstore

    for entry in registry.list_models():
        if entry.name == name:
            return entry
    try:
        run = runstore.run_dir(name)
    except KestrelError:
        run = None
    if run is not None and (run / runstore.MODEL_FILE).is_file():
        return registry.run_entry(run)
    names = ", ".join(e.name for e in registry.list_models()) or "none"
    raise CompressError(
        f"no registry model or completed run named {name!r}; registry models: {names} "
        "(runs: python -m lib runs)"
    )


CLI_FORMATS = ("keras", "savedmodel", "tflite", "tflite_dynamic", "onnx",
               "float16", "int8", "pruned", "demo")  # fmt: skip


def add_export_arguments(parser) -> None:
    """The options of ``python -m lib export`` (lib.cli registers the command)."""
    parser.add_argument("model", help="registry model name or run id")
    parser.add_argument(
        "--format",
        choices=CLI_FORMATS,
        default="tflite",
        help="keras/savedmodel/tflite/tflite_dynamic/onnx: lib.export with a parity check; "
        "float16/int8/pruned: compression variants; demo: the browser demo folder (or .zip)",
    )
    parser.add_argument("--out", help="output file or folder (default: named after the model)")
    parser.add_argument("--int8-io", action="store_true", help="int8: int8 input and output")
    parser.add_argument("--sparsity", type=float, default=CompressOptions.sparsity)
    parser.add_argument("--schedule", choices=SCHEDULES, default=CompressOptions.schedule)
    parser.add_argument("--prune-epochs", type=float, default=CompressOptions.prune_epochs)
    parser.add_argument(
        "--tradeoff",
        action="store_true",
        help="instead of one file: build every variant, measure the trade-off table on the "
        "test split, store it with the model and print it",
    )


def format_table(table: dict[str, Any]) -> str:
    """The trade-off table as plain text."""
    header = (
        "VARIANT",
        "ACCURACY",
        "CHANGE",
        "SIZE KB",
        "GZIP KB",
        "P50 MS",
        "P95 MS",
        "AGREE",
        "FLAGGED",
    )
    lines = [header]
    for r in table["rows"]:
        lines.append((
            r["variant"], f"{r['accuracy']:.2%}", f"{r['accuracy_change_points']:+.2f}",
            f"{r['size_bytes'] / 1024:,.0f}", f"{r['gzip_bytes'] / 1024:,.0f}",
            f"{r['latency_p50_ms']:.3f}", f"{r['latency_p95_ms']:.3f}",
            f"{r['top1_agreement']:.2%}", ", ".join(r["flagged_classes"]) or "-",
        ))  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)  # fmt: skip


def cli_export(args) -> int:
    """``python -m lib export``: one format to a file, or the trade-off table."""
    from lib import export
    from lib.demo_export import build_demo, demo_zip

    entry = resolve_model(args.model)
    options = CompressOptions(
        int8_io=args.int8_io,
        sparsity=args.sparsity,
        schedule=args.schedule,
        prune_epochs=args.prune_epochs,
    ).validate()
    stem = sanitize_name(entry.name.rsplit(".keras", 1)[0] or "model")
    if args.tradeoff:
        from lib.jobs import run_side_job

        folder = _new_job_folder(entry)

        def work(phase) -> dict[str, Any]:
            table = tradeoff(entry, options, folder, _stage_recorder(phase, echo=True))
            atomic_write_json(folder / TABLE_FILE, table)
            return table

        state, error, table = run_side_job(folder, work)
        if state != "completed":
            raise CompressError(error)
        print(format_table(table))
        print(f"stored with the model in {folder}")
        return 0
    if args.format == "demo":
        out = Path(args.out or f"{stem}-browser-demo")
        if out.suffix == ".zip":
            data, _ = demo_zip(entry)
            atomic_write_bytes(out, data)
        else:
            build_demo(entry, out)
        print(f"browser demo in {out}: serve it with `python3 -m http.server` inside it")
        return 0
    if args.format in export.FORMATS:
        result = export.export_model(entry, args.format)
        data, filename, parity = result.data, result.filename, result.parity
    else:
        model = load_model(entry)
        train_x = train_y = None
        if args.format in ("int8", "pruned"):
            train_x, train_y, _, _ = load_splits(entry.card, options)
        if args.format == "pruned":
            model = prune(model, train_x, train_y, options, entry.card.output)
            print(f"pruned to sparsity {sparsity_of(model):.1%}")
        rep = None if train_x is None else train_x[: options.representative_images]
        kind = "tflite" if args.format == "pruned" else args.format
        data = convert(model, kind, rep, int8_io=options.int8_io)
        filename, parity = stem + VARIANTS[args.format][1], None
    out = Path(args.out or filename)
    atomic_write_bytes(out, data)
    size = f"{len(data) / 1024:,.0f} KB, gzipped {gzip_size(data) / 1024:,.0f} KB"
    check = "" if parity is None else f"; top-1 agreement with Keras {parity.top1_agreement:.2%}"
    print(f"{out} ({size}{check})")
    return 0
