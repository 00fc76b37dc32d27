"""What the parts of a recipe cost on a CPU: training images per CPU second, side by side.

    python -m bench --only ablation
    python -m bench.bench_ablation --size tiny

The accuracy side of a recipe comes from time_to_accuracy; this is the cost side,
for the parts the fast recipes are built from. Every variant trains the same
Fashion-MNIST batches through Keras ``fit`` with a model from
``lib.architectures.build_model``; each is timed over ``steps`` steps in at least 5
interleaved repetitions after an untimed warm-up (tracing), and reported as
images per wall second and per CPU second of this process (the steadier figure on
a shared machine), median with min–max. Compared with the ``accurate_cnn`` row:

- BatchNorm: ``accurate_cnn`` against the same convs and head without BatchNorm, and
  against Keras' own BatchNormalization training step (``keras_batchnorm``, in float32
  and bfloat16): every other row, like the trainer, trains BatchNorm through
  TensorFlow's fused kernel (lib.training.batchnorm);
- width: ``accurate_cnn`` at width 0.5 and 2, and ``fast_cnn``;
- weight averaging: Adam with ``use_ema=True`` (Keras' exponential moving average);
- label smoothing: the loss with ``label_smoothing=0.1``;
- batch size: 256 against 128;
- channels order: ``channels_first`` convolutions, where TensorFlow's CPU kernels
  take them (the result says when they do not);
- bfloat16: every Kestrel CNN (``accurate_cnn``, ``fast_cnn``, ``lenet5``,
  ``vgg_small``, ``resnet20``, the custom builder's ``no_batchnorm`` stack) and a
  MobileNetV2 under ``mixed_bfloat16``, what mixed precision trains with on a CPU
  (compare ``X_bfloat16`` with ``X``; ``bfloat16`` is accurate_cnn's): lib.hardware's
  "auto" follows these rows where the CPU computes bfloat16 natively, and the decision
  line gives each pair's ratio.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

SIZES = {
    # trace_steps: the untimed fit that traces each variant; drain_s: how long to wait,
    # before each timed fit, for the process to finish its background work.
    "full": {
        "images": 8192,
        "steps": 16,
        "repeats": 5,
        "warmup": 1,
        "trace_steps": 2,
        "drain_s": 5.0,
        "batch_divisor": 1,
    },
    # Checks that every variant builds, traces and times; never quoted. Its cost is the
    # tracing (resnet20 and vgg_small in emulated bfloat16 most), so one step to trace,
    # one timed step each, and no drain between them (it waited 1.1 s a variant, 23 s
    # of a 151 s tiny run). Batches a sixteenth of the variants' (8 for 128): the emulated
    # bfloat16 steps of 128 images took about 20 s of a 96 s tiny run.
    "tiny": {
        "images": 256,
        "steps": 1,
        "repeats": 1,
        "warmup": 0,
        "trace_steps": 1,
        "drain_s": None,
        "batch_divisor": 16,
    },
}
BASE = "accurate_cnn"


def _variants():
    from lib.config import ConvBlock, HeadConfig, ModelConfig

    no_bn = ModelConfig(
        preset="custom",
        blocks=(ConvBlock(filters=32, batch_norm=False), ConvBlock(filters=64, batch_norm=False)),
        head=HeadConfig(pooling="flatten", dense=(256,), dropout=0.3),
    )
    # name -> (ModelConfig, batch size, use_ema, label smoothing, data format[, dtype policy])
    return {
        BASE: (ModelConfig(preset="accurate_cnn"), 128, False, 0.0, "channels_last"),
        "no_batchnorm": (no_bn, 128, False, 0.0, "channels_last"),
        # Keras' own BatchNormalization training step, which the trainer replaces by
        # TensorFlow's fused kernel (lib.training.batchnorm; every other row has it).
        "keras_batchnorm": (ModelConfig(preset="accurate_cnn"), 128, False, 0.0, "channels_last"),
        "keras_batchnorm_bfloat16": (ModelConfig(preset="accurate_cnn"), 128, False, 0.0,
                                     "channels_last", "mixed_bfloat16"),
        "width_0.5": (ModelConfig(preset="accurate_cnn", width=0.5), 128, False, 0.0, "channels_last"),
        "width_2": (ModelConfig(preset="accurate_cnn", width=2.0), 128, False, 0.0, "channels_last"),
        "fast_cnn": (ModelConfig(preset="fast_cnn"), 128, False, 0.0, "channels_last"),
        "ema": (ModelConfig(preset="accurate_cnn"), 128, True, 0.0, "channels_last"),
        "label_smoothing": (ModelConfig(preset="accurate_cnn"), 128, False, 0.1, "channels_last"),
        "batch_256": (ModelConfig(preset="accurate_cnn"), 256, False, 0.0, "channels_last"),
        "channels_first": (ModelConfig(preset="accurate_cnn"), 128, False, 0.0, "channels_first"),
        # Mixed precision "on" without a GPU: bfloat16 compute, native on CPUs with
        # AVX-512 BF16 or AMX (the machine line names them), emulated on others.
        "bfloat16": (ModelConfig(preset="accurate_cnn"), 128, False, 0.0, "channels_last",
                     "mixed_bfloat16"),
        "fast_cnn_bfloat16": (ModelConfig(preset="fast_cnn"), 128, False, 0.0, "channels_last",
                              "mixed_bfloat16"),
        # Kestrel's other CNNs, which "auto" also trains in bfloat16 on such CPUs; the
        # custom builder's through the no-BatchNorm stack above.
        **{
            f"{preset}{suffix}": (ModelConfig(preset=preset), 128, False, 0.0, "channels_last",
                                  policy)
            for preset in ("lenet5", "vgg_small", "resnet20")
            for suffix, policy in (("", "float32"), ("_bfloat16", "mixed_bfloat16"))
        },
        "no_batchnorm_bfloat16": (no_bn, 128, False, 0.0, "channels_last", "mixed_bfloat16"),
        # An ImageNet backbone (random weights: the cost is the architecture's), which
        # mixed precision "auto" keeps in float32 on a CPU.
        "mobilenetv2": (ModelConfig(preset="mobilenetv2"), 128, False, 0.0, "channels_last"),
        "mobilenetv2_bfloat16": (ModelConfig(preset="mobilenetv2"), 128, False, 0.0,
                                 "channels_last", "mixed_bfloat16"),
    }  # fmt: skip


def _build(model_cfg, batch, ema, smoothing, data_format, *rest, x, y, num_classes, fused=True):
    import keras
    import tensorflow as tf

    from lib.architectures import build_model
    from lib.data.pipeline import without_autotune
    from lib.training import batchnorm

    policy = rest[0] if rest else "float32"
    before, before_policy = keras.config.image_data_format(), keras.config.dtype_policy()
    keras.config.set_image_data_format(data_format)
    keras.config.set_dtype_policy(policy)  # the layers keep it after the reset below
    try:
        model = build_model(model_cfg, (28, 28, 1), num_classes)
    finally:
        keras.config.set_image_data_format(before)
        keras.config.set_dtype_policy(before_policy)
    if fused:
        batchnorm.install(model)  # as lib.training.run trains it
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, use_ema=ema),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing),
    )
    # As the trainer's pipelines: with tf.data's autotuning on, each fit's end waited for
    # its iterator to go away (0.3, 0.6, 1.3... s), which the wall figures counted.
    data = without_autotune(
        tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(2)
    )
    return model, data


def run(size: str = "full") -> dict:
    """Time every variant; returns medians with spreads and computed comparisons."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from bench import timing
    from lib.config import DataConfig
    from lib.data import load_dataset

    plan = SIZES[size]
    ds = load_dataset(DataConfig(source="fashion_mnist"))
    split = ds.splits["train"]
    x = split.images(np.arange(plan["images"])).astype(np.float32)
    y = np.eye(ds.num_classes, dtype=np.float32)[split.labels[: plan["images"]]]
    keras.utils.set_random_seed(0)
    setups, refused = {}, {}
    for name, spec in _variants().items():
        spec = (spec[0], spec[1] // plan["batch_divisor"], *spec[2:])
        try:
            model, data = _build(
                *spec, x=x, y=y, num_classes=ds.num_classes,
                fused=not name.startswith("keras_batchnorm"),
            )  # fmt: skip
            model.fit(data, epochs=1, steps_per_epoch=plan["trace_steps"], verbose=0)  # trace
            setups[name] = (model, data, spec[1])
        except Exception as exc:  # e.g. NCHW convolutions on a CPU
            refused[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    cpu: dict[str, list[float]] = {name: [] for name in setups}

    def variant(name):
        model, data, batch = setups[name]

        def fit():
            wall, c0 = time.perf_counter(), time.process_time()
            model.fit(data, epochs=1, steps_per_epoch=plan["steps"], verbose=0)
            images = plan["steps"] * batch
            cpu[name].append(images / max(time.process_time() - c0, 1e-9))
            return images / (time.perf_counter() - wall)

        return fit

    load = timing.load_check()
    runs = timing.interleaved(
        {name: variant(name) for name in setups},
        repeats=plan["repeats"],
        warmup=plan["warmup"],  # the tracing fit above ran each variant once already
        between=(lambda: timing.drain(timeout_s=plan["drain_s"])) if plan["drain_s"] else None,
    )
    rows = {}
    for name, summary in runs.items():
        rows[name] = {
            "images_per_s": summary,
            "images_per_cpu_s": timing.summary(cpu[name]),
        }
    base = statistics.median(cpu[BASE]) if BASE in cpu else None
    for row in rows.values():
        med = row["images_per_cpu_s"]["median"]
        row["cost_vs_base"] = round(base / med, 3) if base and med else None
    return {
        "size": size,
        "images": plan["images"],
        "steps": plan["steps"],
        "repeats": plan["repeats"],
        "load_before": load,
        "load_after": timing.load_average(),
        "variants": rows,
        "refused": refused,
        "decision": _decision(rows, refused),
    }


def _decision(rows: dict, refused: dict) -> str:
    """Which parts cost CPU time, from the measured cost relative to accurate_cnn."""
    parts = []
    for name, row in rows.items():
        if name == BASE or row["cost_vs_base"] is None:
            continue
        parts.append(f"{name} {row['cost_vs_base']:.2f}×")
    text = f"CPU time per training image relative to {BASE}: " + ", ".join(parts)
    pairs = []
    for name, row in rows.items():
        half = rows.get(f"{name}_bfloat16") or (rows.get("bfloat16") if name == BASE else None)
        if half and row["images_per_cpu_s"]["median"] and half["images_per_cpu_s"]["median"]:
            ratio = row["images_per_cpu_s"]["median"] / half["images_per_cpu_s"]["median"]
            pairs.append(f"{name} {ratio:.2f}×")
    if pairs:
        text += "; CPU time per image in bfloat16 relative to float32: " + ", ".join(pairs)
    fused = []
    for own, kernel, words in (
        ("keras_batchnorm", BASE, "float32"),
        ("keras_batchnorm_bfloat16", "bfloat16", "bfloat16"),
    ):
        if own in rows and kernel in rows:
            ratio = rows[kernel]["images_per_cpu_s"]["median"] / max(
                rows[own]["images_per_cpu_s"]["median"], 1e-9
            )
            fused.append(f"{ratio:.2f}× in {words}")
    if fused:
        text += (
            "; Keras' own BatchNormalization training step costs the accurate_cnn "
            "this many times the CPU time per image of TensorFlow's fused kernel: "
            + ", ".join(fused)
        )
    if refused:
        text += "; not runnable here: " + ", ".join(refused)
    return text


def markdown(result: dict) -> str:
    load = "/".join(str(v) for v in result["load_before"]["load_average"]) or "?"
    lines = [
        f"{result['images']} Fashion-MNIST images, {result['steps']} steps per timing, "
        f"{result['repeats']} interleaved repetitions; load average before: {load}.",
        "",
        "| variant | images/s, median (min–max) | images per CPU-s | CPU cost vs accurate_cnn |",
        "|---|---|---|---|",
    ]
    for name, row in result["variants"].items():
        w, c = row["images_per_s"], row["images_per_cpu_s"]
        lines.append(
            f"| {name} | {w['median']:,.0f} ({w['min']:,.0f}–{w['max']:,.0f}) "
            f"| {c['median']:,.0f} | {row['cost_vs_base']}× |"
        )
    for name, why in result["refused"].items():
        lines.append(f"| {name} | not runnable: {why} | | |")
    lines += ["", f"Decision: {result['decision']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.bench_ablation")
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    print(markdown(run(parser.parse_args().size)))
