"""The Train page (AppTest): start a tiny run, watch its progress render, stop it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from drafts_helper import draft_of, open_page, reload
from streamlit.testing.v1 import AppTest

from lib import augment, measured, runstore
from lib.config import AugmentConfig, ConvBlock, DataConfig, HeadConfig, ModelConfig
from lib.recipes import RECIPES
from pages import ui

ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT_S = 240


TINY_MODEL = ModelConfig(
    preset="custom",
    blocks=(ConvBlock(filters=8, batch_norm=False),),
    head=HeadConfig(dense=(16,)),
)


HOLDS_THIS = "The form below holds this recipe."
HOLDS_OTHER = "The form below holds other values than this recipe"


def open_train_page(data: DataConfig = DataConfig(source="digits"), **parts) -> AppTest:  # noqa: B008
    parts.setdefault("model", TINY_MODEL)
    return open_page("train", data=data, **parts)


def field(at: AppTest, name: str):
    return at.number_input(key=f"{ui.TRAIN_FIELD_PREFIX}{name}")


def widget_value(at: AppTest, name: str):
    """The value the Train form shows for TrainConfig field ``name``, whatever its widget."""
    key = f"{ui.TRAIN_FIELD_PREFIX}{name}"
    for kind in ("number_input", "selectbox", "checkbox", "toggle", "slider", "radio"):
        found = [w for w in at.get(kind) if w.key == key]
        if found:
            return found[0].value
    raise AssertionError(f"no widget for {name}")


def texts(at: AppTest) -> str:
    parts = [p.value for p in at.markdown] + [p.value for p in at.caption]
    parts += [f"{m.label}={m.value}" for m in at.metric]
    parts += [str(e.value) for e in at.info] + [str(e.value) for e in at.success]
    return "\n".join(parts)


def test_start_watch_and_stop_a_run():
    at = open_train_page()
    assert "digits (8×8)" in texts(at)
    field(at, "epochs").set_value(200)
    field(at, "batch_size").set_value(64)
    at.selectbox(key=f"{ui.TRAIN_FIELD_PREFIX}schedule").set_value("constant")
    at.button(key=ui.TRAIN_START).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    run_id = at.session_state[ui.SELECTED_RUN]
    assert run_id and runstore.read_status(runstore.run_dir(run_id)).state == "running"

    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while "Batch " not in " ".join(str(p.text) for p in at.get("progress")):
        assert time.monotonic() < deadline, texts(at)
        time.sleep(1.0)
        at.run()
    assert "Images/s" in texts(at) and "Epoch " in " ".join(str(p.text) for p in at.get("progress"))

    at.button(key=ui.TRAIN_STOP).click()
    at.run()
    status = runstore.read_status(runstore.run_dir(run_id))
    assert status.stop_requested or status.state == "stopped"  # the worker may be quick
    deadline = time.monotonic() + 60
    while runstore.read_status(runstore.run_dir(run_id)).state != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    at.run()
    assert "Stopped" in texts(at)
    assert not at.button(key=ui.TRAIN_RESUME).disabled


def test_a_refused_recipe_shows_a_message_and_starts_nothing():
    at = open_train_page()
    field(at, "batch_size").set_value(5000)
    at.button(key=ui.TRAIN_START).click()
    at.run()
    assert any(
        "'Batch size' (5000) is larger than the training split" in e.value for e in at.error
    ), [e.value for e in at.error]
    assert runstore.list_run_dirs() == []


def test_picking_the_accurate_recipe_sets_model_augmentation_and_training():
    at = open_train_page()
    data_before = draft_of(at).data
    at.selectbox(key=ui.TRAIN_RECIPE).set_value("accurate")
    at.run()
    # Picked, not used: the page says the form is not this recipe (yet).
    assert HOLDS_OTHER in texts(at) and HOLDS_THIS not in texts(at)
    at.button(key=ui.TRAIN_RECIPE_USE).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert HOLDS_THIS in texts(at) and HOLDS_OTHER not in texts(at)
    draft = draft_of(at)
    assert draft.model == RECIPES["accurate"].model
    assert draft.augment.horizontal_flip
    assert draft.train == RECIPES["accurate"].train
    assert draft.data == data_before
    # the form shows the recipe, every field of it
    for name, value in RECIPES["accurate"].train.to_dict().items():
        assert widget_value(at, name) == value, name
    assert RECIPES["accurate"].model.preset in " ".join(md.value for md in at.markdown)


def test_on_the_shapes_set_the_fast_cnn_gets_the_shapes_recipe_offered():
    at = open_train_page(DataConfig(), model=ModelConfig())  # the defaults: shapes, Fast CNN
    assert "Generated shapes" in texts(at)
    data_before = draft_of(at).data
    at.button(key=ui.TRAIN_SHAPES_USE).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    draft = draft_of(at)
    shapes = RECIPES["shapes"]
    assert (draft.model, draft.train, draft.augment) == (shapes.model, shapes.train, shapes.augment)
    assert draft.data == data_before
    for name, value in shapes.train.to_dict().items():
        assert widget_value(at, name) == value, name
    assert at.selectbox(key=ui.TRAIN_RECIPE).value == "shapes"
    assert "Generated shapes" not in texts(at)  # offered while it applies, not after
    assert not runstore.list_run_dirs()
    again = reload(at, "train")  # a new session: the picker starts on the recipe the form holds
    assert again.selectbox(key=ui.TRAIN_RECIPE).value == "shapes"
    assert open_train_page().selectbox(key=ui.TRAIN_RECIPE).value == "fast"  # none held


def test_the_shapes_offer_is_not_made_for_other_datasets_or_models():
    assert "Generated shapes" not in texts(open_train_page(model=ModelConfig()))  # digits
    assert "Generated shapes" not in texts(open_train_page(DataConfig()))  # a custom CNN


def test_on_digits_a_mirroring_recipe_gets_one_click_to_turn_mirroring_off():
    precise = RECIPES["precise"]
    at = open_train_page(model=precise.model, augment=precise.augment, train=precise.train)
    assert "Mirroring digits" in texts(at) and "Horizontal flip" in texts(at)
    at.button(key=ui.TRAIN_MIRROR_OFF).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    draft = draft_of(at)
    assert draft.augment == AugmentConfig(preset="none")
    assert draft.train == precise.train.replace(tta_flip=False)
    assert draft.model == precise.model and draft.data == DataConfig(source="digits")
    assert widget_value(at, "tta_flip") is False  # the form shows it at once
    assert "Mirroring is off" in texts(at)
    assert "Mirroring digits" not in texts(at)
    assert HOLDS_OTHER in texts(at)  # Precise stays picked; the form is no longer it
    assert not runstore.list_run_dirs()
    again = reload(at, "train")
    assert "Mirroring digits" not in texts(again) and widget_value(again, "tta_flip") is False
    # A new session cannot tell which recipe the changed form came from: the picker's
    # default is not claimed to be what the form holds.
    assert again.selectbox(key=ui.TRAIN_RECIPE).value == "fast"
    assert HOLDS_OTHER in texts(again) and HOLDS_THIS not in texts(again)


def test_the_mirroring_offer_is_not_made_where_mirroring_keeps_the_class():
    precise = RECIPES["precise"]
    parts = {"model": precise.model, "augment": precise.augment, "train": precise.train}
    assert "Mirroring digits" not in texts(open_train_page(DataConfig(), **parts))  # shapes
    assert "Mirroring digits" not in texts(open_train_page())  # digits, no mirroring


@pytest.mark.parametrize("native", [False, True])
def test_the_page_says_what_this_server_trains_in(monkeypatch, tmp_path, native):
    from lib import hardware

    precise = RECIPES["precise"]
    # A results file of an AVX2 machine that measured Precise as it is defined now, its
    # training stopped by the benchmark's budget after 3.7 epochs.
    entry = {
        "final_test_accuracy": 0.897,
        "epochs_done": 3.7,
        "train_seconds": 604.0,
        "epochs_planned": precise.train.epochs,
        "config": measured.recipe_identity(precise),
    }
    report = {"date": "2026-02-01", "machine": {"cores": 2, "gpus": [], "cpu_flags": ["avx2"]},
              "benchmarks": {"time_to_accuracy": {"result": {
                  "dataset": "fashion_mnist", "recipes": {"precise": entry}}}}}  # fmt: skip
    (tmp_path / "avx2-2026-02-01.json").write_text(json.dumps(report))
    monkeypatch.setattr(measured, "RESULTS_DIR", tmp_path)
    measured.clear_cache()
    monkeypatch.setattr(hardware, "nvidia_driver_present", lambda *a: False)
    monkeypatch.setattr(hardware, "cpu_native_bfloat16", lambda *a: native)
    monkeypatch.setattr(hardware, "server_tier", lambda: "avx2")
    at = open_train_page(model=precise.model, augment=precise.augment, train=precise.train)
    at.selectbox(key=ui.TRAIN_RECIPE).set_value("precise").run()
    slow = "This server's CPU has no native bfloat16"
    assert (slow in texts(at)) is not native
    # Where a CPU of this server's kind measured the recipe, the page says how long it takes:
    # the pace of the epochs the budget allowed, carried over the rest.
    here = measured.schedule_sentence("precise", "avx2")
    minutes = round(604.0 * precise.train.epochs / 3.7 / 60)
    assert here.startswith(f"its {precise.train.epochs} epochs take about {minutes} min "), here
    assert (f"a CPU of its kind, {here}" in texts(at)) is not native
    expected = "bfloat16 (mixed)" if native else "float32"
    assert f"Here it trains in {expected}" in texts(at)
    # The caption follows the field: "off" is float32 on any CPU.
    at.selectbox(key=f"{ui.TRAIN_FIELD_PREFIX}mixed_precision").set_value("off").run()
    assert not at.exception
    assert "Here it trains in float32." in texts(at)
    at.selectbox(key=ui.TRAIN_RECIPE).set_value("fast").run()  # sized for no CPU in particular
    assert slow not in texts(at)


def test_editing_a_field_starts_nothing_and_is_saved_at_once():
    at = open_train_page()
    field(at, "epochs").set_value(3).run()  # what Enter in the field does: commit the value
    at.text_input(key=ui.TRAIN_RUN_NAME).input("my run").run()
    assert not at.exception
    assert runstore.list_run_dirs() == []
    draft = draft_of(at)
    assert draft.train.epochs == 3 and draft.run_name == "my run"


def test_two_clicks_on_start_make_one_run_and_the_run_is_the_form():
    at = open_train_page()
    field(at, "epochs").set_value(2)
    field(at, "learning_rate").set_value(2e-3)
    at.selectbox(key=f"{ui.TRAIN_FIELD_PREFIX}schedule").set_value("constant")
    at.text_input(key=ui.TRAIN_RUN_NAME).input("exact")
    at.button(key=ui.TRAIN_START).click().run()
    at.button(key=ui.TRAIN_START).click().run()
    assert not at.exception
    runs = runstore.list_run_dirs()
    assert len(runs) == 1
    assert any("already started" in s.value for s in at.info), [s.value for s in at.info]
    config = runstore.read_config(runs[0])
    assert config == draft_of(at).run_config()
    assert config.name == "exact" and config.train.epochs == 2
    assert config.train.learning_rate == 2e-3 and config.train.schedule == "constant"
    for name, value in config.train.to_dict().items():
        assert widget_value(at, name) == value, name
    at.button(key=ui.TRAIN_STOP).click().run()


def test_weights_that_cannot_be_had_are_refused_before_any_run_exists():
    model = ModelConfig(preset="mobilenetv2", weights="imagenet")
    at = open_train_page(
        data=DataConfig(source="shapes", shapes_count=600, shapes_size=32), model=model
    )
    at.button(key=ui.TRAIN_START).click().run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Not started" in errors and "Initial weights to 'random'" in errors, errors
    assert runstore.list_run_dirs() == []


def test_small_dataset_advice_applies_in_one_click():
    data = DataConfig(source="digits", max_per_class=30)
    at = open_train_page(data=data)
    text = " ".join(m.value for m in at.markdown)
    assert "Small dataset" in text and "few training images per class" in text
    at.button(key=ui.TRAIN_ADVICE_APPLY).click().run()
    assert not at.exception
    draft = draft_of(at)
    # On digits, the light preset's transforms without its mirroring (which the mirroring
    # advice would then ask to undo).
    light = augment.PRESETS["light"]
    assert draft.augment == light.replace(preset="custom", horizontal_flip=False)
    assert draft.data == data
    assert "Mirroring digits" not in texts(at)


def test_the_runs_table_names_the_study_of_a_trial_run():
    from lib.config import RunConfig

    plain = runstore.create_run(RunConfig(name="by hand", data=DataConfig(source="digits")))
    trial = runstore.create_run(RunConfig(name="sweep #1", data=DataConfig(source="digits")))
    for path in (plain, trial):
        runstore.update_status(path, state="completed", started=time.time() - 5, ended=time.time())
    runstore.atomic_write_json(
        trial / runstore.TRIAL_FILE, {"study": "sweep", "trial_number": 1, "pruned_epoch": 3}
    )
    trial0 = runstore.create_run(RunConfig(name="sweep #0", data=DataConfig(source="digits")))
    runstore.update_status(trial0, state="completed", started=time.time(), ended=time.time())
    runstore.atomic_write_json(trial0 / runstore.TRIAL_FILE, {"study": "sweep", "trial_number": 0})
    at = open_train_page()
    table = at.dataframe[0].value
    by_name = dict(zip(table["name"], table["study"], strict=True))
    assert by_name == {
        "by hand": "",
        "sweep #1": "sweep · trial 1 (pruned at epoch 3)",
        "sweep #0": "sweep · trial 0",
    }
    # The filter shows one study's trials together, in trial order, or the other runs.
    show = at.selectbox(key=ui.TRAIN_RUNS_FILTER)
    assert show.options == ["All runs", "Runs outside studies", "Study sweep: its trials"]
    show.set_value("sweep").run()
    assert at.dataframe[0].value["name"].tolist() == ["sweep #0", "sweep #1"]
    at.selectbox(key=ui.TRAIN_RUNS_FILTER).set_value(" none").run()
    assert at.dataframe[0].value["name"].tolist() == ["by hand"]
    # The filter is kept beside the draft: another page and back, or a reload, keep it.
    at.switch_page("pages/evaluate.py").run()
    at.switch_page("pages/train.py").run()
    for page in (at, reload(at, "train")):
        assert page.selectbox(key=ui.TRAIN_RUNS_FILTER).value == " none"
        assert page.dataframe[0].value["name"].tolist() == ["by hand"]


def test_start_refuses_a_recipe_another_tab_changed_after_the_page_showed_it():
    from lib import drafts

    at = open_train_page()
    assert "digits (8×8)" in texts(at)
    # Another tab on the same draft (the same address) switches the dataset.
    other = DataConfig(source="shapes", shapes_count=600, shapes_size=16)
    drafts.save(draft_of(at).with_parts(data=other))
    at.button(key=ui.TRAIN_START).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert runstore.list_run_dirs() == []  # the page showed digits: nothing starts
    (refusal,) = [e.value for e in at.error]
    assert refusal.startswith("Not started: the dataset, augmentation or model was changed")
    # The page now shows the shapes set; Start trains what it shows.
    sidebar = " ".join(md.value for md in at.sidebar.markdown)
    assert "shapes (600 × 16px)" in sidebar and "digits" not in sidebar
    at.button(key=ui.TRAIN_START).click().run()
    assert not at.error, [e.value for e in at.error]
    (run,) = runstore.list_run_dirs()
    assert runstore.read_config(run).data == other
    at.button(key=ui.TRAIN_STOP).click().run()
