"""Progress-streaming overhead: fit with Kestrel's callbacks against a plain fit.

Same data (digits for the smoke size, Fashion-MNIST at full size), same model,
one process. Each variant is fitted at least 5 times, interleaved (bench.timing),
Kestrel's on a fresh run folder each time; reported are each variant's median
fit time with its spread, the ratio of the medians with its worst and best case,
and a decision computed from them.
Kestrel's callbacks include everything a run uses: progress events, stop checks,
TerminateOnNaN, best-model checkpoint, last weights, CSVLogger, TensorBoard and
BackupAndRestore. Target: ratio ≤ 1.03.

    python bench/bench_progress.py [tiny|full]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET_RATIO = 1.03
SIZES = {
    # source, epochs per fit, trials per variant, model blocks (filters)
    "tiny": {"source": "digits", "epochs": 1, "trials": 2, "filters": (8,)},
    "full": {"source": "fashion_mnist", "epochs": 1, "trials": 5, "filters": (16, 32)},
}


def run(size: str = "full") -> dict:
    """Time plain fits and fits with Kestrel's callbacks; returns the figures."""
    import keras

    from lib.architectures import build_model
    from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
    from lib.data import load_dataset, make_pipeline
    from lib.progress import read_events
    from lib.training import build_callbacks, epoch_steps, make_optimizer

    spec = SIZES[size]
    cfg = RunConfig(
        data=DataConfig(source=spec["source"]),
        model=ModelConfig(
            preset="custom",
            head=HeadConfig(dense=(32,)),
            blocks=tuple(ConvBlock(filters=f) for f in spec["filters"]),
        ),
        train=TrainConfig(epochs=spec["epochs"], batch_size=64, schedule="cosine"),
    )
    keras.utils.set_random_seed(0)
    ds = load_dataset(cfg.data)
    steps = epoch_steps(len(ds.splits["train"]), cfg.train.batch_size)
    train = make_pipeline(ds, "train", batch_size=64, shuffle=True, seed=0).cache()
    val = make_pipeline(ds, "val", batch_size=64, shuffle=False, seed=0).cache()
    model = build_model(cfg.model, tuple(ds.image_shape), len(ds.class_names))
    model.compile(
        optimizer=make_optimizer(cfg.train, steps),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train, validation_data=val, epochs=1, verbose=0)  # trace once, fill caches

    from bench import timing

    events = 0
    load = timing.load_check()
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def plain():
            model.fit(train, validation_data=val, epochs=spec["epochs"], verbose=0)

        def kestrel():
            nonlocal events
            run_dir = Path(tmp) / f"run{next(counter)}"
            run_dir.mkdir()
            callbacks, _ = build_callbacks(
                run_dir, cfg, steps=steps, has_val=True, best_so_far=None, echo=False
            )
            t0 = time.perf_counter()
            model.fit(
                train, validation_data=val, epochs=spec["epochs"], callbacks=callbacks, verbose=0
            )
            seconds = time.perf_counter() - t0
            events += len(read_events(run_dir))
            return seconds

        times = timing.interleaved(
            {"plain": plain, "kestrel": kestrel},
            repeats=spec["trials"],
            warmup=0,
            between=lambda: timing.drain(timeout_s=5.0),
        )
    ratio = timing.ratio(times["kestrel"], times["plain"])
    return {
        "size": size,
        "dataset": spec["source"],
        "epochs_per_fit": spec["epochs"],
        "steps_per_epoch": steps,
        "repeats": spec["trials"],
        "load_before": load,
        "load_after": timing.load_average(),
        "plain_s": times["plain"]["median"],
        "kestrel_s": times["kestrel"]["median"],
        "plain": times["plain"],
        "kestrel": times["kestrel"],
        "ratio": ratio["median"],
        "ratio_range": [ratio["low"], ratio["high"]],
        "target": TARGET_RATIO,
        "decision": timing.verdict(ratio, TARGET_RATIO, at_least=False),
        "progress_events": events,
    }


def markdown(result: dict) -> str:
    """The figures as a table, with the decision computed from them."""
    p, k = result["plain"], result["kestrel"]
    load = "/".join(str(v) for v in result["load_before"]["load_average"]) or "?"
    lines = [
        f"{result['dataset']}, {result['epochs_per_fit']} epochs per fit, "
        f"{result['repeats']} interleaved fits each; load average before: {load}.",
        "",
        "| fit | median s | min–max s | spread |",
        "|---|---|---|---|",
        f"| plain | {p['median']:.2f} | {p['min']:.2f}–{p['max']:.2f} | {p['spread_pct']} % |",
        f"| Kestrel callbacks | {k['median']:.2f} | {k['min']:.2f}–{k['max']:.2f} "
        f"| {k['spread_pct']} % |",
        "",
        f"Ratio of medians: {result['ratio']:.3f} (worst/best case "
        f"{result['ratio_range'][0]:.3f}–{result['ratio_range'][1]:.3f}); "
        f"target ≤ {result['target']}: **{result['decision']}**.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
