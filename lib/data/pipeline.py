"""tf.data pipelines over a Dataset split: what training and evaluation iterate.

In-memory splits keep their uint8 images in one tensor and gather a shuffled
batch of indices at a time, casting to float32 per batch (no per-image Python,
no second copy in a shuffle buffer). Streamed splits shuffle file paths, decode
them in parallel through the safe decoder, drop files that fail (reporting them
in ``Dataset.skipped``), and cache the decoded images in memory when they fit.
Both yield float32 raw pixels in [0, 255] and one-hot (or int) labels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lib.data.dataset import Dataset, DatasetError

CACHE_BUDGET_BYTES = 2 * 1024**3  # decoded streamed splits up to this size are cached in RAM


def make_pipeline(
    ds: Dataset,
    split_name: str,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augment: Callable | None = None,
    one_hot: bool = True,
    repeat: bool = False,
    drop_remainder: bool = False,
):
    """A batched ``tf.data.Dataset`` over one split.

    Args:
        ds: the dataset (from ``load_dataset``).
        split_name: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: images per batch.
        shuffle: reshuffle every epoch (seeded by ``seed``).
        seed: shuffling seed.
        augment: ``(images, labels) -> (images, labels)`` applied per batch, after
            batching and casting (``lib.augment.make_augmenter``).
        one_hot: float32 one-hot labels (B, K); else int32 labels (B,).
        repeat: repeat forever (the caller sets steps per epoch).
        drop_remainder: drop the last, smaller batch.

    Returns:
        ``tf.data.Dataset`` of ``(float32 (B, H, W, C) in [0, 255], labels)``.

    Raises:
        DatasetError: unknown or empty split.
    """
    import tensorflow as tf

    if split_name not in ds.splits:
        raise DatasetError(f"unknown split {split_name!r}; choose one of {', '.join(ds.splits)}")
    split = ds.splits[split_name]
    n = len(split)
    if n == 0:
        raise DatasetError(
            f"the {split_name} split is empty; raise its fraction in the dataset settings"
        )
    k = ds.num_classes
    h, w, c = ds.image_shape

    def finish(images, labels):
        images = tf.cast(images, tf.float32)
        labels = tf.one_hot(labels, k, dtype=tf.float32) if one_hot else labels
        return images, labels

    if not split.streamed:
        images = tf.constant(split.array)
        labels = tf.constant(split.labels)
        data = tf.data.Dataset.range(n)
        if shuffle:
            data = data.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            data = data.repeat()
        data = data.batch(batch_size, drop_remainder=drop_remainder)
        data = data.map(
            lambda idx: finish(tf.gather(images, idx), tf.gather(labels, idx)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        refs = np.asarray(split.refs, dtype=object).astype(str)
        data = tf.data.Dataset.from_tensor_slices((refs, split.labels))
        cache = n * h * w * c <= CACHE_BUDGET_BYTES
        if shuffle and not cache:
            # Shuffling paths, not pixels: the buffer can hold the whole split.
            data = data.shuffle(n, seed=seed, reshuffle_each_iteration=True)

        def decode(path):
            img, ok = split.load_ref(path.numpy().decode())
            return img, ok

        def decode_op(path, label):
            img, ok = tf.py_function(decode, [path], (tf.uint8, tf.bool))
            img.set_shape((h, w, c))
            ok.set_shape(())
            return img, label, ok

        data = data.map(decode_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        data = data.filter(lambda img, label, ok: ok)
        data = data.map(lambda img, label, ok: (img, label))
        if cache:
            data = data.cache()
            if shuffle:
                data = data.shuffle(min(n, 50_000), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            data = data.repeat()
        data = data.batch(batch_size, drop_remainder=drop_remainder)
        data = data.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        data = data.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotune(data.prefetch(tf.data.AUTOTUNE))


def without_autotune(data):
    """``data`` (a ``tf.data.Dataset``) with tf.data's autotuning off.

    With it on, Keras waited for each finished iterator to go away, with no CPU in
    use, in pauses that double from about 0.3 s (5-7 s, and up to 39 s at the end of
    a fit, on a busy machine); every epoch, and every validation pass, ends one. On
    Fashion-MNIST (fast recipe, 2 cores) that was a third of every epoch after the
    first: measured through train_run with a probe callback, 3 epochs: 57 s of
    training with it, 42 s without, epoch starts 0.06 s instead of 6.6-7.5 s.
    AUTOTUNE parallelism and prefetch then take tf.data's fixed defaults. Every
    dataset Kestrel fits on, and every one a benchmark times, goes through here.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return data.with_options(options)
