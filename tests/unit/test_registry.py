"""Registry: cards, names, saving a run, listing and loading (tiny real models)."""

import json
import time

import keras
import numpy as np
import pytest

from lib import registry, runstore
from lib.architectures import build_model
from lib.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lib.data import load_dataset
from lib.predict import Predictor
from lib.workspace import QUOTA_SETTING, QuotaError

DATA = DataConfig(source="shapes", shapes_count=240, shapes_size=16, seed=3)


@pytest.fixture(scope="module")
def trained():
    """A fast_cnn trained two epochs on tiny shapes: (model, dataset)."""
    keras.utils.set_random_seed(0)
    ds = load_dataset(DATA)
    model = build_model(
        ModelConfig(preset="fast_cnn", width=0.25), ds.image_shape, len(ds.class_names)
    )
    model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    train = ds.splits["train"]
    y = keras.utils.to_categorical(train.labels, len(ds.class_names))
    model.fit(train.images().astype("float32"), y, epochs=2, batch_size=32, verbose=0)
    return model, ds


def completed_run(model, *, state="completed"):
    cfg = RunConfig(name="tiny", data=DATA, model=ModelConfig(preset="fast_cnn", width=0.25),
                    train=TrainConfig(epochs=2, batch_size=32))  # fmt: skip
    run_dir = runstore.create_run(cfg)
    model.save(run_dir / runstore.MODEL_FILE)
    runstore.atomic_write_json(
        run_dir / runstore.METRICS_FILE, {"test_accuracy": 0.5, "epochs_done": 2}
    )
    runstore.update_status(run_dir, state=state, ended=time.time())
    return run_dir


@pytest.mark.parametrize(
    ("typed", "clean"),
    [
        ("my model", "my-model"),
        ("  Fashion v2!  ", "Fashion-v2"),
        ("../../etc/passwd", "etc-passwd"),
        ("a" * 100, "a" * 64),
        ("résumé.1", "r-sum-.1"),
    ],
)
def test_sanitize_name(typed, clean):
    assert registry.sanitize_name(typed) == clean


@pytest.mark.parametrize("typed", ["", "   ", "../..", "!!!"])
def test_sanitize_name_refuses_empty(typed):
    with pytest.raises(registry.RegistryError, match="no usable characters"):
        registry.sanitize_name(typed)


def test_save_round_trip_keeps_predictions_identical(trained):
    model, ds = trained
    run_dir = completed_run(model)
    folder = registry.save_run_to_registry(run_dir, "tiny shapes")
    assert folder.name == "tiny-shapes" and folder.parent == registry.area("models")
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.keras"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]

    entry = next(e for e in registry.list_models() if e.name == "tiny-shapes")
    assert entry.source == "saved"
    card = entry.card
    assert card.class_names == tuple(ds.class_names)
    assert card.input_shape == (16, 16, 3)
    assert card.preprocessing == {
        "input": "raw pixels 0-255", "channels": 3, "size": [16, 16], "resize": "bilinear",
    }  # fmt: skip
    assert card.output == "logits"
    assert card.metrics["test_accuracy"] == 0.5
    assert RunConfig.from_dict(card.training_config).data == DATA
    assert card.keras_version == keras.__version__ and card.tensorflow_version
    assert card.source_run == run_dir.name

    images = ds.splits["test"].images()
    before = Predictor(model, card).probabilities(images)
    after = Predictor(registry.load_model(entry), card).probabilities(images)
    np.testing.assert_array_equal(before, after)


def test_duplicate_names_are_refused(trained):
    run_dir = completed_run(trained[0])
    registry.save_run_to_registry(run_dir, "twice")
    with pytest.raises(registry.RegistryError, match="already exists"):
        registry.save_run_to_registry(run_dir, "twice")


def test_a_saved_model_can_be_deleted_and_a_shipped_one_cannot(trained):
    run_dir = completed_run(trained[0])
    folder = registry.save_run_to_registry(run_dir, "short lived")
    entry = next(e for e in registry.list_models() if e.name == folder.name)
    registry.delete_saved_model(entry)
    assert not folder.exists()
    assert folder.name not in {e.name for e in registry.list_models()}
    with pytest.raises(registry.RegistryError, match="not in the registry"):
        registry.delete_saved_model(entry)
    shipped = [e for e in registry.list_models() if e.source == "shipped"]
    with pytest.raises(registry.RegistryError, match="only models saved"):
        registry.delete_saved_model(shipped[0])
    assert shipped[0].model_path.exists()


def test_saving_a_model_respects_the_workspace_quota(trained, monkeypatch):
    run_dir = completed_run(trained[0])
    monkeypatch.setenv("KESTREL_WORKSPACE_QUOTA_MB", "0.001")
    with pytest.raises(QuotaError, match=QUOTA_SETTING):
        registry.save_run_to_registry(run_dir, "too big")
    assert not any(p.name.startswith("too") for p in registry.area("models").iterdir())


def test_shipped_names_are_taken(trained):
    shipped = [e for e in registry.list_models() if e.source == "shipped"]
    if not shipped:
        pytest.skip("no shipped demo models (run make demo-models)")
    run_dir = completed_run(trained[0])
    with pytest.raises(registry.RegistryError, match="already exists"):
        registry.save_run_to_registry(run_dir, shipped[0].name)


@pytest.mark.parametrize("state", ["running", "failed", "stopped"])
def test_only_completed_runs_are_saved(trained, state):
    run_dir = completed_run(trained[0], state=state)
    with pytest.raises(registry.RegistryError, match=f"is {state}"):
        registry.save_run_to_registry(run_dir, "nope")
    assert not (registry.area("models") / "nope").exists()


def test_completed_runs_and_run_entry(trained):
    done = completed_run(trained[0])
    completed_run(trained[0], state="failed")
    assert registry.completed_runs() == [done]
    entry = registry.run_entry(done)
    assert entry.source == "run" and entry.card.num_classes == 6


GOOD_CARD = registry.ModelCard(
    name="carded",
    class_names=("a", "b"),
    input_shape=(28, 28, 1),
    preprocessing=registry.preprocessing_for((28, 28, 1)),
).to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"class_names": []}, "class_names"),
        ({"class_names": ["a", 2]}, "class_names"),
        ({"input_shape": [28, 28, 2]}, "input_shape"),
        ({"input_shape": [28, 28]}, "input_shape"),
        ({"output": "softmax?"}, "output"),
        ({"name": None}, "name"),
    ],
)
def test_bad_cards_are_refused_with_a_reason(tmp_path, change, message):
    data = {**GOOD_CARD, **change}
    if data["name"] is None:
        del data["name"]
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(registry.RegistryError, match=message):
        registry.read_card(tmp_path)


def test_a_model_with_a_broken_card_is_not_listed(trained):
    folder = registry.save_run_to_registry(completed_run(trained[0]), "carded")
    assert "carded" in [e.name for e in registry.list_models()]
    (folder / "card.json").write_text("{not json")
    assert "carded" not in [e.name for e in registry.list_models()]
    with pytest.raises(registry.RegistryError, match="not valid JSON"):
        registry.read_card(folder)


def test_default_entry_is_the_fashion_demo():
    entry = registry.default_entry()
    if entry is None:
        pytest.skip("no shipped demo models (run make demo-models)")
    assert entry.source == "shipped" and "fashion" in entry.name
    assert entry.model_path.stat().st_size <= 5 * 1024 * 1024


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_model_loads_computing_in_float32_and_exports(policy, tmp_path):
    """Mixed precision "on" trains in bfloat16 on a CPU; TFLite and ONNX cannot convert that.

    Every model Kestrel loads computes in float32 with the same weights, so predictions,
    Grad-CAM, exports and compression all see one float32 model.
    """
    from lib import export

    ds = load_dataset(DATA)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        mixed = build_model(
            ModelConfig(preset="fast_cnn", width=0.25, dropout=0.3),
            ds.image_shape,
            len(ds.class_names),
        )
    finally:
        keras.config.set_dtype_policy(previous)
    assert any(layer.dtype_policy.name == policy for layer in mixed.layers)
    path = tmp_path / "mixed.keras"
    mixed.save(path)

    loaded = registry.load_model_file(path)
    assert {layer.dtype_policy.compute_dtype for layer in loaded.layers} == {"float32"}
    x = ds.splits["test"].images()[:32].astype("float32")
    want = np.asarray(mixed.predict(x, verbose=0), np.float32)
    got = np.asarray(loaded.predict(x, verbose=0))
    np.testing.assert_allclose(got, want, atol=0.1)  # half precision's rounding only
    for a, b in zip(loaded.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    data = export.tflite_bytes(loaded, ds.image_shape)
    np.testing.assert_allclose(export.tflite_runner(data)(x), got, atol=1e-4)
    # A float32 model is returned as it is, not copied.
    assert registry.float32_model(loaded) is loaded
