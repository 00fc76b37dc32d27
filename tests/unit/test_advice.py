"""Small-data and mirroring advice: when it appears and what applying it changes."""

from __future__ import annotations

import numpy as np
import pytest

from lib import augment
from lib.advice import FEW_PER_CLASS, mirroring_advice, small_data_advice
from lib.config import AugmentConfig, ModelConfig, RunConfig, TrainConfig

NAMES = ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    ("counts", "expect"),
    [
        ([1000, 1000, 1000], None),  # plenty and balanced
        ([40, 45, 50], "few"),
        ([1000, 1000, 300], "lopsided"),
        ([30, 30, 5], "both"),
    ],
)
def test_when_advice_appears(counts, expect):
    advice = small_data_advice(np.array(counts), NAMES, RunConfig())
    if expect is None:
        assert advice is None
        return
    assert advice is not None
    text = " ".join(advice.reasons)
    assert ("few training images" in text) == (expect in ("few", "both"))
    assert ("'bird' only" in text or "'cat' only" in text) == (expect in ("lopsided", "both"))


def test_applying_the_advice_is_the_small_dataset_recipe_on_cached_features():
    from lib.recipes import SMALL_DATA
    from lib.training.transfer import cached_path_reason

    advice = small_data_advice(np.array([30, 30, 5]), NAMES, RunConfig())
    cfg = advice.config
    assert cfg.model == SMALL_DATA.model and cfg.train == SMALL_DATA.train
    assert cfg.model.preset == "mobilenetv2" and cfg.model.weights == "imagenet"
    assert cfg.model.freeze_backbone and cfg.model.unfreeze_last == 0
    assert cfg.train.class_weights == "balanced"
    assert cached_path_reason(cfg) is None  # no augmentation: the features are cached
    assert any("Small dataset" in s for s in advice.suggestions)
    assert cfg.data == RunConfig().data


def test_augmentation_is_turned_off_for_the_cached_path():
    flipped = RunConfig(augment=AugmentConfig(preset="custom", horizontal_flip=True))
    advice = small_data_advice(np.array([40, 40, 40]), NAMES, flipped)
    assert advice.config.augment == AugmentConfig()
    assert any("Augmentation: off" in s for s in advice.suggestions)


def test_without_weights_the_advice_falls_back_to_light_augmentation():
    advice = small_data_advice(
        np.array([40, 40, 40]), NAMES, RunConfig(), weights_problem=lambda m: "offline"
    )
    assert advice.config.augment.preset == "light"


def test_on_digits_the_light_augmentation_advice_does_not_mirror():
    from lib.config import DataConfig

    config = RunConfig(data=DataConfig(source="digits"))
    advice = small_data_advice(
        np.array([40, 40, 40]), NAMES, config, weights_problem=lambda m: "offline"
    )
    assert not advice.config.augment.horizontal_flip
    assert advice.config.augment.rotation == augment.PRESETS["light"].rotation
    assert any("without its mirroring" in s for s in advice.suggestions)
    assert mirroring_advice("digits", advice.config) is None


def test_no_transfer_suggestion_when_weights_cannot_be_had():
    advice = small_data_advice(
        np.array([FEW_PER_CLASS - 1] * 3), NAMES, RunConfig(), weights_problem=lambda m: "offline"
    )
    assert advice.config.model == ModelConfig()
    assert any("offline" in c for c in advice.caveats)


def test_nothing_left_to_suggest_means_no_advice():
    done = RunConfig(
        model=ModelConfig(preset="mobilenetv2"),
        train=TrainConfig(class_weights="balanced"),
        augment=AugmentConfig(preset="custom", horizontal_flip=True),
    )
    assert small_data_advice(np.array([30, 30, 5]), NAMES, done) is None


@pytest.mark.parametrize("recipe", ["accurate", "precise"])
def test_mirroring_recipes_on_digits_get_advice_that_turns_off_only_mirroring(recipe):
    from lib.recipes import RECIPES

    config = RECIPES[recipe]
    advice = mirroring_advice("digits", config)
    assert advice is not None
    assert any("Horizontal flip" in u for u in advice.uses)
    assert any("Flip test-time augmentation" in u for u in advice.uses)
    fixed = advice.config
    assert not fixed.augment.horizontal_flip and not fixed.augment.vertical_flip
    assert not fixed.train.tta_flip
    # Accurate's augmentation is the flip alone: without it, it is the "none" preset.
    assert fixed.augment == AugmentConfig(preset="none")
    assert fixed.model == config.model
    assert fixed.train == config.train.replace(tta_flip=False)
    assert mirroring_advice("digits", fixed) is None  # nothing left to turn off


def test_mirroring_advice_keeps_other_transforms_and_names_a_vertical_flip():
    aug = AugmentConfig(preset="custom", horizontal_flip=True, vertical_flip=True, rotation=0.1)
    advice = mirroring_advice("mnist", RunConfig(augment=aug))
    assert advice is not None and len(advice.uses) == 2
    assert "top–bottom" in advice.uses[1]
    assert advice.config.augment == AugmentConfig(preset="custom", rotation=0.1)


@pytest.mark.parametrize("source", ["fashion_mnist", "cifar10", "shapes", "folder"])
def test_no_mirroring_advice_where_mirroring_keeps_the_class_or_is_unknown(source):
    from lib.recipes import RECIPES

    assert mirroring_advice(source, RECIPES["precise"]) is None


def test_no_mirroring_advice_for_a_recipe_that_does_not_mirror():
    assert mirroring_advice("digits", RunConfig()) is None
