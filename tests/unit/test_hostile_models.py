"""Hostile model uploads are refused before Keras loads them, and nothing of them stays.

Each case builds a real file (a Keras model saved with something dangerous in
it, or a damaged archive) and hands it to ``registry.upload_entry`` exactly as
the Predict page does.
"""

import io
import json
import zipfile

import keras
import numpy as np
import pytest

from lib import model_inspect, registry

MARKER = {"path": None}  # where the custom layer below would write if it were ever built


@keras.saving.register_keras_serializable(package="evil")
class Evil(keras.layers.Layer):
    """A custom layer whose construction leaves a trace: it must never be built from an upload."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if MARKER["path"] is not None:
            MARKER["path"].write_text("code ran")

    def call(self, x):
        return x


def _small(*middle):
    return keras.Sequential(
        [keras.Input((8, 8, 1)), *middle, keras.layers.Flatten(), keras.layers.Dense(3)]
    )


def _save(model, tmp_path, name="m.keras") -> bytes:
    path = tmp_path / name
    model.save(path)
    return path.read_bytes()


def _rewrite(data: bytes, mutate=None, extra=()) -> bytes:
    """A copy of a .keras archive with config.json changed and extra members added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            payload = src.read(info)
            if info.filename == "config.json" and mutate is not None:
                config = json.loads(payload)
                mutate(config)
                payload = json.dumps(config).encode()
            dst.writestr(info.filename, payload)
        for name, payload, method in extra:
            dst.writestr(name, payload, compress_type=method)
    return out.getvalue()


def _dense(config):
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")


def _set_module(config):
    _dense(config).update({"module": "subprocess", "class_name": "Popen", "registered_name": None})


def _set_function(config):
    _dense(config)["config"]["activation"] = {
        "module": "os", "class_name": "function", "config": "system", "registered_name": "function",
    }  # fmt: skip


def _set_non_modeling(config):
    _dense(config)["config"]["activation"] = {
        "module": "keras.utils", "class_name": "function", "config": "get_file",
        "registered_name": None,
    }  # fmt: skip


def _set_tfsm(config):
    layer = _dense(config)
    layer.update({"module": "keras.layers", "class_name": "TFSMLayer"})
    layer["config"]["filepath"] = "/etc"


def hostile_files(tmp_path):
    """(case, file name, bytes, expected message fragment) for every hostile case."""
    good = _save(_small(), tmp_path)
    cases = [
        ("lambda layer", "lambda.keras", _save(_small(keras.layers.Lambda(lambda x: x * 2)), tmp_path, "l.keras"), "Lambda layer"),
        ("custom class", "custom.keras", _save(_small(Evil()), tmp_path, "c.keras"), "custom object 'evil>Evil'"),
        ("legacy h5 by name", "model.h5", b"\x89HDF\r\n\x1a\n" + good, "legacy HDF5"),
        ("legacy hdf5 by name", "model.hdf5", good, "legacy HDF5"),
        ("truncated zip", "truncated.keras", good[: len(good) // 2], "not a complete zip"),
        ("truncated tail", "tail.keras", good[:-30], "not a complete zip"),
        ("not a zip", "png.keras", b"\x89PNG\r\n\x1a\n" + bytes(500), "not a complete zip"),
        ("empty file", "empty.keras", b"", "not a complete zip"),
        ("wrong extension", "model.pkl", good, "only Keras v3"),
        ("module outside keras", "module.keras", _rewrite(good, _set_module), "subprocess.Popen"),
        ("function outside keras", "fn.keras", _rewrite(good, _set_function), "os.system"),
        ("non-modeling keras api", "api.keras", _rewrite(good, _set_non_modeling), "keras.utils.get_file"),
        ("file-loading layer", "tfsm.keras", _rewrite(good, _set_tfsm), "TFSMLayer"),
        ("path traversal member", "slip.keras", _rewrite(good, extra=[("../../evil.py", b"x", zipfile.ZIP_STORED)]), "unsafe path"),
        ("zip bomb member", "bomb.keras", _rewrite(good, extra=[("assets/zeros", bytes(30 * 2**20), zipfile.ZIP_DEFLATED)]), "zip bomb"),
    ]  # fmt: skip
    no_config = io.BytesIO()
    with zipfile.ZipFile(no_config, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("model.weights.h5", b"")
    cases.append(("zip without config", "noconfig.keras", no_config.getvalue(), "no config.json"))
    legacy = tmp_path / "legacy.h5"
    _small().save(legacy)  # Keras' real legacy HDF5 format
    cases.append(("real h5 renamed", "renamed.keras", legacy.read_bytes(), "legacy HDF5"))
    return cases


CASE_NAMES = [
    "lambda layer", "custom class", "legacy h5 by name", "legacy hdf5 by name", "truncated zip",
    "truncated tail", "not a zip", "empty file", "wrong extension", "module outside keras",
    "function outside keras", "non-modeling keras api", "file-loading layer",
    "path traversal member", "zip bomb member", "zip without config", "real h5 renamed",
]  # fmt: skip


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return {c[0]: c for c in hostile_files(tmp_path_factory.mktemp("hostile"))}


@pytest.mark.parametrize("case", CASE_NAMES)
def test_hostile_model_is_refused(cases, case, tmp_path):
    _, filename, data, fragment = cases[case]
    MARKER["path"] = tmp_path / "marker"
    try:
        with pytest.raises(registry.UnsafeModelError) as info:
            registry.upload_entry(data, filename)
    finally:
        MARKER["path"] = None
    assert fragment in str(info.value)
    assert not (tmp_path / "marker").exists(), "an uploaded model ran code"
    stored = registry.area(registry.UPLOAD_AREA)
    assert not stored.exists() or not list(stored.iterdir()), "a refused upload was kept"


def test_oversize_model_is_refused(tmp_path, monkeypatch):
    data = _save(_small(), tmp_path)
    monkeypatch.setattr(model_inspect, "MAX_MODEL_BYTES", len(data) - 1)
    with pytest.raises(registry.UnsafeModelError, match="the limit is"):
        registry.upload_entry(data, "big.keras")
    path = tmp_path / "big.keras"
    path.write_bytes(data)
    with pytest.raises(registry.UnsafeModelError, match="the limit is"):
        registry.inspect_keras_archive(path)


def test_the_size_cap_is_the_upload_limit():
    toml = (registry.PROJECT_ROOT / ".streamlit" / "config.toml").read_text()
    assert f"maxUploadSize = {registry.MAX_MODEL_BYTES // 2**20}" in toml


def test_keras_safe_mode_also_refuses_lambda(tmp_path):
    """Defence in depth: the pinned Keras refuses it too, were our own check bypassed."""
    path = tmp_path / "lambda.keras"
    _small(keras.layers.Lambda(lambda x: x * 2)).save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path, safe_mode=True)


def test_model_without_a_fixed_image_input_is_refused(tmp_path):
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    )
    with pytest.raises(registry.UnsafeModelError, match="fixed"):
        registry.upload_entry(_save(model, tmp_path), "anysize.keras")


def test_a_safe_model_is_accepted_and_stored_under_a_generated_name(tmp_path):
    model = _small(keras.layers.Conv2D(2, 3, activation="relu", padding="same"))
    entry = registry.upload_entry(_save(model, tmp_path), "../../My Model.keras")
    assert entry.source == "upload" and entry.name == "My Model.keras"
    folder = registry.area(registry.UPLOAD_AREA)
    assert entry.model_path.parent == folder
    assert entry.model_path.name != "My Model.keras" and entry.model_path.suffix == ".keras"
    assert entry.card.input_shape == (8, 8, 1) and entry.card.num_classes == 3
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(registry.load_model(entry)(x), model(x), rtol=1e-6, atol=1e-6)


def test_a_run_model_with_kestrels_own_schedule_is_accepted(tmp_path):
    """Re-uploading a Kestrel run's model works: its compile config is never loaded."""
    from lib.training import OneCycle  # registered as kestrel>OneCycle

    model = _small()
    model.compile(optimizer=keras.optimizers.Adam(OneCycle(1e-3, 100)), loss="mse")
    entry = registry.upload_entry(_save(model, tmp_path), "run.keras")
    assert entry.card.num_classes == 3
