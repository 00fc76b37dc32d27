"""Build a dataset page: create, add classes and images, edit, and train on a version."""

from __future__ import annotations

import io

import numpy as np
from drafts_helper import draft_of, open_page
from PIL import Image

from lib import datasets
from pages import ui


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def click(at, key):
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_build_a_dataset_and_train_on_its_version():
    at = open_page("builder")
    at.text_input(key=ui.BUILD_NEW_NAME).input("pets").run()
    click(at, ui.BUILD_CREATE)
    assert datasets.versions("pets") == [1]
    for cls in ("cats", "dogs"):
        at.text_input(key=ui.BUILD_CLASS_NEW).input(cls).run()
        click(at, ui.BUILD_CLASS_ADD)
    assert datasets.class_counts("pets", 3) == {"cats": 0, "dogs": 0}
    # Images arrive as the file uploader would hand them over (AppTest has no uploader).
    datasets.add_images("pets", "cats", [(f"{i}.png", png(i)) for i in range(3)])
    datasets.add_images("pets", "dogs", [(f"{i}.png", png(200 + i)) for i in range(3)])
    at.run()
    assert "pets · version 5" in [s.value for s in at.subheader]

    at.text_input(key=ui.BUILD_RENAME + "dogs").input("puppies").run()
    click(at, ui.BUILD_RENAME_BTN + "dogs")
    assert "version 6" in at.success[0].value
    at.multiselect(key=ui.BUILD_REMOVE + "cats").set_value(["000001.png"]).run()
    click(at, ui.BUILD_REMOVE_BTN + "cats")
    assert datasets.class_counts("pets", 7) == {"cats": 2, "puppies": 3}

    at.text_input(key=ui.BUILD_CLASS_NEW).input("cats").run()
    click(at, ui.BUILD_CLASS_ADD)
    assert "exists already" in at.error[0].value and datasets.latest_version("pets") == 7

    click(at, ui.BUILD_USE)
    data = draft_of(at).data
    assert (data.source, data.path) == ("dataset", "pets@7")


def test_an_upload_is_copied_in_and_classes_merge():
    from lib.data.uploads import save_upload_files

    save_upload_files([("s/x/1.png", png(1)), ("s/y/2.png", png(2)), ("s/z/3.png", png(3))])
    datasets.create_dataset("mix")
    at = open_page("builder")
    click(at, ui.BUILD_IMPORT_BTN)
    assert datasets.class_counts("mix", 2) == {"x": 1, "y": 1, "z": 1}
    at.multiselect(key=ui.BUILD_MERGE_FROM).set_value(["y", "z"]).run()
    at.text_input(key=ui.BUILD_MERGE_TO).input("x").run()
    click(at, ui.BUILD_MERGE_BTN)
    assert datasets.class_counts("mix", 3) == {"x": 3}


def test_the_dataset_being_built_stays_picked_through_another_page_and_a_reload():
    from drafts_helper import reload

    for name in ("birds", "pets"):
        datasets.create_dataset(name)
    at = open_page("builder")
    first = at.selectbox(key=ui.BUILD_PICK).value
    other = next(n for n in ("birds", "pets") if n != first)
    at.selectbox(key=ui.BUILD_PICK).set_value(other).run()
    at.switch_page("pages/dataset.py").run()
    at.switch_page("pages/builder.py").run()
    for page in (at, reload(at, "builder")):
        assert page.selectbox(key=ui.BUILD_PICK).value == other
        assert page.subheader[0].value.startswith(f"{other} · version ")
