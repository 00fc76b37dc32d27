"""The binding layer: every config field has a widget (or is marked CLI-only), built from its metadata."""

from __future__ import annotations

import dataclasses

import pytest
from drafts_helper import draft_of, open_page

from lib import drafts
from lib.config import (
    AugmentConfig,
    ConvBlock,
    DataConfig,
    HeadConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from pages import ui

CONFIGS = (DataConfig, AugmentConfig, ModelConfig, ConvBlock, HeadConfig, TrainConfig, RunConfig)

# (page, draft parts): together they show every widget a user can reach.
SCENARIOS = [
    ("dataset", {"data": DataConfig(source="shapes", shapes_count=60)}),
    ("dataset", {"data": DataConfig(source="folder", path="/nowhere")}),
    ("dataset", {"data": DataConfig(source="pixel_csv", path="/nowhere.csv")}),
    ("augmentation", {"data": DataConfig(source="shapes", shapes_count=60, shapes_size=16)}),
    ("model", {"model": ModelConfig(preset="fast_cnn")}),
    ("model", {"model": ModelConfig(preset="mobilenetv2")}),
    ("model", {"model": ModelConfig(preset="custom")}),
    ("train", {"data": DataConfig(source="shapes", shapes_count=600)}),
]


def test_every_config_field_has_a_widget_or_is_marked_cli_only():
    at = open_page(None)
    for page, parts in SCENARIOS:
        draft = draft_of(at)
        drafts.save(draft.with_parts(**parts))
        at.switch_page(f"pages/{page}.py")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
    bound = set(at.session_state[ui.FORM_BOUND])
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in CONFIGS
        for f in dataclasses.fields(cls)
        if not (f.metadata.get("cli_only") or f.metadata.get("part"))
        and f"{cls.__name__}.{f.name}" not in bound
    ]
    assert not missing, f"fields with no widget and not marked cli_only: {missing}"


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_has_a_label_and_choices_have_words(cls):
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli_only") or f.metadata.get("part"):
            continue
        assert f.metadata.get("label"), f"{cls.__name__}.{f.name} has no label"


def test_a_recipe_reaches_every_train_widget_at_once():
    """The form is seeded from the draft whenever the draft changes elsewhere (another tab)."""
    at = open_page("train", data=DataConfig(source="shapes", shapes_count=600))
    changed = TrainConfig(epochs=9, learning_rate=1e-3, schedule="step", tta_flip=True, seed=7)
    drafts.save(draft_of(at).with_parts(train=changed))  # as another tab would
    at.run()
    for name, value in changed.to_dict().items():
        key = f"{ui.TRAIN_FIELD_PREFIX}{name}"
        assert at.session_state[key] == value, name


def test_a_refused_value_goes_back_and_says_why():
    at = open_page("train", data=DataConfig(source="shapes", shapes_count=600))
    at.number_input(key=f"{ui.TRAIN_FIELD_PREFIX}warmup_epochs").set_value(50.0).run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Not changed" in errors and "'Warm-up epochs' (50.0) must be shorter" in errors, errors
    assert at.number_input(key=f"{ui.TRAIN_FIELD_PREFIX}warmup_epochs").value == 0.3
    assert draft_of(at).train.warmup_epochs == 0.3
