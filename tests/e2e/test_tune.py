"""A person tunes the learning rate in the browser: a tiny study, a stopped trial, "Use best".

Digits (8×8) as the dataset, then the Tune page: switch "Learning rate" to a range,
three one-epoch trials, start. The trial table fills while trials run (each is a
real run in its own process); one running trial is stopped by hand and shows as
pruned; when the study has finished, "Use best" puts the best trial's recipe into
the draft, and the Train page's form shows its learning rate and epochs. There, the
runs list shows the study's three trials together when asked to.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
from helpers import (
    act,
    click,
    main_text,
    navigate,
    open_page,
    select,
    set_number,
    use_digits,
    wait_for_text,
    wait_idle,
)

from lib import drafts, tuning

pytestmark = pytest.mark.e2e

TRIALS = 3
STUDY_TIMEOUT_S = 900  # three cold run processes one after another on 2 shared, loaded cores
TABLE = '[data-testid="stDataFrame"]'


def table_rows(page, key: str = "trial", last: bool = False) -> list[dict[str, str]]:
    """A table's rows as the grid shows them (its accessible table), by column name.

    The first table on the page (the last with ``last``); rows without column ``key`` are left out.
    """
    return page.evaluate(
        """([sel, key, last]) => { const all = document.querySelectorAll(sel + ' table');
                    const t = last ? all[all.length - 1] : all[0];
                    if (!t) return [];
                    const heads = {};
                    t.querySelectorAll('thead th').forEach(h => {
                        heads[h.getAttribute('aria-colindex')] = h.textContent.trim(); });
                    return [...t.querySelectorAll('tbody tr')].map(r => {
                        const row = {};
                        r.querySelectorAll('td').forEach(c => {
                            const name = heads[c.getAttribute('aria-colindex')];
                            if (name) row[name] = c.textContent.trim(); });
                        return row; }).filter(row => key in row); }""",
        [TABLE, key, last],
    )


def wait_rows(page, predicate, timeout_s: float, what: str) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        rows = table_rows(page)
        if predicate(rows):
            return rows
        page.wait_for_timeout(1000)
    raise AssertionError(f"{what}: the table shows {rows}\n{main_text(page)[-2000:]}")


def test_tune_the_learning_rate(streamlit_server, page, steps, workspace):
    base = streamlit_server
    open_page(page, base, "dataset")
    use_digits(page)
    navigate(page, "Tune")
    steps(page, "tune-open")

    page.get_by_label("Study name").fill("lr search")
    act(page, lambda: page.get_by_label("Study name").press("Tab"))
    set_number(page, "Trials", TRIALS)
    set_number(page, "Epochs per trial", 1)
    act(page, page.get_by_text("Search Learning rate", exact=True).click)
    lowest = page.get_by_role("spinbutton", name="lowest").first
    lowest.wait_for(state="visible")  # the range appears with the rerun the toggle starts
    wait_idle(page)
    wait_for_text(page, "searched on a log scale")
    click(page, "Start study")
    wait_for_text(page, r"Study lr search started: 3 trials")
    steps(page, "study-started")

    # The table fills: trial 0 appears, starting (no run yet), queued or running.
    rows = wait_rows(page, lambda r: len(r) >= 1, 60, "no trial row appeared")
    assert rows[0]["trial"] == "0" and rows[0]["state"] in ("starting", "queued", "running"), rows
    # Stop the first trial by hand once its run trains.
    rows = wait_rows(page, lambda r: r and r[0]["state"] == "running", 400, "trial 0 never ran")
    assert rows[0]["run"], rows  # a running trial names its run
    steps(page, "trial-running")
    select(page, "Running trial", f"trial 0 · run {rows[0]['run']}")
    click(page, "Stop trial")
    wait_for_text(page, r"Trial 0 stops after its current batch")
    rows = wait_rows(
        page, lambda r: r and r[0]["state"] == "pruned", 300, "trial 0 was not stopped"
    )
    assert rows[0]["note"] == "stopped by hand", rows
    steps(page, "trial-stopped")

    # The study goes on with the other trials and finishes.
    rows = wait_rows(
        page,
        lambda r: len(r) == TRIALS and all(row["state"] in ("complete", "pruned") for row in r),
        STUDY_TIMEOUT_S,
        "the study did not finish",
    )
    wait_for_text(page, r"finished · 3/3 trials done")
    steps(page, "study-finished")

    # Use best: the draft (and the Train form) now hold the best trial's recipe.
    spec = tuning.read_spec(tuning.study_dir("lr-search"))
    study = tuning.load_study(spec, tuning.study_dir("lr-search"))
    best = study.best_trial
    best_lr = best.params["train.learning_rate"]
    assert any(row["trial"] == str(best.number) and row["state"] == "complete" for row in rows)
    click(page, "Use best")
    wait_for_text(page, rf"Trial {best.number}'s recipe is in the draft")
    # The whole page was redrawn, not only the study panel: the draft's notice is up top.
    wait_for_text(page, rf"The draft now holds trial {best.number}'s", timeout_s=10)
    draft_id = parse_qs(urlparse(page.url).query)["draft"][0]
    draft = drafts.load(draft_id)
    assert draft.train.learning_rate == best_lr and draft.train.epochs == 1
    navigate(page, "Train")
    shown = page.get_by_role("spinbutton", name="Learning rate").first.input_value()
    assert float(shown) == pytest.approx(best_lr, rel=0.05)  # the form shows %.1e
    assert page.get_by_role("spinbutton", name="Epochs").first.input_value() == "1"
    steps(page, "train-form-best")

    # The runs list: the study's trials together, in trial order, each naming its trial.
    select(page, "Show", "Study lr search: its trials")
    runs = table_rows(page, key="run", last=True)
    assert [r["name"] for r in runs] == [f"lr search #{n}" for n in range(TRIALS)], runs
    assert [r["study"].split(" (")[0] for r in runs] == [
        f"lr search · trial {n}" for n in range(TRIALS)
    ], runs
    steps(page, "train-runs-of-the-study")


def test_the_learning_rate_finder_follows_its_sweep_to_the_suggestion_by_itself(
    streamlit_server, page, steps
):
    open_page(page, streamlit_server, "dataset")
    use_digits(page)
    navigate(page, "Train")
    act(page, page.get_by_text("Find a learning rate", exact=True).click)
    click(page, "Run the sweep")
    wait_for_text(page, r"sweeping: step \d+ of 200")
    steps(page, "sweep-started")
    # Nothing more is clicked: the panel follows the sweep in its own process to the end
    # (it stayed at "step 0 of 200" when the click had rerun it without its timer).
    found = wait_for_text(page, r"Suggested learning rate (\S+) \(", timeout_s=300)
    steps(page, "sweep-done")
    rate = found.group(1)
    click(page, f"Use {rate}")
    shown = page.get_by_role("spinbutton", name="Learning rate").first.input_value()
    assert float(shown) == pytest.approx(float(rate), rel=0.05)  # the form shows %.1e
    wait_for_text(page, rf"the form has {re.escape(rate)}")
    steps(page, "suggestion-used")
    page.reload()
    wait_idle(page)
    shown = page.get_by_role("spinbutton", name="Learning rate").first.input_value()
    assert float(shown) == pytest.approx(float(rate), rel=0.05)
    assert "Suggested learning rate" in main_text(page)  # the result is still there, open
