"""Single-image prediction latency after warm-up: p50 and p95, server side.

    python -m bench --only predict          # through `make bench`
    python bench/bench_predict.py [tiny|full]

Two models, each through ``lib.predict.Predictor`` (one traced ``tf.function``,
a direct model call per image; decode excluded, preprocessing per card
included), after warm-up:

- the shipped Fashion-MNIST demo (``models/fashion-mnist-demo``), 28×28×1;
  target p50 ≤ 20 ms;
- MobileNetV2 at 224×224×3, ``weights=None``, 10 classes; target p50 ≤ 100 ms.

For contrast, ``model.predict`` on the same single image (the per-call set-up
the fast path avoids) is timed too. TensorFlow is limited to 2 threads (the
target machine's 2 cores) when this process starts it. ``tiny`` runs a
MobileNetV2 of width 0.35 at 96×96 and a few repeats, to check that it runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS_MS = {"demo": 20.0, "mobilenetv2": 100.0}
SIZES = {
    # warm-up calls, timed calls, model.predict calls, MobileNetV2 (side, alpha)
    "tiny": {"warmup": 3, "repeats": 20, "predict_repeats": 3, "mobilenet": (96, 0.35)},
    "full": {"warmup": 20, "repeats": 300, "predict_repeats": 30, "mobilenet": (224, 1.0)},
}


def _limit_threads(n: int = 2) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # TF already started in this process (e.g. under pytest)
        pass


def _percentiles(times_ms: list[float]) -> dict:
    arr = np.asarray(times_ms)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p95_ms": round(float(np.percentile(arr, 95)), 3),
        "mean_ms": round(float(arr.mean()), 3),
        "n": len(arr),
    }


def _measure(predictor, image: np.ndarray, cfg: dict) -> dict:
    from lib.predict import latency

    fast = latency(predictor, image, warmup=cfg["warmup"], repeats=cfg["repeats"])
    batch = predictor.prepare([image]).astype("float32")
    predictor.model.predict(batch, verbose=0)  # its own warm-up
    slow = []
    for _ in range(cfg["predict_repeats"]):
        t0 = time.perf_counter()
        predictor.model.predict(batch, verbose=0)
        slow.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": round(fast["p50_ms"], 3),
        "p95_ms": round(fast["p95_ms"], 3),
        "mean_ms": round(fast["mean_ms"], 3),
        "repeats": fast["repeats"],
        "model_predict_p50_ms": _percentiles(slow)["p50_ms"],
    }


def run(size: str = "full") -> dict:
    """Measure both models; returns a JSON-ready dict with p50/p95 in ms and the targets."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    cfg = SIZES[size]
    _limit_threads(2)
    import keras
    import tensorflow as tf

    from lib import registry
    from lib.predict import Predictor, get_predictor

    rng = np.random.default_rng(0)
    result: dict = {"size": size, "threads": 2, "targets_ms": TARGETS_MS}
    result["tensorflow"] = tf.__version__

    entry = next(e for e in registry.list_models() if e.name == "fashion-mnist-demo")
    photo = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    demo = _measure(get_predictor(entry), photo, cfg)
    demo["meets_target"] = demo["p50_ms"] <= TARGETS_MS["demo"]
    result["demo"] = demo

    side, alpha = cfg["mobilenet"]
    model = keras.applications.MobileNetV2(
        input_shape=(side, side, 3), alpha=alpha, weights=None, classes=10,
        classifier_activation=None,
    )  # fmt: skip
    card = registry.ModelCard(
        name="mobilenetv2", class_names=tuple(str(i) for i in range(10)),
        input_shape=(side, side, 3), preprocessing=registry.preprocessing_for((side, side, 3)),
    )  # fmt: skip
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    mobile = _measure(Predictor(model, card), image, cfg)
    mobile.update({"input": [side, side, 3], "alpha": alpha, "params": int(model.count_params())})
    mobile["meets_target"] = mobile["p50_ms"] <= TARGETS_MS["mobilenetv2"]
    result["mobilenetv2"] = mobile
    return result


def markdown(result: dict) -> str:
    rows = [
        "| model | p50 ms | p95 ms | target p50 | model.predict p50 ms |",
        "|---|---|---|---|---|",
    ]
    for key in ("demo", "mobilenetv2"):
        r = result[key]
        rows.append(
            f"| {key} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | ≤ {TARGETS_MS[key]:.0f} "
            f"({'met' if r['meets_target'] else 'MISSED'}) | {r['model_predict_p50_ms']:.2f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    out = run(sys.argv[1] if len(sys.argv) > 1 else "full")
    print(json.dumps(out, indent=2))
    print(markdown(out))
