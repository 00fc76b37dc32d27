"""Transfer learning on cached features against the plain frozen-backbone path.

A folder of JPEGs (the shapes generator at 224 px, written into a temporary
folder shared as the data root), MobileNetV2 frozen with random weights (imagenet
cannot be downloaded on the build machines; the speed does not depend on the
weights), batch 32, no augmentation, 10 % validation and 10 % test. Timed with
bench.timing, interleaved, at least 5 repetitions each, in this one process:

- ``plain_epoch``: one Keras epoch of the whole model on the images (with validation),
  as train_run's plain path fits it;
- ``extract``: computing the training and validation features (a cache miss:
  decode, backbone, checksum, write) through lib.training.transfer;
- ``head_epoch``: one epoch of the head on the cached features (with validation);
- ``cache_hit_run``: a second run on the same data: the checked cache look-up
  of both splits plus ``epochs`` head epochs.

Figures: ``speedup_per_epoch`` = plain_epoch / head_epoch (target ≥ 100);
``speedup_end_to_end`` = epochs × plain_epoch / (extract + epochs × head_epoch)
(target ≥ 9, composed from the measured medians: ten-epoch plain runs repeated
five times do not fit the machine's time); ``speedup_cache_hit`` = epochs ×
plain_epoch / cache_hit_run (target ≥ 50). Validation accuracy of both paths
after ``epochs`` epochs from the same initial weights (one run each).

    python -m bench --only transfer_cache [--size tiny]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS = {"speedup_per_epoch": 100.0, "speedup_end_to_end": 9.0, "speedup_cache_hit": 50.0}
SIZES = {
    "tiny": {"images": 96, "side": 96, "epochs": 3, "repeats": 2},  # checks it runs; never quoted
    "full": {"images": 1000, "side": 224, "epochs": 10, "repeats": 5},
}
BATCH = 32


def _write_jpegs(folder: Path, n: int, side: int) -> None:
    from PIL import Image

    from lib.data.shapes import CLASS_NAMES, generate_shapes

    x, y = generate_shapes(n, side, 0)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        cls = folder / CLASS_NAMES[int(label)]
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.squeeze()).convert("RGB").save(cls / f"{i:05d}.jpg", quality=90)


def run(size: str = "full") -> dict:
    """Time both paths and return the figures."""
    spec = SIZES[size]
    tmp = Path(tempfile.mkdtemp(prefix="kestrel-transfer-bench-"))
    os.environ["KESTREL_DATA_ROOTS"] = str(tmp)
    os.environ.setdefault("KESTREL_HOME", str(tmp / "workspace"))
    _write_jpegs(tmp / "images", spec["images"], spec["side"])
    return _measure(tmp / "images", spec, size)


def _measure(folder: Path, spec: dict, size: str) -> dict:
    import keras
    import numpy as np

    from bench import timing
    from lib import feature_cache
    from lib.architectures import build_model
    from lib.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from lib.data import load_dataset, make_pipeline
    from lib.data.pipeline import without_autotune
    from lib.training.schedules import make_optimizer
    from lib.training.transfer import head_model, split_features

    epochs = spec["epochs"]
    cfg = RunConfig(
        data=DataConfig(source="folder", path=str(folder), val_fraction=0.1, test_fraction=0.1),
        model=ModelConfig(preset="mobilenetv2", weights="none"),
        train=TrainConfig(epochs=epochs, batch_size=BATCH, schedule="constant", learning_rate=1e-3),
    )
    ds = load_dataset(cfg.data)
    n_train, n_val = len(ds.splits["train"]), len(ds.splits["val"])
    steps = -(-n_train // BATCH)
    k = ds.num_classes
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)

    def fresh_model():
        keras.utils.set_random_seed(0)
        model = build_model(cfg.model, tuple(ds.image_shape), k)
        model.compile(optimizer=make_optimizer(cfg.train, steps), loss=loss, metrics=["accuracy"])
        return model

    model = fresh_model()
    initial = model.get_weights()
    train_images = make_pipeline(ds, "train", batch_size=BATCH, shuffle=True, seed=0)
    val_images = make_pipeline(ds, "val", batch_size=BATCH, shuffle=False, seed=0)
    import tensorflow as tf

    def onehot(split):
        return np.eye(k, dtype=np.float32)[ds.splits[split].labels]

    feats, _ = split_features(cfg, model, ds, ["train", "val"])
    head = head_model(model)
    head.compile(optimizer=make_optimizer(cfg.train, steps), loss=loss, metrics=["accuracy"])
    # As lib.training.transfer feeds the head: autotuning off (lib.data.pipeline).
    train_feats = without_autotune(
        tf.data.Dataset.from_tensor_slices((feats["train"], onehot("train")))
        .shuffle(n_train, seed=0)
        .batch(BATCH)
    )
    val_feats = without_autotune(
        tf.data.Dataset.from_tensor_slices((feats["val"], onehot("val"))).batch(BATCH)
    )

    def plain_epoch():
        model.fit(train_images, validation_data=val_images, epochs=1, verbose=0)

    def extract():
        feature_cache.clear()
        split_features(cfg, model, ds, ["train", "val"])

    def head_epoch():
        head.fit(train_feats, validation_data=val_feats, epochs=1, verbose=0)

    def cache_hit_run():
        _, hit = split_features(cfg, model, ds, ["train", "val"])
        assert hit, "the second look-up must be a cache hit"
        head.fit(train_feats, validation_data=val_feats, epochs=epochs, verbose=0)

    load = timing.load_check()
    runs = timing.interleaved(
        {"plain_epoch": plain_epoch, "extract": extract, "head_epoch": head_epoch,
         "cache_hit_run": cache_hit_run},
        repeats=spec["repeats"], warmup=1,
    )  # fmt: skip
    p, x, h, c = (runs[n] for n in ("plain_epoch", "extract", "head_epoch", "cache_hit_run"))
    per_epoch = timing.ratio(p, h)
    end_to_end = {
        "median": round(epochs * p["median"] / (x["median"] + epochs * h["median"]), 3),
        "low": round(epochs * p["min"] / (x["max"] + epochs * h["max"]), 3),
        "high": round(epochs * p["max"] / (x["min"] + epochs * h["min"]), 3),
    }
    cache_hit = {
        "median": round(epochs * p["median"] / c["median"], 3),
        "low": round(epochs * p["min"] / c["max"], 3),
        "high": round(epochs * p["max"] / c["min"], 3),
    }

    # Accuracy: both paths from the same initial weights, `epochs` epochs each.
    model.set_weights(initial)
    model.compile(optimizer=make_optimizer(cfg.train, steps), loss=loss, metrics=["accuracy"])
    t0 = time.perf_counter()
    plain_hist = model.fit(train_images, validation_data=val_images, epochs=epochs, verbose=0)
    plain_run_s = time.perf_counter() - t0
    model.set_weights(initial)
    head = head_model(model)
    head.compile(optimizer=make_optimizer(cfg.train, steps), loss=loss, metrics=["accuracy"])
    t0 = time.perf_counter()
    extract()
    cached_hist = head.fit(train_feats, validation_data=val_feats, epochs=epochs, verbose=0)
    cached_run_s = time.perf_counter() - t0
    acc_plain = float(plain_hist.history["val_accuracy"][-1])
    acc_cached = float(cached_hist.history["val_accuracy"][-1])
    figures = {
        "speedup_per_epoch": per_epoch,
        "speedup_end_to_end": end_to_end,
        "speedup_cache_hit": cache_hit,
    }
    return {
        "size": size,
        "images": spec["images"],
        "side": spec["side"],
        "train_images": n_train,
        "val_images": n_val,
        "batch": BATCH,
        "epochs": epochs,
        "backbone": "mobilenetv2 (random weights), frozen",
        "load_before": load,
        "timings_s": runs,
        **figures,
        "decisions": {
            name: timing.verdict(value, TARGETS[name], at_least=True)
            for name, value in figures.items()
        },
        "targets": TARGETS,
        "single_run_s": {"plain": round(plain_run_s, 2), "cached": round(cached_run_s, 2)},
        "single_run_speedup": round(plain_run_s / cached_run_s, 2),
        "val_accuracy": {"plain": round(acc_plain, 4), "cached": round(acc_cached, 4)},
        "val_accuracy_gap_points": round(100 * abs(acc_plain - acc_cached), 2),
    }


def markdown(result: dict) -> str:
    """The figures as a table, with the decisions computed from them."""
    t = result["timings_s"]
    load = "/".join(str(v) for v in result["load_before"].get("load_average", [])) or "?"
    lines = [
        f"{result['images']} JPEGs at {result['side']} px ({result['train_images']} train, "
        f"{result['val_images']} val), {result['backbone']}, batch {result['batch']}, "
        f"{t['plain_epoch']['n']} interleaved repetitions each; load average before: {load}.",
        "",
        "| step | median s | min–max s |",
        "|---|---|---|",
    ]
    for name in ("plain_epoch", "extract", "head_epoch", "cache_hit_run"):
        s = t[name]
        lines.append(f"| {name} | {s['median']:.3f} | {s['min']:.3f}–{s['max']:.3f} |")
    lines.append("")
    for name in ("speedup_per_epoch", "speedup_end_to_end", "speedup_cache_hit"):
        v = result[name]
        lines.append(
            f"- transfer_cache {name}: {v['median']:.1f}× (worst/best {v['low']:.1f}–"
            f"{v['high']:.1f}×), target ≥ {result['targets'][name]:g}: "
            f"**{result['decisions'][name]}**"
        )
    acc = result["val_accuracy"]
    lines.append(
        f"- one {result['epochs']}-epoch run each: plain {result['single_run_s']['plain']} s, "
        f"cached (extraction included) {result['single_run_s']['cached']} s "
        f"({result['single_run_speedup']}×); validation accuracy plain {acc['plain']:.3f}, "
        f"cached {acc['cached']:.3f} (gap {result['val_accuracy_gap_points']} points)"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json

    out = run(sys.argv[1] if len(sys.argv) > 1 else "full")
    print(json.dumps(out, indent=1))
    print(markdown(out))
