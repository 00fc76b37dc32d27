"""lib.feature_cache: derived features, recomputed when missing, corrupt or stale."""

from __future__ import annotations

import json

import numpy as np

from lib import feature_cache


def compute_counter(rows=5, dim=3):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(rows * dim, dtype=np.float32).reshape(rows, dim)

    return compute, calls


def test_second_look_up_is_a_hit():
    compute, calls = compute_counter()
    record = {"data": "x@1", "backbone": "mobilenetv2"}
    a, hit_a = feature_cache.get_or_compute(record, 5, compute)
    b, hit_b = feature_cache.get_or_compute(record, 5, compute)
    assert (hit_a, hit_b) == (False, True) and len(calls) == 1
    np.testing.assert_array_equal(a, b)


def test_corrupt_truncated_or_edited_entries_are_recomputed():
    compute, calls = compute_counter()
    record = {"data": "x@2"}
    feature_cache.get_or_compute(record, 5, compute)
    key, _ = feature_cache.feature_key(**record)
    data = feature_cache.cache_dir() / f"{key}.npy"
    meta = feature_cache.cache_dir() / f"{key}.json"

    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the features
    data.write_bytes(bytes(raw))
    _, hit = feature_cache.get_or_compute(record, 5, compute)
    assert not hit and len(calls) == 2

    data.write_bytes(data.read_bytes()[:40])  # truncated
    _, hit = feature_cache.get_or_compute(record, 5, compute)
    assert not hit and len(calls) == 3

    meta.write_text("{not json")
    _, hit = feature_cache.get_or_compute(record, 5, compute)
    assert not hit and len(calls) == 4

    info = json.loads(meta.read_text())
    info["inputs"]["data"] = "x@3"  # a record that vouches for other inputs
    meta.write_text(json.dumps(info))
    _, hit = feature_cache.get_or_compute(record, 5, compute)
    assert not hit and len(calls) == 5

    meta.unlink()
    _, hit = feature_cache.get_or_compute(record, 5, compute)
    assert not hit and len(calls) == 6
    _, hit = feature_cache.get_or_compute(record, 5, compute)
    assert hit and len(calls) == 6


def test_other_inputs_or_other_row_counts_miss():
    compute, _calls = compute_counter()
    feature_cache.get_or_compute({"data": "a", "weights_sha256": "1"}, 5, compute)
    _, hit = feature_cache.get_or_compute({"data": "a", "weights_sha256": "2"}, 5, compute)
    assert not hit
    compute6, _ = compute_counter(rows=6)
    _, hit = feature_cache.get_or_compute({"data": "a", "weights_sha256": "2"}, 6, compute6)
    assert not hit


class _Split:
    def __init__(self, refs, labels):
        self.refs, self.labels, self.image_shape, self.array = refs, labels, (8, 8, 3), None


def test_a_changed_file_changes_the_split_fingerprint(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"1")
    split = _Split([str(f)], np.array([0]))
    before = feature_cache.split_fingerprint(split)
    f.write_bytes(b"22")
    assert feature_cache.split_fingerprint(split) != before
