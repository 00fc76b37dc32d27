"""Clicking a confusion-matrix tile in a real browser opens the gallery of its images.

Streamlit reports no selections on plotly heatmaps, so the matrix is a scatter of
square markers (lib.plots.evaluation). This test proves that a person's click on
a tile reaches the server: headless Chromium against ``streamlit run``.
"""

import re

import numpy as np
import pytest
from helpers import open_page, wait_for_text, wait_idle
from tiny_runs import make_finished_run

from lib import evaluation as ev
from pages import ui

pytestmark = pytest.mark.e2e

# The tiles of the matrix: plotly draws one (invisible) path.point per tile marker, in
# data order (row-major: tile (i, j) is number i * K + j). Streamlit gives a keyed
# element's container the class st-key-<key>.
MATRIX = f".st-key-{ui.EVAL_CM_CHART} .js-plotly-plot"
TILES = f"{MATRIX} .scatterlayer .trace:first-child .point"
OUTLINE = f"{MATRIX} .shapelayer path"
CAPTIONS = '[data-testid="stImageCaption"]'


@pytest.fixture(scope="module")
def finished_run(workspace):
    """A real tiny run with stored predictions, in the server's workspace."""
    run_dir = make_finished_run(epochs=2)
    ev.compute_predictions(run_dir)
    return run_dir


def _visible_captions(page) -> list[str]:
    return [c.inner_text().strip() for c in page.locator(CAPTIONS).all() if c.is_visible()]


def _click_tile(page, index: int) -> None:
    # Plotly's transparent drag layer lies over the markers and takes the click at the
    # tile's position (as it does for a person), so the click is forced through it.
    page.locator(TILES).nth(index).click(force=True)
    wait_idle(page)


def test_clicking_a_tile_shows_its_images(finished_run, streamlit_server, page, steps):
    preds = ev.load_predictions(finished_run)
    k = preds.num_classes
    cm = ev.confusion_counts(preds.y_true, preds.y_pred, k)
    off = cm - np.diag(np.diag(cm))
    i, j = divmod(int(np.argmax(off)), k)
    assert off[i, j] > 0, "the tiny model should make mistakes"

    open_page(page, streamlit_server, "evaluate")
    page.locator(TILES).first.wait_for()
    steps(page, "evaluate opened")
    assert page.locator(TILES).count() == k * k
    assert _visible_captions(page) == []

    _click_tile(page, i * k + j)
    wait_for_text(page, rf"{i} → {j}")
    steps(page, f"clicked tile {i},{j}")
    wait_for_text(page, rf"{cm[i, j]} mistaken images, most confident first")
    expected = [f"{preds.confidence[p]:.1%}" for p in ev.cell_positions(preds, i, j)]
    assert _visible_captions(page) == expected
    assert page.locator(OUTLINE).count() == 1  # the clicked tile is outlined

    # A second click on another tile replaces the gallery (the chart was redrawn in between).
    _click_tile(page, i * k + i)
    wait_for_text(page, rf"{cm[i, i]} correct images")
    steps(page, f"clicked tile {i},{i}")
    captions = _visible_captions(page)
    assert len(captions) == min(cm[i, i], 48)
    assert all(re.fullmatch(r"\d+\.\d%", c) for c in captions)

    # A reload shows the same tile's images, outlined, without another click.
    page.reload(wait_until="domcontentloaded")
    page.locator(TILES).first.wait_for()
    wait_for_text(page, rf"{cm[i, i]} correct images")
    wait_idle(page)
    steps(page, "after a reload")
    assert len(_visible_captions(page)) == len(captions)
    assert page.locator(OUTLINE).count() == 1
