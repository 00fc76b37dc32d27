"""Small-data guidance: what helps when a dataset has few images per class or is lopsided.

Teachable Machine and Create ML users bring a few dozen photos per class. A CNN
trained from scratch on that learns little; what helps is a pretrained backbone
(transfer learning), balanced class weights when classes differ in size, and
light augmentation. :func:`small_data_advice` looks at the training split's
class counts and the draft's recipe and returns the changes that apply, which
the Train page shows and applies in one click.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lib import augment
from lib.config import TRANSFER_PRESETS, RunConfig

FEW_PER_CLASS = 200  # training images per class below which transfer learning pays
IMBALANCE_RATIO = 2.0  # largest / smallest class above this: balance the class weights
TRANSFER_PRESET = "mobilenetv2"  # the smallest and fastest backbone on a CPU


@dataclass(frozen=True)
class Advice:
    """Why the dataset counts as small or lopsided, and the recipe changes that help."""

    reasons: tuple[str, ...]
    suggestions: tuple[str, ...]  # one line per change, in the UI's words
    config: RunConfig  # the recipe with every suggested change applied
    caveats: tuple[str, ...] = ()


def small_data_advice(
    train_counts: np.ndarray,
    class_names: list[str],
    config: RunConfig,
    weights_problem: Any = None,
) -> Advice | None:
    """The advice for a training split with ``train_counts`` images per class, or None.

    Args:
        train_counts: images per class in the training split.
        class_names: the classes, in the same order.
        config: the recipe as the form shows it.
        weights_problem: callable(ModelConfig) -> message or None, saying why
            pretrained weights cannot be had (lib.preflight.weights_problem,
            bound to the input shape); None assumes they can.
    """
    counts = np.asarray(train_counts, dtype=np.int64)
    if counts.size < 2 or counts.max() == 0:
        return None
    reasons: list[str] = []
    few = int(counts.min()) < FEW_PER_CLASS
    small, big = int(np.argmin(counts)), int(np.argmax(counts))
    lopsided = counts[small] == 0 or counts[big] / counts[small] > IMBALANCE_RATIO
    if few:
        reasons.append(
            f"few training images per class (the smallest, '{class_names[small]}', has "
            f"{int(counts[small])}; under {FEW_PER_CLASS} a model trained from scratch learns little)"
        )
    if lopsided:
        reasons.append(
            f"'{class_names[big]}' has {int(counts[big])} training images and "
            f"'{class_names[small]}' only {int(counts[small])}"
        )
    if not reasons:
        return None

    suggestions: list[str] = []
    caveats: list[str] = []
    model, train, aug = config.model, config.train, config.augment
    transfer = False
    if few and model.preset not in TRANSFER_PRESETS:
        from lib.recipes import SMALL_DATA

        candidate = SMALL_DATA.model
        problem = weights_problem(candidate) if weights_problem else None
        if problem:
            caveats.append(f"Transfer learning would help most, but: {problem}")
        else:
            # The "Small dataset" recipe: cached backbone features, balanced class weights.
            transfer = True
            model = candidate
            keep = {"seed": train.seed, "device": train.device}
            train = SMALL_DATA.train.replace(**keep)
            suggestions.append(
                "Recipe 'Small dataset': MobileNetV2 with ImageNet weights, backbone frozen "
                "(transfer learning); its features are computed once and cached, so each "
                f"epoch trains only the head ({train.epochs} epochs, batch {train.batch_size})"
            )
            if augment.is_active(aug):
                aug = type(aug)()
                suggestions.append(
                    "Augmentation: off, so the cached features can be used (fine-tune later "
                    "with augmentation if needed)"
                )
    if (lopsided or transfer) and config.train.class_weights != "balanced":
        train = train.replace(class_weights="balanced")
        suggestions.append("Training: balanced class weights")
    if few and not transfer and not augment.is_active(aug):
        aug = augment.PRESETS["light"]
        if config.data.source in augment.MIRROR_SENSITIVE_SOURCES:
            # Not the preset's flip: the mirroring advice would then ask to undo it.
            aug = aug.replace(horizontal_flip=False, vertical_flip=False, preset="custom")
            suggestions.append("Augmentation: the 'light' preset without its mirroring")
        else:
            suggestions.append("Augmentation: the 'light' preset")
    if not suggestions and not caveats:
        return None
    return Advice(
        reasons=tuple(reasons),
        suggestions=tuple(suggestions),
        config=config.replace(model=model, train=train, augment=aug),
        caveats=tuple(caveats),
    )


@dataclass(frozen=True)
class MirroringAdvice:
    """Where a recipe mirrors images of a source whose classes have a handedness."""

    uses: tuple[str, ...]  # what mirrors, in the UI's words
    config: RunConfig  # the recipe with every mirroring off, all else as it was


def mirroring_advice(source: str, config: RunConfig) -> MirroringAdvice | None:
    """Advice to turn mirroring off, for a recipe that mirrors digits; else None.

    Accurate and Precise mirror training images and average each test image's
    prediction with its mirror image's: right for Fashion-MNIST's clothes, wrong for
    digits. Known for the built-in digit sources only (``augment.MIRROR_SENSITIVE_SOURCES``):
    a user's own images carry no such knowledge, and the Augmentation page's
    help says what mirroring assumes.
    """
    if source not in augment.MIRROR_SENSITIVE_SOURCES:
        return None
    aug, train = config.augment, config.train
    uses = []
    if aug.horizontal_flip:
        uses.append("mirrors half the training images left–right (Horizontal flip)")
    if aug.vertical_flip:
        uses.append("mirrors half the training images top–bottom (Vertical flip)")
    if train.tta_flip:
        uses.append(
            "averages each test image's prediction with its mirror image's "
            "(Flip test-time augmentation)"
        )
    if not uses:
        return None
    unmirrored = aug.replace(horizontal_flip=False, vertical_flip=False)
    unmirrored = unmirrored.replace(preset=augment.matching_preset(unmirrored))
    return MirroringAdvice(
        tuple(uses),
        config.replace(augment=unmirrored, train=train.replace(tta_flip=False)),
    )
