"""JSON's true and false are never numbers in a recipe, whichever way the recipe arrives.

Python's bool is an int subclass, so ``isinstance(True, int)`` holds and ``int(True)``
is 1: every path that reads a number has to refuse booleans explicitly. The table
below covers every whole-number and number field of every config, on every way in:
direct construction, ``replace``, ``from_dict``, nested JSON, a recipe file (what
the CLI reads) and a stored draft.
"""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

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

PARTS = {"data": DataConfig, "augment": AugmentConfig, "model": ModelConfig, "train": TrainConfig}
CONFIGS = [*PARTS.values(), ConvBlock, HeadConfig, RunConfig]


def _numeric_fields() -> list[tuple[type, str]]:
    out = []
    for cls in CONFIGS:
        hints = typing.get_type_hints(cls)
        out += [(cls, f.name) for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]
    return out


NUMERIC = _numeric_fields()
IDS = [f"{cls.__name__}.{name}" for cls, name in NUMERIC]
IN_RECIPE = [(cls, name) for cls, name in NUMERIC if cls in PARTS.values()]


def test_the_table_covers_the_configs():
    names = set(IDS)
    assert {"TrainConfig.epochs", "TrainConfig.learning_rate", "DataConfig.image_size",
            "ConvBlock.filters", "HeadConfig.dropout", "RunConfig.version"} <= names  # fmt: skip


@pytest.mark.parametrize(("cls", "name"), NUMERIC, ids=IDS)
@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_refused_by_every_numeric_field(cls, name, value):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{name} must be"):
        cls(**{name: value})
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{name} must be"):
        cls().replace(**{name: value})
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{name} must be"):
        cls.from_json(json.dumps({name: value}))


@pytest.mark.parametrize(
    ("cls", "name"), IN_RECIPE, ids=[f"{c.__name__}.{n}" for c, n in IN_RECIPE]
)
def test_booleans_are_refused_inside_a_recipe_file_and_a_draft(cls, name, tmp_path):
    part = next(key for key, c in PARTS.items() if c is cls)
    path = tmp_path / "run.json"
    path.write_text(json.dumps({part: {name: True}}))
    with pytest.raises(ValueError, match=rf"run.json: {cls.__name__}\.{name} must be"):
        RunConfig.load(str(path))
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{name} must be"):
        drafts.Draft.from_dict({"id": "d-000000000000", part: {name: True}})


@pytest.mark.parametrize(
    "recipe",
    [
        {"model": {"head": {"dense": [True]}}},
        {"model": {"head": {"dense": [64, False]}}},
        {"model": {"head": {"dense": [1.0]}}},
        {"model": {"blocks": [{"filters": True}]}},
        {"model": {"blocks": [{"kernel": 3, "convs": True}]}},
        {"model": {"head": {"dense": True}}},
        {"model": {"blocks": True}},
        {"train": {"nesterov": 1}},
        {"augment": {"horizontal_flip": 0}},
        {"train": {"epochs": "5"}},
        {"train": {"epochs": 5.0}},
    ],
)
def test_nested_and_tuple_fields_refuse_the_wrong_type(recipe):
    with pytest.raises(ValueError):
        RunConfig.from_json(json.dumps(recipe))


def test_whole_numbers_still_become_floats_where_floats_are_wanted():
    cfg = RunConfig.from_json(json.dumps({"train": {"learning_rate": 1}}))
    assert cfg.train.learning_rate == 1.0 and type(cfg.train.learning_rate) is float


def test_model_card_refuses_booleans_in_input_shape():
    from lib.registry import ModelCard, RegistryError

    with pytest.raises(RegistryError):
        ModelCard.from_dict({"name": "x", "class_names": ["a", "b"],
                             "input_shape": [True, 28, True], "preprocessing": {}})  # fmt: skip
