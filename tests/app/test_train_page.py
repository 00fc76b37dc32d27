"""The Train page (AppTest): start a tiny run, watch its progress render, stop it."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib import runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig
from pages import ui

ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT_S = 240


def open_train_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.session_state[ui.DATA] = DataConfig(source="digits")
    at.session_state[ui.MODEL] = ModelConfig(
        preset="custom",
        blocks=(ConvBlock(filters=8, batch_norm=False),),
        head=HeadConfig(dense=(16,)),
    )
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def field(at: AppTest, name: str):
    return at.number_input(key=f"{ui.TRAIN_FIELD_PREFIX}{name}")


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
    assert any("larger than the training split" in e.value for e in at.error)
    assert runstore.list_run_dirs() == []


def test_picking_the_accurate_recipe_sets_model_augmentation_and_training():
    at = open_train_page()
    data_before = at.session_state[ui.DATA]
    at.selectbox(key=ui.TRAIN_RECIPE).set_value("accurate")
    at.run()
    assert "93.5 %" in " ".join(c.value for c in at.caption)  # the recipe's description
    at.button(key=ui.TRAIN_RECIPE_USE).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[ui.MODEL].preset == "accurate_cnn"
    assert at.session_state[ui.AUGMENT].horizontal_flip
    assert at.session_state[ui.TRAIN].epochs == 20 and at.session_state[ui.TRAIN].tta_flip
    assert at.session_state[ui.DATA] == data_before
    assert field(at, "epochs").value == 20  # the form shows the recipe
    assert "accurate_cnn" in " ".join(md.value for md in at.markdown)
