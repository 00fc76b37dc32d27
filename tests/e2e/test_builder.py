"""Build a 3-class dataset in the browser (uploads and a camera capture), train, predict.

Chromium runs with a fake camera (``--use-fake-device-for-media-stream``) and
grants it without asking (``--use-fake-ui-for-media-stream``), so
``st.camera_input`` takes a real photo of the fake device's test pattern.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    act,
    click,
    main_text,
    navigate,
    open_page,
    segment,
    select,
    set_number,
    upload,
    wait_for_text,
    wait_idle,
)
from PIL import Image

from lib import datasets, jobs, runstore

CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
COLOURS = {"apple": (200, 30, 30), "banana": (230, 210, 40), "cherry": (90, 20, 60)}
PER_CLASS = 6
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def camera_browser(browser):
    """A second Chromium of the same Playwright, with the fake camera."""
    chromium = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *CAMERA_ARGS]
    )
    yield chromium
    chromium.close()


@pytest.fixture
def camera_page(camera_browser, steps):
    context = camera_browser.new_context(
        viewport={"width": 1400, "height": 1000}, permissions=["camera"]
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    steps.pages.append(page)
    yield page
    context.close()


def _images(folder, cls: str) -> list[str]:
    rng = np.random.default_rng(len(cls))
    paths = []
    for i in range(PER_CLASS):
        arr = np.clip(np.array(COLOURS[cls]) + rng.integers(-20, 20, (32, 32, 3)), 0, 255)
        path = folder / f"{cls}-{i}.png"
        Image.fromarray(arr.astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _type(page, label: str, text: str) -> None:
    box = page.get_by_role("textbox", name=label).first
    box.fill(text)
    act(page, lambda: box.press("Enter"))


def _press(page, key: str) -> None:
    act(page, page.locator(f".st-key-{key} button").first.click)


def test_build_train_and_predict(streamlit_server, camera_page, steps, workspace, tmp_path):
    page = camera_page
    open_page(page, streamlit_server, "builder")
    steps(page, "builder-open")

    _type(page, "New dataset name", "fruits")
    click(page, "Create dataset")
    wait_for_text(page, r"Created dataset fruits")
    for cls in COLOURS:
        _type(page, "New class", cls)
        click(page, "Add class")
        wait_for_text(page, rf"Added class {cls}")
    assert datasets.class_counts("fruits", 4) == {c: 0 for c in COLOURS}
    steps(page, "classes")

    # One photo from the (fake) camera into cherry, like a person pressing the shutter.
    shutter = page.locator(".st-key-build_camera_cherry_0").get_by_role("button", name="Take Photo")
    shutter.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # the camera stream starts
    shutter.click()
    page.locator(".st-key-build_camera_cherry_0 img").first.wait_for(timeout=30_000)
    wait_idle(page)
    steps(page, "captured")
    _press(page, "build_camera_add_cherry")
    wait_for_text(page, r"Added a photo to cherry — now version 5")
    captured = datasets.list_images("fruits", 5, "cherry")
    assert len(captured) == 1 and captured[0].suffix == ".jpg"
    assert Image.open(captured[0]).size[0] >= 100  # a real photo, not a placeholder

    version = 5
    for cls in COLOURS:
        upload(page, f"Images for {cls}", _images(tmp_path, cls))
        _press(page, f"build_files_add_{cls}")
        version += 1
        wait_for_text(page, rf"Added images to {cls} — now version {version}")
    counts = datasets.class_counts("fruits", version)
    assert counts == {"apple": 6, "banana": 6, "cherry": 7}, counts
    wait_for_text(page, rf"fruits · version {version}")
    steps(page, "built")

    click(page, "Train on this version")
    wait_for_text(page, rf"Runs now train on fruits@{version}")
    assert f"fruits@{version}" in page.inner_text('[data-testid="stSidebar"]')

    navigate(page, "Dataset")
    set_number(page, "Resize to (px, 0 keeps)", 32)
    wait_for_text(page, r"Classes\s+3")
    steps(page, "dataset")

    navigate(page, "Model")
    select(page, "Architecture", "LeNet-5")
    navigate(page, "Train")
    set_number(page, "Epochs", 2)
    set_number(page, "Batch size", 4)
    click(page, "Start training")
    deadline = time.monotonic() + 60  # the live panel's timer rerun may come before the click's
    while not jobs.list_runs():
        assert "Not started" not in main_text(page), main_text(page)
        assert time.monotonic() < deadline, main_text(page)
        page.wait_for_timeout(250)
    assert "Not started" not in main_text(page), main_text(page)
    run_id = jobs.list_runs()[0].run_id
    state = None
    for _ in range(RUN_TIMEOUT_S * 2):
        state = runstore.read_status(runstore.run_dir(run_id)).state
        if state not in runstore.ACTIVE_STATES:
            break
        page.wait_for_timeout(500)
    assert state == "completed", runstore.read_status(runstore.run_dir(run_id))
    data = runstore.read_config(runstore.run_dir(run_id)).data
    assert (data.source, data.path) == ("dataset", f"fruits@{version}")  # the run names it
    wait_for_text(page, r"Completed · test accuracy", timeout_s=60)
    steps(page, "trained")

    navigate(page, "Predict")
    segment(page, "Training run")
    upload(page, "Images", _images(tmp_path, "banana")[0])
    chart = page.locator(".st-key-predict_topk_chart .js-plotly-plot")
    chart.wait_for(timeout=120_000)
    labels = page.evaluate(
        """sel => document.querySelector(sel).data.flatMap(t => [...(t.y || []), ...(t.x || [])])
                   .filter(v => typeof v === 'string')""",
        ".st-key-predict_topk_chart .js-plotly-plot",
    )
    assert set(labels) & set(COLOURS), labels
    assert re.search(r"Prediction took [\d.]+ ms", main_text(page))
    steps(page, "predicted")

    # Delete the dataset: it asks first, Keep it keeps it, Delete for good removes every
    # version; the finished run keeps its model.
    navigate(page, "Build a dataset")
    click(page, "Delete this dataset")
    wait_for_text(page, rf"Delete the dataset fruits and all {version} of its versions\?")
    assert "1 run(s) trained on it keep their models" in main_text(page)
    steps(page, "delete-asked")
    click(page, "Keep it")
    assert "Delete the dataset fruits" not in main_text(page)
    assert datasets.exists("fruits")
    click(page, "Delete this dataset")
    click(page, "Delete for good")
    wait_for_text(page, r"Deleted dataset fruits and all its versions\. Runs trained on it keep")
    steps(page, "deleted")
    assert not datasets.exists("fruits")
    assert runstore.run_dir(run_id).is_dir()
    picker = page.get_by_role("combobox", name="Dataset").first.input_value()
    assert "fruits" not in picker, picker  # the browser does not keep showing the deleted set
