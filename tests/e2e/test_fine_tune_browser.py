"""Phase two of transfer learning, as a person does it in Chromium.

A MobileNetV2 run trained its head on cached features; on the Train page the
person watches it, presses Fine-tune, reads the form (it did not start), reloads,
checks the Model page, presses Start, and the run that trains is exactly the
recipe the form showed: it starts from the first run, with the top unfrozen.
"""

from __future__ import annotations

import time

import pytest
from helpers import (
    assert_healthy,
    click,
    main_text,
    navigate,
    open_page,
    options,
    select,
    wait_idle,
)

from lib import fine_tune, jobs, runstore
from lib.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tests.tiny_runs import make_built_dataset

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 300


def _wait_state(run_id: str, states: tuple[str, ...]) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while runstore.read_status(runstore.run_dir(run_id)).state not in states:
        assert time.monotonic() < deadline, runstore.read_status(runstore.run_dir(run_id))
        time.sleep(0.5)


@pytest.fixture(scope="module")
def head_run(streamlit_server) -> str:
    """A completed MobileNetV2 run (random weights) whose head trained on cached features."""
    ref = make_built_dataset("pets", ("cat", "dog"), 8, seed=2)
    cfg = RunConfig(
        name="pets head",
        data=DataConfig(
            source="dataset", path=ref, val_fraction=0.25,
            test_fraction=0.25,
        ),
        model=ModelConfig(preset="mobilenetv2", weights="none"),
        train=TrainConfig(epochs=2, batch_size=4, schedule="constant"),
    )  # fmt: skip
    run_id = jobs.start_run(cfg, validate=False)
    _wait_state(run_id, ("completed", "failed"))
    assert runstore.read_status(runstore.run_dir(run_id)).state == "completed"
    return run_id


def _number(page, label: str) -> str:
    return page.get_by_role("spinbutton", name=label).first.input_value()


def test_fine_tune_fills_the_form_and_trains_exactly_what_it_shows(
    streamlit_server, head_run, page, steps
):
    open_page(page, streamlit_server, "train")
    select(
        page,
        "Watching run",
        next(o for o in options(page, "Watching run") if o.startswith("pets head")),
    )
    click(page, "Fine-tune")
    steps(page, "fine-tune-loaded")
    text = main_text(page)
    assert "The form now fine-tunes run pets head" in text, text
    assert "press Start training" in text
    card = f"starts from run {head_run}'s trained weights · last 20 backbone layers train"
    assert card in text, text  # the recipe card says where the weights come from
    before = {p.name for p in runstore.list_run_dirs()}
    assert before == {head_run}, "Fine-tune started a run by itself"
    assert _number(page, "Epochs") == str(fine_tune.FINE_TUNE_EPOCHS)
    assert float(_number(page, "Learning rate")) == fine_tune.FINE_TUNE_LEARNING_RATE

    page.reload()  # nothing of it is lost
    wait_idle(page)
    assert_healthy(page)
    assert _number(page, "Epochs") == str(fine_tune.FINE_TUNE_EPOCHS)
    navigate(page, "Model")
    steps(page, "model-page")
    shown = page.get_by_role("combobox", name="Start from a trained run").first.input_value()
    assert shown.startswith("pets head"), shown
    unfrozen = int(_number(page, "Unfreeze the last N backbone layers"))
    assert unfrozen == fine_tune.FINE_TUNE_LAYERS

    navigate(page, "Train")
    click(page, "Start training")
    steps(page, "started")
    new = {p.name for p in runstore.list_run_dirs()} - before
    assert len(new) == 1, new
    (second,) = new
    _wait_state(second, ("completed", "failed"))
    status = runstore.read_status(runstore.run_dir(second))
    assert status.state == "completed", status.error
    cfg = runstore.read_config(runstore.run_dir(second))
    assert cfg.model.start_from == head_run and cfg.model.unfreeze_last == unfrozen
    assert (cfg.train.epochs, cfg.train.learning_rate) == (
        fine_tune.FINE_TUNE_EPOCHS,
        fine_tune.FINE_TUNE_LEARNING_RATE,
    )
    assert cfg.name == "pets head fine-tuned"
    page.wait_for_timeout(1500)
    wait_idle(page)
    steps(page, "completed")
    assert_healthy(page)
