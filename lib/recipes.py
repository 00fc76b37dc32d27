"""Named training recipes a user can pick: whole RunConfigs measured on Fashion-MNIST.

    from lib.recipes import RECIPES
    cfg = RECIPES["accurate"].replace(data=my_data_config)

"fast" is the app's defaults (``RunConfig()``; TrainConfig's defaults are
FAST_TRAIN's, and a test keeps them equal): the best accuracy per second of CPU
training we measured. "accurate" trades time for the last points of accuracy.
Both are measured through lib.training on Fashion-MNIST by ``make bench``
(bench/bench_time_to_accuracy.py); the figures live in bench/results/ only, and
the descriptions quote them through :mod:`lib.measured`.

A recipe's data part is the default; the Train page keeps the user's dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from lib import measured
from lib.config import AugmentConfig, DataConfig, ModelConfig, RunConfig, TrainConfig


@dataclass(frozen=True)
class RecipeInfo:
    """What the Train page says about a recipe."""

    name: str  # the key in RECIPES (and in bench/results' time-to-accuracy table)
    title: str
    summary: str  # what the recipe is, without figures
    from_card: bool = False  # its figures are the shipped shapes-demo model's card's
    sized_for_bfloat16: bool = False  # its time is sized on CPUs that compute bfloat16

    @property
    def description(self) -> str:
        """The summary, then the newest measured figures (or where to find them)."""
        if self.from_card:
            return f"{self.summary} {measured.card_sentence(SHAPES_CARD)}"
        return f"{self.summary} {measured.recipe_sentence(self.name)}"


# The recommended TrainConfig defaults (bench/results/ has the measurements): large
# batches, a short warm-up into a cosine decay, label smoothing; no augmentation and no
# flip TTA, which cost accuracy in so few epochs on Fashion-MNIST.
FAST_TRAIN = TrainConfig(
    epochs=6,
    batch_size=128,
    optimizer="adam",
    learning_rate=3e-3,
    schedule="warmup_cosine",
    warmup_epochs=0.3,
    label_smoothing=0.1,
    weight_decay=0.0,
    tta_flip=False,
)

FAST = RunConfig(name="fast", train=FAST_TRAIN)

# The recipes' epochs are sized to the time the benchmark gives them on 2 CPU cores
# (bench_time_to_accuracy's BUDGETS: 120, 300 and 600 s), so the figures quoted are of the
# schedule run to its end, not of a run stopped part-way at a high learning rate (on a busy
# machine the budget can still stop one in its last epoch; the figures give the epochs).
# Screened with one-off runs through the benchmark's trainer (two AVX-512 cores): the
# fast CNN at width 1.5 with dropout 0.3 before the classifier beat 24 epochs at width 1
# (with or without the dropout), width 2 (its dense layer slows each step) and the
# two-convolution accurate_cnn at 8 or 12 epochs. Trained in bfloat16 (mixed precision
# "auto" on a CPU that computes it natively), 20 epochs took about as long as 16 in
# float32 and ended higher than 16, so it has 20. The figures are in bench/results/.
ACCURATE = RunConfig(
    name="accurate",
    model=ModelConfig(preset="fast_cnn", width=1.5, dropout=0.3),
    augment=AugmentConfig(preset="custom", horizontal_flip=True),
    train=replace(FAST_TRAIN, epochs=20, tta_flip=True),
)

# The fast recipe for twice the epochs: the same small CNN and settings, 12 epochs.
BALANCED = RunConfig(name="balanced", train=replace(FAST_TRAIN, epochs=12))

# Three VGG stages of two BatchNorm convolutions (vgg_small) with accurate's mirroring, for
# 14 epochs. Screened at 24 epochs on Fashion-MNIST through the benchmark's trainer (one-off
# runs, two AMX cores, bfloat16, BatchNorm in TensorFlow's fused kernel), it reached
# 94-percent test accuracy within ten minutes of training, which the zalando table's
# two-convolution BatchNorm net (accurate_cnn, this recipe until then) did not after 30
# epochs nor after 60; on that net stronger augmentation (shifts and random erasing), weight
# decay, SGD and a dropout before the classifier screened lower too. Its figures belong in
# bench/results/ (python -m bench --only time_to_accuracy --recipes precise). It had 24
# epochs until measured on two AVX-512 BF16 cores (bench/results, 2026-12-04): the 600 s
# budget stopped it before the last third of its cosine schedule, and one training in five
# ended short of 94 percent. 14 epochs are fewer than the slowest of those trainings got
# through in 600 s, so the schedule runs to its end within the budget on that CPU.
PRECISE = RunConfig(
    name="precise",
    model=ModelConfig(preset="vgg_small"),
    augment=AugmentConfig(preset="custom", horizontal_flip=True),
    train=replace(FAST_TRAIN, epochs=14, tta_flip=True),
)

RECIPES: dict[str, RunConfig] = {
    "fast": FAST,
    "balanced": BALANCED,
    "accurate": ACCURATE,
    "precise": PRECISE,
}

# Few images per class (Teachable Machine style): a frozen ImageNet MobileNetV2 whose
# features lib.training.transfer computes once and caches, so each epoch trains only
# the head (seconds on a CPU); no augmentation, which would rule the cache out.
SMALL_DATA = RunConfig(
    name="small_data",
    model=ModelConfig(
        preset="mobilenetv2", weights="imagenet", freeze_backbone=True, unfreeze_last=0,
        dropout=0.2,
    ),
    train=TrainConfig(
        epochs=30, batch_size=32, optimizer="adam", learning_rate=1e-3, schedule="cosine",
        label_smoothing=0.1, class_weights="balanced", early_stopping_patience=8,
    ),
)  # fmt: skip
RECIPES["small_data"] = SMALL_DATA

# The generated shapes set (the default dataset) takes many more steps than the Fashion-MNIST
# recipes give it: their one-convolution network learns little of it in 6 epochs. The
# recipe that trained the shipped shapes-demo model is read from its card, so the recipe
# and the figures it quotes are the model's own.
SHAPES_CARD = Path(__file__).resolve().parents[1] / "models" / "shapes-demo" / "card.json"
_SHAPES_TRAINED = json.loads(SHAPES_CARD.read_text("utf-8"))["training_config"]
SHAPES = RunConfig.from_dict(_SHAPES_TRAINED).replace(name="shapes", data=DataConfig())
RECIPES["shapes"] = SHAPES

RECIPE_INFO: dict[str, RecipeInfo] = {
    "fast": RecipeInfo(
        "fast",
        "Fast (default)",
        "A small CNN, 6 epochs of Adam with warm-up and cosine decay, label smoothing: "
        "the most accuracy per second of CPU training.",
    ),
    "balanced": RecipeInfo(
        "balanced",
        "Balanced",
        "The fast recipe's small CNN and settings for 12 epochs instead of 6: twice the "
        "training time, for what the longer schedule adds.",
    ),
    "accurate": RecipeInfo(
        "accurate",
        "Accurate",
        "The fast CNN one and a half times as wide, with dropout before the classifier, for "
        "20 epochs, with mirrored training images and mirrored test-time averaging: sized "
        "for about two minutes of training on two CPU cores that compute bfloat16 "
        "(mixed precision auto), longer on others.",
        sized_for_bfloat16=True,
    ),
    "precise": RecipeInfo(
        "precise",
        "Precise",
        "A VGG-style CNN, three stages of two 3×3 convolutions (32, 64, 128 filters) with "
        "BatchNorm, global average pooling and a dense layer, for 14 epochs with the "
        "accurate recipe's mirroring: the most accurate recipe, and the slowest, sized for "
        "about eight minutes of training on two CPU cores that compute bfloat16 (mixed "
        "precision auto), longer on others.",
        sized_for_bfloat16=True,
    ),
}
RECIPE_INFO["shapes"] = RecipeInfo(
    "shapes",
    "Shapes demo",
    "The recipe of the shipped shapes-demo model, for the generated shapes set: four conv "
    "blocks with BatchNorm and global pooling, 20 epochs of Adam in batches of 64 with "
    "warm-up, cosine decay and label smoothing.",
    from_card=True,
)
RECIPE_INFO["small_data"] = RecipeInfo(
    "small_data",
    "Small dataset",
    "For a few dozen to a few hundred images per class: MobileNetV2 with ImageNet weights, "
    "frozen; its features are computed once and cached, and only the head trains (seconds "
    "per epoch on a CPU), with balanced class weights. Then, optionally, phase two: the run's "
    "Fine-tune button puts a recipe into the form that starts from its trained weights, "
    "unfreezes the top of the backbone and trains on the images at a low learning rate.",
)
