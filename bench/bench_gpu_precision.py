"""Mixed precision on a GPU: Kestrel's recipes in float32, mixed float16 and mixed bfloat16.

    python -m bench --only gpu_precision                              # on a machine with a GPU
    python -m bench --only gpu_precision --recipes fast --repeats 3   # less of it
    KERAS_BACKEND=jax python -m bench --only gpu_precision            # where TensorFlow has no GPU

Per recipe (fast and accurate, lib.recipes) and per global dtype policy (float32,
mixed_float16, mixed_bfloat16, what TrainConfig.mixed_precision sets), in one process:

- training throughput: images/s of one epoch of Keras ``fit`` on Fashion-MNIST's
  54 000 training images, after a warm-up epoch that compiles; ``repeats`` epochs of
  each variant, interleaved (round 2 starts with the variant round 1 ended with), as
  median and min–max;
- time to accuracy: each variant trained from scratch for the recipe's epochs,
  ``repeats`` times interleaved, test accuracy (10 000 images, with the recipe's
  mirrored averaging) after every epoch by the time-to-accuracy benchmark's tracker,
  whose own time is taken out of the training seconds. The first epoch's seconds
  include compiling the training step, as a user's first epoch does.

The model, optimizer and learning-rate schedule, loss with label smoothing, batch
size and BatchNorm momentum are the recipe's own (lib.architectures,
lib.training.schedules, lib.training.batchnorm.fit_momentum), compiled as the trainer
compiles them (Keras wraps the optimizer in a LossScaleOptimizer under
mixed_float16). Two things differ from ``lib.training.train_run``, so that it runs on
any Keras 3 backend: the images are fed to ``fit`` from memory, and the recipe's
mirroring is a RandomFlip layer on the GPU in front of the model rather than a step of
the tf.data pipeline. The result names the backend and its version.

Without a GPU it is skipped: float16 arithmetic on a CPU is emulated and says
nothing about a GPU, and the CPU's figures are the time-to-accuracy benchmark's.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np

from bench import machine, timing

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
RECIPES_FULL = ("fast", "accurate")
REPEATS_FULL = 5
VAL_FRACTION = 0.1  # as the time-to-accuracy benchmark trains: 54 000 of the 60 000 images
GRACE_S = 120.0  # how long past the deadline a training already under way may go on
TINY_PER_CLASS = 30  # the smoke test (300 images) only checks that it all runs
POLICY_WORDS = {
    "float32": "float32",
    "mixed_float16": "mixed float16",
    "mixed_bfloat16": "mixed bfloat16",
}


def gpu_count() -> int:
    """GPUs the Keras backend sees (0 for TensorFlow, JAX or PyTorch on a CPU)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(1 for d in jax.devices() if d.platform == "gpu")
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def backend_version() -> str:
    """The Keras backend with its version, e.g. "jax 0.11.2"."""
    from importlib import metadata

    import keras

    backend = keras.backend.backend()
    try:
        return f"{backend} {metadata.version(backend)}"
    except metadata.PackageNotFoundError:
        return backend


def load_arrays(size: str) -> dict:
    """Fashion-MNIST as the recipes train on it: (train images, labels, test images, labels)."""
    from bench.bench_time_to_accuracy import _test_arrays
    from lib.config import DataConfig
    from lib.data import load_dataset

    per_class = TINY_PER_CLASS if size == "tiny" else 0
    ds = load_dataset(
        DataConfig(source="fashion_mnist", val_fraction=VAL_FRACTION, max_per_class=per_class)
    )
    train = ds.splits["train"]
    x_test, y_test = _test_arrays(ds)
    return {
        "x": train.images().astype(np.float32),
        "y": np.asarray(train.labels),
        "x_test": x_test,
        "y_test": y_test,
        "shape": tuple(ds.image_shape),
        "classes": len(ds.class_names),
    }


def recipe_config(name: str, size: str):
    """Recipe ``name``'s RunConfig, as the time-to-accuracy benchmark trains it (tiny: one epoch)."""
    from bench.bench_time_to_accuracy import kestrel_config

    return kestrel_config(name, size, VAL_FRACTION)


def build(cfg, policy: str, data: dict, steps: int):
    """The recipe's model under ``policy``, compiled as lib.training compiles it."""
    import keras

    from lib.architectures import build_model
    from lib.training.batchnorm import fit_momentum
    from lib.training.schedules import make_optimizer

    keras.config.set_dtype_policy(policy)
    try:
        core = build_model(cfg.model, data["shape"], data["classes"])
        fit_momentum(core, steps)
        if cfg.augment.horizontal_flip:
            inputs = keras.Input(data["shape"])
            flipped = keras.layers.RandomFlip("horizontal", name="mirror")(inputs)
            model = keras.Model(inputs, core(flipped), name=f"{core.name}_mirrored")
        else:
            model = core
        model.compile(
            optimizer=make_optimizer(cfg.train, steps),
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=cfg.train.label_smoothing
            ),
            metrics=["accuracy"],
        )
    finally:
        keras.config.set_dtype_policy("float32")
    return model


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels]


def throughput(recipes, data: dict, size: str, repeats: int) -> dict:
    """Images/s of one epoch of fit per (recipe, policy): ``repeats`` interleaved epochs."""
    y = one_hot(data["y"], data["classes"])
    n = len(data["x"])
    variants, compile_s = {}, {}
    for name in recipes:
        cfg = recipe_config(name, size)
        steps = math.ceil(n / cfg.train.batch_size)
        for policy in POLICIES:
            model = build(cfg, policy, data, steps)
            key = f"{name}/{policy}"

            def epoch(model=model, batch=cfg.train.batch_size) -> float:
                start = time.perf_counter()
                model.fit(data["x"], y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
                return n / (time.perf_counter() - start)

            start = time.perf_counter()
            epoch()  # compiles the training step
            compile_s[key] = round(time.perf_counter() - start, 2)
            print(f"  {key}: first epoch {compile_s[key]} s", flush=True)
            variants[key] = epoch
    rates = timing.interleaved(variants, repeats=repeats, warmup=0)
    return {
        key: {"images_per_sec": rates[key], "first_epoch_seconds": compile_s[key]}
        for key in variants
    }


def time_to_accuracy(recipes, data: dict, size: str, repeats: int, deadline: float) -> dict:
    """Each (recipe, policy) trained from scratch ``repeats`` times, interleaved.

    No training starts after ``deadline`` (a ``time.perf_counter()`` value) once every
    variant has trained once, so variants' counts differ by one at most; each entry's
    ``repeats`` says how many it has. A training still running ``GRACE_S`` after the
    deadline stops there (its entry says ``stopped_by_budget`` and the epochs it did).
    """
    import keras

    from bench.bench_time_to_accuracy import _combine, _summarise, _tracker_class

    y = one_hot(data["y"], data["classes"])
    n = len(data["x"])
    keys = [(name, policy) for name in recipes for policy in POLICIES]
    runs: dict[str, list[dict]] = {f"{r}/{p}": [] for r, p in keys}
    for rep in range(repeats):
        k = rep % len(keys)
        for name, policy in keys[k:] + keys[:k]:
            if rep and time.perf_counter() > deadline:
                break
            keras.backend.clear_session()
            cfg = recipe_config(name, size)
            steps = math.ceil(n / cfg.train.batch_size)
            model = build(cfg, policy, data, steps)
            left = deadline + GRACE_S - time.perf_counter()
            tracker = _tracker_class()(
                data["x_test"], data["y_test"], steps_per_epoch=steps, evals_per_epoch=1,
                tta_flip=cfg.train.tta_flip, outputs_logits=True,
                budget_s=max(left, 1.0) if math.isfinite(left) else None,
            )  # fmt: skip
            load_before = machine.load_average()
            model.fit(
                data["x"], y, batch_size=cfg.train.batch_size, epochs=cfg.train.epochs,
                verbose=0, shuffle=True, callbacks=[tracker],
            )  # fmt: skip
            one = _summarise(
                name, tracker, description=f"{name} recipe, {POLICY_WORDS[policy]}",
                epochs_planned=cfg.train.epochs, n_train=n, budget_s=tracker.budget_s,
                load_before=load_before,
            )  # fmt: skip
            points = one["curve"]
            one["first_epoch_seconds"] = points[0]["train_seconds"] if points else None
            runs[f"{name}/{policy}"].append(one)
            print(
                f"  {name} {policy} round {rep + 1}: {one['final_test_accuracy']:.4f} "
                f"in {one['train_seconds']:.1f} s",
                flush=True,
            )
    out = {}
    for key, found in runs.items():
        combined = _combine(found)
        firsts = [r["first_epoch_seconds"] for r in found]
        combined["first_epoch_seconds"] = round(statistics.median(firsts), 2)
        combined["first_epoch_seconds_range"] = [min(firsts), max(firsts)]
        out[key] = combined
    return out


def run(
    size: str = "full", recipes=None, repeats=None, budgets=None, require_gpu: bool = True
) -> dict:
    """The benchmark; ``require_gpu=False`` runs it on a CPU too (the tests' smoke run).

    ``budgets={"total": seconds}``: after that many seconds no further training starts
    (once every variant has trained once), for machines lent for a fixed time.
    """
    import keras

    gpus = gpu_count()
    backend = backend_version()
    if not gpus and require_gpu:
        return {
            "skipped": f"no GPU for Keras' {backend} backend (the CPU's figures are "
            "time_to_accuracy's)",
            "backend": backend,
        }
    recipes = list(recipes or (RECIPES_FULL if size == "full" else ("fast",)))
    repeats = int(repeats or (REPEATS_FULL if size == "full" else 1))
    total = (budgets or {}).get("total")
    started = time.perf_counter()
    deadline = started + float(total) if total else math.inf
    data = load_arrays(size)
    start = time.perf_counter()
    speed = throughput(recipes, data, size, repeats)
    speed_s = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = time_to_accuracy(recipes, data, size, repeats, deadline)
    return {
        "backend": backend,
        "keras": keras.__version__,
        "gpus": machine.gpus() or [f"{gpus} GPU(s)" if gpus else "no GPU"],
        "recipes": recipes,
        "policies": list(POLICIES),
        "repeats": repeats,  # asked for; each time_to_accuracy entry has its own
        "budget_s": total,
        "train_images": len(data["x"]),
        "throughput": speed,
        "throughput_seconds": round(speed_s, 1),
        "time_to_accuracy": accuracy,
        "time_to_accuracy_seconds": round(time.perf_counter() - start, 1),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _range(values) -> str:
    lo, hi = values
    return f"{lo:,.0f}–{hi:,.0f}"


def _seconds(entry: dict, threshold: str) -> str:
    """Seconds to ``threshold`` (median, min–max), or how many of the trainings reached it."""
    value = entry["seconds_to"].get(threshold)
    if value is None:
        counts = entry.get("reached_in", {}).get(threshold) or f"0/{entry['repeats']}"
        hit, _, of = counts.partition("/")
        return "not reached" if hit == "0" else f"reached by {hit} of {of}"
    rng = (entry.get("seconds_to_range") or {}).get(threshold)
    return f"{value:.1f} s" + (f" ({rng[0]:.1f}–{rng[1]:.1f})" if rng else "")


def markdown(result: dict) -> str:
    if "skipped" in result:
        return f"Skipped: {result['skipped']}.\n"
    trained = sorted({a["repeats"] for a in result["time_to_accuracy"].values()})
    trained_words = " or ".join(str(t) for t in trained)
    budget = result.get("budget_s")
    cut = (
        f" (fewer than {result['repeats']}: the machine was lent for a fixed time, and no "
        f"training started after {budget:g} s)"
        if budget and trained[0] < result["repeats"]
        else ""
    )
    lines = [
        f"On {', '.join(result['gpus'])}, Keras {result['keras']} on its {result['backend']} "
        f"backend; Fashion-MNIST, {result['train_images']:,} training images fed from memory, "
        "the recipes' models, optimizers, schedules and losses, mirroring on the GPU. "
        f"Images/s: the median of {result['repeats']} interleaved epochs of each variant, "
        f"with min–max; accuracy and times: the median of {trained_words} interleaved "
        f"trainings from scratch{cut}, with min–max. The first epoch's seconds include compiling "
        "the training step; the times include them.",
        "",
        "| recipe | precision | images/s (one epoch) | first epoch | 92 % | 93 % | "
        "final test accuracy | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, speed in result["throughput"].items():
        name, policy = key.split("/", 1)
        rate = speed["images_per_sec"]
        acc = result["time_to_accuracy"][key]
        final = acc["final_test_accuracy"]
        final_rng = acc.get("final_test_accuracy_range", [final, final])
        lines.append(
            f"| {name} | {POLICY_WORDS[policy]} | {rate['median']:,.0f} "
            f"({_range((rate['min'], rate['max']))}) | {acc['first_epoch_seconds']:.1f} s | "
            f"{_seconds(acc, '0.92')} | {_seconds(acc, '0.93')} | {100 * final:.2f} % "
            f"({100 * final_rng[0]:.2f}–{100 * final_rng[1]:.2f}) | "
            f"{acc['train_seconds']:.1f} s, {acc['epochs_done']:g} ep |"
        )
    lines.append("")
    for name in result["recipes"]:
        base = result["throughput"].get(f"{name}/float32")
        if not base:
            continue
        parts = []
        for policy in POLICIES[1:]:
            other = result["throughput"].get(f"{name}/{policy}")
            if other:
                r = timing.ratio(other["images_per_sec"], base["images_per_sec"])
                parts.append(
                    f"{POLICY_WORDS[policy]} {r['median']:.2f}× float32's images/s "
                    f"({r['low']:.2f}–{r['high']:.2f})"
                )
        lines.append(f"- {name}: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"
