"""Backbone features cached in the workspace: derived data, checked before every use.

An entry is ``<workspace>/cache/features/<key>.npy`` (float32, one row per image)
with ``<key>.json`` beside it holding the sha256 of the ``.npy`` file, its shape
and what it was computed from. The key is a hash of everything the features
depend on (see :func:`feature_key`): the data (a dataset version, or the data
config plus the split's files or pixels), the backbone, a fingerprint of its
weights, and the input size. An entry that is missing, whose checksum or shape
does not match, or whose record names other inputs is recomputed, never
trusted; writes are atomic (temporary name, then rename).

This module imports neither TensorFlow nor Streamlit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lib.workspace import area, check_quota, new_id

FORMAT = 1
LIMIT_ENV = "KESTREL_FEATURE_CACHE_MB"  # the cache's size limit; least recently used go first
DEFAULT_LIMIT_MB = 2048


def cache_dir() -> Path:
    """``<workspace>/cache/features``, created if missing."""
    folder = area("cache") / "features"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def split_fingerprint(split: Any) -> str:
    """A hash of what a split holds: its labels and its files (path, size, mtime) or pixels."""
    h = hashlib.sha256()
    h.update(np.asarray(split.labels, np.int32).tobytes())
    if getattr(split, "refs", None) is not None:
        for ref in split.refs:
            try:
                st = os.stat(ref)
                h.update(f"{ref}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{ref}\0missing\n".encode())
        h.update(repr(tuple(split.image_shape)).encode())
    else:
        arr = np.ascontiguousarray(split.array)
        h.update(repr(arr.shape).encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def weights_fingerprint(weights: list[np.ndarray]) -> str:
    """A hash of a model's weights (random initialisations differ by seed)."""
    h = hashlib.sha256()
    for w in weights:
        a = np.ascontiguousarray(w)
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def feature_key(**parts: Any) -> tuple[str, dict[str, Any]]:
    """``(key, parts)``: the key is the sha256 of the parts as sorted JSON."""
    record = {"format": FORMAT, **parts}
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40], record


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(key: str, record: dict[str, Any], rows: int) -> np.ndarray | None:
    """The cached features of ``key``, or None when missing, corrupt or stale."""
    folder = cache_dir()
    data, meta = folder / f"{key}.npy", folder / f"{key}.json"
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        if info.get("inputs") != json.loads(json.dumps(record, default=str)):
            return None
        if info.get("sha256") != _sha256(data) or info.get("rows") != rows:
            return None
        arr = np.load(data, allow_pickle=False)
    except (OSError, ValueError, TypeError):
        return None
    if arr.ndim != 2 or arr.shape[0] != rows or list(arr.shape) != info.get("shape"):
        return None
    if arr.dtype != np.float32 or not np.all(np.isfinite(arr)):
        return None
    _touch(meta)  # recently used: evicted last
    return arr


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def limit_bytes() -> int:
    """The cache's size limit (``KESTREL_FEATURE_CACHE_MB``, default 2048 MB)."""
    raw = os.environ.get(LIMIT_ENV, "")
    try:
        mb = float(raw) if raw.strip() else DEFAULT_LIMIT_MB
    except ValueError:
        mb = DEFAULT_LIMIT_MB
    return max(0, int(mb * 2**20))


def evict(keep: str = "", limit: int | None = None) -> list[str]:
    """Remove least recently used entries until the cache fits ``limit``; never ``keep``.

    Returns:
        the keys removed. An entry is its ``.npy`` and ``.json``; its age is the
        ``.json``'s modification time, refreshed by every hit.
    """
    limit = limit_bytes() if limit is None else limit
    folder = cache_dir()
    entries = []
    for meta in folder.glob("*.json"):
        if meta.name.startswith("."):
            continue
        data = meta.with_suffix(".npy")
        try:
            size = data.stat().st_size + meta.stat().st_size
            used = meta.stat().st_mtime
        except OSError:
            continue
        entries.append((used, meta.stem, size))
    total = sum(size for _, _, size in entries)
    removed = []
    for _, key, size in sorted(entries):
        if total <= limit:
            break
        if key == keep:
            continue
        for suffix in (".json", ".npy"):  # the record first: no entry without its data
            with contextlib.suppress(OSError):
                (folder / f"{key}{suffix}").unlink()
        total -= size
        removed.append(key)
    return removed


def store(key: str, record: dict[str, Any], features: np.ndarray) -> None:
    """Write an entry atomically (features first, then the record that vouches for them)."""
    folder = cache_dir()
    features = np.ascontiguousarray(features, dtype=np.float32)
    check_quota(features.nbytes, "the feature cache")
    tmp = folder / f".tmp-{new_id()}.npy"
    try:
        np.save(tmp, features, allow_pickle=False)
        digest = _sha256(tmp)
        os.replace(tmp, folder / f"{key}.npy")
    finally:
        if tmp.exists():
            tmp.unlink()
    info = {"inputs": record, "sha256": digest, "rows": int(features.shape[0]),
            "shape": list(features.shape)}  # fmt: skip
    tmp_meta = folder / f".tmp-{new_id()}.json"
    tmp_meta.write_text(json.dumps(info, default=str), encoding="utf-8")
    os.replace(tmp_meta, folder / f"{key}.json")
    evict(keep=key)


def get_or_compute(
    record: dict[str, Any], rows: int, compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, bool]:
    """``(features, hit)``: the valid cached entry for ``record``, or freshly computed and stored."""
    key, record = feature_key(**record)
    cached = load(key, record, rows)
    if cached is not None:
        return cached, True
    features = np.asarray(compute(), dtype=np.float32)
    if features.shape[0] != rows:
        raise ValueError(f"computed {features.shape[0]} feature rows for {rows} images")
    store(key, record, features)
    return features, False


def clear() -> int:
    """Remove every cache entry; returns how many files were removed."""
    n = 0
    for entry in cache_dir().iterdir():
        if entry.is_file():
            entry.unlink()
            n += 1
    return n
