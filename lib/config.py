"""Run configuration: the four recipe parts and the run that holds them.

A run's whole recipe is one JSON file. The UI writes it, the CLI reads it, and a
finished run can be cloned from it, so every config here is a frozen dataclass
that validates itself on construction (a ``ValueError`` naming the field and
the allowed range) and round-trips to JSON exactly:

    >>> cfg = RunConfig()
    >>> RunConfig.from_json(cfg.to_json()) == cfg
    True

Each field's ``metadata`` carries its allowed range or choices; one generic
validator reads them, so a field's limit is written exactly once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

CONFIG_VERSION = 1

DATA_SOURCES = (
    "shapes",  # procedural, generated from a seed: the embedded default
    "digits",  # scikit-learn's bundled 8x8 digits
    "fashion_mnist",
    "mnist",
    "cifar10",
    "cifar100",
    "folder",  # a server directory with one sub-folder per class
    "upload",  # an uploaded archive or directory, extracted into the workspace
)
MODEL_PRESETS = (
    "seed_cnn",
    "lenet5",
    "fast_cnn",
    "accurate_cnn",
    "vgg_small",
    "resnet20",
    "mobilenetv2",
    "efficientnetb0",
    "resnet50",
    "custom",
)
TRANSFER_PRESETS = ("mobilenetv2", "efficientnetb0", "resnet50")
AUGMENT_PRESETS = ("none", "light", "standard", "strong", "custom")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "one_cycle", "step", "reduce_on_plateau")
ACTIVATIONS = ("relu", "gelu", "swish", "elu", "tanh", "leaky_relu")


def _range(lo: float, hi: float, doc: str = "") -> dict[str, Any]:
    return {"range": (lo, hi), "doc": doc}


def _choice(options: tuple[str, ...], doc: str = "") -> dict[str, Any]:
    return {"choices": options, "doc": doc}


def _validate(obj: Any) -> None:
    """Check every field of a config dataclass against its metadata."""
    name = type(obj).__name__
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = f"{name}.{f.name}"
        expected = hints[f.name]
        if expected is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be true or false, got {value!r}")
        elif expected is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where} must be a whole number, got {value!r}")
        elif expected is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{where} must be a finite number, got {value!r}")
        elif expected is str and not isinstance(value, str):
            raise ValueError(f"{where} must be text, got {value!r}")
        meta = f.metadata
        if "range" in meta:
            lo, hi = meta["range"]
            if not lo <= value <= hi:
                raise ValueError(f"{where} must be between {lo} and {hi}, got {value!r}")
        if "choices" in meta and value not in meta["choices"]:
            allowed = ", ".join(meta["choices"])
            raise ValueError(f"{where} must be one of: {allowed}; got {value!r}")


def _from_dict(cls: type, data: Any) -> Any:
    """Build config ``cls`` from plain JSON data, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no field(s) {', '.join(unknown)}; known fields: {', '.join(known)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(hints[key], value, f"{cls.__name__}.{key}")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class _JsonMixin:
    """JSON round trip shared by every config."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return _from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied (validated like any new config)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def field_help(cls, name: str) -> dict[str, Any]:
        """The metadata (range/choices/doc) of field ``name``, for forms."""
        return dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DataConfig(_JsonMixin):
    """Where images come from and how they are split."""

    source: str = field(default="shapes", metadata=_choice(DATA_SOURCES, "dataset source"))
    path: str = field(default="", metadata={"doc": "folder: server directory; upload: upload id"})
    image_size: int = field(
        default=0, metadata=_range(0, 512, "square side to resize to; 0 keeps the source size")
    )
    color_mode: str = field(
        default="auto", metadata=_choice(("auto", "rgb", "grayscale"), "channels to decode to")
    )
    val_fraction: float = field(
        default=0.1, metadata=_range(0.0, 0.5, "share of training images held out for validation")
    )
    test_fraction: float = field(
        default=0.1,
        metadata=_range(0.0, 0.5, "test share, for sources without their own test split"),
    )
    seed: int = field(default=0, metadata=_range(0, 2**31 - 1, "split and generation seed"))
    max_per_class: int = field(
        default=0, metadata=_range(0, 10_000_000, "cap on images per class; 0 means all")
    )
    shapes_count: int = field(
        default=3000, metadata=_range(60, 200_000, "shapes: total images generated")
    )
    shapes_size: int = field(default=64, metadata=_range(16, 256, "shapes: image side in pixels"))

    def __post_init__(self) -> None:
        _validate(self)
        if self.source in ("folder", "upload") and not self.path:
            raise ValueError(f"DataConfig.path is required for source {self.source!r}")
        if self.image_size and self.image_size < 8:
            raise ValueError("DataConfig.image_size must be 0 (keep) or between 8 and 512")


@dataclass(frozen=True)
class AugmentConfig(_JsonMixin):
    """Random training-time transforms; all zero/False means no augmentation."""

    preset: str = field(
        default="none", metadata=_choice(AUGMENT_PRESETS, "preset the values came from")
    )
    horizontal_flip: bool = field(default=False, metadata={"doc": "mirror left-right"})
    vertical_flip: bool = field(default=False, metadata={"doc": "mirror top-bottom"})
    rotation: float = field(
        default=0.0, metadata=_range(0.0, 0.5, "max rotation, fraction of a full turn")
    )
    zoom: float = field(default=0.0, metadata=_range(0.0, 0.5, "max zoom in/out, fraction of size"))
    translate: float = field(default=0.0, metadata=_range(0.0, 0.5, "max shift, fraction of size"))
    crop: float = field(
        default=0.0, metadata=_range(0.0, 0.5, "max share cropped away, then resized back")
    )
    contrast: float = field(default=0.0, metadata=_range(0.0, 1.0, "max contrast change"))
    brightness: float = field(default=0.0, metadata=_range(0.0, 1.0, "max brightness change"))
    saturation: float = field(
        default=0.0, metadata=_range(0.0, 1.0, "max saturation change (colour only)")
    )
    hue: float = field(default=0.0, metadata=_range(0.0, 0.5, "max hue shift (colour only)"))
    noise: float = field(
        default=0.0, metadata=_range(0.0, 0.5, "Gaussian noise std, fraction of 255")
    )
    erasing: float = field(default=0.0, metadata=_range(0.0, 0.5, "max area erased (cutout)"))
    mixup: float = field(default=0.0, metadata=_range(0.0, 1.0, "MixUp alpha; 0 turns it off"))
    cutmix: float = field(default=0.0, metadata=_range(0.0, 1.0, "CutMix alpha; 0 turns it off"))
    randaugment_ops: int = field(
        default=0, metadata=_range(0, 4, "RandAugment ops per image; 0 off")
    )
    randaugment_magnitude: float = field(
        default=0.5, metadata=_range(0.0, 1.0, "RandAugment strength")
    )

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class ConvBlock(_JsonMixin):
    """One block of the custom CNN: conv layer(s), then optional pooling and dropout."""

    filters: int = field(default=32, metadata=_range(1, 1024, "output channels"))
    kernel: int = field(default=3, metadata=_range(1, 11, "kernel side"))
    stride: int = field(default=1, metadata=_range(1, 4, "conv stride"))
    convs: int = field(default=1, metadata=_range(1, 4, "conv layers in the block"))
    activation: str = field(default="relu", metadata=_choice(ACTIVATIONS))
    batch_norm: bool = True
    pool: str = field(default="max", metadata=_choice(("none", "max", "avg")))
    dropout: float = field(default=0.0, metadata=_range(0.0, 0.9, "dropout after the block"))

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class HeadConfig(_JsonMixin):
    """The classifier head of the custom CNN."""

    pooling: str = field(
        default="global_avg", metadata=_choice(("global_avg", "global_max", "flatten"))
    )
    dense: tuple[int, ...] = (128,)  # hidden dense layer widths, before the output layer
    dropout: float = field(
        default=0.0, metadata=_range(0.0, 0.9, "dropout before each dense layer")
    )

    def __post_init__(self) -> None:
        _validate(self)
        if len(self.dense) > 8:
            raise ValueError("HeadConfig.dense allows at most 8 hidden layers")
        for i, units in enumerate(self.dense):
            if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= 8192:
                raise ValueError(f"HeadConfig.dense[{i}] must be between 1 and 8192, got {units!r}")


DEFAULT_BLOCKS = (ConvBlock(filters=32), ConvBlock(filters=64))


@dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """Which network: a preset, or a custom CNN described by blocks and a head."""

    preset: str = field(default="fast_cnn", metadata=_choice(MODEL_PRESETS, "architecture"))
    weights: str = field(
        default="none", metadata=_choice(("none", "imagenet"), "transfer presets: initial weights")
    )
    freeze_backbone: bool = True  # transfer presets: train only the head at first
    unfreeze_last: int = field(
        default=0, metadata=_range(0, 1000, "transfer presets: backbone layers left trainable")
    )
    width: float = field(
        default=1.0, metadata=_range(0.25, 4.0, "channel multiplier for CNN presets")
    )
    dropout: float = field(
        default=0.0, metadata=_range(0.0, 0.9, "dropout before the output layer")
    )
    blocks: tuple[ConvBlock, ...] = DEFAULT_BLOCKS  # custom: the conv blocks, in order
    head: HeadConfig = HeadConfig()  # custom: the classifier head

    def __post_init__(self) -> None:
        _validate(self)
        if not 1 <= len(self.blocks) <= 16:
            raise ValueError("ModelConfig.blocks must hold between 1 and 16 blocks")


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """How to fit: optimizer, schedule, regularisation, hardware."""

    # Defaults are the "fast" recipe (lib/recipes.py), measured by bench/bench_time_to_accuracy.py.
    epochs: int = field(default=6, metadata=_range(1, 1000, "passes over the training split"))
    batch_size: int = field(default=128, metadata=_range(1, 8192, "images per step"))
    optimizer: str = field(default="adam", metadata=_choice(OPTIMIZERS))
    learning_rate: float = field(default=3e-3, metadata=_range(1e-6, 10.0, "peak learning rate"))
    momentum: float = field(default=0.9, metadata=_range(0.0, 0.999, "SGD/RMSprop momentum"))
    nesterov: bool = True  # SGD only
    schedule: str = field(
        default="warmup_cosine", metadata=_choice(SCHEDULES, "learning-rate schedule")
    )
    warmup_epochs: float = field(default=0.3, metadata=_range(0.0, 100.0, "linear warm-up length"))
    step_epochs: int = field(default=10, metadata=_range(1, 1000, "step schedule: epochs per drop"))
    step_factor: float = field(
        default=0.1, metadata=_range(0.001, 1.0, "step/plateau: LR multiplier")
    )
    weight_decay: float = field(default=0.0, metadata=_range(0.0, 0.5, "decoupled weight decay"))
    label_smoothing: float = field(default=0.1, metadata=_range(0.0, 0.5))
    early_stopping_patience: int = field(
        default=0, metadata=_range(0, 1000, "epochs without improvement; 0 turns it off")
    )
    class_weights: str = field(default="none", metadata=_choice(("none", "balanced")))
    seed: int = field(default=0, metadata=_range(0, 2**31 - 1, "weights and shuffling seed"))
    mixed_precision: str = field(default="auto", metadata=_choice(("auto", "on", "off")))
    device: str = field(default="auto", metadata=_choice(("auto", "cpu", "gpu")))
    tta_flip: bool = False  # evaluate with horizontal-flip test-time augmentation

    def __post_init__(self) -> None:
        _validate(self)
        if self.schedule == "warmup_cosine" and self.warmup_epochs >= self.epochs > 1:
            raise ValueError(
                f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must be shorter than "
                f"epochs ({self.epochs})"
            )


@dataclass(frozen=True)
class RunConfig(_JsonMixin):
    """One whole recipe: data, augmentation, model and training."""

    name: str = ""  # a label for the runs table; empty gets a generated one
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    version: int = field(
        default=CONFIG_VERSION, metadata=_range(1, CONFIG_VERSION, "format version")
    )

    def __post_init__(self) -> None:
        _validate(self)
        if len(self.name) > 120:
            raise ValueError("RunConfig.name must be at most 120 characters")

    @classmethod
    def load(cls, path: str) -> RunConfig:
        """Read a recipe file; a ValueError names the file on any problem."""
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ValueError(f"cannot read run config {path}: {exc.strerror}") from None
        try:
            return cls.from_json(text)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json() + "\n")
