"""A person turns mixed precision on, trains, and exports the run from Predict.

Mixed precision "on" trains in bfloat16 on a CPU. TFLite and ONNX cannot convert
bfloat16 arithmetic, so Kestrel loads every model computing in float32 (same
weights); before that, both conversions failed for such a run.
"""

from __future__ import annotations

import json

import pytest
from helpers import (
    click,
    export_with_parity,
    navigate,
    open_page,
    segment,
    select,
    set_number,
    use_digits,
    wait_for_text,
    wait_idle,
)

from lib import jobs, runstore

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 300


def _open_expander(page, title: str, inside: str) -> None:
    """Open the expander titled ``title`` (a click on its summary, as a person does)."""
    expander = page.locator('[data-testid="stExpander"]').filter(has_text=title).first
    if not expander.get_by_text(inside).first.is_visible():
        expander.locator("summary").first.click()
        wait_idle(page)
    expander.get_by_text(inside).first.wait_for()


def test_a_run_trained_in_mixed_precision_exports_with_parity(streamlit_server, page, steps):
    open_page(page, streamlit_server, "")
    navigate(page, "Dataset")
    use_digits(page)
    navigate(page, "Train")
    set_number(page, "Epochs", 2)
    _open_expander(page, "More options", "Mixed precision")
    select(page, "Mixed precision", "on")
    steps(page, "mixed-precision-on")
    click(page, "Start training")
    wait_for_text(page, r"Completed · test accuracy", timeout_s=RUN_TIMEOUT_S)
    run_dir = runstore.run_dir(jobs.list_runs()[0].run_id)
    assert runstore.read_config(run_dir).train.mixed_precision == "on"
    metrics = json.loads((run_dir / runstore.METRICS_FILE).read_text())
    assert metrics["precision"] == "mixed_bfloat16", metrics["device"]  # no GPU here

    navigate(page, "Predict")
    segment(page, "Training run")
    export_with_parity(page, run_dir.name, steps)
