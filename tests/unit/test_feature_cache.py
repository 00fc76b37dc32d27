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


def test_the_least_recently_used_entries_go_when_the_cache_is_over_its_limit(monkeypatch):
    import os
    import time

    rows, dim = 256, 256  # 256 KiB of float32 per entry
    compute, _calls = compute_counter(rows, dim)
    records = [{"data": f"set{i}@1", "backbone": "mobilenetv2"} for i in range(3)]
    for i, record in enumerate(records):
        feature_cache.get_or_compute(record, rows, compute)
        key, _ = feature_cache.feature_key(**record)
        meta = feature_cache.cache_dir() / f"{key}.json"
        os.utime(meta, (time.time() - 100 + i, time.time() - 100 + i))  # set0 oldest
    # set0 is used again: now set1 is the least recently used
    assert feature_cache.get_or_compute(records[0], rows, compute)[1] is True
    monkeypatch.setenv(feature_cache.LIMIT_ENV, "0.6")  # room for two entries
    feature_cache.get_or_compute({"data": "set3@1", "backbone": "mobilenetv2"}, rows, compute)
    hits = [feature_cache.get_or_compute(r, rows, compute)[1] for r in records[:1]]
    keys = {p.stem for p in feature_cache.cache_dir().glob("*.npy")}
    assert len(keys) == 2, keys  # set1 and set2 went (oldest first); set0 and set3 stay
    assert hits == [True]
    assert feature_cache.feature_key(**records[1])[0] not in keys
    assert feature_cache.feature_key(**records[2])[0] not in keys
    monkeypatch.setenv(feature_cache.LIMIT_ENV, "not a number")
    assert feature_cache.limit_bytes() == feature_cache.DEFAULT_LIMIT_MB * 2**20
