"""Augmentation: one builder from an AugmentConfig to Keras 3 preprocessing layers.

The preview, the trainer and the copyable code all come from ``layer_specs``, so
what a user sees on the Augmentation page is exactly what training applies:

    >>> layers = build_layers(PRESETS["standard"], (28, 28, 1), seed=0)  # per-image, ordered
    >>> aug = make_augmenter(PRESETS["standard"], (28, 28, 1), num_classes=10, seed=0)
    >>> train = make_pipeline(ds, "train", batch_size=128, shuffle=True, seed=0, augment=aug)

Every layer works on raw pixels in [0, 255] and is random only when called with
``training=True`` (the identity otherwise), so evaluation and prediction never
see augmentation. Where it runs: inside the ``tf.data`` map, on the CPU, in
parallel with the training step (measured in ``bench/bench_augment.py``), so a
saved model never carries augmentation layers.

TensorFlow/Keras are imported lazily: pages import this module for PRESETS and
``disabled_options`` without paying for TensorFlow.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib.config import AugmentConfig
from lib.errors import KestrelError

VALUE_RANGE = (0, 255)  # every pipeline feeds raw pixels; models rescale inside themselves
ERASING_PROBABILITY = 0.5  # share of images that get a patch, as in the Random Erasing paper
ERASING_MIN_AREA = 0.02  # smallest erased patch, as a share of the image area
PREVIEW_MAX_SIDE = 256  # uploaded images are shrunk to this for a fast preview
BATCH_OPTIONS = ("mixup", "cutmix")  # mix pairs of images in a batch; need one-hot labels
COLOUR_OPTIONS = ("saturation", "hue")  # meaningless on one channel
CUSTOM_LAYERS = ("RandomResizedCrop", "RandomGaussianNoise")  # in lib.augment_layers

PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(preset="none"),
    "light": AugmentConfig(
        preset="light", horizontal_flip=True, rotation=0.03, zoom=0.05, translate=0.05
    ),
    "standard": AugmentConfig(
        preset="standard",
        horizontal_flip=True,
        rotation=0.05,
        zoom=0.1,
        translate=0.1,
        contrast=0.2,
        brightness=0.1,
    ),
    "strong": AugmentConfig(
        preset="strong",
        horizontal_flip=True,
        rotation=0.08,
        zoom=0.15,
        translate=0.1,
        contrast=0.3,
        brightness=0.2,
        saturation=0.3,
        hue=0.03,
        noise=0.02,
        erasing=0.25,
        mixup=0.2,
    ),
}

# Values that only describe the form, not the transforms.
_NOT_TRANSFORMS = ("preset", "randaugment_magnitude")


@dataclass(frozen=True)
class LayerSpec:
    """One augmentation layer before it exists: which option, which class, which arguments."""

    option: str  # the AugmentConfig field it comes from ("flip" for both flips)
    class_name: str  # in keras.layers, or in lib.augment_layers when listed in CUSTOM_LAYERS
    kwargs: dict[str, Any]

    @property
    def custom(self) -> bool:
        return self.class_name in CUSTOM_LAYERS


class AugmentError(KestrelError):
    """Images or settings the augmentation cannot work with; the message says why."""


def warm_up() -> threading.Thread:
    """Import TensorFlow and Keras in a background thread (the first import takes seconds).

    A page calls this on open, so the user's first slider move does not wait for
    the import. Returns the thread (already started); calling again is cheap.
    """

    def load() -> None:
        import keras  # noqa: F401

        from lib import augment_layers  # noqa: F401

    thread = threading.Thread(target=load, name="kestrel-keras-warm-up", daemon=True)
    thread.start()
    return thread


def _seed(seed: int, option: str) -> int:
    # One stream per option, stable when other options change, so moving one
    # slider does not reshuffle every other transform in the preview.
    return zlib.crc32(f"{option}:{seed}".encode()) & 0x7FFFFFFF


def disabled_options(image_shape: tuple[int, int, int]) -> dict[str, str]:
    """Options that do nothing for images of this shape, with the reason.

    Args:
        image_shape: ``(H, W, C)`` of the active dataset.

    Returns:
        ``{field_name: reason}``; the builder skips these fields.
    """
    channels = image_shape[-1]
    if channels == 1:
        reason = "colour only: the active dataset is grayscale (1 channel)"
        return dict.fromkeys(COLOUR_OPTIONS, reason)
    return {}


# Built-in sources whose classes have a handedness: a mirrored image is no image of its class.
MIRROR_SENSITIVE_SOURCES = ("mnist", "digits")
MIRROR_REASON = "a mirrored 2, 3, 5, 6, 7 or 9 is no digit anyone writes"
MIRROR_NOTE = f"{MIRROR_REASON}: usually left off for digits"


def option_notes(source: str) -> dict[str, str]:
    """Options that work but may hurt on this data source, with a warning to show."""
    if source in MIRROR_SENSITIVE_SOURCES:
        return {"horizontal_flip": MIRROR_NOTE, "vertical_flip": MIRROR_NOTE}
    return {}


def is_active(cfg: AugmentConfig) -> bool:
    """Whether any transform is on (the preset name and RandAugment strength alone are not)."""
    return any(
        getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _NOT_TRANSFORMS
    )


def matching_preset(cfg: AugmentConfig) -> str:
    """The name of the preset whose values ``cfg`` has, else ``"custom"``."""
    for name, preset in PRESETS.items():
        if cfg.replace(preset=name) == preset:
            return name
    return "custom"


def layer_specs(
    cfg: AugmentConfig, image_shape: tuple[int, int, int], seed: int
) -> list[LayerSpec]:
    """The per-image layers for ``cfg``, in the order they run.

    Geometry first (so colour changes apply to what the model sees), then
    RandAugment, colour, noise, and erasing last (a patch stays a clean patch).
    Options in ``disabled_options(image_shape)`` are skipped.
    """
    skip = disabled_options(image_shape)
    specs: list[LayerSpec] = []

    def add(option: str, class_name: str, **kwargs: Any) -> None:
        if option not in skip:
            specs.append(LayerSpec(option, class_name, {**kwargs, "seed": _seed(seed, option)}))

    if cfg.horizontal_flip or cfg.vertical_flip:
        mode = {
            (True, False): "horizontal",
            (False, True): "vertical",
            (True, True): "horizontal_and_vertical",
        }
        add("flip", "RandomFlip", mode=mode[(cfg.horizontal_flip, cfg.vertical_flip)])
    if cfg.rotation:
        add("rotation", "RandomRotation", factor=cfg.rotation)
    if cfg.zoom:
        # Negative is zoom in; a symmetric range zooms both ways and keeps the aspect ratio.
        add("zoom", "RandomZoom", height_factor=(-cfg.zoom, cfg.zoom))
    if cfg.translate:
        add(
            "translate",
            "RandomTranslation",
            height_factor=cfg.translate,
            width_factor=cfg.translate,
        )
    if cfg.crop:
        add("crop", "RandomResizedCrop", max_crop=cfg.crop)
    if cfg.randaugment_ops:
        add(
            "randaugment",
            "RandAugment",
            value_range=VALUE_RANGE,
            num_ops=cfg.randaugment_ops,
            factor=cfg.randaugment_magnitude,
        )
    if cfg.contrast:
        # A pair: a single float's lower bound is clipped to 0, so it would only raise contrast.
        c = cfg.contrast
        add("contrast", "RandomContrast", factor=(c, c), value_range=VALUE_RANGE)
    if cfg.brightness:
        add("brightness", "RandomBrightness", factor=cfg.brightness, value_range=VALUE_RANGE)
    if cfg.saturation:
        # RandomSaturation's 0.5 is "unchanged"; 0 is grey and 1 fully saturated.
        half = cfg.saturation / 2
        add(
            "saturation",
            "RandomSaturation",
            factor=(0.5 - half, 0.5 + half),
            value_range=VALUE_RANGE,
        )
    if cfg.hue:
        # RandomHue shifts by up to factor/2 of a turn; the config counts in turns.
        add("hue", "RandomHue", factor=min(1.0, 2 * cfg.hue), value_range=VALUE_RANGE)
    if cfg.noise:
        add(
            "noise",
            "RandomGaussianNoise",
            stddev=round(cfg.noise * 255, 4),
            value_range=VALUE_RANGE,
        )
    if cfg.erasing:
        add(
            "erasing",
            "RandomErasing",
            factor=(ERASING_PROBABILITY, ERASING_PROBABILITY),
            scale=(min(ERASING_MIN_AREA, cfg.erasing), cfg.erasing),
            value_range=VALUE_RANGE,
        )
    return specs


def batch_specs(cfg: AugmentConfig, seed: int) -> list[LayerSpec]:
    """The batch-level layers (MixUp, CutMix): they mix images and their one-hot labels."""
    specs = []
    if cfg.mixup:
        specs.append(
            LayerSpec("mixup", "MixUp", {"alpha": cfg.mixup, "seed": _seed(seed, "mixup")})
        )
    if cfg.cutmix:
        # A fixed Beta(alpha, alpha); a single float would draw alpha itself from [0, alpha].
        specs.append(
            LayerSpec(
                "cutmix",
                "CutMix",
                {"factor": (cfg.cutmix, cfg.cutmix), "seed": _seed(seed, "cutmix")},
            )
        )
    return specs


def _make_layer(spec: LayerSpec):
    import keras

    from lib import augment_layers

    cls = (
        getattr(augment_layers, spec.class_name)
        if spec.custom
        else getattr(keras.layers, spec.class_name)
    )
    # float32 even under a mixed-precision policy: the pipeline's contract is float32 pixels.
    return cls(**spec.kwargs, dtype="float32", name=f"augment_{spec.option}")


def build_layers(cfg: AugmentConfig, image_shape: tuple[int, int, int], seed: int) -> list:
    """The ordered per-image Keras layers for ``cfg`` (what the preview shows).

    Args:
        cfg: the augmentation settings.
        image_shape: ``(H, W, C)`` of the images; options that make no sense for
            it (colour on grayscale) are left out.
        seed: base seed; each layer gets its own stream derived from it.

    Returns:
        Fresh, unbuilt layers, random when called with ``training=True`` and the
        identity with ``training=False``. Empty when nothing per-image is on.
    """
    return [_make_layer(s) for s in layer_specs(cfg, image_shape, seed)]


class Augmenter:
    """``(images, labels) -> (images, labels)`` for one training batch, tf.data-safe.

    Attributes:
        layers: the per-image layers (``build_layers`` for the same config and seed).
        batch_layers: MixUp and/or CutMix; with both on, each batch gets one of
            them at random (as timm does), never both.
    """

    def __init__(self, layers: list, batch_layers: list, num_classes: int, seed: int):
        import keras

        self.layers = layers
        self.batch_layers = batch_layers
        self.num_classes = num_classes
        self._switch = (
            keras.random.SeedGenerator(_seed(seed, "switch")) if len(batch_layers) > 1 else None
        )

    def __call__(self, images, labels):
        import keras

        images = keras.ops.cast(images, "float32")
        for layer in self.layers:
            images = layer(images, training=True)
        if not self.batch_layers:
            return images, labels
        if len(keras.ops.shape(labels)) == 1:
            labels = keras.ops.one_hot(keras.ops.cast(labels, "int32"), self.num_classes)
        labels = keras.ops.cast(labels, "float32")
        batch = {"images": images, "labels": labels}
        mixed = [layer(batch, training=True) for layer in self.batch_layers]
        if len(mixed) == 1:
            return mixed[0]["images"], mixed[0]["labels"]
        first = keras.random.uniform((), seed=self._switch) < 0.5
        return (
            keras.ops.where(first, mixed[0]["images"], mixed[1]["images"]),
            keras.ops.where(first, mixed[0]["labels"], mixed[1]["labels"]),
        )


def make_augmenter(
    cfg: AugmentConfig, image_shape: tuple[int, int, int], num_classes: int, seed: int
) -> Callable | None:
    """The training-time augmentation for ``make_pipeline(..., augment=...)``.

    Args:
        cfg: the augmentation settings.
        image_shape: ``(H, W, C)`` of the dataset.
        num_classes: label width (int labels are one-hot encoded when MixUp/CutMix need it).
        seed: base seed; the same seed gives the same sequence of batches' transforms.

    Returns:
        An ``Augmenter`` taking and returning ``(float32 images in [0, 255] (B, H, W, C),
        one-hot labels)``, or None when nothing is on.
    """
    layers = build_layers(cfg, image_shape, seed)
    batch_layers = [_make_layer(s) for s in batch_specs(cfg, seed)]
    if not layers and not batch_layers:
        return None
    return Augmenter(layers, batch_layers, num_classes, seed)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise AugmentError(
            f"preview needs images shaped (N, H, W, 1 or 3) with N >= 1, got {images.shape}"
        )
    if images.dtype != np.uint8:
        raise AugmentError(f"preview needs uint8 images, got {images.dtype}")
    return images


def preview(cfg: AugmentConfig, images_uint8: np.ndarray, variants: int, seed: int) -> np.ndarray:
    """Augmented variants of each image, made by the very layers training uses.

    The same ``(cfg, images, variants, seed)`` always gives the same grid. All
    ``N * variants`` copies go through the augmenter as one batch, so MixUp and
    CutMix mix each copy with another image of the preview.

    Args:
        cfg: the augmentation settings.
        images_uint8: ``(N, H, W, C)`` uint8 images.
        variants: augmented copies per image (0 gives just the originals).
        seed: base seed, as in ``make_augmenter``.

    Returns:
        uint8 ``(N, 1 + variants, H, W, C)``: each row the original, then its variants.

    Raises:
        AugmentError: images of the wrong shape or type, or ``variants`` < 0.
    """
    images = _check_images(images_uint8)
    if variants < 0:
        raise AugmentError(f"variants must be 0 or more, got {variants}")
    n = len(images)
    grid = images[:, None]
    if variants == 0:
        return grid.copy()
    aug = make_augmenter(cfg, images.shape[1:], num_classes=n, seed=seed)
    copies = np.tile(images, (variants, 1, 1, 1))  # variant-major: copy v of image i is v*n + i
    if aug is None:
        out = copies
    else:
        labels = np.tile(np.eye(n, dtype="float32"), (variants, 1))
        augmented, _ = aug(copies.astype("float32"), labels)
        out = np.clip(np.round(np.asarray(augmented)), 0, 255).astype(np.uint8)
    out = out.reshape(variants, n, *images.shape[1:]).transpose(1, 0, 2, 3, 4)
    return np.concatenate([grid, out], axis=1)


def fit_for_preview(image: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> np.ndarray:
    """Shrink an ``(H, W, C)`` uint8 image so its longer side is at most ``max_side``."""
    from PIL import Image

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = np.asarray(pil.resize(size, Image.Resampling.LANCZOS))
    return out[..., None] if out.ndim == 2 else out


def montage(grid: np.ndarray, cell: int = 96, gap: int = 4) -> np.ndarray:
    """One RGB picture of a preview grid: rows of cells, each image scaled to ``cell`` px.

    Small images are enlarged with nearest-neighbour so their pixels stay visible.
    """
    from PIL import Image

    n, cols, h, w, _ = grid.shape
    scale = cell / max(h, w)
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    canvas = np.full((n * ch + (n - 1) * gap, cols * cw + (cols - 1) * gap, 3), 255, np.uint8)
    for r in range(n):
        for c in range(cols):
            img = grid[r, c]
            rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
            cell_img = np.asarray(Image.fromarray(rgb).resize((cw, ch), resample))
            y, x = r * (ch + gap), c * (cw + gap)
            canvas[y : y + ch, x : x + cw] = cell_img
    return canvas


def _call(spec: LayerSpec) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in spec.kwargs.items())
    prefix = "" if spec.custom else "keras.layers."
    return f"{prefix}{spec.class_name}({args})"


def _custom_source(name: str) -> str:
    from lib import augment_layers

    source = inspect.getsource(getattr(augment_layers, name))
    # The registration decorator names Kestrel's package; a copy stands alone.
    return "\n".join(line for line in source.splitlines() if not line.startswith("@"))


def keras_code(cfg: AugmentConfig, image_shape: tuple[int, int, int], seed: int = 0) -> str:
    """Plain Keras 3 code that builds and applies the same augmentation.

    Running it defines ``augment_batch(images, labels)``, equivalent to
    ``make_augmenter(cfg, image_shape, num_classes, seed)`` (same layers, same seeds).
    """
    specs = layer_specs(cfg, image_shape, seed)
    mixers = batch_specs(cfg, seed)
    lines = [
        f"# Kestrel augmentation for {image_shape[0]}x{image_shape[1]}x{image_shape[2]} images,",
        "# raw pixels in [0, 255]; random in training only (training=True).",
        "import keras",
        "import tensorflow as tf",
        "",
    ]
    for name in dict.fromkeys(s.class_name for s in specs if s.custom):
        lines += ["", _custom_source(name), ""]
    if not specs and not mixers:
        lines += ["", "# No augmentation is on: batches go to the model unchanged.", ""]
        lines += ["def augment_batch(images, labels):", "    return images, labels"]
    if specs:
        lines += ["", "augment = keras.Sequential(", "    ["]
        lines += [f"        {_call(s)}," for s in specs]
        lines += ["    ],", '    name="augment",', ")"]
    for s in mixers:
        lines.append(f"{s.option} = {_call(s)}")
    if len(mixers) > 1:
        lines.append(f"switch = keras.random.SeedGenerator({_seed(seed, 'switch')})")
    if specs or mixers:
        lines += [
            "",
            "",
            "def augment_batch(images, labels):",
            '    images = keras.ops.cast(images, "float32")',
        ]
        if specs:
            lines.append("    images = augment(images, training=True)")
        if not mixers:
            lines.append("    return images, labels")
        else:
            lines.append('    batch = {"images": images, "labels": labels}  # labels: one-hot')
            if len(mixers) == 1:
                lines += [
                    f"    batch = {mixers[0].option}(batch, training=True)",
                    '    return batch["images"], batch["labels"]',
                ]
            else:
                lines += [
                    "    a, b = mixup(batch, training=True), cutmix(batch, training=True)",
                    "    use_a = keras.random.uniform((), seed=switch) < 0.5  # one of them per batch",
                    '    return (keras.ops.where(use_a, a["images"], b["images"]),',
                    '            keras.ops.where(use_a, a["labels"], b["labels"]))',
                ]
    lines += [
        "",
        "",
        "# train_ds yields (float32 images, one-hot labels) batches:",
        "# train_ds = train_ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)",
    ]
    return "\n".join(lines) + "\n"
