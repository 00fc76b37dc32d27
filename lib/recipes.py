"""Named training recipes a user can pick: whole RunConfigs measured on Fashion-MNIST.

    from lib.recipes import RECIPES
    cfg = RECIPES["accurate"].replace(data=my_data_config)

"fast" is the app's defaults (``RunConfig()``; TrainConfig's defaults are
FAST_TRAIN's, and a test keeps them equal): the best accuracy per second of CPU
training we measured. "accurate" trades time for the last points of accuracy.
Both were measured through lib.training on Fashion-MNIST (60k/10k, 10 % held
out for validation) on 2 CPU cores; ``make bench`` re-measures them into
bench/results/:

    fast      91 % after 3 epochs (20 s idle), 92.1 % after 6 (39 s idle)
    accurate  93 % after 12-15 epochs (370 s idle), 93.4-93.5 % after 20 (600 s idle)

A recipe's data part is the default; the Train page keeps the user's dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.config import AugmentConfig, ModelConfig, RunConfig, TrainConfig


@dataclass(frozen=True)
class RecipeInfo:
    """What the Train page says about a recipe."""

    title: str
    description: str


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

ACCURATE = RunConfig(
    name="accurate",
    augment=AugmentConfig(preset="custom", horizontal_flip=True),
    model=ModelConfig(preset="accurate_cnn"),
    train=TrainConfig(
        epochs=20,
        batch_size=128,
        optimizer="adam",
        learning_rate=2e-3,
        schedule="warmup_cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
        tta_flip=True,
    ),
)

RECIPES: dict[str, RunConfig] = {"fast": FAST, "accurate": ACCURATE}

RECIPE_INFO: dict[str, RecipeInfo] = {
    "fast": RecipeInfo(
        "Fast (default)",
        "A small CNN, 6 epochs of Adam with warm-up and cosine decay, label smoothing: "
        "about 92 % on Fashion-MNIST in under a minute of training on 2 CPU cores.",
    ),
    "accurate": RecipeInfo(
        "Accurate",
        "Two conv + BatchNorm stages, 20 epochs with mirrored training images and "
        "mirrored test-time averaging: about 93.5 % on Fashion-MNIST in about 10 minutes "
        "on 2 CPU cores.",
    ),
}
