"""Unknown detection in a real browser: an out-of-distribution upload is answered "unknown".

The Predict page opens on the shipped Fashion-MNIST demo, whose card carries
unknown detection (lib.ood). A person uploads a PNG of uniform noise: the page
must answer "unknown: unlike the classes this model was trained on" with the
score and the nearest classes. Moving the threshold slider to its top (keyboard
End, as a person would) accepts it again and says the threshold rejects 0 % of
the validation images; a real garment from the Fashion-MNIST test split is
answered with its class, not "unknown".
"""

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    assert_healthy,
    errors,
    main_text,
    open_page,
    upload,
    wait_for_text,
    wait_idle,
    widget,
)
from PIL import Image

pytestmark = pytest.mark.e2e

SCREENSHOT = "/tmp/kestrel-e2e-unknown.png"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
UNKNOWN = "Unknown: unlike the classes this model was trained on"


def test_a_noise_upload_is_answered_unknown_and_the_threshold_moves_it(
    streamlit_server, page, steps, tmp_path
):
    open_page(page, streamlit_server, "predict")
    wait_for_text(page, r"rejects 5\.0% of the validation images")
    noise = np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8)  # model size
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path)
    upload(page, "Images", str(path))
    wait_for_text(page, r"Prediction took")
    steps(page, "noise predicted")
    assert_healthy(page)
    assert not errors(page), errors(page)
    text = main_text(page)
    assert UNKNOWN in text, text
    score = re.search(r"Score (-?\d+(?:\.\d+)?) is above the threshold (-?\d+(?:\.\d+)?)", text)
    assert score and float(score.group(1)) > float(score.group(2)), text
    assert re.search(r"Nearest classes in feature space \(distance\): \S", text), text
    page.locator('[data-testid="stAlertContainer"]').filter(
        has_text="Unknown"
    ).first.scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOT)

    thumb = widget(page, "stSlider", "Unknown threshold").get_by_role("slider")
    thumb.focus()
    page.keyboard.press("End")
    wait_idle(page)
    wait_for_text(page, r"rejects 0\.0% of the validation images")
    steps(page, "threshold at its top")
    text = main_text(page)
    assert UNKNOWN not in text and "Known: unknown-detection score" in text, text


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_a_real_garment_is_answered_with_its_class(streamlit_server, page, steps, tmp_path):
    from lib.config import DataConfig
    from lib.data import load_dataset

    ds = load_dataset(DataConfig(source="fashion_mnist"))
    image = ds.splits["test"].images([1])[0][:, :, 0]
    truth = ds.class_names[int(ds.splits["test"].labels[1])]
    path = tmp_path / "garment.png"
    Image.fromarray(image).save(path)
    open_page(page, streamlit_server, "predict")
    upload(page, "Images", str(path))
    wait_for_text(page, r"Prediction took")
    steps(page, "garment predicted")
    text = main_text(page)
    assert UNKNOWN not in text, text
    assert "Known: unknown-detection score" in text
    assert re.search(rf"{re.escape(truth)}\s*·\s*\d+\.\d%", text), (truth, text)
