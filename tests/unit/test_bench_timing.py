"""bench/timing.py: interleaved repetitions, median and spread, drain, computed verdicts."""

from __future__ import annotations

import threading
import time

import pytest

from bench import timing


def test_summary_reports_median_and_spread_not_a_best_of():
    s = timing.summary([3.0, 1.0, 2.0, 10.0, 2.5])
    assert s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == 10.0 and s["n"] == 5
    assert s["q1"] == 2.0 and s["q3"] == 3.0
    assert s["spread_pct"] == pytest.approx(100 * 9 / 2.5, abs=0.1)
    with pytest.raises(ValueError):
        timing.summary([])


def test_interleaved_rotates_the_order_and_uses_returned_measurements():
    order = []
    rates = iter(range(100, 200))

    def a():
        order.append("a")
        return float(next(rates))

    def b():
        order.append("b")

    out = timing.interleaved({"a": a, "b": b}, repeats=5, warmup=1)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]  # warm-up first
    assert out["a"]["n"] == out["b"]["n"] == 5
    assert out["a"]["samples"] == [101.0, 102.0, 103.0, 104.0, 105.0]  # what `a` returned
    assert 0 <= out["b"]["median"] < 1  # clock time of a call that does nothing


def test_drain_waits_for_background_threads_to_finish():
    before = {t.ident for t in threading.enumerate()}
    done = threading.Event()

    def work():
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass
        done.set()

    threading.Thread(target=work).start()
    out = timing.drain(threads_before=before, timeout_s=5.0)
    assert done.is_set() and out["drained"]


def test_verdicts_are_computed_from_the_numbers():
    fast = timing.summary([1.0, 1.01, 1.02, 1.0, 1.01])
    slow = timing.summary([2.0, 2.1, 1.9, 2.0, 2.05])
    r = timing.ratio(fast, slow)
    assert r["median"] == pytest.approx(1.01 / 2.0, rel=1e-3)
    assert timing.verdict(r, 1.03, at_least=False) == "met"
    assert timing.verdict(r, 0.4, at_least=False) == "missed"
    noisy = timing.ratio(timing.summary([1.0, 1.3, 1.01, 0.9, 1.0]), timing.summary([1.0] * 5))
    assert timing.verdict(noisy, 1.03, at_least=False).startswith("met (spread")
    assert timing.verdict(timing.ratio(slow, fast), 3.0, at_least=True) == "missed"


def test_load_check_records_the_load():
    out = timing.load_check(max_load=1e9)
    assert out["quiet"] and len(out["load_average"]) == 3 and out["cores"] >= 1
