"""The Data health page on a finished check (AppTest): review, save a version, retrain."""

import time

import numpy as np
from drafts_helper import draft_of, open_page

from lib import datasets, health, runstore
from lib.config import DataConfig, TrainConfig
from lib.data import load_dataset
from pages import ui

DATA = DataConfig(source="shapes", shapes_count=120, shapes_size=32, seed=0)


def _finished_check():
    """A completed check of DATA whose queue holds three train images."""
    ds = load_dataset(DATA)
    y = ds.splits["train"].labels
    k = len(ds.class_names)
    queue = [
        health.QueueItem("label", "train", i, int(y[i]), (int(y[i]) + 1) % k, 0.9 - 0.1 * i)
        for i in range(3)
    ]
    report = health.HealthReport(
        class_names=list(ds.class_names),
        counts={"label": 3, "leakage": 0, "near_duplicate": 0, "outlier": 0},
        queue=queue,
        sizes={"train": len(y)},
        seconds={"cross-validation": 1.0},
    )
    path = health.create_check(DATA)
    health.write_report(path, report)
    runstore.update_status(path, state="completed", ended=time.time())
    return path, ds


def test_review_save_and_retrain(monkeypatch):
    path, ds = _finished_check()
    started = []
    monkeypatch.setattr(
        "lib.jobs.start_run", lambda config, **kw: started.append(config) or "run-from-health"
    )
    monkeypatch.setattr(runstore, "run_dir", lambda run_id: path)  # start_once's existence check
    at = open_page("health", data=DATA, train=TrainConfig(batch_size=16, epochs=1))
    shown = {m.label: m.value for m in at.metric}
    assert shown["Label issues"] == "3" and shown["Train/test leakage"] == "0"
    names = ds.class_names
    y = ds.splits["train"].labels
    suggested = names[(int(y[0]) + 1) % len(names)]
    assert at.selectbox(key=f"{ui.HEALTH_RELABEL_TO}_{path.name}_train:0").value == suggested

    at.button(key=ui.HEALTH_ACT + "relabel").click().run()  # image 1: relabel as suggested
    at.button(key=ui.HEALTH_ACT + "exclude").click().run()  # image 2: exclude
    at.button(key=ui.HEALTH_ACT + "keep").click().run()  # image 3: keep
    assert not at.exception, [e.value for e in at.exception]
    assert health.read_decisions(path) == {
        "train:0": {"action": "relabel", "label": suggested},
        "train:1": {"action": "exclude", "label": ""},
        "train:2": {"action": "keep", "label": ""},
    }
    assert "1 relabelled, 1 excluded, 1 kept" in "".join(m.value for m in at.markdown)

    at.button(key=ui.HEALTH_SAVE).click().run()
    assert not at.error, [e.value for e in at.error]
    cleaned = health.read_cleaned(path)
    assert cleaned is not None and cleaned.source == "dataset"
    name, version = datasets.parse_ref(cleaned.path)
    assert (
        sum(datasets.class_counts(name, version).values())
        == sum(len(s) for s in ds.splits.values()) - 1
    )
    assert load_dataset(DATA).splits["train"].labels.tolist() == y.tolist()  # source untouched

    at.button(key=ui.HEALTH_RETRAIN).click().run()
    assert not at.exception, [e.value for e in at.exception]
    said = [e.value for e in at.error] + [s.value for s in at.success]
    assert len(started) == 1 and started[0].data == cleaned, said
    assert draft_of(at).data == cleaned
    assert any("run-from-health" in s.value for s in at.success)


def test_no_check_yet_says_how_to_start():
    at = open_page("health", data=DATA)
    assert any("No health check yet" in i.value for i in at.info)
    assert at.button(key=ui.HEALTH_START)


def test_failed_check_shows_its_error():
    path = health.create_check(DATA)
    runstore.update_status(path, state="failed", error="the train split holds 3 images")
    at = open_page("health", data=DATA)
    assert any("holds 3 images" in e.value for e in at.error)
    assert np.all([not b.disabled for b in at.button if b.key == ui.HEALTH_START])


def test_the_check_and_the_issue_types_shown_survive_another_page_and_a_reload():
    from drafts_helper import reload

    checks = {_finished_check()[0].name for _ in range(2)}
    at = open_page("health", data=DATA)
    first = at.selectbox(key=ui.HEALTH_PICK).value
    (other,) = checks - {first}  # the one a person picks instead of the first shown
    at.selectbox(key=ui.HEALTH_PICK).set_value(other).run()
    at.multiselect(key=ui.HEALTH_ISSUES).set_value([]).run()  # a person clears the types
    assert any("Nothing to review" in i.value for i in at.info)
    at.switch_page("pages/dataset.py").run()
    at.switch_page("pages/health.py").run()
    for page in (at, reload(at, "health")):
        assert not page.exception, [e.value for e in page.exception]
        assert page.selectbox(key=ui.HEALTH_PICK).value == other
        assert page.multiselect(key=ui.HEALTH_ISSUES).value == []
        assert any("Nothing to review" in i.value for i in page.info)
