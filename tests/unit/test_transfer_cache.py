"""The cached-feature transfer path: chosen by itself, same artifacts, same model contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lib import feature_cache, runstore
from lib.config import AugmentConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from lib.progress import PhaseEvent, read_events
from tests.tiny_runs import make_built_dataset


@pytest.fixture
def small_set():
    return make_built_dataset("tiny", ("a", "b", "c"), 6)


def config(ref, **model) -> RunConfig:
    return RunConfig(
        data=DataConfig(source="dataset", path=ref, val_fraction=0.2, test_fraction=0.2),
        model=ModelConfig(preset="mobilenetv2", weights="none", **model),
        train=TrainConfig(epochs=2, batch_size=4, schedule="constant"),
    )


def test_path_choice():
    from lib.training.transfer import cached_path_reason

    cfg = RunConfig(model=ModelConfig(preset="mobilenetv2"))
    assert cached_path_reason(cfg) is None
    assert cached_path_reason(cfg.replace(model=ModelConfig(preset="fast_cnn")))
    assert cached_path_reason(cfg.replace(model=ModelConfig(preset="mobilenetv2", unfreeze_last=3)))
    assert cached_path_reason(cfg.replace(augment=AugmentConfig(horizontal_flip=True)))


def test_cached_run_saves_backbone_plus_head_and_hits_the_cache_next_time(small_set):
    from lib.registry import load_model_file
    from lib.training import train_run
    from lib.training.transfer import feature_model

    cfg = config(small_set)
    run = runstore.create_run(cfg)
    outcome = train_run(run)
    assert outcome.state == "completed", outcome.error
    metrics = json.loads((run / runstore.METRICS_FILE).read_text())
    assert metrics["training_path"] == "cached_features"
    assert metrics["feature_cache"] == "computed"
    phases = [e.phase for e in read_events(run) if isinstance(e, PhaseEvent)]
    assert any(p.startswith("embedding images") and p.endswith("/15") for p in phases), phases
    counted = [e for e in read_events(run) if isinstance(e, PhaseEvent) and e.total]
    assert counted[-1].done == counted[-1].total == 15

    model = load_model_file(run / runstore.MODEL_FILE)  # Kestrel's registry loader, safe mode
    assert tuple(model.input_shape) == (None, 32, 32, 3)
    assert tuple(model.output_shape) == (None, 3)
    assert any("backbone" in layer.name for layer in model.layers)
    assert (run / runstore.PREDICTIONS_FILE).is_file()

    # The saved model on raw pixels equals the head on the cached features.
    from lib.data import load_dataset

    ds = load_dataset(cfg.data)
    feats = feature_model(model).predict(ds.splits["val"].images().astype("float32"), verbose=0)
    entries = list(feature_cache.cache_dir().glob("*.json"))
    cached = [
        np.load(str(e).replace(".json", ".npy"))
        for e in entries
        if json.loads(e.read_text())["inputs"]["split"] == "val"
    ]
    np.testing.assert_allclose(cached[0], feats, rtol=1e-4, atol=1e-4)

    again = runstore.create_run(cfg)
    assert train_run(again).state == "completed"
    assert json.loads((again / runstore.METRICS_FILE).read_text())["feature_cache"] == "hit"


def test_the_head_trains_on_datasets_without_autotuning(small_set, monkeypatch):
    """The cached features' train and validation sets, like every image pipeline, run
    without tf.data's autotuning (lib.data.pipeline.without_autotune says why)."""
    from lib.training import train_run, transfer

    seen = []

    def recording(data):
        out = real(data)
        seen.append(out)
        return out

    real = transfer.without_autotune
    monkeypatch.setattr(transfer, "without_autotune", recording)
    run = runstore.create_run(config(small_set))
    assert train_run(run).state == "completed"
    assert len(seen) == 2  # the head's train and validation sets
    assert all(d.options().autotune.enabled is False for d in seen)


def test_a_corrupt_cache_is_recomputed_in_a_run(small_set):
    from lib.training import train_run

    cfg = config(small_set)
    assert train_run(runstore.create_run(cfg)).state == "completed"
    for f in feature_cache.cache_dir().glob("*.npy"):
        f.write_bytes(f.read_bytes()[:-8] + b"\0" * 8)
    run = runstore.create_run(cfg)
    assert train_run(run).state == "completed"
    assert json.loads((run / runstore.METRICS_FILE).read_text())["feature_cache"] == "computed"


def test_a_trainable_backbone_trains_on_images(small_set):
    from lib.training import train_run

    run = runstore.create_run(config(small_set, unfreeze_last=2))
    assert train_run(run).state == "completed"
    assert json.loads((run / runstore.METRICS_FILE).read_text())["training_path"] == "images"
