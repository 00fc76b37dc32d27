"""Augmentation benchmark: preview latency, pipeline throughput, and where augmentation runs.

    python -m bench.bench_augment              # full figures, printed
    python -m bench --only augment             # the same through `make bench`
    python -m bench.bench_augment --size tiny  # seconds, to check it runs

Three measurements, one process, on Fashion-MNIST (28x28x1) from its local IDX files:

1. ``preview``: ``lib.augment.preview`` of 8 samples x 4 variants with the
   "strong" preset, warm (median of repeated calls after a first one).
   Target: under 1 s on 2 CPU cores.
2. ``throughput``: augmented input images/s of Kestrel's pipeline
   (``make_pipeline(..., augment=make_augmenter(...))``) against the legacy
   ``ImageDataGenerator(rotation_range=15, width_shift_range=0.1,
   height_shift_range=0.1, horizontal_flip=True).flow(...)``, with the same
   augmentations (rotation 15 degrees = 15/360 of a turn, shift 0.1, horizontal
   flip) and the same batch size. Target: Kestrel at least 3x faster.
3. ``placement``: training images/s of a small CNN when the same augmentation
   runs in the tf.data map (CPU, overlapped with the step by prefetch) or as the
   model's first layers (inside the training step), against no augmentation.

Every timed figure is the median of at least 5 interleaved repetitions (bench.timing)
with its spread. Kestrel's pipeline gets a fresh iterator for each repetition, and
its prefetch threads are released and the process drained (no background CPU) before
anything else is timed, so the baseline never shares the cores with Kestrel's
prefetching. Every batch size's row is reported, and the decisions are computed
from the figures. The numbers are in ``bench/results/``.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

PREVIEW_SAMPLES, PREVIEW_VARIANTS = 8, 4
LEGACY_KWARGS = {
    "rotation_range": 15,
    "width_shift_range": 0.1,
    "height_shift_range": 0.1,
    "horizontal_flip": True,
}
SIZES = {
    # batches timed per generator, training steps per timed epoch, batch sizes, images per class
    "full": {
        "kestrel_batches": 100,
        "legacy_batches": 20,
        "rounds": 5,
        "steps": 30,
        "batches": (128, 256),
        "per_class": 0,
    },
    "tiny": {
        "kestrel_batches": 2,
        "legacy_batches": 2,
        "rounds": 2,  # tiny only checks that it runs; its figures are never quoted
        "steps": 1,
        "batches": (16,),
        "per_class": 10,
    },
}


def _augment_config():
    """The issue's legacy augmentation, as an AugmentConfig."""
    from lib.config import AugmentConfig

    return AugmentConfig(preset="custom", horizontal_flip=True, rotation=15 / 360, translate=0.1)


def _dataset(per_class: int):
    from lib.config import DataConfig
    from lib.data import load_dataset

    return load_dataset(DataConfig(source="fashion_mnist", max_per_class=per_class))


def bench_preview(ds, repeats: int = 5) -> dict:
    """Warm latency of the page's preview call: median and spread of ``repeats`` calls."""
    from bench import timing
    from lib import augment

    split = ds.splits["train"]
    images = split.images(np.arange(PREVIEW_SAMPLES))
    cfg = augment.PRESETS["strong"]
    start = time.perf_counter()
    augment.preview(cfg, images, PREVIEW_VARIANTS, seed=0)
    cold = time.perf_counter() - start
    warm = timing.interleaved(
        {"preview": lambda: augment.preview(cfg, images, PREVIEW_VARIANTS, seed=0)},
        repeats=repeats,
        warmup=0,
    )["preview"]
    return {
        "grid": f"{PREVIEW_SAMPLES}x{PREVIEW_VARIANTS}",
        "preset": "strong",
        "cold_s": round(cold, 3),
        "warm_s": round(warm["median"], 3),
        "warm": warm,
        "target_s": 1.0,
        "decision": timing.verdict(warm, 1.0, at_least=False),
    }


def _images_per_second(batches, count: int, cpu_rates: list[float]) -> float:
    """Pull ``count`` batches from an iterator; images per wall second.

    Images per CPU second of this process (all threads) go to ``cpu_rates``: the
    steadier figure on a shared machine, where other processes stretch wall time.
    """
    n = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        images = next(batches)[0]
        n += int(images.shape[0])
    cpu_rates.append(n / max(time.process_time() - cpu, 1e-9))
    return n / (time.perf_counter() - wall)


def bench_throughput(
    ds, batch_size: int, kestrel_batches: int, legacy_batches: int, rounds: int
) -> dict:
    """Augmented input images/s: Kestrel's tf.data pipeline vs ImageDataGenerator.flow.

    ``rounds`` interleaved repetitions each (at least 5 at full size). Each of
    Kestrel's repetitions starts a fresh iterator, takes one untimed batch (the
    prefetch warm-up), times ``kestrel_batches``, then releases the iterator; the
    process is drained of background work before every timed repetition.
    """

    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    from bench import timing
    from lib.augment import make_augmenter
    from lib.data import make_pipeline

    aug = make_augmenter(_augment_config(), ds.image_shape, ds.num_classes, seed=0)
    pipe = make_pipeline(
        ds, "train", batch_size=batch_size, shuffle=True, seed=0, augment=aug, repeat=True
    )
    split = ds.splits["train"]
    x = split.images().astype("float32")
    y = np.eye(ds.num_classes, dtype="float32")[split.labels]
    flow = ImageDataGenerator(**LEGACY_KWARGS).flow(
        x, y, batch_size=batch_size, shuffle=True, seed=0
    )
    legacy_it = iter(flow)
    cpu = {"kestrel": [], "legacy": []}

    def kestrel():
        it = iter(pipe)
        next(it)  # tracing on the first repetition; the prefetch start on every one
        rate = _images_per_second(it, kestrel_batches, cpu["kestrel"])
        del it  # stops its prefetch threads; `between` drains them
        return rate

    def legacy():
        return _images_per_second(legacy_it, legacy_batches, cpu["legacy"])

    drains: list[dict] = []
    runs = timing.interleaved(
        {"kestrel": kestrel, "legacy": legacy},
        repeats=rounds,
        warmup=1,
        between=lambda: drains.append(timing.drain()),
    )
    ratio = timing.ratio(runs["kestrel"], runs["legacy"])
    k_cpu, l_cpu = statistics.median(cpu["kestrel"]), statistics.median(cpu["legacy"])
    return {
        "batch_size": batch_size,
        "repeats": rounds,
        "kestrel_images_per_s": round(runs["kestrel"]["median"]),
        "legacy_images_per_s": round(runs["legacy"]["median"]),
        "kestrel": runs["kestrel"],
        "legacy": runs["legacy"],
        "ratio": round(runs["kestrel"]["median"] / runs["legacy"]["median"], 2),
        "ratio_range": [ratio["low"], ratio["high"]],
        "kestrel_images_per_cpu_s": round(k_cpu),
        "legacy_images_per_cpu_s": round(l_cpu),
        "cpu_ratio": round(k_cpu / l_cpu, 2),
        "target_ratio": 3.0,
        "decision": timing.verdict(ratio, 3.0, at_least=True),
        "drained_before_each": all(d["drained"] for d in drains),
    }


def _cnn_layers(num_classes: int) -> list:
    import keras

    return [
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes),
    ]


def _compiled(model):
    import keras

    model.compile(
        optimizer="adam",
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # the same for all placements; XLA cannot take every layer
    )
    return model


def bench_placement(ds, batch_size: int, steps: int, repeats: int = 5) -> dict:
    """Training images/s with augmentation in the tf.data map vs as model layers vs none.

    Each variant's model is traced by one untimed epoch, then ``repeats`` epochs of
    ``steps`` steps each are timed, interleaved across the three variants.
    """

    import keras

    from bench import timing
    from lib.augment import build_layers, make_augmenter
    from lib.data import make_pipeline

    cfg = _augment_config()
    shape, k = ds.image_shape, ds.num_classes

    def pipe(augment=None):
        return make_pipeline(
            ds, "train", batch_size=batch_size, shuffle=True, seed=0, augment=augment, repeat=True
        )

    keras.utils.set_random_seed(0)
    setups = {
        "no_augmentation": (keras.Sequential([keras.Input(shape), *_cnn_layers(k)]), pipe()),
        "tf_data_map": (
            keras.Sequential([keras.Input(shape), *_cnn_layers(k)]),
            pipe(make_augmenter(cfg, shape, k, seed=0)),
        ),
        "model_layers": (
            keras.Sequential([keras.Input(shape), *build_layers(cfg, shape, 0), *_cnn_layers(k)]),
            pipe(),
        ),
    }
    cpu: dict[str, list[float]] = {name: [] for name in setups}

    def variant(name):
        model, data = setups[name]

        def fit():
            wall, c0 = time.perf_counter(), time.process_time()
            model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
            images = steps * batch_size
            cpu[name].append(images / max(time.process_time() - c0, 1e-9))
            return images / (time.perf_counter() - wall)

        return fit

    for model, _ in setups.values():
        _compiled(model)
    runs = timing.interleaved(
        {name: variant(name) for name in setups},
        repeats=repeats,
        warmup=1,
        between=lambda: timing.drain(timeout_s=5.0),
    )
    out = {"batch_size": batch_size, "repeats": repeats}
    for name in setups:
        out[f"{name}_images_per_s"] = round(runs[name]["median"])
        out[f"{name}_images_per_cpu_s"] = round(statistics.median(cpu[name]))
        out[name] = runs[name]
    return out


def placement_decision(rows: list[dict]) -> str:
    """Where augmentation should run, from the placement figures (per CPU second)."""
    if not rows:
        return "not measured"
    share = [r["tf_data_map_images_per_cpu_s"] / r["model_layers_images_per_cpu_s"] for r in rows]
    lo, hi = min(share), max(share)
    span = f"{lo:.2f}–{hi:.2f}×" if len(rows) > 1 else f"{lo:.2f}×"
    if lo >= 0.95:
        return (
            f"augmentation in the tf.data map trains at {span} the images per CPU second "
            "of augmentation as model layers: the map stays (it also keeps augmentation "
            "out of the saved model)"
        )
    if hi < 0.95:
        return (
            f"augmentation as model layers trains faster per CPU second (the map reaches "
            f"only {span} of it): a case for moving augmentation into the model"
        )
    return f"mixed: the map reaches {span} of model layers' images per CPU second"


def run(size: str = "full") -> dict:
    """Run the three measurements; ``size="tiny"`` checks that they run, in seconds.

    Returns:
        ``{"preview": {...}, "throughput": [...], "placement": [...], "decision": str}``.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    plan = SIZES[size]
    ds = _dataset(plan["per_class"])
    result = {
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "dataset": f"fashion_mnist train split, {len(ds.splits['train'])} images {ds.image_shape}",
        "preview": bench_preview(ds, repeats=5),
        "throughput": [
            bench_throughput(ds, b, plan["kestrel_batches"], plan["legacy_batches"], plan["rounds"])
            for b in plan["batches"]
        ],
        "placement": [
            bench_placement(ds, b, plan["steps"], plan["rounds"]) for b in plan["batches"]
        ],
    }
    result["decision"] = placement_decision(result["placement"])
    result["throughput_decision"] = "; ".join(
        f"batch {t['batch_size']}: {t['ratio']}× ({t['decision']})" for t in result["throughput"]
    )
    return result


def _rate(summary: dict) -> str:
    return f"{summary['median']:,.0f} ({summary['min']:,.0f}–{summary['max']:,.0f})"


def markdown(result: dict) -> str:
    """The figures as a small report section: medians with min–max, decisions computed."""
    p = result["preview"]
    load = "/".join(str(v) for v in result["load_average_at_start"])
    warm = p.get("warm", {"min": p["warm_s"], "max": p["warm_s"], "n": 1})
    lines = [
        f"Data: {result['dataset']}. Load average at start: {load}. Each figure: median "
        "(min–max) of interleaved repetitions, background work drained before each.",
        "",
        f"Preview {p['grid']} ({p['preset']} preset): {p['warm_s']} s warm "
        f"({warm['min']}–{warm['max']} s, {warm['n']} calls), {p['cold_s']} s cold; "
        f"target < {p['target_s']} s: {p.get('decision', '?')}.",
        "",
        "Augmented input, images per wall second:",
        "",
        "| batch | Kestrel | ImageDataGenerator | ratio of medians (worst–best) | per CPU-s ratio "
        "| target ≥ 3× |",
        "|---|---|---|---|---|---|",
    ]
    for t in result["throughput"]:
        lo, hi = t["ratio_range"]
        lines.append(
            f"| {t['batch_size']} | {_rate(t['kestrel'])} | {_rate(t['legacy'])} "
            f"| {t['ratio']}× ({lo:.2f}–{hi:.2f}) | {t['cpu_ratio']}× | {t['decision']} |"
        )
    lines += [
        "",
        "Training a small CNN, images per wall second (per CPU second, median):",
        "",
        "| batch | no augmentation | augmentation in tf.data map | as model layers |",
        "|---|---|---|---|",
    ]
    for q in result["placement"]:
        cells = [
            f"{_rate(q[name])} ({q[f'{name}_images_per_cpu_s']:,})"
            for name in ("no_augmentation", "tf_data_map", "model_layers")
        ]
        lines.append(f"| {q['batch_size']} | " + " | ".join(cells) + " |")
    lines += ["", f"Decision: {result['decision']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_augment", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    print(markdown(run(parser.parse_args().size)))
