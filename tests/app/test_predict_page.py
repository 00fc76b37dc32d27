"""Predict page (AppTest): opens on the shipped demo; upload, camera, sample, hostile model.

AppTest drives ``st.file_uploader`` and ``st.camera_input`` directly
(``set_value`` with (name, bytes, mime)), so these tests take the same code path
as a browser upload; the e2e suite covers the real upload in Chromium.
"""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from pages import ui

ROOT = Path(__file__).resolve().parents[2]


def _image_bytes(fmt: str, shape=(40, 30, 3), seed=0) -> bytes:
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_opens_on_the_shipped_demo(page):
    _ok(page)
    assert "fashion-mnist-demo" in page.selectbox(key=ui.PRED_REGISTRY_PICK).value
    assert "10 classes" in _captions(page) and "28×28×1" in _captions(page)


def test_upload_a_png_shows_top_k(page):
    page.file_uploader(key=ui.PRED_IMAGES).set_value(
        ("shirt.png", _image_bytes("PNG"), "image/png")
    )
    page.run()
    _ok(page)
    assert "Prediction took" in _captions(page)
    charts = page.get("plotly_chart")
    assert len(charts) == 1
    # The verdict names one of the demo's classes with its probability.
    verdict = next(m.value for m in page.markdown if m.value.startswith("**"))
    assert "%" in verdict
    page.toggle(key=ui.PRED_GRADCAM).set_value(True)
    page.run()
    _ok(page)
    assert "Grad-CAM of" in _captions(page) and "on layer `" in _captions(page)


def test_many_images_give_a_table_and_csv(page):
    files = [(f"img{i}.{ext}", _image_bytes(fmt, seed=i), f"image/{ext}")
             for i, (fmt, ext) in enumerate([("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp")])]  # fmt: skip
    page.file_uploader(key=ui.PRED_IMAGES).set_value(files)
    page.run()
    _ok(page)
    assert len(page.dataframe) == 1
    assert "img1.jpg" in list(page.dataframe[0].value["file"])
    assert len(page.get("download_button")) >= 1


def test_a_bad_image_is_skipped_with_a_warning(page):
    page.file_uploader(key=ui.PRED_IMAGES).set_value(
        [("ok.png", _image_bytes("PNG"), "image/png"), ("bad.png", b"not an image", "image/png")]
    )
    page.run()
    assert not page.exception
    assert any("bad.png" in w.value for w in page.warning)
    assert "Prediction took" in _captions(page)


def test_camera_input_path(page):
    page.segmented_control(key=ui.PRED_INPUT).set_value("Camera")
    page.run()
    page.camera_input(key=ui.PRED_CAMERA).set_value(
        ("shot.jpg", _image_bytes("JPEG", (48, 64, 3)), "image/jpeg")
    )
    page.run()
    _ok(page)
    assert "Prediction took" in _captions(page)
    assert len(page.get("plotly_chart")) == 1


def test_dataset_sample_path(page):
    page.segmented_control(key=ui.PRED_INPUT).set_value("Dataset sample")
    page.run()
    _ok(page)
    # A shapes test image (the default active dataset): the verdict compares the
    # prediction with its true class (which the fashion demo cannot know).
    verdict = next(m.value for m in page.markdown if m.value.startswith("**"))
    assert "(true: " in verdict or "✓" in verdict
    page.button(key=ui.PRED_SAMPLE_BUTTON).click()
    page.run()
    _ok(page)
    assert "Prediction took" in _captions(page)


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("evil.keras", b"PK\x03\x04 not really a zip", "not a complete zip"),
        ("old.h5", b"\x89HDF\r\n\x1a\n", "legacy HDF5"),
    ],
)
def test_an_uploaded_hostile_model_shows_an_error(page, name, data, fragment):
    page.segmented_control(key=ui.PRED_SOURCE).set_value("Upload .keras")
    page.run()
    page.file_uploader(key=ui.PRED_MODEL_UPLOAD).set_value((name, data, "application/octet-stream"))
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert len(page.error) == 1 and fragment in page.error[0].value
    assert "Model refused" in page.error[0].value


def test_export_tflite_shows_parity_beside_the_download(page):
    page.selectbox(key=ui.PRED_EXPORT_FORMAT).set_value("tflite")
    page.run()
    page.button(key=ui.PRED_EXPORT_BUTTON).click()
    page.run()
    _ok(page)
    metrics = {m.label: m.value for m in page.metric}
    assert float(metrics["Top-1 agreement"].rstrip("%")) >= 99.0
    assert "fashion-mnist-demo.tflite" in " ".join(
        b.proto.label for b in page.get("download_button")
    )
