"""The Tune page and the Train page's learning-rate finder (AppTest).

The search space is built from the same metadata as the forms; a study starts its
workers; "Use best" puts the best trial's recipe into the draft. The finder runs
a real (short) sweep in its own process.
"""

from __future__ import annotations

import time

import optuna
import pandas as pd
import pytest
from drafts_helper import draft_of, open_page
from streamlit.testing.v1 import AppTest

from lib import lr_finder, runstore, tuning
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
from pages import ui

TINY_MODEL = ModelConfig(
    preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
)
DIGITS = DataConfig(source="digits")


def open_tune(**parts) -> AppTest:
    parts.setdefault("data", DIGITS)
    parts.setdefault("model", TINY_MODEL)
    return open_page("tune", **parts)


def toggle(at: AppTest, path: str):
    return at.toggle(key=f"{ui.TUNE_FIELD}{path}")


def errors(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in at.error)


def test_every_searchable_field_has_a_toggle_and_learning_rate_is_log():
    at = open_tune()
    keys = {t.key for t in at.toggle}
    for part in tuning.SEARCH_PARTS:
        for name in tuning.searchable_fields(part):
            assert f"{ui.TUNE_FIELD}{part}.{name}" in keys
    assert at.button(key=ui.TUNE_START).disabled  # nothing searched yet
    toggle(at, "train.learning_rate").set_value(True).run()
    low = at.number_input(key=f"{ui.TUNE_FIELD}train.learning_rate__low")
    high = at.number_input(key=f"{ui.TUNE_FIELD}train.learning_rate__high")
    draft_lr = draft_of(at).train.learning_rate
    assert low.value == pytest.approx(draft_lr / 10) and high.value == pytest.approx(draft_lr * 10)
    assert "searched on a log scale" in "\n".join(c.value for c in at.caption)
    toggle(at, "train.optimizer").set_value(True).run()
    subset = at.multiselect(key=f"{ui.TUNE_FIELD}train.optimizer__choices")
    assert subset.value == ["adam"] and set(subset.options) >= {"Adam", "SGD"}
    assert not at.button(key=ui.TUNE_START).disabled


def test_a_bad_range_is_refused_and_nothing_is_created():
    at = open_tune()
    toggle(at, "model.dropout").set_value(True).run()
    at.number_input(key=f"{ui.TUNE_FIELD}model.dropout__low").set_value(0.5).run()
    at.number_input(key=f"{ui.TUNE_FIELD}model.dropout__high").set_value(0.1).run()
    at.button(key=ui.TUNE_START).click().run()
    assert "above the highest" in errors(at)
    assert tuning.list_studies() == []


def test_start_a_study_watch_a_trial_appear_and_stop_the_study(monkeypatch):
    at = open_tune()
    at.text_input(key=ui.TUNE_NAME).set_value("page study")
    at.number_input(key=ui.TUNE_TRIALS).set_value(2)
    at.number_input(key=ui.TUNE_EPOCHS).set_value(1)
    toggle(at, "train.learning_rate").set_value(True).run()
    at.button(key=ui.TUNE_START).click().run()
    assert not errors(at), errors(at)
    folder = tuning.study_dir("page-study")
    spec = tuning.read_spec(folder)
    assert list(spec.space) == ["train.learning_rate"] and spec.space["train.learning_rate"]["log"]
    assert spec.base.model == TINY_MODEL and spec.budget_epochs == 1 and spec.n_trials == 2
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        at.run()
        frames = [d.value for d in at.dataframe]
        # a trial Optuna has just started has no learning rate until its objective suggests
        # one (a full suite run saw that row): wait for the suggested value
        if frames and len(frames[0]) >= 1 and pd.notna(frames[0].loc[0, "Learning rate"]):
            break
        time.sleep(1)
    table = at.dataframe[0].value
    # "starting" while the trial waits for its run to be created (lib.tuning.trial_rows)
    assert table.loc[0, "trial"] == 0
    assert table.loc[0, "state"] in ("starting", "queued", "running")
    assert 3e-4 <= table.loc[0, "Learning rate"] <= 3e-2
    at.button(key=ui.TUNE_STOP).click().run()
    assert tuning.stop_requested(folder)
    deadline = time.monotonic() + 240
    while tuning.live_workers(folder) and time.monotonic() < deadline:
        time.sleep(1)
    at.run()
    assert not tuning.live_workers(folder)
    assert "stopped" in "\n".join(m.value for m in at.markdown)
    assert at.button(key=ui.TUNE_RESUME)  # a stopped study can be resumed


def finished_study() -> tuple[tuning.StudySpec, str]:
    """A study with two told trials whose runs exist (no training)."""
    base = RunConfig(data=DIGITS, model=TINY_MODEL)
    spec = tuning.StudySpec(
        name="done study",
        base=base,
        space={"train.learning_rate": {"low": 1e-4, "high": 1e-1}},
        n_trials=2,
        budget_epochs=3,
    )
    folder = tuning.create_study(spec)
    study = tuning.load_study(spec, folder)
    best_run = ""
    for value, lr in ((0.6, 0.02), (0.9, 0.004)):
        trial = study.ask()
        trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)
        cfg = tuning.apply_params(base, {"train.learning_rate": lr}, epochs=3)
        path = runstore.create_run(cfg)
        runstore.update_status(path, state="completed")
        trial.set_user_attr("run_id", path.name)
        trial.report(value, 1)
        study.tell(trial, value, state=optuna.trial.TrialState.COMPLETE)
        best_run = path.name
    return spec, best_run


def test_use_best_puts_the_best_trials_recipe_into_the_draft():
    _, best_run = finished_study()
    at = open_tune(train=TrainConfig(learning_rate=0.05, epochs=9))
    assert "finished" in "\n".join(m.value for m in at.markdown)
    assert at.dataframe[0].value["val accuracy"].tolist() == [0.6, 0.9]
    assert at.dataframe[0].value["run"].tolist()[1] == best_run
    at.button(key=ui.TUNE_USE_BEST).click().run()
    draft = draft_of(at)
    assert draft.train.learning_rate == 0.004 and draft.train.epochs == 3
    assert draft.data == DIGITS  # the dataset stays the draft's
    at.switch_page("pages/train.py")
    at.run()
    assert at.number_input(key=f"{ui.TRAIN_FIELD_PREFIX}learning_rate").value == 0.004
    assert at.number_input(key=f"{ui.TRAIN_FIELD_PREFIX}epochs").value == 3


def test_save_best_without_a_model_says_why():
    finished_study()
    at = open_tune()
    at.button(key=ui.TUNE_SAVE).click().run()
    assert "Not saved" in errors(at)


def test_learning_rate_finder_on_the_train_page_applies_its_suggestion():
    at = open_page("train", data=DIGITS, model=TINY_MODEL, train=TrainConfig(batch_size=32))
    at.button(key=ui.TRAIN_LRF_START).click().run()
    folder = lr_finder.folder_for(draft_of(at).id)
    deadline = time.monotonic() + 240
    while lr_finder.state(folder)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
    at.run()
    state = lr_finder.state(folder)
    assert state["state"] == "done", state
    rate = float(f"{state['result'].suggestion:.2g}")
    apply = at.button(key=ui.TRAIN_LRF_APPLY)
    assert apply.label == f"Use {rate:.2g}"
    apply.click().run()
    assert draft_of(at).train.learning_rate == rate
    assert at.number_input(key=f"{ui.TRAIN_FIELD_PREFIX}learning_rate").value == rate


def test_the_study_shown_stays_picked_through_another_page_and_a_reload():
    import dataclasses

    from drafts_helper import reload

    spec, _ = finished_study()
    tuning.create_study(dataclasses.replace(spec, name="another study"))
    assert len(tuning.list_studies()) == 2
    at = open_tune()
    picker = at.selectbox(key=ui.TUNE_PICK)
    other = next(o for o in tuning.list_studies() if o.name != picker.value).name
    picker.set_value(other).run()
    at.switch_page("pages/train.py").run()
    at.switch_page("pages/tune.py").run()
    for page in (at, reload(at, "tune")):
        assert not page.exception, [e.value for e in page.exception]
        assert page.selectbox(key=ui.TUNE_PICK).value == other


def test_optunas_charts_are_made_again_only_when_a_trial_has_finished(monkeypatch):
    import optuna.visualization as visualization  # the module (optuna.visualization is lazy)

    spec, _ = finished_study()
    made = []
    real = visualization.plot_param_importances

    def counted(study, *args, **kwargs):
        made.append(len(study.trials))
        return real(study, *args, **kwargs)

    monkeypatch.setattr(visualization, "plot_param_importances", counted)
    at = open_tune()
    assert made == [2]
    assert [t.label for t in at.tabs][-4:] == [
        "History", "Parallel coordinates", "Importance", "Slices"
    ]  # fmt: skip
    assert not [c.value for c in at.caption if "Not available" in c.value]
    at.run()
    at.run()  # the panel's refreshes: the charts are the ones made, not made again
    assert made == [2]
    study = tuning.load_study(spec, tuning.study_dir(spec.slug))
    trial = study.ask()
    trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)
    study.tell(trial, 0.7, state=optuna.trial.TrialState.COMPLETE)
    at.run()
    assert made == [2, 3]  # a third finished trial: made again, with it
