"""Smoke test of bench/bench_predict.py: it runs and reports sensible latencies (tiny size)."""

import importlib.util

from lib.workspace import PROJECT_ROOT


def test_bench_predict_tiny_runs():
    spec = importlib.util.spec_from_file_location(
        "bench_predict", PROJECT_ROOT / "bench" / "bench_predict.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run("tiny")
    for key in ("demo", "mobilenetv2"):
        r = result[key]
        assert 0 < r["p50_ms"] <= r["p95_ms"], r
        assert r["repeats"] == 20 and r["model_predict_p50_ms"] > 0
        assert isinstance(r["meets_target"], bool)
    assert result["mobilenetv2"]["input"] == [96, 96, 3]
    assert "| demo |" in bench.markdown(result)
