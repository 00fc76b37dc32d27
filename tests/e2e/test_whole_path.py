"""Scenario 1, the whole path a person takes, in a real browser against ``streamlit run``.

Dataset (shapes, a small set) → Augmentation preview → Model preset → Train a tiny run
while the progress bar and the curves move → Evaluate: click a confusion-matrix tile
and see its images → Predict: upload a PNG and see the top-k chart.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from helpers import (
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

from lib import evaluation as ev
from lib import jobs, runstore

pytestmark = pytest.mark.e2e

SHAPES_COUNT = 600  # 6 classes × 100: long enough a run to watch, a 6×6 matrix
SHAPES_SIDE = 32
EPOCHS = 5
RUN_TIMEOUT_S = 300  # a cold worker on 2 shared cores: TF import, data, 3 tiny epochs
CURVES = ".st-key-train_curves_chart .js-plotly-plot"
TILES = ".st-key-{key} .js-plotly-plot .scatterlayer .trace:first-child .point"
CAPTIONS = '[data-testid="stImageCaption"]'


def _curve_points(page) -> int:
    """How many points the live loss/accuracy chart draws now (all traces)."""
    return page.evaluate(
        """sel => { const el = document.querySelector(sel);
                    if (!el || !el.data) return 0;
                    return el.data.reduce((n, t) => n + ((t.x || []).length), 0); }""",
        CURVES,
    )


def _progress_values(page) -> list[str]:
    bars = page.locator('[data-testid="stProgress"] [role="progressbar"]')
    return [bars.nth(i).get_attribute("aria-valuenow") or "" for i in range(bars.count())]


def _png_of_a_circle() -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SHAPES_SIDE * 2, SHAPES_SIDE * 2), (240, 240, 240))
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), fill=(30, 90, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_dataset_to_prediction(streamlit_server, page, steps, workspace, tmp_path):
    base = streamlit_server

    # 1. Dataset: shapes, small and small images.
    open_page(page, base, "dataset")
    steps(page, "dataset-open")
    set_number(page, "Images", SHAPES_COUNT)
    set_number(page, "Side (px)", SHAPES_SIDE)
    wait_for_text(page, rf"In use: shapes \({SHAPES_COUNT} × {SHAPES_SIDE}px\)")
    wait_for_text(page, r"Classes\s+6")
    assert page.locator('[data-testid="stImage"]').count() >= 6  # a sample grid per class
    steps(page, "dataset-chosen")

    # 2. Augmentation: a preset, and the preview grid of the same images.
    navigate(page, "Augmentation")
    select(page, "Preset", "light")
    wait_for_text(page, r"Preview")
    preview = page.locator('[data-testid="stImage"]').first
    preview.wait_for()
    assert preview.locator("img").first.get_attribute("src")
    assert "light" in page.inner_text('[data-testid="stSidebar"]')
    steps(page, "augmentation-preview")

    # 3. Model: a small preset.
    navigate(page, "Model")
    select(page, "Architecture", "LeNet-5")
    wait_for_text(page, r"lenet5", where='[data-testid="stSidebar"]')
    steps(page, "model-chosen")

    # 4. Train a tiny run and watch it move.
    navigate(page, "Train")
    set_number(page, "Epochs", EPOCHS)
    set_number(page, "Batch size", 4)
    select(page, "LR schedule", "constant")
    click(page, "Start training")
    steps(page, "train-started")
    assert "Not started" not in main_text(page), main_text(page)
    wait_for_text(page, rf"Epoch \d+ of {EPOCHS}", timeout_s=RUN_TIMEOUT_S)
    seen_progress, seen_points = set(), set()
    run_id = jobs.list_runs()[0].run_id
    deadline_state = None
    for _ in range(RUN_TIMEOUT_S * 2):
        seen_progress.add(tuple(_progress_values(page)))
        seen_points.add(_curve_points(page))
        deadline_state = runstore.read_status(runstore.run_dir(run_id)).state
        if deadline_state not in runstore.ACTIVE_STATES:
            break
        page.wait_for_timeout(500)
    assert deadline_state == "completed", runstore.read_status(runstore.run_dir(run_id))
    wait_for_text(page, r"Completed · test accuracy", timeout_s=30)
    steps(page, "train-completed")
    # Moved: the page showed the bars part-way, then (above) the run completed.
    partway = {values for values in seen_progress if values and values != ("100", "100")}
    assert len(seen_progress) >= 2 and partway, f"the progress bars never moved: {seen_progress}"
    assert len(seen_points - {0}) >= 2, f"the curves never grew: {sorted(seen_points)}"
    assert _curve_points(page) > 0

    # 5. Evaluate: click the most confused tile (or a diagonal one) and see its images.
    navigate(page, "Evaluate")
    preds = ev.load_predictions(runstore.run_dir(run_id))
    k = preds.num_classes
    cm = ev.confusion_counts(preds.y_true, preds.y_pred, k)
    off = cm - np.diag(np.diag(cm))
    i, j = divmod(int(np.argmax(off)), k) if off.any() else divmod(int(np.argmax(cm)), k)
    from pages import ui

    tiles = page.locator(TILES.format(key=ui.EVAL_CM_CHART))
    tiles.first.wait_for()
    assert tiles.count() == k * k
    tiles.nth(i * k + j).click(force=True)  # through plotly's drag layer, like a person
    wait_idle(page)
    names = preds.class_names
    wait_for_text(page, rf"{re.escape(names[i])} → {re.escape(names[j])}")
    captions = [c.inner_text() for c in page.locator(CAPTIONS).all() if c.is_visible()]
    assert len(captions) == min(int(cm[i, j]), 48), captions
    steps(page, "evaluate-tile")

    # 6. Predict with the run's model: upload a PNG, see the top-k chart.
    png = tmp_path / "circle.png"
    png.write_bytes(_png_of_a_circle())
    navigate(page, "Predict")
    segment(page, "Training run")
    upload(page, "Images", str(png))
    chart = page.locator(".st-key-predict_topk_chart .js-plotly-plot")
    chart.wait_for(timeout=120_000)
    labels = page.evaluate(
        """sel => document.querySelector(sel).data.flatMap(t => [...(t.y || []), ...(t.x || [])])
                   .filter(v => typeof v === 'string')""",
        ".st-key-predict_topk_chart .js-plotly-plot",
    )
    assert set(labels) & set(names), (labels, names)
    wait_for_text(page, r"Prediction took [\d.]+ ms")
    steps(page, "predict-topk")
