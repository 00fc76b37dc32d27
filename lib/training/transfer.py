"""Transfer learning on cached backbone features: the head trains in seconds on a CPU.

With a frozen backbone (a transfer preset, ``ModelConfig.freeze_backbone`` and
``unfreeze_last == 0``) and no augmentation, every epoch would push the same
images through the same frozen backbone. :func:`fit_cached` instead computes
each training and validation image's pooled backbone features once (kept in
lib.feature_cache, keyed by the data, the backbone, its weights and the input
size), and fits only the head (dropout and the logits layer) on them.

The head's layers *are* the whole model's layers: the model built by
lib.architectures (pixels in, logits out) is what model.keras holds, so
evaluation, prediction, the registry and export see a model like any other.
``train_run`` picks this path by itself (:func:`cached_path_reason`) and
metrics.json says which path trained (``training_path``).

This module imports Keras at the top: import it only in processes that train.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lib import feature_cache
from lib.config import TRANSFER_PRESETS, RunConfig
from lib.data.pipeline import without_autotune
from lib.progress import PhaseEvent, append_event
from lib.training.callbacks import AtomicModelCheckpoint, LastWeights, build_callbacks
from lib.training.schedules import make_optimizer

FEATURES_LAYER = "head_gap"  # the pooled backbone output in lib.architectures' transfer models
EMBED_BATCH = 32  # images per backbone call while computing features
DECODE_THREADS = 4  # threads decoding streamed files while the backbone runs
PROGRESS_EVERY_S = 0.5  # at most this often an "embedding images n/N" event


def cached_path_reason(cfg: RunConfig) -> str | None:
    """None when the cached-feature path applies to ``cfg``, else why it does not."""
    import os

    from lib.augment import is_active

    m = cfg.model
    if m.preset not in TRANSFER_PRESETS:
        return "not a transfer preset"
    if not m.freeze_backbone or m.unfreeze_last:
        return "the backbone is (partly) trainable"
    if is_active(cfg.augment):
        return "augmentation changes the images every epoch"
    if os.environ.get("TF_CONFIG"):
        return "several workers"
    return None


_FEATURE_MODELS: dict[int, tuple[keras.Model, keras.Model]] = {}  # id(model) -> (model, part)


def feature_model(model: keras.Model) -> keras.Model:
    """Pixels in, pooled backbone features out: the frozen part of a transfer model.

    Made once per model (its compiled predict function is reused, not traced again).
    """
    known = _FEATURE_MODELS.get(id(model))
    if known is not None and known[0] is model:
        return known[1]
    part = keras.Model(model.inputs, model.get_layer(FEATURES_LAYER).output)
    if len(_FEATURE_MODELS) >= 4:
        _FEATURE_MODELS.clear()
    _FEATURE_MODELS[id(model)] = (model, part)
    return part


def head_model(model: keras.Model) -> keras.Model:
    """Features in, logits out, sharing the whole model's head layers (their weights too)."""
    dim = int(model.get_layer(FEATURES_LAYER).output.shape[-1])
    inputs = keras.Input(shape=(dim,), name="features")
    x = inputs
    names = {layer.name for layer in model.layers}
    if "dropout" in names:
        x = model.get_layer("dropout")(x)
    outputs = model.get_layer("logits")(x)
    return keras.Model(inputs, outputs, name=f"{model.name}_head")


def embed_split(
    features: keras.Model,
    split: Any,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int = EMBED_BATCH,
) -> np.ndarray:
    """float32 (N, D) features of every image of a split, in order (unreadable files blank).

    Streamed files are decoded by a few threads while the backbone runs; every
    batch is padded to ``batch_size`` so the predict function is traced once.
    """
    from concurrent.futures import ThreadPoolExecutor

    n = len(split)
    dim = int(features.output.shape[-1])
    if n == 0:
        return np.zeros((0, dim), np.float32)
    out = np.empty((n, dim), np.float32)
    batch = np.zeros((batch_size, *split.image_shape), np.float32)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        if split.streamed:
            images = pool.map(lambda ref: split.load_ref(ref)[0], split.refs)
        else:
            images = iter(split.array)
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            for i in range(count):
                batch[i] = next(images)
            batch[count:] = 0
            feats = np.asarray(features.predict_on_batch(batch), dtype=np.float32)
            out[start : start + count] = feats[:count]
            if on_progress:
                on_progress(start + count, n)
    return out


def split_features(
    cfg: RunConfig,
    model: keras.Model,
    dataset: Any,
    splits: Sequence[str],
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], bool]:
    """Cached (or freshly computed) features of ``splits``; ``(features, every split was a hit)``."""
    feats_model = feature_model(model)
    base = {
        "data": cfg.data.to_dict(),
        "backbone": cfg.model.preset,
        "weights": cfg.model.weights,
        "weights_sha256": feature_cache.weights_fingerprint(feats_model.get_weights()),
        "input_shape": list(dataset.image_shape),
        "keras": keras.__version__,
    }
    total = sum(len(dataset.splits[s]) for s in splits)
    done_before = 0
    out, all_hit = {}, True
    for name in splits:
        split = dataset.splits[name]
        record = {**base, "split": name, "split_sha256": feature_cache.split_fingerprint(split)}
        offset = done_before

        def compute(split=split, offset=offset) -> np.ndarray:
            return embed_split(
                feats_model,
                split,
                on_progress=(lambda i, _n: on_progress(offset + i, total)) if on_progress else None,
            )

        out[name], hit = feature_cache.get_or_compute(record, len(split), compute)
        all_hit = all_hit and hit
        done_before += len(split)
        if hit and on_progress:
            on_progress(done_before, total)
    return out, all_hit


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[np.asarray(labels, np.int64)]


def fit_cached(
    run_dir: Path,
    cfg: RunConfig,
    model: keras.Model,
    data: Any,
    resume: Any,
    hw: Any,
    *,
    echo: bool,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[float, Any, dict[str, Any]]:
    """Fit the head of ``model`` on cached features with Kestrel's callbacks.

    Returns:
        ``(seconds fitting, the progress callback, facts for metrics.json)``: the
        seconds include computing features (not the cache look-up's hits).
    """
    import tensorflow as tf

    tc = cfg.train
    ds = data.dataset
    splits = ["train"] + (["val"] if data.has_val else [])
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        text = f"embedding images {done}/{total}"
        append_event(run_dir, PhaseEvent(phase=text, done=done, total=total))
        if echo:
            print(text, flush=True)

    t0 = time.monotonic()
    feats, hit = split_features(cfg, model, ds, splits, on_progress=progress)
    embed_seconds = time.monotonic() - t0
    k = data.num_classes
    train = tf.data.Dataset.from_tensor_slices(
        (feats["train"], _one_hot(ds.splits["train"].labels, k))
    )
    train = train.shuffle(len(feats["train"]), seed=tc.seed, reshuffle_each_iteration=True)
    train = without_autotune(train.batch(tc.batch_size))
    val = None
    if data.has_val:
        val = without_autotune(
            tf.data.Dataset.from_tensor_slices(
                (feats["val"], _one_hot(ds.splits["val"].labels, k))
            ).batch(tc.batch_size)
        )
    with hw.strategy.scope():
        head = head_model(model)
        head.compile(
            optimizer=make_optimizer(tc, data.steps),
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=tc.label_smoothing
            ),
            metrics=["accuracy"],
        )
    callbacks, writer = build_callbacks(
        run_dir,
        cfg,
        steps=data.steps,
        has_val=data.has_val,
        best_so_far=resume.best_so_far,
        echo=echo,
    )
    for cb in callbacks:
        if isinstance(cb, (AtomicModelCheckpoint, LastWeights)):
            cb.saved_model = model  # backbone + head: raw pixels in, logits out
    append_event(run_dir, PhaseEvent(phase="training the head on cached features"))
    t1 = time.monotonic()
    head.fit(
        train,
        validation_data=val,
        epochs=tc.epochs,
        callbacks=[*callbacks, *extra_callbacks],
        class_weight=data.class_weight,
        shuffle=False,
        verbose=0,
    )
    fit_seconds = time.monotonic() - t1
    facts = {
        "training_path": "cached_features",
        "feature_cache": "hit" if hit else "computed",
        "embed_seconds": round(embed_seconds, 3),
        "head_fit_seconds": round(fit_seconds, 3),
    }
    return embed_seconds + fit_seconds, writer, facts
