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

from lib import registry
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
    picker = page.selectbox(key=ui.PRED_REGISTRY_PICK)
    # Options are ids (the model file); labels are name · dataset · accuracy · date.
    assert Path(picker.value).parent.name == "fashion-mnist-demo"
    label = picker.options[picker.index]
    name, dataset, accuracy, date = label.split(" · ")
    assert (name, dataset) == ("fashion-mnist-demo", "fashion_mnist")
    assert accuracy.endswith("%") and len(date) == 10
    assert "10 classes" in _captions(page) and "28×28×1" in _captions(page)


@pytest.mark.parametrize("shape", [(1, 5000, 3), (5000, 1, 3), (2, 3000, 3)])
def test_an_extreme_aspect_ratio_upload_is_predicted_and_shown_bounded(page, shape):
    page.file_uploader(key=ui.PRED_IMAGES).set_value(
        ("strip.png", _image_bytes("PNG", shape), "image/png")
    )
    page.run()
    _ok(page)
    assert "Prediction took" in _captions(page)
    page.toggle(key=ui.PRED_GRADCAM).set_value(True)
    page.run()
    _ok(page)
    assert "Grad-CAM of" in _captions(page) or any("flat" in i.value for i in page.info)


def test_a_flat_grad_cam_map_is_said_not_drawn(page, monkeypatch):
    from lib import explain

    def flat_cam(model, batch, class_index=None, layer_name=None):
        h, w = np.asarray(batch).shape[1:3]
        return explain.GradCam(
            heat=np.zeros((h, w), np.float32), layer="block1_conv", class_index=0,
            feature_shape=(28, 28), flat_reason="no region of layer block1_conv's map raised it",
        )  # fmt: skip

    monkeypatch.setattr(explain, "grad_cam", flat_cam)
    page.file_uploader(key=ui.PRED_IMAGES).set_value(("a.png", _image_bytes("PNG"), "image/png"))
    page.run()
    page.toggle(key=ui.PRED_GRADCAM).set_value(True)
    page.run()
    _ok(page)
    assert any(i.value.startswith("This map is flat: ") for i in page.info)
    assert "Red and yellow" not in _captions(page)


def test_too_many_uploads_are_capped_before_reading(page):
    files = [(f"i{i}.png", _image_bytes("PNG", (8, 8, 3), seed=i), "image/png") for i in range(201)]
    page.file_uploader(key=ui.PRED_IMAGES).set_value(files)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert any("Only the first 200 of 201 images" in w.value for w in page.warning)
    assert len(page.dataframe[0].value) == 200


def test_a_markdown_file_name_is_shown_as_text(page):
    name = "![x](http://example.com/t.png).png"
    page.file_uploader(key=ui.PRED_IMAGES).set_value(
        [(name, b"not an image", "image/png"), ("ok.png", _image_bytes("PNG"), "image/png")]
    )
    page.run()
    assert not page.exception
    (warning,) = [w for w in page.warning if "example.com" in w.value]
    assert "![x](" not in warning.value and r"\!\[x\](http\://example.com" in warning.value


def test_the_run_picker_defaults_to_the_best_run_and_keeps_a_pick_by_id(page):
    from tiny_runs import make_finished_run

    from lib import runs, runstore

    weak = make_finished_run(name="weak run", epochs=1, hidden=4)
    strong = make_finished_run(name="strong run", epochs=6, hidden=32, seed=1)
    assert runs.view_of(strong).accuracy > runs.view_of(weak).accuracy
    page.segmented_control(key=ui.PRED_SOURCE).set_value("Training run")
    page.run()
    _ok(page)
    picker = page.selectbox(key=ui.PRED_RUN_PICK)
    assert picker.value == strong.name  # the best, though the weak run is not older
    label = picker.options[picker.index]
    assert label == runs.run_label(runs.view_of(strong)) and label.startswith("strong run · digits")
    # Pick the weak run, then its accuracy (and so its label) changes: the pick stays.
    picker.set_value(weak.name)
    page.run()
    metrics = runstore.read_metrics(weak)
    runstore.atomic_write_json(weak / runstore.METRICS_FILE, {**metrics, "test_accuracy": 0.99})
    page.run()
    _ok(page)
    picker = page.selectbox(key=ui.PRED_RUN_PICK)
    assert picker.value == weak.name and "99.0%" in picker.options[picker.index]


def test_upload_a_png_shows_top_k(page):
    page.file_uploader(key=ui.PRED_IMAGES).set_value(
        ("shirt.png", _image_bytes("PNG"), "image/png")
    )
    page.run()
    _ok(page)
    assert "Prediction took" in _captions(page)
    charts = page.get("plotly_chart")
    assert len(charts) == 1
    # The verdict names one of the demo's classes with its probability (as the answer, or
    # as the classifier's closest class when the synthetic image is called unknown).
    names = registry.default_entry().card.class_names
    verdict = next(m.value for m in page.main.markdown if "%" in m.value)
    assert any(f"**{n}**" in verdict for n in names), verdict
    page.toggle(key=ui.PRED_GRADCAM).set_value(True)
    page.run()
    _ok(page)
    assert "Grad-CAM of" in _captions(page) and "on layer `" in _captions(page)
    assert "Red and yellow" in _captions(page)


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
    verdict = next(m.value for m in page.main.markdown if "(true: " in m.value or "✓" in m.value)
    assert "%" in verdict
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


def _fashion_png(index: int = 0) -> bytes:
    from lib.config import DataConfig
    from lib.data import load_dataset

    image = load_dataset(DataConfig(source="fashion_mnist")).splits["test"].images([index])[0]
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def test_uniform_noise_is_answered_unknown_with_score_and_nearest_classes(page):
    slider = page.slider(key=ui.PRED_UNKNOWN_THRESHOLD)
    assert "rejects **5.0%** of the validation images" in " ".join(m.value for m in page.caption)
    shown = slider.proto.format % slider.value  # the number above the slider's knob
    assert f"At {shown} this rejects" in " ".join(m.value for m in page.caption)
    page.file_uploader(key=ui.PRED_IMAGES).set_value(
        ("noise.png", _image_bytes("PNG", (28, 28, 3), seed=4), "image/png")
    )
    page.run()
    _ok(page)
    warning = " ".join(w.value for w in page.warning)
    assert "Unknown: unlike the classes this model was trained on" in warning
    assert "Nearest classes" in warning and "Score" in warning
    assert slider.value == pytest.approx(page.slider(key=ui.PRED_UNKNOWN_THRESHOLD).value)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Fashion-MNIST not installed"
)
def test_the_threshold_slider_changes_the_answer_and_the_rejected_share(page):
    page.file_uploader(key=ui.PRED_IMAGES).set_value(("coat.png", _fashion_png(0), "image/png"))
    page.run()
    _ok(page)
    assert not page.warning, [w.value for w in page.warning]
    assert "Known: unknown-detection score" in _captions(page)
    slider = page.slider(key=ui.PRED_UNKNOWN_THRESHOLD)
    slider.set_value(slider.min).run()  # the lowest threshold: everything is unknown
    _ok(page)
    assert "Unknown: unlike the classes" in " ".join(w.value for w in page.warning)
    assert "rejects **100.0%** of the validation images" in _captions(page)
    page.slider(key=ui.PRED_UNKNOWN_THRESHOLD).set_value(
        page.slider(key=ui.PRED_UNKNOWN_THRESHOLD).max
    ).run()
    _ok(page)
    assert not page.warning
    assert "rejects **0.0%** of the validation images" in _captions(page)


def test_a_saved_model_is_deleted_only_after_confirmation(page):
    from tiny_runs import make_finished_run

    run_dir = make_finished_run()
    folder = registry.save_run_to_registry(run_dir, "to delete")
    page.run()
    page.selectbox(key=ui.PRED_REGISTRY_PICK).set_value(str(folder / registry.MODEL_FILE)).run()
    _ok(page)
    page.button(key=ui.PRED_DELETE).click().run()
    warning = " ".join(w.value for w in page.warning)
    assert "Delete the saved model to" in warning and "goes for good" in warning, warning
    assert folder.exists()
    page.button(key=ui.PRED_DELETE_NO).click().run()
    assert folder.exists()
    page.button(key=ui.PRED_DELETE).click().run()
    page.button(key=ui.PRED_DELETE_YES).click().run()
    _ok(page)
    assert not folder.exists()
    assert any("Deleted the saved model" in s.value for s in page.success)
    # shipped models offer no delete button
    assert page.selectbox(key=ui.PRED_REGISTRY_PICK).value != str(folder / registry.MODEL_FILE)
    assert not [b for b in page.button if b.key == ui.PRED_DELETE]


def test_predict_follows_the_run_in_the_address_and_puts_its_pick_there():
    """A reload of Predict keeps the source and the pick."""
    from drafts_helper import reload
    from tiny_runs import make_finished_run

    better = make_finished_run(name="better", epochs=4, hidden=32, seed=1)
    weaker = make_finished_run(name="weaker", epochs=1, hidden=4)
    app = str(Path(__file__).resolve().parents[2] / "app.py")

    fresh = AppTest.from_file(app, default_timeout=60)
    fresh.run()
    fresh.switch_page("pages/predict.py")
    fresh.run()
    assert fresh.segmented_control(key=ui.PRED_SOURCE).value == "Registry"  # no run looked at
    fresh.segmented_control(key=ui.PRED_SOURCE).set_value("Training run")
    fresh.run()
    assert fresh.selectbox(key=ui.PRED_RUN_PICK).value == better.name  # the best, by default
    fresh.selectbox(key=ui.PRED_RUN_PICK).set_value(weaker.name)
    fresh.run()
    assert fresh.query_params[ui.RUN_PARAM] == weaker.name

    again = reload(fresh, "predict")
    assert again.segmented_control(key=ui.PRED_SOURCE).value == "Training run"
    assert again.selectbox(key=ui.PRED_RUN_PICK).value == weaker.name


def test_a_click_on_the_chosen_segment_keeps_it_chosen():
    """Streamlit clears a segmented control on a click of its chosen option; the page must not
    then show nothing chosen while it acts on a fallback."""
    from tiny_runs import make_finished_run

    make_finished_run(name="only", epochs=1)
    page = AppTest.from_file(
        str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=60
    )
    page.run()
    page.switch_page("pages/predict.py")
    page.run()
    page.segmented_control(key=ui.PRED_SOURCE).set_value("Training run")
    page.run()
    page.segmented_control(key=ui.PRED_SOURCE).set_value(None)  # the click on "Training run"
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert page.segmented_control(key=ui.PRED_SOURCE).value == "Training run"
    assert page.selectbox(key=ui.PRED_RUN_PICK).value  # the run picker is still there
    page.segmented_control(key=ui.PRED_INPUT).set_value(None)
    page.run()
    assert page.segmented_control(key=ui.PRED_INPUT).value == "Upload"


def test_the_model_and_the_classes_shown_survive_another_page_and_a_reload(page):
    from drafts_helper import reload

    picker = page.selectbox(key=ui.PRED_REGISTRY_PICK)
    ids = [str(e.model_path) for e in registry.list_models()]  # the options, by id
    other = next(i for i in ids if i != picker.value)
    picker.set_value(other).run()
    page.slider(key=ui.PRED_TOP_K).set_value(3).run()
    _ok(page)
    page.switch_page("pages/dataset.py").run()
    page.switch_page("pages/predict.py").run()
    for at in (page, reload(page, "predict")):
        _ok(at)
        assert at.selectbox(key=ui.PRED_REGISTRY_PICK).value == other
        assert at.slider(key=ui.PRED_TOP_K).value == 3


def test_a_failed_fit_of_unknown_detection_says_why_and_offers_the_button_again(page):
    import time

    from tiny_runs import make_finished_run

    from lib import ood, runstore

    run_dir = make_finished_run(epochs=1)
    page.segmented_control(key=ui.PRED_SOURCE).set_value("Training run")
    page.run()
    _ok(page)
    assert page.button(key=ui.PRED_OOD_FIT).label == "Fit unknown detection"
    job = ood.job_dir(run_dir)
    job.mkdir()
    runstore.write_status(
        job,
        runstore.RunStatus(
            state="failed", created=time.time(), ended=time.time(), error="the dataset is gone"
        ),
    )
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert [e.value for e in page.error] == [
        "Fitting unknown detection failed: the dataset is gone"
    ]
    assert page.button(key=ui.PRED_OOD_FIT).label == "Fit unknown detection"
