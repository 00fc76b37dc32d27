"""The Dataset page: pick a source, see counts per class per split and samples (AppTest)."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from drafts_helper import draft_of
from PIL import Image
from streamlit.testing.v1 import AppTest

from lib.config import DataConfig
from pages import ui

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ["circle", "square", "triangle", "star", "cross", "hexagon"]


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/dataset.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_counts(at: AppTest) -> dict[str, list[int]]:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    return {trace["name"]: trace["y"] for trace in spec["data"]}, spec["data"][0]["x"]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_shapes_shows_counts_chart_and_samples_per_class():
    at = open_page()
    at.selectbox(key=ui.DATA_FIELD + "source").set_value("shapes")
    at.number_input(key=ui.DATA_FIELD + "shapes_count").set_value(120)
    at.number_input(key=ui.DATA_FIELD + "shapes_size").set_value(32)
    at.slider(key=ui.DATA_FIELD + "val_fraction").set_value(0.25)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]

    cfg = draft_of(at).data
    assert cfg == DataConfig(source="shapes", shapes_count=120, shapes_size=32, val_fraction=0.25)
    # 120 images, 20 per class: 5 validation, 2 test, 13 train each.
    m = metrics(at)
    assert m["Classes"] == "6" and m["Image size"] == "32×32" and m["Channels"] == "3 (RGB)"
    assert (m["Train"], m["Validation"], m["Test"]) == ("78", "30", "12")
    counts, classes = chart_counts(at)
    assert classes == SHAPES
    assert counts == {"train": [13] * 6, "validation": [5] * 6, "test": [2] * 6}
    # One sample mosaic per class (laid out in two columns), captioned with its count.
    images = at.image
    captions = [c for img in images for c in img.captions]
    assert sorted(captions) == sorted(f"{name} · 13 images" for name in SHAPES)
    assert all(url for img in images for url in img.value)
    assert "**In use:** shapes (120 × 32px)" in [md.value for md in at.markdown]


def test_digits_then_a_config_persists_across_pages_and_warnings_show():
    at = open_page()
    at.selectbox(key=ui.DATA_FIELD + "source").set_value("digits")
    at.number_input(key=ui.DATA_FIELD + "max_per_class").set_value(12)
    at.run()
    assert draft_of(at).data.source == "digits"
    m = metrics(at)
    assert m["Classes"] == "10" and m["Image size"] == "8×8" and m["Channels"] == "1 (gray)"
    # 12 per class is below 10 in no class overall, but the test split is tiny: no warning.
    assert not at.warning
    at.switch_page("pages/home.py")
    at.run()
    at.switch_page("pages/dataset.py")
    at.run()
    assert at.selectbox(key=ui.DATA_FIELD + "source").value == "digits"
    assert at.number_input(key=ui.DATA_FIELD + "max_per_class").value == 12
    assert metrics(at)["Classes"] == "10"

    at.number_input(key=ui.DATA_FIELD + "max_per_class").set_value(6)
    at.run()
    assert any("fewer than 10 images" in w.value for w in at.warning)


def _zip(classes: dict[str, int]) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as zf:
        for name, n in classes.items():
            for i in range(n):
                img = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(img, "PNG")
                zf.writestr(f"set/{name}/{i}.png", img.getvalue())
        zf.writestr("set/b/broken.png", b"not a png")
    return buf.getvalue()


def test_uploaded_set_with_imbalance_and_skipped_files():
    from lib.data.uploads import save_upload_archive

    upload_id = save_upload_archive(_zip({"a": 40, "b": 8}), "set.zip")
    at = open_page()
    at.selectbox(key=ui.DATA_FIELD + "source").set_value("upload")
    at.run()
    picker = at.selectbox(key=ui.DATA_UPLOAD_PICK)
    assert picker.value == upload_id
    assert any(o.startswith("set · 2 classes · 48 images") for o in picker.options), picker.options
    # the name is the zip's, and can be changed; the pick stays on the same upload
    at.text_input(key=ui.DATA_UPLOAD_NAME).input("holiday **pets**").run()
    picker = at.selectbox(key=ui.DATA_UPLOAD_PICK)
    assert picker.value == upload_id
    assert any(o.startswith("holiday **pets** · 2 classes") for o in picker.options)
    at.run()
    assert not at.exception
    assert draft_of(at).data.path == upload_id
    warnings = " ".join(w.value for w in at.warning)
    assert "imbalanced" in warnings and "fewer than 10 images" in warnings
    assert "1 file(s) were skipped" in warnings
    assert any(e.label == "Skipped files (1)" for e in at.expander)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("{shared}/nonexistent", "does not exist"),
        ("/etc", "outside the folders this server shares"),
    ],
)
def test_bad_folder_is_an_error_message_not_a_traceback(tmp_path, path, message):
    at = open_page()
    at.selectbox(key=ui.DATA_FIELD + "source").set_value("folder")
    at.run()
    at.text_input(key=ui.DATA_FIELD + "path").set_value(path.format(shared=tmp_path))
    at.run()
    assert not at.exception
    assert any(message in e.value for e in at.error)


def test_a_pixel_csv_and_a_built_dataset_version_are_picked_on_the_page(tmp_path):
    from lib import datasets

    rng = np.random.default_rng(0)
    lines = ["label," + ",".join(f"pixel{i}" for i in range(16))]
    lines += [f"{i % 2}," + ",".join(map(str, rng.integers(0, 256, 16))) for i in range(20)]
    (tmp_path / "px.csv").write_text("\n".join(lines) + "\n")
    at = open_page()
    at.selectbox(key=ui.DATA_FIELD + "source").set_value("pixel_csv").run()
    at.text_input(key=ui.DATA_FIELD + "path").input(str(tmp_path / "px.csv")).run()
    at.text_input(key=ui.DATA_FIELD + "pixel_shape").input("2x8").run()
    assert not at.exception, [e.value for e in at.exception]
    assert draft_of(at).data.source == "pixel_csv" and draft_of(at).data.pixel_shape == "2x8"
    assert metrics(at)["Image size"] == "2×8" and metrics(at)["Classes"] == "2"

    def png(v):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    datasets.create_dataset("built")
    datasets.add_images("built", "a", [(f"{i}.png", png(i)) for i in range(4)])
    datasets.add_images("built", "b", [(f"{i}.png", png(200 + i)) for i in range(4)])
    at.selectbox(key=ui.DATA_FIELD + "source").set_value("dataset").run()
    assert at.selectbox(key=ui.DATA_BUILT_PICK).options == ["built@3", "built@2", "built@1"]
    assert draft_of(at).data.path == "built@3"
    assert metrics(at)["Classes"] == "2"


def test_the_classes_and_split_shown_survive_another_page_and_a_reload(tmp_path):
    from drafts_helper import reload

    rng = np.random.default_rng(0)
    lines = ["label," + ",".join(f"pixel{i}" for i in range(16))]
    lines += [f"{i % 14}," + ",".join(map(str, rng.integers(0, 256, 16))) for i in range(280)]
    (tmp_path / "px.csv").write_text("\n".join(lines) + "\n")
    at = open_page()
    at.selectbox(key=ui.DATA_FIELD + "source").set_value("pixel_csv").run()
    at.text_input(key=ui.DATA_FIELD + "path").input(str(tmp_path / "px.csv")).run()
    at.text_input(key=ui.DATA_FIELD + "pixel_shape").input("2x8").run()
    assert metrics(at)["Classes"] == "14"
    shown = at.multiselect(key=ui.DATA_SAMPLE_CLASSES)
    assert len(shown.value) == 12  # more classes than the grid shows at once
    shown.set_value(["13", "2"]).run()
    at.button_group(key=ui.DATA_SAMPLE_SPLIT).set_value("test").run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("pages/model.py").run()
    at.switch_page("pages/dataset.py").run()
    for page in (at, reload(at, "dataset")):
        assert not page.exception, [e.value for e in page.exception]
        assert page.multiselect(key=ui.DATA_SAMPLE_CLASSES).value == ["13", "2"]
        assert page.button_group(key=ui.DATA_SAMPLE_SPLIT).value == "test"
