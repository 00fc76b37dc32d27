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
from lib.predict import decode_upload, get_predictor

pytestmark = pytest.mark.e2e
N_IMAGES = 40


def _fashion_entry() -> registry.ModelEntry:
    for entry in registry.list_models():
        if entry.name == "fashion-mnist-demo":
            return entry
    pytest.fail("models/fashion-mnist-demo is missing (make demo-models)")


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
    predictor = get_predictor(entry)
    keras_top1 = [p.label for p in predictor.predict(images, k=1)]

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root / "site"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", paths, keras_top1
    server.shutdown()
    server.server_close()


def test_demo_classifies_like_keras(demo_server, new_page):
    base, paths, keras_top1 = demo_server
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
    page.screenshot(path="/tmp/browser_demo.png", full_page=False)

    agree = sum(shown[p.name] == k for p, k in zip(paths, keras_top1, strict=True))
    assert agree / len(paths) >= 0.99, (agree, len(paths))
    assert len(paths) >= 32
    assert outside == []  # self-contained: no CDN, no other server


def test_demo_page_resizes_like_kestrel(demo_server, new_page, tmp_path):
    """A larger colour photo is shrunk and turned gray in the page as lib.predict does."""
    base, _, _ = demo_server
    from lib.predict import preprocess

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
