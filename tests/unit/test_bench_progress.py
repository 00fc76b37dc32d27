"""Smoke test of bench/bench_progress.py: it runs and reports sensible figures (tiny size)."""

import importlib.util

import pytest

from lib.workspace import PROJECT_ROOT


def test_bench_progress_tiny_runs():
    spec = importlib.util.spec_from_file_location(
        "bench_progress", PROJECT_ROOT / "bench" / "bench_progress.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run("tiny")
    assert result["plain_s"] > 0 and result["kestrel_s"] > 0
    assert result["ratio"] == pytest.approx(result["kestrel_s"] / result["plain_s"], rel=0.02)
    assert result["progress_events"] >= 2 * 2  # per fit at least the start and epoch events
