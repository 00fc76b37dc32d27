"""Predict page, Compress section (AppTest): options to the job, progress, the table, the demo.

The trade-off job itself is tested for real in tests/unit/test_compress.py; here
``lib.compress.start`` is replaced where the page calls it, by a stand-in that
records the options and writes what a finished (or running, or failed) job
leaves in its folder, so the page is checked against the same files.
"""

from __future__ import annotations

import os
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib import compress
from lib.progress import PhaseEvent, append_event
from pages import ui

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip


def _row(variant: str, accuracy: float, size: int, flag: str = "") -> dict:
    per_class = [
        {"class": c, "accuracy": accuracy, "change_points": -7.0 if c == flag else 0.0,
         "flagged": c == flag}
        for c in CLASSES
    ]  # fmt: skip
    return {
        "variant": variant,
        "label": compress.VARIANTS.get(variant, ("Keras (reference)",))[0],
        "size_bytes": size,
        "gzip_bytes": size // 2,
        "accuracy": accuracy,
        "accuracy_change_points": 0.0,
        "top1_agreement": 0.998,
        "per_class": per_class,
        "flagged_classes": [flag] if flag else [],
        "latency_p50_ms": 0.2,
        "latency_p95_ms": 0.3,
        "file": "" if variant == "keras" else f"demo_{variant}.tflite",
    }


def _finished(folder: Path) -> None:
    rows = [_row("keras", 0.92, 3_000_000), _row("tflite", 0.92, 2_900_000),
            _row("int8", 0.919, 800_000), _row("pruned", 0.91, 2_900_000, flag="Shirt")]  # fmt: skip
    for r in rows[1:]:
        (folder / r["file"]).write_bytes(b"tflite bytes of " + r["variant"].encode())
    compress.atomic_write_json(
        folder / compress.TABLE_FILE,
        {"model": "fashion-mnist-demo", "created": "2026-12-01T03:00:00Z", "test_images": 10000,
         "latency": "single image", "flag_points": 5.0, "options": {}, "rows": rows},
    )  # fmt: skip
    compress.atomic_write_json(folder / compress.STATUS_FILE, {"state": "completed"})


@pytest.fixture
def page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def _labels(elements) -> str:
    return " ".join(e.label for e in elements)


def test_start_passes_the_form_and_the_table_is_shown(page, monkeypatch):
    started = []

    def fake_start(entry, options):
        started.append(options)
        folder = compress.job_dir(entry)
        _finished(folder)
        return folder

    monkeypatch.setattr(compress, "start", fake_start)
    page.multiselect(key=ui.PRED_COMPRESS_VARIANTS).set_value(["tflite", "int8", "pruned"])
    page.checkbox(key=ui.PRED_COMPRESS_INT8_IO).check()
    page.slider(key=ui.PRED_COMPRESS_SPARSITY).set_value(0.6)
    page.selectbox(key=ui.PRED_COMPRESS_SCHEDULE).set_value("constant")
    page.number_input(key=ui.PRED_COMPRESS_EPOCHS).set_value(1.5)
    page.button(key=ui.PRED_COMPRESS_START).click().run()
    assert not page.exception, [e.value for e in page.exception]
    (options,) = started
    assert options.variants == ("tflite", "int8", "pruned")
    assert options.int8_io and options.sparsity == 0.6
    assert options.schedule == "constant" and options.prune_epochs == 1.5

    (table,) = [d.value for d in page.dataframe if "variant" in d.value.columns]
    assert list(table["variant"]) == ["Keras (reference)", "TFLite float32",
                                      "TFLite full-integer int8", "Pruned, TFLite float32"]  # fmt: skip
    assert table["classes losing > 5 points"].tolist()[-1] == "Shirt"
    assert "Shirt lose more than 5 points" in _texts(page.warning)
    assert page.button(key=ui.PRED_COMPRESS_START).label == "Measure again"
    files = page.selectbox(key=ui.PRED_COMPRESS_FILE)
    assert files.options[0].startswith("TFLite float32")
    files.set_value("int8").run()
    assert "Download demo\\_int8.tflite" in _labels(page.get("download_button"))


def test_a_running_job_shows_its_stage(page, monkeypatch):
    from lib.jobs import process_start_ticks

    def fake_start(entry, options):
        folder = compress.job_dir(entry)
        compress.atomic_write_json(
            folder / compress.STATUS_FILE,
            {"state": "running", "pid": os.getpid(), "pid_start": process_start_ticks(os.getpid())},
        )
        append_event(folder, PhaseEvent(phase="pruning (fine-tuning)", done=400, total=1000))
        return folder

    monkeypatch.setattr(compress, "start", fake_start)
    page.button(key=ui.PRED_COMPRESS_START).click().run()
    assert not page.exception, [e.value for e in page.exception]
    (bar,) = page.get("progress")
    assert "pruning (fine-tuning)" in bar.proto.text and bar.proto.value == 40
    assert ui.PRED_COMPRESS_START not in [b.key for b in page.button]  # no second start


def test_a_failed_job_says_why(page, monkeypatch):
    def fake_start(entry, options):
        folder = compress.job_dir(entry)
        compress.atomic_write_json(
            folder / compress.STATUS_FILE,
            {"state": "failed", "error": "the dataset in the card has 9 classes"},
        )
        return folder

    monkeypatch.setattr(compress, "start", fake_start)
    page.button(key=ui.PRED_COMPRESS_START).click().run()
    assert "the dataset in the card has 9 classes" in _texts(page.error)


def test_bad_options_are_refused_with_a_message(page):
    page.multiselect(key=ui.PRED_COMPRESS_VARIANTS).set_value([])
    page.button(key=ui.PRED_COMPRESS_START).click().run()
    assert not page.exception
    assert "variants" in _texts(page.error)


def test_browser_demo_zip_is_offered(page):
    page.button(key=ui.PRED_DEMO_BUTTON).click().run()
    assert not page.exception, [e.value for e in page.exception]
    assert not page.error, _texts(page.error)
    held = page.session_state[ui.PRED_DEMO_RESULT]
    assert held[2] == "fashion-mnist-demo-browser-demo.zip"
    names = zipfile.ZipFile(BytesIO(held[1])).namelist()
    assert {"index.html", "model.onnx", "demo.json", "ort-wasm-simd-threaded.wasm"} <= {
        n.split("/", 1)[1] for n in names
    }
    assert "fashion-mnist-demo-browser-demo.zip" in _labels(page.get("download_button"))


def test_browser_demo_without_npm_says_how_to_get_it(page, monkeypatch, tmp_path):
    from lib import demo_export

    monkeypatch.setattr(demo_export, "ORT_PACKAGE", tmp_path / "missing")
    monkeypatch.setattr(demo_export.shutil, "which", lambda name: None)
    page.button(key=ui.PRED_DEMO_BUTTON).click().run()
    assert "apt-get install -y --no-install-recommends nodejs npm" in _texts(page.error)
