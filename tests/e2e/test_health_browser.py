"""Data health in a real browser: check a run's data, relabel and exclude, retrain, see the diff.

A completed tiny digits run (with its predictions) lives in the server's
workspace. On the Data health page a person starts a check of that run's
dataset, waits for the review queue, relabels the first image (the button) and
excludes the next one (the X key), reloads to see the decisions kept, saves
them as a new dataset version, and retrains the run's recipe on it. When the
new run has finished, Compare runs' run diff shows the two runs' common test
images and the images that flipped, as lib.run_diff computes them.
"""

import re
import time

import pytest
from helpers import (
    assert_healthy,
    click,
    errors,
    navigate,
    open_page,
    select,
    wait_for_text,
)
from tiny_runs import make_finished_run

from lib import datasets, health, run_diff, runs, runstore
from lib import evaluation as ev
from lib.data import load_dataset

pytestmark = pytest.mark.e2e

SHOTS = "/tmp/kestrel-e2e-health-{}.png"


@pytest.fixture(scope="module")
def original(workspace):
    run_dir = make_finished_run(name="digits before", epochs=3, hidden=16)
    ev.compute_predictions(run_dir)
    return run_dir


def _wait_run(run_id: str, timeout_s: float = 600) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = runstore.read_status(runstore.run_dir(run_id)).state
        if state in ("completed", "failed", "stopped"):
            return state
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {timeout_s} s")


def test_review_relabel_exclude_retrain_and_diff(original, streamlit_server, page, steps):
    open_page(page, streamlit_server, "health")
    label = f"Run {runs.run_label(runs.view_of(original))}"
    select(page, "Check the dataset of", label)
    click(page, "Start check")
    wait_for_text(page, r"Review queue", timeout_s=420)
    assert_healthy(page)
    picked = page.get_by_role("combobox", name="Health check").first.input_value()
    assert picked.startswith("digits") and "running" not in picked, picked
    assert not errors(page), errors(page)
    check = health.list_checks()[0]
    queue = health.read_queue(check)
    assert queue, "the check found nothing to review"
    counts = health.read_report(check)["counts"]
    wait_for_text(page, rf"Label issues\s+{counts['label']:,}\b")
    wait_for_text(page, rf"Train/test leakage\s+{counts['leakage']:,}\b")
    steps(page, "queue")
    page.screenshot(path=SHOTS.format("queue"))

    first, second = queue[0], queue[1]
    wait_for_text(page, re.escape(f"Suggested label: {first['suggested']}"))
    click(page, "Relabel")
    wait_for_text(page, re.escape(f"Image {first['key']} relabelled as {first['suggested']}"))
    page.locator('[data-testid="stMain"] h1').first.click()  # focus the page, not a widget
    page.keyboard.press("x")
    wait_for_text(page, re.escape(f"Image {second['key']} excluded"))
    assert health.read_decisions(check) == {
        first["key"]: {"action": "relabel", "label": first["suggested"]},
        second["key"]: {"action": "exclude", "label": ""},
    }

    page.reload()
    wait_for_text(page, r"2 decided")
    wait_for_text(page, r"1 relabelled, 1 excluded, 0 kept")
    click(page, "Save as a new dataset version")
    found = wait_for_text(page, r"Cleaned version: (\S+@\d+)")
    ref = found.group(1).replace("\\", "")
    name, version = datasets.parse_ref(ref)
    total = sum(datasets.class_counts(name, version).values())
    checked = load_dataset(runstore.read_config(original).data)
    assert total == sum(len(s) for s in checked.splits.values()) - 1  # one excluded, one moved
    steps(page, "saved")

    click(page, "Retrain on the cleaned version")
    run_id = wait_for_text(page, r"as run (\S+) \(see the Train page\)").group(1)
    page.screenshot(path=SHOTS.format("saved"))
    assert runstore.read_config(runstore.run_dir(run_id)).data.path == ref
    assert _wait_run(run_id) == "completed", runstore.read_status(runstore.run_dir(run_id)).error

    navigate(page, "Compare runs")
    labels = {r.name: runs.run_label(runs.view_of(r)) for r in (original, runstore.run_dir(run_id))}
    # the older run is "before" by default
    before = page.get_by_role("combobox", name="Before").first.input_value()
    after = page.get_by_role("combobox", name="After").first.input_value()
    assert labels[original.name] in before and labels[run_id] in after, (before, after)
    diff = run_diff.diff_runs(original.name, run_id)
    wait_for_text(page, r"Common test images")
    wait_for_text(page, rf"Common test images\s+{diff.common:,}\b")
    wait_for_text(page, rf"Wrong → right\s+{len(diff.wrong_to_right):,}\b")
    wait_for_text(page, rf"Right → wrong\s+{len(diff.right_to_wrong):,}\b")
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 2  # curves + delta
    assert_healthy(page)
    assert not errors(page), errors(page)
    page.locator("#run-diff").scroll_into_view_if_needed()
    page.screenshot(path=SHOTS.format("diff"), full_page=True)
