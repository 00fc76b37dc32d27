"""Result pages in a real browser: Predict's run picker and an extreme upload.

Two completed tiny runs live in the server's workspace; the better one is the
older, so a picker that defaulted to the latest run would show the wrong one.
Predict must open on the better run, labelled name · dataset · accuracy · date,
and a valid but extreme image (3000×2 px) must give a prediction, not an error.
"""

import re

import numpy as np
import pytest
from helpers import assert_healthy, errors, open_page, segment, upload, wait_for_text
from PIL import Image
from tiny_runs import make_finished_run

from lib import runs

pytestmark = pytest.mark.e2e

SCREENSHOT = "/tmp/kestrel-e2e-predict-result.png"


@pytest.fixture(scope="module")
def two_runs(workspace):
    """(better, worse) completed runs; the better one was made first."""
    better = make_finished_run(name="best **run**", epochs=6, hidden=32, seed=1)
    worse = make_finished_run(name="weak run", epochs=1, hidden=4)
    assert runs.view_of(better).accuracy > runs.view_of(worse).accuracy
    return better, worse


def test_predict_opens_on_the_best_run_and_classifies_a_strip(
    two_runs, streamlit_server, page, steps, tmp_path
):
    better, _ = two_runs
    open_page(page, streamlit_server, "predict")
    segment(page, "Training run")
    steps(page, "training run source")
    shown = page.get_by_role("combobox", name="Completed run").first.input_value()
    view = runs.view_of(better)
    assert runs.run_label(view) in shown, shown
    # The name is shown as typed (a selectbox option is plain text), with its accuracy.
    assert "best **run** · digits · " in shown and f"{view.accuracy:.1%}" in shown

    strip = np.random.default_rng(0).integers(0, 256, (2, 3000, 3), dtype=np.uint8)
    path = tmp_path / "strip.png"
    Image.fromarray(strip).save(path)
    upload(page, "Images", str(path))
    wait_for_text(page, r"Prediction took")
    steps(page, "strip predicted")
    assert_healthy(page)
    assert not errors(page), errors(page)
    # The verdict: one of the digits' classes with its probability.
    assert re.search(r"\b\d\s*·\s*\d+\.\d%", page.inner_text('[data-testid="stMain"]'))
    # The padded strip and the probability chart, in view (the main area scrolls, not the page).
    page.locator('[data-testid="stImage"]').first.scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOT)


def test_a_robustness_report_computes_in_the_background_and_survives_a_reload(
    two_runs, streamlit_server, server_process, page, steps
):
    """Evaluate → Compute robustness report: a worker of its own, progress, then the table."""
    from helpers import click, select

    from lib import robustness

    better, _ = two_runs
    open_page(page, streamlit_server, "evaluate")
    select(page, "Run", runs.run_label(runs.view_of(better)))
    if page.get_by_role("button", name="Compute predictions").count():
        click(page, "Compute predictions")
    wait_for_text(page, r"Accuracy")
    assert robustness.read_report(better) is None
    click(page, "Compute robustness report")
    steps(page, "report started")
    status = robustness.job_status(better)
    assert status is not None and status.state in ("running", "completed"), status
    # Its own process: not the server's, in a session of its own.
    assert status.pid and status.pid != server_process.proc.pid
    assert f"run={better.name}" in page.url, page.url  # the address names the run
    page.reload(wait_until="domcontentloaded")  # a reload in the middle loses nothing
    wait_for_text(page, r"clean accuracy", timeout_s=180)
    page.get_by_role("button", name="Compute again").scroll_into_view_if_needed()
    steps(page, "report shown")
    assert_healthy(page)
    assert not errors(page), errors(page)
    report = robustness.read_report(better)
    assert report is not None and robustness.job_status(better).state == "completed"
    # The page shows the stored report's figures, not some other run's.
    shown = page.inner_text('[data-testid="stMain"]')
    assert f"clean accuracy {report['clean']:.1%}" in shown, shown
    assert page.get_by_role("button", name="Compute again").count() == 1


def test_compare_keeps_what_was_picked_through_another_page_and_a_reload(
    two_runs, streamlit_server, page, new_page, steps
):
    """Compare runs: a curve, a run diff the other way round; away and back, reload, same view."""
    from helpers import click, navigate, select, wait_idle

    better, worse = two_runs
    better_label, worse_label = (runs.run_label(runs.view_of(r)) for r in (better, worse))
    open_page(page, streamlit_server, "compare")
    wait_for_text(page, r"Run diff")
    curve = page.get_by_role("radio", name="training loss")
    curve.click(force=True)  # the radio's input is hidden under its label, as for a person
    wait_idle(page)
    select(page, "Before", worse_label)
    select(page, "After", better_label)
    if page.get_by_role("button", name="Compute predictions").count():
        click(page, "Compute predictions")  # tiny runs are made without stored predictions
    wait_for_text(page, r"Common test images")
    steps(page, "compare picked")

    def assert_same_view(where: str) -> None:
        assert page.get_by_role("radio", name="training loss").is_checked(), where
        before = page.get_by_role("combobox", name="Before").first.input_value()
        after = page.get_by_role("combobox", name="After").first.input_value()
        assert (before, after) == (worse_label, better_label), (where, before, after)
        wait_for_text(page, r"Common test images")  # the diff is shown, nothing to click

    navigate(page, "Predict")
    navigate(page, "Compare runs")
    assert_same_view("after another page")
    page.reload(wait_until="domcontentloaded")
    wait_for_text(page, r"Run diff")
    wait_idle(page)
    assert_same_view("after a reload")
    steps(page, "compare after reload")
    assert_healthy(page)
    assert not errors(page), errors(page)
    # Another browser has a draft of its own, so a view of its own: the defaults.
    other = new_page()
    open_page(other, streamlit_server, "compare")
    wait_for_text(other, r"Run diff")
    assert other.get_by_role("radio", name="validation accuracy").is_checked()
    assert other.get_by_role("combobox", name="Before").first.input_value() == better_label


def test_a_run_without_unknown_detection_gets_it_fitted_from_predict(
    two_runs, streamlit_server, page, steps
):
    """Predict → a run without detection → Fit → the threshold appears by itself, and stays."""
    from helpers import click, select, wait_idle

    from lib import ood

    _, worse = two_runs
    assert not (worse / ood.STATS_FILE).exists()  # tiny runs are made without it
    open_page(page, streamlit_server, "predict")
    segment(page, "Training run")
    select(page, "Completed run", runs.run_label(runs.view_of(worse)))
    wait_for_text(page, r"no unknown detection yet")
    steps(page, "no detection")
    click(page, "Fit unknown detection")
    wait_for_text(page, r"Unknown threshold", timeout_s=120)  # no click: the page follows the fit
    wait_idle(page)
    steps(page, "detection fitted")
    assert (worse / ood.STATS_FILE).is_file()
    shown = page.inner_text('[data-testid="stMain"]')
    assert "of the validation images as unknown" in shown and "no unknown detection" not in shown
    page.reload(wait_until="domcontentloaded")
    wait_for_text(page, r"Unknown threshold")
    assert_healthy(page)
    assert not errors(page), errors(page)
