"""The Augmentation page (AppTest): the preview follows the form, uploads preview, bad values are messages."""

import io
from pathlib import Path

import numpy as np
import pytest
from drafts_helper import draft_of, open_page, reload
from PIL import Image
from streamlit.testing.v1 import AppTest

from lib import augment
from lib.config import AugmentConfig, DataConfig
from pages import ui

ROOT = Path(__file__).resolve().parents[2]
PAGE = "pages/augmentation.py"
SMALL_SHAPES = DataConfig(source="shapes", shapes_count=60, shapes_size=16)


def _open(data: DataConfig = SMALL_SHAPES, **state) -> AppTest:
    at = open_page(None, timeout=180, data=data)
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _field(at: AppTest, name: str):
    key = ui.AUG_FIELD + name
    widgets = [w for w in (*at.slider, *at.toggle) if w.key == key]
    assert len(widgets) == 1, key
    return widgets[0]


def _png(size=(40, 30), colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_changing_a_slider_changes_the_preview_and_the_code():
    at = _open()
    assert not at.error, [e.value for e in at.error]
    before_image, before_code = at.image[0].value, at.code[0].value
    assert "No augmentation is on" in before_code
    _field(at, "rotation").set_value(0.2).run()
    assert not at.exception
    assert at.image[0].value != before_image
    assert "RandomRotation(factor=0.2" in at.code[0].value
    assert draft_of(at).augment == AugmentConfig(preset="custom", rotation=0.2)
    assert at.selectbox(key=ui.AUG_PRESET).value == "custom"
    # The same settings draw the same grid again (fixed seed): back to none, back to 0.2.
    first = at.image[0].value
    _field(at, "rotation").set_value(0.0).run()
    assert at.image[0].value == before_image
    _field(at, "rotation").set_value(0.2).run()
    assert at.image[0].value == first


def test_preset_fills_the_form_and_new_samples_change_the_rows():
    at = _open()
    at.selectbox(key=ui.AUG_PRESET).select("strong").run()
    assert not at.exception
    assert draft_of(at).augment == augment.PRESETS["strong"]
    assert _field(at, "zoom").value == pytest.approx(0.15)
    assert _field(at, "horizontal_flip").value is True
    sidebar = " ".join(md.value for md in at.sidebar.markdown)
    assert "Augmentation** · strong" in sidebar  # stored before app.py drew the sidebar
    grid = at.image[0].value
    at.button(key=ui.AUG_NEW_SAMPLES).click().run()
    assert not at.exception
    assert at.session_state[ui.AUG_SAMPLE_SEED] == 1
    assert at.image[0].value != grid
    # A reload shows the same images, not the first ones again.
    again = reload(at, "augmentation")
    assert again.session_state[ui.AUG_SAMPLE_SEED] == 1
    assert again.image[0].captions == at.image[0].captions  # the rows' classes, in order


def test_colour_options_are_disabled_with_the_reason_on_grayscale():
    at = _open(DataConfig(source="digits"))
    assert _field(at, "saturation").disabled and _field(at, "hue").disabled
    assert not _field(at, "contrast").disabled
    captions = " ".join(c.value for c in at.caption)
    assert "grayscale" in captions


def test_an_uploaded_image_is_previewed():
    at = _open(**{ui.AUG_FIELD + "horizontal_flip": True})
    assert len(at.image) == 1
    at.file_uploader(key=ui.AUG_UPLOAD).set_value(("red.png", _png(), "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.image) == 2
    assert "red.png" in at.image[1].captions[0]


def test_an_unreadable_upload_says_which_file_and_why():
    at = _open()
    at.file_uploader(key=ui.AUG_UPLOAD).set_value(
        ("holiday.png", b"\x89PNG\r\n\x1a\n broken", "image/png")
    ).run()
    assert not at.exception
    messages = [e.value for e in at.error]
    assert len(messages) == 1 and "holiday.png" in messages[0]
    assert "corrupt" in messages[0] or "cannot" in messages[0] or "not" in messages[0]


def test_a_value_from_outside_the_form_gives_way_to_the_draft():
    at = _open(**{ui.AUG_FIELD + "zoom": 0.9})
    assert not at.exception
    assert _field(at, "zoom").value == 0.0  # the widget shows the draft, the truth
    assert draft_of(at).augment == AugmentConfig()


def test_settings_json_is_validated_before_it_reaches_the_form():
    at = _open()
    at.text_area(key=ui.AUG_JSON).set_value('{"rotation": 0.9}')
    at.button(key=ui.AUG_JSON_APPLY).click().run()
    assert not at.exception
    assert any("AugmentConfig.rotation must be between 0.0 and 0.5" in e.value for e in at.error)
    assert draft_of(at).augment == AugmentConfig()
    at.text_area(key=ui.AUG_JSON).set_value('{"translate": 0.1, "mixup": 0.2}')
    at.button(key=ui.AUG_JSON_APPLY).click().run()
    assert not at.error, [e.value for e in at.error]
    assert draft_of(at).augment == AugmentConfig(preset="custom", translate=0.1, mixup=0.2)
    assert np.isclose(_field(at, "translate").value, 0.1)
