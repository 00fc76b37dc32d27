"""The Evaluate and Compare pages on a finished tiny run (AppTest)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from drafts_helper import reload
from streamlit.testing.v1 import AppTest
from tiny_runs import make_finished_run

from lib import evaluation as ev
from lib import runs, runstore
from pages import ui

ROOT = Path(__file__).resolve().parents[2]


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


@pytest.fixture
def run_dir() -> Path:
    return make_finished_run(epochs=2)


def test_evaluate_computes_predictions_then_a_selected_cell_fills_the_gallery(run_dir):
    at = open_page("pages/evaluate.py")
    assert not ev.has_predictions(run_dir)
    at.button(key="evaluate_compute").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert ev.has_predictions(run_dir)
    assert at.session_state[ui.SELECTED_RUN] == run_dir.name

    preds = ev.load_predictions(run_dir)
    head = ev.summary(preds)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Accuracy"] == f"{head['accuracy']:.1%}"
    assert shown["Top-5 accuracy"] == f"{head['top_k_accuracy']:.1%}"
    assert shown["Macro F1"] == f"{head['macro_f1']:.3f}"
    matrix_tab = at.tabs[0]
    assert len(matrix_tab.image) == 0  # nothing selected yet: no gallery
    assert any("Click a tile" in i.value for i in matrix_tab.info)

    # The most confused cell, selected the way a click on its tile selects it.
    cm = ev.confusion_counts(preds.y_true, preds.y_pred, preds.num_classes)
    off = cm - np.diag(np.diag(cm))
    i, j = divmod(int(np.argmax(off)), preds.num_classes)
    assert off[i, j] > 0
    at.session_state[ui.EVAL_CELL] = (run_dir.name, i, j)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    matrix_tab = at.tabs[0]
    expected = ev.cell_positions(preds, i, j)
    captions = [c for img in matrix_tab.image for c in img.captions]
    assert captions == [f"{preds.confidence[p]:.1%}" for p in expected]
    assert len(captions) == cm[i, j]
    assert [h.value for h in matrix_tab.subheader] == [f"{i} → {j}"]
    assert any(f"{cm[i, j]} mistaken images" in c.value for c in matrix_tab.caption)
    # The clicked tile is outlined in the matrix.
    spec = json.loads(matrix_tab.get("plotly_chart")[0].proto.spec)
    (outline,) = spec["layout"]["shapes"]
    assert (outline["x0"], outline["y0"]) == (j - 0.5, i - 0.5)

    # A correct cell too: its images are exactly the ones of class i predicted i.
    at.session_state[ui.EVAL_CELL] = (run_dir.name, i, i)
    at.run()
    assert len([c for img in at.tabs[0].image for c in img.captions]) == cm[i, i]
    assert len(at.get("download_button")) == 3


def test_evaluate_says_what_the_run_computed_in(run_dir):
    """Mixed precision "auto" means bfloat16 on some CPUs: the page says which, from metrics.json."""
    at = open_page("pages/evaluate.py")
    assert not any("trained in" in c.value for c in at.caption)  # not recorded: nothing said
    metrics = run_dir / runstore.METRICS_FILE
    metrics.write_text(
        json.dumps({**json.loads(metrics.read_text()), "precision": "mixed_bfloat16"})
    )
    at = open_page("pages/evaluate.py")
    captions = [c.value for c in at.caption]
    assert any("trained in bfloat16 (mixed)" in c for c in captions), captions


def test_compare_shows_two_runs_side_by_side(run_dir):
    ev.compute_predictions(run_dir)
    # A second completed run: the same artifacts under a new id, created later.
    twin = run_dir.parent / "twin-run"
    shutil.copytree(run_dir, twin)
    runstore.update_status(twin, created=runstore.read_status(run_dir).created + 1)
    at = open_page("pages/compare.py")
    table = at.dataframe[0].value
    # name · dataset · accuracy · date; the two copies read alike, so their ids tell them apart.
    label = runs.run_label(runs.view_of(run_dir))
    twin_label = runs.run_label(runs.view_of(twin))
    if label == twin_label:
        label, twin_label = f"{label} ({run_dir.name})", f"{twin_label} ({twin.name})"
    assert list(table.columns) == ["", twin_label, label]
    assert label.startswith("tiny digits · digits · ")
    rows = dict(zip(table[""], table[label], strict=True))
    assert rows["dataset"] == "digits" and rows["epochs"] == "2"
    assert rows["parameters"] == f"{8 * 8 * 16 + 16 + 16 * 10 + 10:,}"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(spec["data"]) == 2  # one validation curve per run


def _copies(run_dir: Path, n: int) -> list[Path]:
    """``n`` more completed runs: ``run_dir``'s artifacts under new ids, each created later."""
    made = []
    for k in range(1, n + 1):
        twin = run_dir.parent / f"{run_dir.name}-copy{k}"
        shutil.copytree(run_dir, twin)
        runstore.update_status(twin, created=runstore.read_status(run_dir).created + k)
        made.append(twin)
    return made


def test_compare_keeps_its_picks_through_another_page_a_reload_and_a_deleted_run(run_dir):
    second, third = _copies(run_dir, 2)
    at = open_page("pages/compare.py")
    assert not at.exception
    picker = at.multiselect(key=ui.COMPARE_RUNS)
    assert picker.value == [third.name, second.name]  # the newest two, to begin with
    picker.set_value([third.name, second.name, run_dir.name])
    at.run()
    at.radio(key=ui.COMPARE_METRIC).set_value("val_loss")
    at.run()
    at.selectbox(key=ui.COMPARE_DIFF_A).set_value(second.name)
    at.run()
    at.selectbox(key=ui.COMPARE_DIFF_B).set_value(third.name)
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    def shown(page: AppTest):
        return (
            page.multiselect(key=ui.COMPARE_RUNS).value,
            page.radio(key=ui.COMPARE_METRIC).value,
            page.selectbox(key=ui.COMPARE_DIFF_A).value,
            page.selectbox(key=ui.COMPARE_DIFF_B).value,
        )

    picked = ([third.name, second.name, run_dir.name], "val_loss", second.name, third.name)
    assert shown(at) == picked
    # Another page and back: Streamlit forgets the widgets of a page it does not draw.
    at.switch_page("pages/evaluate.py")
    at.run()
    at.switch_page("pages/compare.py")
    at.run()
    assert shown(at) == picked
    again = reload(at, "compare")
    assert shown(again) == picked
    assert len(json.loads(again.get("plotly_chart")[0].proto.spec)["data"]) == 3
    # A run deleted meanwhile is left out of the picks; the others stay.
    shutil.rmtree(second)
    runs.clear_cache()
    again = reload(again, "compare")
    assert again.multiselect(key=ui.COMPARE_RUNS).value == [third.name, run_dir.name]
    assert again.selectbox(key=ui.COMPARE_DIFF_B).value == third.name


def test_the_run_diff_computes_missing_predictions_when_asked(run_dir):
    (second,) = _copies(run_dir, 1)
    assert not ev.has_predictions(run_dir) and not ev.has_predictions(second)
    at = open_page("pages/compare.py")
    (notice,) = [i.value for i in at.info if "no stored predictions" in i.value]
    assert "have no stored predictions" in notice
    assert not [m for m in at.metric if m.label == "Common test images"]
    at.button(key=ui.COMPARE_DIFF_PREDICT).click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert ev.has_predictions(run_dir) and ev.has_predictions(second)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Common test images"] == f"{len(ev.load_predictions(run_dir).y_true):,}"
    assert shown["Wrong → right"] == "0" and shown["Right → wrong"] == "0"  # the same model


def test_evaluate_keeps_the_clicked_tile_and_the_values_through_a_reload(run_dir):
    ev.compute_predictions(run_dir)
    preds = ev.load_predictions(run_dir)
    cm = ev.confusion_counts(preds.y_true, preds.y_pred, preds.num_classes)
    at = open_page("pages/evaluate.py")
    at.radio(key=ui.EVAL_CM_MODE).set_value("share of true class")
    at.run()
    at.session_state[ui.EVAL_CELL] = (run_dir.name, 3, 3)  # as a click on the tile sets it
    at.run()
    at.selectbox(key=ui.EVAL_CURVE_CLASS).set_value(5)
    at.run()
    again = reload(at, "evaluate")
    assert again.radio(key=ui.EVAL_CM_MODE).value == "share of true class"
    assert again.selectbox(key=ui.EVAL_CURVE_CLASS).value == 5
    assert [h.value for h in again.tabs[0].subheader] == ["3 → 3"]
    assert len([c for img in again.tabs[0].image for c in img.captions]) == cm[3, 3]


def test_evaluate_labels_runs_and_keeps_the_pick_by_id(run_dir):
    ev.compute_predictions(run_dir)
    other = make_finished_run(name="![x](http://example.com/t.png) [link](http://example.com)")
    ev.compute_predictions(other)
    at = open_page("pages/evaluate.py")
    picker = at.selectbox(key=ui.EVAL_RUN)
    assert picker.value in {run_dir.name, other.name}
    labels = dict(zip([run_dir.name, other.name], [None, None], strict=True))
    for option in picker.options:
        name, dataset, accuracy, _date = option.split(" · ")
        assert dataset == "digits" and accuracy.endswith("%")
        labels[other.name if name.startswith("![x]") else run_dir.name] = option
    assert all(labels.values())
    picker.set_value(other.name)
    at.run()
    # The run's accuracy changes, and with it its label: the pick stays on the run.
    metrics = runstore.read_metrics(other)
    runstore.atomic_write_json(other / runstore.METRICS_FILE, {**metrics, "test_accuracy": 0.5})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    picker = at.selectbox(key=ui.EVAL_RUN)
    assert picker.value == other.name and "50.0%" in picker.options[picker.index]
    # The name is shown as text wherever markdown renders (no image, no link).
    markup = [m.value for m in (*at.markdown, *at.caption, *at.subheader, *at.info)]
    assert not any("![x](" in v or "[link](" in v for v in markup), markup


def _with_predictions(run_dir: Path) -> None:
    ev.compute_predictions(run_dir)


def test_robustness_report_is_started_from_the_page_then_shown_as_chart_and_table(
    run_dir, monkeypatch
):
    from lib import robustness

    _with_predictions(run_dir)
    started = []
    monkeypatch.setattr(robustness, "start_report", lambda run_id: started.append(run_id))
    at = open_page("pages/evaluate.py")
    at.button(key=ui.EVAL_ROBUSTNESS_START).click()
    at.run()
    assert started == [run_dir.name]
    assert not at.exception and not at.error
    robustness.compute_report(run_dir)  # what the job computes
    at.run()
    assert not at.exception and not at.error
    table = next(df.value for df in at.dataframe if "condition" in getattr(df.value, "columns", []))
    assert len(table) == 1 + 7 * 3 + 2 * 4
    assert set(table["condition"]) >= {"PGD", "FGSM", "jpeg", "occlusion"}
    assert any("clean accuracy" in c.value for c in at.caption)


def test_a_hardened_clone_is_made_in_one_click_and_compared_with_its_source(run_dir, monkeypatch):
    from lib import jobs, robustness

    _with_predictions(run_dir)
    robustness.compute_report(run_dir)
    monkeypatch.setattr(jobs, "start_run", lambda config: runstore.create_run(config).name)
    at = open_page("pages/evaluate.py")
    at.selectbox(key=ui.EVAL_ROBUSTNESS_METHOD).set_value(
        "Corruption augmentation (half the images)"
    )
    at.button(key=ui.EVAL_ROBUSTNESS_HARDEN).click()
    at.run()
    assert not at.exception and not at.error
    assert any("Hardened clone" in s.value for s in at.success)
    clone = next(
        p for p in runstore.runs_root().iterdir() if robustness.hardened_from(p) == run_dir.name
    )
    assert runstore.read_config(clone).augment.corruption == 0.5
    # the clone "trains": here, its folder gets the source's model and a report of its own
    shutil.copy(run_dir / runstore.MODEL_FILE, clone / runstore.MODEL_FILE)
    shutil.copy(run_dir / runstore.METRICS_FILE, clone / runstore.METRICS_FILE)
    runstore.update_status(clone, state="completed")
    ev.compute_predictions(clone)
    robustness.compute_report(clone)
    at = open_page("pages/evaluate.py")
    at.selectbox(key=ui.EVAL_RUN).set_value(clone.name)
    at.run()
    assert not at.exception and not at.error
    labels = {m.label for m in at.metric}
    assert {"PGD ε=2/255 accuracy", "Clean accuracy"} <= labels
    assert any("Hardened clone of" in m.value for m in at.markdown)


def test_the_selected_run_rides_in_the_address_so_a_reload_keeps_it(run_dir):
    """A reload is a new session with the same address: it must show the same run."""
    other = make_finished_run(name="later run", epochs=1)  # the newest: the default pick
    at = open_page("pages/evaluate.py")
    assert at.selectbox(key=ui.EVAL_RUN).value == other.name
    assert at.query_params[ui.RUN_PARAM] == other.name
    at.selectbox(key=ui.EVAL_RUN).set_value(run_dir.name)
    at.run()
    assert at.session_state[ui.SELECTED_RUN] == run_dir.name
    assert at.query_params[ui.RUN_PARAM] == run_dir.name

    # "Reload": a fresh session whose address carries the draft and the run.
    again = reload(at, "evaluate")
    assert again.selectbox(key=ui.EVAL_RUN).value == run_dir.name
    assert again.session_state[ui.DRAFT_ID] == at.session_state[ui.DRAFT_ID]


@pytest.mark.parametrize("wanted", ["20990101-000000-gone", "../../etc"])
def test_a_run_in_the_address_that_does_not_exist_is_said_not_followed(run_dir, wanted):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params[ui.RUN_PARAM] = wanted
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("was not found on this server" in w.value for w in at.warning)
    assert at.session_state[ui.SELECTED_RUN] is None
    assert ui.RUN_PARAM not in at.query_params
    at.switch_page("pages/evaluate.py")
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key=ui.EVAL_RUN).value == run_dir.name
