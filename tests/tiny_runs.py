"""A finished tiny run, made for real (evaluation tests), and the job-runner test helpers.

``make_finished_run()`` creates a run directory in the current workspace
(KESTREL_HOME, a tmp folder in tests), trains a small dense Keras model on
scikit-learn's 8×8 digits for a few epochs, and leaves behind what the trainer
leaves: model.keras, history.csv (CSVLogger), metrics.json and a completed
status. The model is deliberately weak (few epochs) so the confusion matrix has
mistakes to click on.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from lib import runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig


def make_finished_run(
    *, name: str = "tiny digits", epochs: int = 3, hidden: int = 16, seed: int = 0
) -> Path:
    """Train and save a tiny digits model as a completed run; returns its directory."""
    import keras

    from lib.data import load_dataset

    cfg = RunConfig(
        name=name,
        data=DataConfig(source="digits", seed=0),
        model=ModelConfig(preset="custom"),
        train=TrainConfig(epochs=epochs, batch_size=64, schedule="constant", seed=seed),
    )
    run_dir = runstore.create_run(cfg)
    started = time.time()
    runstore.update_status(run_dir, state="running", started=started, attempts=1)
    ds = load_dataset(cfg.data)
    k = len(ds.class_names)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(ds.image_shape),
            keras.layers.Rescaling(1 / 255),  # the contract: models take raw pixels
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(k, dtype="float32"),  # logits
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def xy(split: str):
        s = ds.splits[split]
        return s.images().astype(np.float32), np.eye(k, dtype=np.float32)[s.labels]

    model.fit(
        *xy("train"),
        validation_data=xy("val"),
        epochs=epochs,
        batch_size=cfg.train.batch_size,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(run_dir / runstore.HISTORY_FILE))],
    )
    model.save(run_dir / runstore.MODEL_FILE)
    test_loss, test_acc = model.evaluate(*xy("test"), verbose=0)
    history = pd.read_csv(run_dir / runstore.HISTORY_FILE)
    ended = time.time()
    runstore.atomic_write_json(
        run_dir / runstore.METRICS_FILE,
        {
            "test_accuracy": float(test_acc),
            "test_loss": float(test_loss),
            "best_val_accuracy": float(history["val_accuracy"].max()),
            "epochs_done": epochs,
            "train_seconds": ended - started,
        },
    )
    runstore.update_status(run_dir, state="completed", ended=ended, pid=None)
    return run_dir


# ---------------------------------------------------------------- job-runner test helpers

WORKER_TIMEOUT_S = 240
REAP_DEADLINE_S = 10.0
TINY_MODEL = ModelConfig(
    preset="custom", blocks=(ConvBlock(filters=8, batch_norm=False),), head=HeadConfig(dense=(16,))
)


def tiny_config(epochs: int = 2, name: str = "tiny") -> RunConfig:
    """Digits and a one-block CNN: a recipe the job runner trains in seconds."""
    return RunConfig(
        name=name,
        data=DataConfig(source="digits"),
        model=TINY_MODEL,
        train=TrainConfig(epochs=epochs, batch_size=64, schedule="constant", learning_rate=0.01),
    )


def wait_for(predicate, timeout: float, what: str, poll: bool = True):
    """Poll the job runner until ``predicate()`` is truthy; its value, or an AssertionError."""
    from lib import jobs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll:
            jobs.poll()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def state(run_id: str) -> str:
    """The state in a run's status.json."""
    from lib import runstore

    return runstore.read_status(runstore.run_dir(run_id)).state


def random_png(rng: np.random.Generator, side: int = 32) -> bytes:
    """A PNG of random RGB noise, ``side`` × ``side`` px."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_built_dataset(name: str, classes: tuple[str, ...], per_class: int, seed: int = 0) -> str:
    """A built dataset (lib.datasets) of random 32 px images; returns its ``name@version``."""
    from lib import datasets

    rng = np.random.default_rng(seed)
    datasets.create_dataset(name)
    version = 1
    for cls in classes:
        files = [(f"{i}.png", random_png(rng)) for i in range(per_class)]
        version, _ = datasets.add_images(name, cls, files)
    return datasets.dataset_ref(name, version)
