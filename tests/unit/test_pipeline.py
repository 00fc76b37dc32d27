"""tf.data pipelines: dtypes, shapes, labels, shuffling, augmentation, streamed files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.config import DataConfig
from lib.data import DatasetError, load_dataset, make_pipeline

SMALL_SHAPES = DataConfig(source="shapes", shapes_count=120, shapes_size=16, seed=3)


def _collect(pipe):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in pipe], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_in_memory_batches_are_float_pixels_with_one_hot_labels():
    ds = load_dataset(SMALL_SHAPES)
    split = ds.splits["train"]
    pipe = make_pipeline(ds, "train", batch_size=32, shuffle=False, seed=0)
    x, y = _collect(pipe)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.shape == (len(split), 16, 16, 3)
    assert y.shape == (len(split), 6)
    # Unshuffled: exactly the split's pixels and labels, in order, not rescaled.
    np.testing.assert_array_equal(x, split.images().astype(np.float32))
    np.testing.assert_array_equal(y.argmax(1), split.labels)
    assert x.max() > 1.0


def test_shuffle_is_seeded_and_int_labels_follow_images():
    ds = load_dataset(SMALL_SHAPES)
    split = ds.splits["train"]
    a = _collect(make_pipeline(ds, "train", batch_size=16, shuffle=True, seed=1, one_hot=False))
    b = _collect(make_pipeline(ds, "train", batch_size=16, shuffle=True, seed=1, one_hot=False))
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1].dtype == np.int32
    assert not np.array_equal(a[1], split.labels)  # actually shuffled
    # Each image still carries its own label: look it up by pixel content.
    lookup = {split.images([i]).tobytes(): split.labels[i] for i in range(len(split))}
    for img, label in zip(a[0][:20], a[1][:20], strict=True):
        assert lookup[img.astype(np.uint8).tobytes()] == label


def test_augment_runs_per_batch_and_repeat_drop_remainder():
    ds = load_dataset(SMALL_SHAPES)
    seen = []

    def augment(images, labels):
        seen.append(images.shape.rank)
        return 255.0 - images, labels

    pipe = make_pipeline(ds, "val", batch_size=4, shuffle=False, seed=0, augment=augment,
                         repeat=True, drop_remainder=True)  # fmt: skip
    batches = list(pipe.take(10))
    assert seen == [4]  # traced once, on batched (B, H, W, C) tensors
    assert all(x.shape[0] == 4 for x, _ in batches)
    first = ds.splits["val"].images([0]).astype(np.float32)[0]
    np.testing.assert_array_equal(batches[0][0].numpy()[0], 255.0 - first)


def test_unknown_or_empty_split_is_a_dataset_error():
    ds = load_dataset(SMALL_SHAPES.replace(test_fraction=0.0))
    with pytest.raises(DatasetError, match="test split is empty"):
        make_pipeline(ds, "test", batch_size=8, shuffle=False, seed=0)
    with pytest.raises(DatasetError, match="unknown split"):
        make_pipeline(ds, "holdout", batch_size=8, shuffle=False, seed=0)


def test_streamed_folder_pipeline_decodes_and_drops_broken_files(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            arr = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    cfg = DataConfig(source="folder", path=str(root), val_fraction=0.0, test_fraction=0.0)
    ds = load_dataset(cfg, cache=False)
    assert ds.image_shape == (10, 12, 3)
    # A file broken after the scan is dropped from the batches and reported.
    victim = ds.splits["train"].refs[3]
    data = Path(victim).read_bytes()
    Path(victim).write_bytes(data[: len(data) // 2])
    x, y = _collect(make_pipeline(ds, "train", batch_size=5, shuffle=True, seed=0))
    assert x.shape == (11, 10, 12, 3) and y.shape == (11, 2)
    assert [f for f, _ in ds.skipped] == [victim]


def test_every_pipeline_runs_without_autotuning_and_ends_its_epochs_without_a_pause():
    """With tf.data's autotuning on, each finished iterator kept Keras waiting (0.3 s, then
    doubling) with no CPU in use: every epoch's and every validation pass's end."""
    import tensorflow as tf

    from lib.data.pipeline import without_autotune

    ds = load_dataset(SMALL_SHAPES)
    for split, augment in (("train", lambda x, y: (x * 1.0, y)), ("val", None)):
        pipe = make_pipeline(ds, split, batch_size=16, shuffle=True, seed=0, augment=augment)
        assert pipe.options().autotune.enabled is False
        # ...and stays off through what the trainer adds (repeat, take, cardinality).
        assert pipe.repeat().take(3).options().autotune.enabled is False
    plain = tf.data.Dataset.range(4).batch(2)
    assert without_autotune(plain).options().autotune.enabled is False
