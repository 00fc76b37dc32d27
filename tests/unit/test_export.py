"""Export: every format converts and matches the Keras model on ≥ 200 real test images."""

import io
import zipfile

import numpy as np
import pytest

from lib import export, registry


@pytest.fixture(scope="module")
def demo():
    """The shipped Fashion-MNIST demo and 256 parity images (its own test set, else a fallback)."""
    entry = next((e for e in registry.list_models() if e.name == "fashion-mnist-demo"), None)
    assert entry is not None, "models/fashion-mnist-demo is missing: run make demo-models"
    images = export.parity_images(entry)
    return entry, images


def test_parity_images_are_model_shaped(demo):
    entry, images = demo
    assert images.shape == (export.PARITY_IMAGES, *entry.card.input_shape)
    assert images.dtype == np.uint8 and images.std() > 10  # real pictures, not blanks
    assert export.PARITY_IMAGES >= 200


def test_keras_download_is_the_model_file(demo):
    entry, _ = demo
    result = export.export_model(entry, "keras")
    assert result.data == entry.model_path.read_bytes()
    assert result.filename == "fashion-mnist-demo.keras" and result.parity is None


def test_tflite_float32_parity(demo):
    entry, images = demo
    result = export.export_model(entry, "tflite", images)
    assert result.data[4:8] == b"TFL3"  # the FlatBuffer identifier
    assert result.parity.images == len(images) >= 200
    assert result.parity.top1_agreement >= 0.99
    assert result.parity.max_prob_diff < 1e-3
    assert result.parity.ok


def test_tflite_dynamic_range_is_smaller_and_close(demo):
    entry, images = demo
    float32 = export.tflite_bytes(export.load_model(entry), entry.card.input_shape)
    result = export.export_model(entry, "tflite_dynamic", images)
    assert len(result.data) < 0.5 * len(float32)
    assert result.parity.top1_agreement >= 0.95
    assert result.filename.endswith("_dynamic.tflite")


def test_savedmodel_zip_parity(demo):
    entry, images = demo
    result = export.export_model(entry, "savedmodel", images[:200])
    names = zipfile.ZipFile(io.BytesIO(result.data)).namelist()
    assert "savedmodel/saved_model.pb" in names
    assert result.parity.top1_agreement == 1.0 and result.parity.max_prob_diff < 1e-5


def test_onnx_parity(demo):
    # The converter is pinned in requirements.txt, so it must be there.
    assert export.onnx_available()
    entry, images = demo
    result = export.export_model(entry, "onnx", images)
    assert result.parity.top1_agreement >= 0.99


def test_unknown_or_unavailable_formats_are_refused(demo, monkeypatch):
    entry, _ = demo
    with pytest.raises(export.ExportError, match="unknown export format"):
        export.export_model(entry, "pickle")
    monkeypatch.setattr(export, "onnx_available", lambda: False)
    assert "onnx" not in export.available_formats()
    with pytest.raises(export.ExportError, match="tf2onnx"):
        export.export_model(entry, "onnx")


def test_a_failed_conversion_says_its_first_line_and_what_to_do(demo, monkeypatch, caplog):
    """TFLite's converter errors carry whole MLIR dumps; the page shows one bounded line."""
    entry, images = demo
    dump = "Could not translate MLIR to FlatBuffer. " + "loc(callsite(fused[...])) " * 200
    monkeypatch.setattr(
        export, "tflite_bytes", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(dump + "\nmore"))
    )
    with pytest.raises(export.ExportError) as caught:
        export.export_model(entry, "tflite", images)
    message = str(caught.value)
    assert message.startswith("TFLite float32 (.tflite) conversion failed: RuntimeError: Could not")
    assert message.endswith("Try another format; the whole error is in the server's log")
    assert len(message) < export.MESSAGE_CHARS + 150 and "more" not in message
    assert dump.strip() in caplog.text  # the log keeps all of it
