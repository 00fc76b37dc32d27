"""Tests that fail when a safeguard or a training option is quietly turned off.

Each test here was checked against the edit it guards against (safe mode off in
Kestrel's loader; early stopping, reduce-on-plateau, balanced class weights or
label smoothing not reaching training; the shipped demo's stated accuracy no
longer true): under that edit it fails. Trainings are tiny but real, through
``lib.training`` as a worker runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib import runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- safe mode


def test_kestrels_loader_refuses_marshalled_code_that_keras_would_otherwise_run(tmp_path):
    """A Lambda layer carries marshalled Python bytecode; only safe_mode stops it running."""
    import keras

    from lib.registry import load_model_file

    path = tmp_path / "lambda.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 3.0 + 1.0)]).save(path)
    config = json.loads(_member(path, "config.json"))
    assert "lambda" in json.dumps(config).lower() and "__lambda__" in json.dumps(config)

    # Meaningful: with safe mode off the very same file loads and runs the code.
    unsafe = keras.saving.load_model(path, safe_mode=False, compile=False)
    assert float(unsafe(np.ones((1, 4), np.float32))[0, 0]) == pytest.approx(4.0)

    with pytest.raises(ValueError, match="safe_mode"):
        load_model_file(path)


def _member(path: Path, name: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


# ---------------------------------------------------------------- training options

TINY_MODEL = ModelConfig(
    preset="custom",
    blocks=(ConvBlock(filters=8, batch_norm=False),),
    head=HeadConfig(pooling="flatten", dense=(32,)),
)


def _train(data: DataConfig | None = None, **train) -> Path:
    """One tiny real run through lib.training; returns its directory (completed)."""
    from lib.training import train_run

    base = {"epochs": 3, "batch_size": 64, "schedule": "constant", "learning_rate": 0.01,
            "label_smoothing": 0.0, "seed": 0, "device": "cpu", "mixed_precision": "off"}  # fmt: skip
    cfg = RunConfig(
        name="regression",
        data=data or DataConfig(source="digits"),
        model=TINY_MODEL,
        train=TrainConfig(**{**base, **train}),
    )
    path = runstore.create_run(cfg)
    outcome = train_run(path)
    assert outcome.state == "completed", outcome.error
    return path


def _probs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from lib.evaluation import load_predictions

    preds = load_predictions(path)
    return preds.y_true, preds.probs


@pytest.mark.slow
def test_early_stopping_ends_a_run_that_stopped_improving():
    # At the smallest learning rate the validation accuracy cannot improve.
    path = _train(epochs=8, learning_rate=1e-6, early_stopping_patience=1)
    history = runstore.read_history(path)
    assert len(history["epoch"]) < 8
    metrics = runstore.read_metrics(path)
    assert metrics["stopped_early"] is True and metrics["epochs_done"] < 8


@pytest.mark.slow
def test_reduce_on_plateau_lowers_the_learning_rate_on_one_worker():
    path = _train(epochs=4, learning_rate=1e-5, schedule="reduce_on_plateau",
                  step_epochs=1, step_factor=0.5)  # fmt: skip
    lrs = runstore.read_history(path)["learning_rate"]
    assert lrs[0] == pytest.approx(1e-5, rel=1e-3)
    assert min(lrs) <= 0.5e-5 * 1.001


@pytest.fixture
def lopsided_folder(tmp_path) -> Path:
    """Two classes of indistinguishable noise, 10:1: only the class prior can be learnt."""
    rng = np.random.default_rng(0)
    root = tmp_path / "lopsided"
    for cls, n in (("many", 330), ("few", 33)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    return root


@pytest.mark.slow
def test_balanced_class_weights_change_what_the_model_learns(lopsided_folder):
    data = DataConfig(source="folder", path=str(lopsided_folder), val_fraction=0.2,
                      test_fraction=0.2)  # fmt: skip
    few = lambda path: float(_probs(path)[1][:, 0].mean())  # noqa: E731 -- "few" sorts first
    plain = few(_train(data, epochs=6, batch_size=32, learning_rate=0.02))
    balanced = few(_train(data, epochs=6, batch_size=32, learning_rate=0.02,
                          class_weights="balanced"))  # fmt: skip
    # Without weights the prior wins (about 1 in 11); balanced weights pull toward one half.
    assert plain < 0.25, plain
    assert balanced > plain + 0.15, (plain, balanced)


@pytest.mark.slow
def test_label_smoothing_makes_the_model_less_confident():
    confidence = lambda path: float(_probs(path)[1].max(axis=1).mean())  # noqa: E731
    sharp = confidence(_train(epochs=3, label_smoothing=0.0))
    smooth = confidence(_train(epochs=3, label_smoothing=0.4))
    # Smoothing 0.4 over 10 classes puts the target at 0.64 for the true class.
    assert smooth < 0.75, smooth
    assert smooth < sharp - 0.1, (sharp, smooth)


# ---------------------------------------------------------------- the shipped demo


@pytest.mark.slow
def test_shipped_shapes_demo_has_the_accuracy_its_card_states():
    """Rebuild the test split from the card's own data config and evaluate the shipped model."""
    from lib.data import load_dataset
    from lib.registry import load_model_file, read_card

    folder = ROOT / "models" / "shapes-demo"
    card = read_card(folder)
    data = DataConfig.from_dict(card.training_config["data"])
    # compared as configs: a field added later (with its default) is the same recipe
    assert DataConfig.from_dict(card.dataset.get("config", card.training_config["data"])) == data
    test = load_dataset(data, cache=False).splits["test"]
    assert len(test) == card.metrics["test_count"]

    model = load_model_file(folder / "model.keras")
    x = test.images().astype(np.float32)
    assert x.shape[1:] == tuple(card.input_shape)
    logits = model.predict(x, batch_size=200, verbose=0)
    accuracy = float((logits.argmax(axis=1) == test.labels).mean())
    stated = card.metrics["test_accuracy"]
    assert accuracy == pytest.approx(stated, abs=1.5 / len(test)), (accuracy, stated)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`models/shapes-demo` (small CNN, {stated * 100:.1f} %)" in readme
