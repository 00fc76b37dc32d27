"""bench/bench_augment.py runs at its tiny size and reports every figure it promises."""

import json
import math

import pytest

from bench import bench_augment


@pytest.mark.slow
def test_bench_augment_runs_tiny_and_reports_its_figures():
    result = bench_augment.run("tiny")
    json.dumps(result)  # JSON-ready for bench/results
    assert result["preview"]["grid"] == "8x4" and result["preview"]["warm_s"] > 0
    (throughput,) = result["throughput"]
    for key in ("kestrel_images_per_s", "legacy_images_per_s", "kestrel_images_per_cpu_s"):
        assert math.isfinite(throughput[key]) and throughput[key] > 0, key
    assert throughput["ratio"] == pytest.approx(
        throughput["kestrel_images_per_s"] / throughput["legacy_images_per_s"], rel=0.01
    )
    (placement,) = result["placement"]
    for key in ("no_augmentation", "tf_data_map", "model_layers"):
        assert placement[f"{key}_images_per_s"] > 0, key
    text = bench_augment.markdown(result)
    assert "ImageDataGenerator" in text and "tf.data map" in text


def test_bench_augment_uses_the_issues_legacy_augmentation():
    cfg = bench_augment._augment_config()
    assert cfg.horizontal_flip and cfg.rotation == pytest.approx(15 / 360) and cfg.translate == 0.1
    assert bench_augment.LEGACY_KWARGS == {
        "rotation_range": 15,
        "width_shift_range": 0.1,
        "height_shift_range": 0.1,
        "horizontal_flip": True,
    }
    with pytest.raises(ValueError, match="size"):
        bench_augment.run("huge")
