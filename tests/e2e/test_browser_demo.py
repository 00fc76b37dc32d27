"""The browser demo export, used the way a person uses it: served from a static server, in Chromium.

The demo of the shipped Fashion-MNIST model is exported to a folder, served by
Python's own ``http.server`` on 127.0.0.1 (nothing of Kestrel runs behind it),
and 40 Fashion-MNIST test images (PNG files) are chosen in the page's file
input. The top-1 class the page shows for each must agree with the Keras
model's on at least 99 % of them; the page must show top-k bars; and the folder
must be self-contained (no request leaves the local server).
"""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest
from PIL import Image

from lib import registry
from lib.demo_export import build_demo
from lib.predict import decode_upload, get_predictor, preprocess

pytestmark = pytest.mark.e2e
N_IMAGES = 40  # Fashion-MNIST test images
N_NOISE = 4  # uniform noise: what unknown detection is for


def _fashion_entry() -> registry.ModelEntry:
    for entry in registry.list_models():
        if entry.name == "fashion-mnist-demo":
            return entry
    pytest.fail("models/fashion-mnist-demo is missing (make demo-models)")


def _unknown(entry, images):
    """(threshold, lib.ood's score per image) of the card's unknown detection, or None."""
    block = getattr(entry.card, "unknown", None)
    if not block:
        return None
    from lib import ood
    from lib.registry import load_model

    detector = ood.load_beside(entry.model_path)
    batch = np.stack([preprocess(img, entry.card) for img in images])
    features, logits = ood.features_and_logits(ood.feature_model(load_model(entry)), batch)
    return float(block["threshold"]), detector.score(features, logits, block["score"]).tolist()


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """(base URL, PNG paths, Keras top-1 names) of an exported demo served statically."""
    from lib.compress import dataset_config
    from lib.data import load_dataset

    entry = _fashion_entry()
    root = tmp_path_factory.mktemp("demo")
    build_demo(entry, root / "site")
    test = load_dataset(dataset_config(entry.card)).splits["test"]
    idx = np.random.default_rng(7).choice(len(test), N_IMAGES, replace=False)
    paths, images = [], []
    for i, img in zip(idx, test.images(idx), strict=True):
        path = root / "images" / f"test-{int(i):05d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img[:, :, 0]).save(path)
        paths.append(path)
        images.append(decode_upload(path.read_bytes(), path.name))  # the app's own path
    noise = np.random.default_rng(11).integers(0, 256, (N_NOISE, 28, 28), dtype=np.uint8)
    for j, img in enumerate(noise):
        path = root / "images" / f"noise-{j}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
        images.append(decode_upload(path.read_bytes(), path.name))
    predictor = get_predictor(entry)
    keras_top1 = [p.label for p in predictor.predict(images, k=1)]

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root / "site"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", paths, keras_top1, _unknown(entry, images)
    server.shutdown()
    server.server_close()


def test_demo_classifies_like_keras(demo_server, new_page):
    base, paths, keras_top1, unknown = demo_server
    page = new_page()
    outside = []
    page.on(
        "request",
        lambda req: outside.append(req.url) if not req.url.startswith(base) else None,
    )
    page.goto(base + "/index.html")
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    assert "Ready" in page.inner_text("#status")
    assert page.inner_text("#title") == "fashion-mnist-demo"

    page.set_input_files("#file", [str(p) for p in paths])
    page.wait_for_selector("#results[data-done=true]", timeout=120_000)
    cards = page.locator("#results .result")
    assert cards.count() == len(paths)
    shown = {}
    for i in range(cards.count()):
        card = cards.nth(i)
        assert card.get_attribute("data-error") is None
        top1_text = card.locator(".top1").inner_text()
        shown[card.get_attribute("data-name")] = top1_text.split(" · ")[0]
        assert card.locator(".bar").count() == 5  # top-k bars, k = 5 of 10 classes
    page.screenshot(path="/tmp/browser_demo.png", full_page=True)

    tested = [(p, k) for p, k in zip(paths, keras_top1, strict=True) if p.name.startswith("test")]
    agree = sum(shown[p.name] == k for p, k in tested)
    assert len(tested) >= 32
    assert agree / len(tested) >= 0.99, (agree, len(tested))

    # Unknown detection: the page applies the card's score and threshold as lib.ood does.
    flags = {c.get_attribute("data-name"): c.get_attribute("data-unknown") for c in cards.all()}
    if unknown is None:  # a card without unknown detection: the page shows none
        assert set(flags.values()) == {None}
    else:
        threshold, scores = unknown
        page_scores = {
            c.get_attribute("data-name"): float(c.get_attribute("data-unknown-score"))
            for c in cards.all()
        }
        for p, score in zip(paths, scores, strict=True):
            assert page_scores[p.name] == pytest.approx(score, rel=1e-3, abs=1e-3), p.name
            if abs(score - threshold) > 1e-3:
                assert flags[p.name] == str(score > threshold).lower(), p.name
        assert all(flags[p.name] == "true" for p in paths if p.name.startswith("noise"))
        assert page.locator(".result .unknown").count() >= N_NOISE
    assert outside == []  # self-contained: no CDN, no other server


def test_demo_page_resizes_like_kestrel(demo_server, new_page, tmp_path):
    """A larger colour photo is shrunk and turned gray in the page as lib.predict does."""
    base = demo_server[0]
    entry = _fashion_entry()
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (61, 45, 3), dtype=np.uint8)
    photo[10:50, 8:38] = [200, 180, 40]  # a block, so the resized picture is not pure noise
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    expected = preprocess(decode_upload(path.read_bytes(), path.name), entry.card)

    page = new_page()
    page.goto(base + "/index.html")
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    # The page reads the file through the same input a person uses.
    page.set_input_files("#file", [str(path)])
    page.wait_for_selector("#results[data-done=true]", timeout=60_000)
    got = page.evaluate(
        """async () => {
            const file = document.getElementById("file").files[0];
            const bitmap = await createImageBitmap(file);
            return Array.from(modelInput(bitmap, bitmap.width, bitmap.height));
        }"""
    )
    assert np.array_equal(np.asarray(got, np.uint8), expected.ravel())
    predictor = get_predictor(entry)
    keras = predictor.predict([decode_upload(path.read_bytes(), path.name)], k=1)[0].label
    assert page.locator("#results .result").first.get_attribute("data-top1") == keras


def test_demo_classifies_camera_frames(demo_server, browser):
    """Start camera with Chromium's fake camera: live frames are classified with top-k bars."""
    from helpers import CHROMIUM, CHROMIUM_ARGS

    base = demo_server[0]
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    # A second Chromium of the same Playwright, started with a fake camera.
    camera_browser = browser.browser_type.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS + fake_camera
    )
    try:
        context = camera_browser.new_context(permissions=["camera"])
        page = context.new_page()
        page.goto(base + "/index.html")
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        page.click("#camera-start")
        page.wait_for_selector("#camera-result[data-top1]", timeout=60_000)
        first = page.locator("#camera-result .top1").inner_text()
        assert first.split(" · ")[0] in {
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        }  # fmt: skip
        assert page.locator("#camera-result .bar").count() == 5
        assert page.is_enabled("#camera-stop") and not page.is_enabled("#camera-start")
        page.click("#camera-stop")
        assert page.is_enabled("#camera-start")
    finally:
        camera_browser.close()
