"""The dataset layer: sources, safe image and archive reading, splits and pipelines.

    from lib.data import load_dataset, make_pipeline
    ds = load_dataset(DataConfig(source="shapes"))
    train = make_pipeline(ds, "train", batch_size=64, shuffle=True, seed=0)

``load_dataset`` is cached per config in this process (a few recent configs), so
pages and the trainer share one copy. TensorFlow is imported only when a
pipeline is made, so pages that just show a dataset stay fast.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from lib.data.dataset import Dataset, DatasetError, Split
from lib.data.images import ImageDecodeError, decode_image, load_image_file
from lib.data.pipeline import make_pipeline

__all__ = [
    "Dataset",
    "DatasetError",
    "ImageDecodeError",
    "Split",
    "clear_cache",
    "decode_image",
    "load_dataset",
    "load_image_file",
    "make_pipeline",
]

CACHE_SIZE = 3  # datasets kept in memory; an entry can be hundreds of MB
_cache: OrderedDict[str, Dataset] = OrderedDict()
_cache_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def load_dataset(cfg, *, cache: bool = True) -> Dataset:
    """Load the dataset a ``DataConfig`` describes.

    Args:
        cfg: the DataConfig (source, splits, size, colour mode...).
        cache: reuse (and keep) the result for an equal config in this process.

    Returns:
        a Dataset with ``train``, ``val`` and ``test`` splits.

    Raises:
        DatasetError: the source cannot be read (missing folder, offline download,
            too few readable images...); the message says what to do.
    """
    from lib.data.sources import LOADERS

    if not cache:
        return LOADERS[cfg.source](cfg)
    key = cfg.to_json(indent=None)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:  # two sessions asking for the same set load it once
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        ds = LOADERS[cfg.source](cfg)
        with _cache_lock:
            _cache[key] = ds
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
            _key_locks.pop(key, None)
    return ds


def clear_cache() -> None:
    """Forget every cached dataset (tests; after an upload is deleted)."""
    with _cache_lock:
        _cache.clear()
