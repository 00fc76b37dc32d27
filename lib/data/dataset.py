"""What every source yields: a :class:`Dataset` of class names and splits.

A split either holds its images in memory (uint8 NHWC, already resized) or holds
file references that are decoded on demand (``folder`` and ``upload``), so a
directory of 100k+ images is never loaded whole. Both answer the same questions:
labels, ``images(indices)``, ``refs`` and ``len``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lib.data.images import ImageDecodeError, load_image_file, resize_image, to_channels
from lib.errors import KestrelError

SPLITS = ("train", "val", "test")


class DatasetError(KestrelError):
    """A dataset that cannot be loaded as asked; the message says what to do."""


class Split:
    """One split: int32 labels plus images in memory or as file references."""

    def __init__(
        self,
        labels: np.ndarray,
        array: np.ndarray | None = None,
        refs: Sequence[str] | None = None,
        image_shape: tuple[int, int, int] | None = None,
        on_skip: Callable[[str, str], None] | None = None,
    ):
        """Make a split.

        Args:
            labels: int class indices, one per image.
            array: uint8 (N, H, W, C) images, for in-memory sources.
            refs: file paths, for streamed sources (then ``image_shape`` is required).
            image_shape: (H, W, C) every streamed image is decoded and resized to.
            on_skip: called with (file, reason) when a streamed file fails to decode.
        """
        if (array is None) == (refs is None):
            raise ValueError("a split holds either an image array or file references")
        self.labels = np.asarray(labels, dtype=np.int32)
        self.array = array
        self.refs = list(refs) if refs is not None else None
        self.image_shape = tuple(array.shape[1:]) if array is not None else tuple(image_shape)
        self._on_skip = on_skip
        n = len(array) if array is not None else len(self.refs)
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} images")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        return self.array is None

    def load_ref(self, ref: str) -> tuple[np.ndarray, bool]:
        """Decode and resize one streamed file; ``(image, ok)``, a blank image if unreadable."""
        h, w, c = self.image_shape
        try:
            # Decoded no larger than needed: a JPEG at 1/2, 1/4 or 1/8 scale by libjpeg.
            img = load_image_file(ref, "grayscale" if c == 1 else "rgb", size=(h, w))
        except ImageDecodeError as exc:
            if self._on_skip is not None:
                self._on_skip(ref, exc.reason)
            return np.zeros((h, w, c), np.uint8), False
        return resize_image(img, h, w), True

    def images(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The images at ``indices`` (all if None), uint8 (n, H, W, C).

        A streamed file that has become unreadable since the scan comes back blank
        and is reported through the dataset's ``skipped`` list.
        """
        if self.array is not None:
            return (
                self.array if indices is None else self.array[np.asarray(indices, dtype=np.int64)]
            )
        idx = range(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), *self.image_shape), np.uint8)
        for i, j in enumerate(idx):
            out[i] = self.load_ref(self.refs[int(j)])[0]
        return out


@dataclass
class Dataset:
    """Class names, image shape and the train/val/test splits of one DataConfig."""

    class_names: list[str]
    image_shape: tuple[int, int, int]
    splits: dict[str, Split]
    test_is_own: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # decisions a user should know about
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def streamed(self) -> bool:
        return any(s.streamed for s in self.splits.values())

    def counts(self) -> dict[str, np.ndarray]:
        """Images per class, per split: ``{"train": int64 (K,), "val": ..., "test": ...}``."""
        k = self.num_classes
        return {
            name: np.bincount(split.labels, minlength=k).astype(np.int64)
            for name, split in self.splits.items()
        }

    def sample_indices(self, split_name: str, per_class: int, seed: int) -> dict[int, np.ndarray]:
        """Up to ``per_class`` random indices into a split for every class, seeded."""
        labels = self.splits[split_name].labels
        rng = np.random.default_rng(seed)
        out = {}
        for k in range(self.num_classes):
            idx = np.flatnonzero(labels == k)
            out[k] = np.sort(rng.choice(idx, min(per_class, len(idx)), replace=False))
        return out

    def record_skip(self, ref: str, reason: str) -> None:
        """Remember a file that could not be decoded (thread-safe; pipelines call it)."""
        with self._lock:
            if (ref, reason) not in self.skipped:
                self.skipped.append((ref, reason))


IMBALANCE_RATIO = 3.0  # largest / smallest class above this is worth a warning
FEW_IMAGES = 10  # a class with fewer images than this cannot be learned or measured well


def dataset_warnings(ds: Dataset) -> list[str]:
    """Problems a user should see before training: imbalance, tiny classes, skipped files."""
    total = sum(ds.counts().values())
    out = []
    nonzero = total[total > 0]
    if len(nonzero) and nonzero.max() / nonzero.min() > IMBALANCE_RATIO:
        big, small = (
            int(np.argmax(total)),
            int(np.argmin(np.where(total > 0, total, total.max() + 1))),
        )
        out.append(
            f"Classes are imbalanced: '{ds.class_names[big]}' has {total[big]} images, "
            f"'{ds.class_names[small]}' only {total[small]} "
            f"({total[big] / total[small]:.1f}×). Consider class weights (Train page) or "
            "collecting more images of the small classes."
        )
    few = [f"{ds.class_names[k]} ({total[k]})" for k in range(len(total)) if total[k] < FEW_IMAGES]
    if few:
        out.append(
            f"{len(few)} class(es) have fewer than {FEW_IMAGES} images: {', '.join(few[:20])}"
            + (" …" if len(few) > 20 else "")
        )
    if ds.skipped:
        out.append(
            f"{len(ds.skipped)} file(s) were skipped: missing or unreadable (see Skipped files)."
        )
    return out


def cap_per_class(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping at most ``cap`` random images per class (all if cap is 0)."""
    if not cap:
        return np.arange(len(labels))
    keep = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into ``1 + len(fractions)`` disjoint, per-class-stratified parts.

    Each class is shuffled with ``seed`` and cut by rounding its size times each
    fraction; the first part (train) gets the rest and keeps at least one image of
    every class. Every part comes back sorted.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n = len(idx)
        takes = [round(n * f) for f in fractions]
        while sum(takes) > n - 1 and any(takes):  # leave train at least one image
            j = int(np.argmax(takes))
            takes[j] -= 1
        start = 0
        for p, t in enumerate(takes, start=1):
            parts[p].append(idx[start : start + t])
            start += t
        parts[0].append(idx[start:])
    return [
        np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts
    ]


def in_memory_dataset(
    class_names: list[str],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    cfg,
    notes: list[str] | None = None,
) -> Dataset:
    """Build a Dataset from uint8 arrays: cap, split, convert channels and resize.

    Args:
        class_names: one name per class index.
        x_train, y_train: the source's training images (N, H, W[, C]) and labels.
        x_test, y_test: the source's own test split, or None to cut one.
        cfg: the DataConfig (fractions, seed, cap, image size, colour mode).
    """
    rng = np.random.default_rng(cfg.seed)
    y_train = np.asarray(y_train, dtype=np.int32).reshape(-1)
    keep = cap_per_class(y_train, cfg.max_per_class, rng)
    own_test = x_test is not None
    fractions = [cfg.val_fraction] if own_test else [cfg.val_fraction, cfg.test_fraction]
    parts = stratified_split(y_train[keep], fractions, cfg.seed)
    index = {"train": keep[parts[0]], "val": keep[parts[1]]}
    arrays = {name: (x_train, y_train) for name in index}
    if own_test:
        y_test = np.asarray(y_test, dtype=np.int32).reshape(-1)
        index["test"] = cap_per_class(y_test, cfg.max_per_class, rng)
        arrays["test"] = (x_test, y_test)
    else:
        index["test"] = keep[parts[2]]
        arrays["test"] = (x_train, y_train)
    splits = {}
    shape = None
    for name in SPLITS:
        x, y = arrays[name]
        imgs = prepare_array(x[index[name]], cfg)
        shape = tuple(imgs.shape[1:])
        splits[name] = Split(y[index[name]], array=imgs)
    return Dataset(
        class_names=list(class_names),
        image_shape=shape,
        splits=splits,
        test_is_own=own_test,
        notes=list(notes or []),
    )


def prepare_array(x: np.ndarray, cfg) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> (N, S, S, C) after the config's colour mode and resize."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8:
        x = np.clip(x, 0, 255).astype(np.uint8)
    if cfg.color_mode == "rgb":
        x = to_channels(x, 3)
    elif cfg.color_mode == "grayscale":
        x = to_channels(x, 1)
    if cfg.image_size and x.shape[1:3] != (cfg.image_size, cfg.image_size):
        x = resize_batch(x, cfg.image_size, cfg.image_size)
    return np.ascontiguousarray(x)


def resize_batch(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 (N, H, W, C) images with Pillow, one at a time (no TensorFlow needed)."""
    out = np.empty((len(x), height, width, x.shape[-1]), np.uint8)
    for i, img in enumerate(x):
        out[i] = resize_image(img, height, width)
    return out
