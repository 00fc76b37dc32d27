"""Progress-streaming overhead: fit with Kestrel's callbacks against a plain fit.

Same data (digits for the smoke size, Fashion-MNIST at full size), same model,
one process. Each variant
is fitted several times, alternating, on fresh run folders; the ratio compares
the fastest fit of each (the least disturbed by other load on the machine).
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
    "full": {"source": "fashion_mnist", "epochs": 2, "trials": 2, "filters": (16, 32)},
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

    times: dict[str, list[float]] = {"plain": [], "kestrel": []}
    events = 0
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(spec["trials"]):
            for variant in ("plain", "kestrel"):
                callbacks = []
                if variant == "kestrel":
                    run_dir = Path(tmp) / f"run{trial}"
                    run_dir.mkdir()
                    callbacks, _ = build_callbacks(
                        run_dir, cfg, steps=steps, has_val=True, best_so_far=None, echo=False
                    )
                t0 = time.perf_counter()
                model.fit(
                    train,
                    validation_data=val,
                    epochs=spec["epochs"],
                    callbacks=callbacks,
                    verbose=0,
                )
                times[variant].append(time.perf_counter() - t0)
                if variant == "kestrel":
                    events += len(read_events(run_dir))
    plain, kestrel = min(times["plain"]), min(times["kestrel"])
    return {
        "size": size,
        "dataset": spec["source"],
        "epochs_per_fit": spec["epochs"],
        "steps_per_epoch": steps,
        "plain_s": round(plain, 3),
        "kestrel_s": round(kestrel, 3),
        "ratio": round(kestrel / plain, 4),
        "target": TARGET_RATIO,
        "progress_events": events,
        "all_times_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
