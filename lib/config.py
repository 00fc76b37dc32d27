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
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from lib.errors import KestrelError

CONFIG_VERSION = 1


class ConfigError(KestrelError):
    """A config value out of its range, of the wrong type, or inconsistent with another field."""


DATA_SOURCES = (
    "shapes",  # procedural, generated from a seed: the embedded default
    "digits",  # scikit-learn's bundled 8x8 digits
    "fashion_mnist",
    "mnist",
    "cifar10",
    "cifar100",
    "folder",  # a server directory with one sub-folder per class
    "upload",  # an uploaded archive or directory, extracted into the workspace
    "dataset",  # a dataset built in the app: path is <name>@<version> (lib.datasets)
    "csv_files",  # images beside a CSV/TSV of file,label[,split]: path is the CSV
    "pixel_csv",  # a CSV of label,pixel0..pixelN rows (MNIST-style): path is the CSV
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
FILE_SOURCES = ("folder", "upload", "dataset", "csv_files", "pixel_csv")  # path required
TRANSFER_PRESETS = ("mobilenetv2", "efficientnetb0", "resnet50")
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a run folder's name
AUGMENT_PRESETS = ("none", "light", "standard", "strong", "custom")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "one_cycle", "step", "reduce_on_plateau")
ACTIVATIONS = ("relu", "gelu", "swish", "elu", "tanh", "leaky_relu")


def _range(lo: float, hi: float, doc: str = "", **form: Any) -> dict[str, Any]:
    """Metadata of a numeric field: its limits, what it means, and how a form shows it."""
    return {"range": (lo, hi), "doc": doc, **form}


def _choice(options: tuple[str, ...], doc: str = "", **form: Any) -> dict[str, Any]:
    """Metadata of a choice field; ``labels`` maps a value to the words a form shows."""
    return {"choices": options, "doc": doc, **form}


def _plain(doc: str = "", **form: Any) -> dict[str, Any]:
    """Metadata of a field without limits (a flag, a text, a nested config)."""
    return {"doc": doc, **form}


# The form keys a field's metadata may carry (pages/forms.py reads them):
#   label     the widget's label
#   step      number inputs and sliders: the step of the +/- buttons
#   format    number inputs: printf-style format ("%.1e")
#   widget    "slider" for a slider instead of a number box, "toggle" for a flag
#   labels    choices: {value: words shown}
#   log       numeric: a search over it is on a log scale (learning rates)
#   cli_only  True: no widget; only a recipe file or the CLI sets it
#   help      a longer explanation for the widget's tooltip (default: doc)
#   group     a heading the form puts the field under
#   part      a whole config edited on its own page (RunConfig.data is the Dataset page)
FORM_KEYS = (
    "label", "step", "format", "widget", "labels", "log", "cli_only", "help", "group", "part",
)  # fmt: skip


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
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif expected is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where} must be a whole number, got {value!r}")
        elif expected is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value!r}")
        elif expected is str and not isinstance(value, str):
            raise ConfigError(f"{where} must be text, got {value!r}")
        meta = f.metadata
        if "range" in meta:
            lo, hi = meta["range"]
            if not lo <= value <= hi:
                raise ConfigError(f"{where} must be between {lo} and {hi}, got {value!r}")
        if "choices" in meta and value not in meta["choices"]:
            allowed = ", ".join(meta["choices"])
            raise ConfigError(f"{where} must be one of: {allowed}; got {value!r}")


def _from_dict(cls: type, data: Any) -> Any:
    """Build config ``cls`` from plain JSON data, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
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
            raise ConfigError(f"{where} must be a list, got {value!r}")
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
            raise ConfigError(f"not valid JSON: {exc}") from None
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

    source: str = field(
        default="shapes",
        metadata=_choice(
            DATA_SOURCES,
            "dataset source",
            label="Source",
            labels={
                "shapes": "Shapes — generated, needs nothing",
                "digits": "Digits — scikit-learn 8×8",
                "fashion_mnist": "Fashion-MNIST",
                "mnist": "MNIST",
                "cifar10": "CIFAR-10",
                "cifar100": "CIFAR-100",
                "folder": "Folder on the server",
                "upload": "Uploaded images",
                "dataset": "Built dataset (a version)",
                "csv_files": "Images + labels file (CSV/TSV)",
                "pixel_csv": "Pixel CSV (label, pixel0…)",
            },
        ),
    )
    path: str = field(
        default="",
        metadata=_plain(
            "folder: server directory; upload: upload id; dataset: name@version; "
            "csv_files/pixel_csv: the CSV file",
            label="Folder on the server",
        ),
    )
    pixel_shape: str = field(
        default="",
        metadata=_plain(
            "pixel_csv: image shape HxW or HxWxC; empty infers a square image",
            label="Pixel shape (empty infers it)",
            help="How the pixel columns of each row make an image, row by row: 28x28 for "
            "MNIST-style grayscale, 32x32x3 for colour. Empty: a square grayscale image, "
            "else a square RGB one.",
        ),
    )
    image_size: int = field(
        default=0,
        metadata=_range(
            0,
            512,
            "square side to resize to; 0 keeps the source size",
            label="Resize to (px, 0 keeps)",
            step=8,
        ),
    )
    color_mode: str = field(
        default="auto",
        metadata=_choice(
            ("auto", "rgb", "grayscale"),
            "channels to decode to",
            label="Channels",
            labels={"auto": "as the source", "rgb": "RGB (3)", "grayscale": "grayscale (1)"},
        ),
    )
    val_fraction: float = field(
        default=0.1,
        metadata=_range(
            0.0,
            0.5,
            "share of training images held out for validation",
            label="Validation share",
            widget="slider",
            step=0.05,
        ),
    )
    test_fraction: float = field(
        default=0.1,
        metadata=_range(
            0.0,
            0.5,
            "test share, for sources without their own test split",
            label="Test share",
            widget="slider",
            step=0.05,
        ),
    )
    seed: int = field(
        default=0, metadata=_range(0, 2**31 - 1, "split and generation seed", label="Seed")
    )
    max_per_class: int = field(
        default=0,
        metadata=_range(
            0,
            10_000_000,
            "cap on images per class; 0 means all",
            label="Max per class (0 = all)",
            step=100,
        ),
    )
    shapes_count: int = field(
        default=3000,
        metadata=_range(
            60,
            200_000,
            "shapes: total images generated, spread evenly over 6 shapes",
            label="Images",
            step=600,
        ),
    )
    shapes_size: int = field(
        default=64,
        metadata=_range(16, 256, "shapes: image side in pixels", label="Side (px)", step=16),
    )

    def __post_init__(self) -> None:
        _validate(self)
        if self.source in FILE_SOURCES and not self.path:
            raise ConfigError(f"DataConfig.path is required for source {self.source!r}")
        if self.image_size and self.image_size < 8:
            raise ConfigError("DataConfig.image_size must be 0 (keep) or between 8 and 512")


def _aug(lo: float, hi: float, doc: str, label: str, group: str, help: str) -> dict[str, Any]:
    return _range(lo, hi, doc, label=label, group=group, help=help, widget="slider", step=0.01)


@dataclass(frozen=True)
class AugmentConfig(_JsonMixin):
    """Random training-time transforms; all zero/False means no augmentation."""

    preset: str = field(
        default="none",
        metadata=_choice(AUGMENT_PRESETS, "preset the values came from", label="Preset"),
    )
    horizontal_flip: bool = field(
        default=False,
        metadata=_plain(
            "mirror left-right",
            label="Horizontal flip",
            group="Geometry",
            widget="toggle",
            help="Mirror left–right, for half the images.",
        ),
    )
    vertical_flip: bool = field(
        default=False,
        metadata=_plain(
            "mirror top-bottom",
            label="Vertical flip",
            group="Geometry",
            widget="toggle",
            help="Mirror top–bottom, for half the images. Only for data with no 'up' "
            "(cells, satellite images).",
        ),
    )
    rotation: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 0.5, "max rotation, fraction of a full turn", "Rotation", "Geometry",
            "Largest rotation, as a share of a full turn: 0.05 is ±18°.",
        ),
    )  # fmt: skip
    zoom: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 0.5, "max zoom in/out, fraction of size", "Zoom", "Geometry",
            "Largest zoom in or out, as a share of the size: 0.1 is 90–110%.",
        ),
    )  # fmt: skip
    translate: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 0.5, "max shift, fraction of size", "Shift", "Geometry",
            "Largest move sideways and up/down, as a share of the size.",
        ),
    )  # fmt: skip
    crop: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 0.5, "max share cropped away, then resized back", "Random crop", "Geometry",
            "Cut away up to this share of each side at a random place, then stretch back to "
            "full size.",
        ),
    )  # fmt: skip
    contrast: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 1.0, "max contrast change", "Contrast", "Colour",
            "Largest contrast change: 0.2 scales contrast by 0.8–1.2.",
        ),
    )  # fmt: skip
    brightness: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 1.0, "max brightness change", "Brightness", "Colour",
            "Largest brightness change, as a share of the pixel range.",
        ),
    )  # fmt: skip
    saturation: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 1.0, "max saturation change (colour only)", "Saturation", "Colour",
            "How far colours may fade to grey or grow more vivid.",
        ),
    )  # fmt: skip
    hue: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 0.5, "max hue shift (colour only)", "Hue", "Colour",
            "Largest shift of the colour wheel, as a share of a turn.",
        ),
    )  # fmt: skip
    noise: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 0.5, "Gaussian noise std, fraction of 255", "Gaussian noise",
            "Noise and erasing", "Noise strength (standard deviation) as a share of 255.",
        ),
    )  # fmt: skip
    erasing: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 0.5, "max area erased (cutout)", "Random erasing", "Noise and erasing",
            "Half the images get a noise patch covering up to this share of the image (cutout).",
        ),
    )  # fmt: skip
    mixup: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 1.0, "MixUp alpha; 0 turns it off", "MixUp", "Mixing (whole batch)",
            "Blend each image and its label with another image of the batch; the value is "
            "Beta(α, α)'s α, 0 is off.",
        ),
    )  # fmt: skip
    cutmix: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 1.0, "CutMix alpha; 0 turns it off", "CutMix", "Mixing (whole batch)",
            "Paste a patch of another image of the batch, labels mixed by area; α as for "
            "MixUp, 0 is off.",
        ),
    )  # fmt: skip
    randaugment_ops: int = field(
        default=0,
        metadata=_range(
            0, 4, "RandAugment ops per image; 0 off", label="RandAugment ops",
            group="RandAugment", widget="slider", step=1,
            help="Apply this many transforms picked at random from 11 (shear, solarize, "
            "equalize…); 0 is off.",
        ),
    )  # fmt: skip
    randaugment_magnitude: float = field(
        default=0.5,
        metadata=_aug(
            0.0, 1.0, "RandAugment strength", "RandAugment strength", "RandAugment",
            "How strong each RandAugment transform is.",
        ),
    )  # fmt: skip
    # Hardening (lib.training.harden): made in the train step from the current model,
    # so the preview does not show them. All zero: ordinary training.
    adversarial_epsilon: float = field(
        default=0.0,
        metadata=_range(
            0.0, 16.0, "adversarial training budget in grey levels of 255; 0 off",
            label="Adversarial ε (of 255)", group="Hardening", widget="slider", step=0.5,
            help="Train on adversarial copies of each batch beside the clean images, made "
            "within ±ε grey levels (2 means ε = 2/255). Makes the model resist small "
            "deliberate changes, at some clean accuracy and about twice the training time.",
        ),
    )  # fmt: skip
    adversarial_steps: int = field(
        default=0,
        metadata=_range(
            0, 10, "PGD steps of the adversarial copies; 0 is FGSM (one step)",
            label="Adversarial PGD steps", group="Hardening", widget="slider", step=1,
            help="0: FGSM, one gradient-sign step. 1-10: PGD from a random start; stronger "
            "and slower (each step costs one more backward pass).",
        ),
    )  # fmt: skip
    corruption: float = field(
        default=0.0,
        metadata=_aug(
            0.0, 1.0, "share of training images given a random common corruption",
            "Corruption augmentation", "Hardening",
            "Each training image is, with this probability, given one of: Gaussian noise, "
            "blur, a brightness shift, low contrast or an occluding square.",
        ),
    )  # fmt: skip

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class ConvBlock(_JsonMixin):
    """One block of the custom CNN: conv layer(s), then optional pooling and dropout."""

    filters: int = field(
        default=32, metadata=_range(1, 1024, "output channels", label="Filters", step=8)
    )
    kernel: int = field(default=3, metadata=_range(1, 11, "kernel side", label="Kernel", step=2))
    stride: int = field(default=1, metadata=_range(1, 4, "conv stride", label="Stride"))
    convs: int = field(default=1, metadata=_range(1, 4, "conv layers in the block", label="Convs"))
    activation: str = field(default="relu", metadata=_choice(ACTIVATIONS, label="Activation"))
    batch_norm: bool = field(
        default=True, metadata=_plain("BatchNorm after each conv", label="Batch norm")
    )
    pool: str = field(default="max", metadata=_choice(("none", "max", "avg"), label="Pooling"))
    dropout: float = field(
        default=0.0,
        metadata=_range(0.0, 0.9, "dropout after the block", label="Dropout", step=0.05),
    )

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class HeadConfig(_JsonMixin):
    """The classifier head of the custom CNN."""

    pooling: str = field(
        default="global_avg",
        metadata=_choice(
            ("global_avg", "global_max", "flatten"),
            label="Pooling",
            labels={
                "global_avg": "global average",
                "global_max": "global max",
                "flatten": "flatten",
            },
        ),
    )
    dense: tuple[int, ...] = field(
        default=(128,),
        metadata=_plain(
            "hidden dense layer widths, before the output layer",
            label="Dense layers",
            help="Hidden widths, e.g. 128, 64; empty for none.",
        ),
    )
    dropout: float = field(
        default=0.0,
        metadata=_range(
            0.0,
            0.9,
            "dropout before each dense layer",
            label="Dropout before each dense",
            step=0.05,
        ),
    )

    def __post_init__(self) -> None:
        _validate(self)
        if len(self.dense) > 8:
            raise ConfigError("HeadConfig.dense allows at most 8 hidden layers")
        for i, units in enumerate(self.dense):
            if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= 8192:
                raise ConfigError(
                    f"HeadConfig.dense[{i}] must be between 1 and 8192, got {units!r}"
                )


DEFAULT_BLOCKS = (ConvBlock(filters=32), ConvBlock(filters=64))
MAX_BLOCKS = 16  # ModelConfig.blocks holds 1 to this many blocks


@dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """Which network: a preset, or a custom CNN described by blocks and a head."""

    preset: str = field(
        default="fast_cnn", metadata=_choice(MODEL_PRESETS, "architecture", label="Architecture")
    )
    weights: str = field(
        default="none",
        metadata=_choice(
            ("none", "imagenet"),
            "transfer presets: initial weights",
            label="Initial weights",
            labels={"imagenet": "ImageNet", "none": "random"},
            widget="radio",
            help="ImageNet weights need a download once (about 10–100 MB), or a cached copy.",
        ),
    )
    freeze_backbone: bool = field(
        default=True,
        metadata=_plain(
            "transfer presets: train only the head at first",
            label="Freeze backbone",
            help="Train only the new head; the standard first step of transfer learning.",
        ),
    )
    unfreeze_last: int = field(
        default=0,
        metadata=_range(
            0,
            1000,
            "transfer presets: backbone layers left trainable",
            label="Unfreeze the last N backbone layers",
            help="Fine-tune the top of a frozen backbone (BatchNorm layers stay frozen).",
        ),
    )
    start_from: str = field(
        default="",
        metadata=_plain(
            "transfer presets: a completed run whose trained weights this run starts from",
            label="Start from a trained run",
            help=(
                "Fine-tuning, the second phase of transfer learning: start from a run's trained "
                "backbone and head instead of new ones. The run must have the same architecture, "
                "image size and number of classes."
            ),
        ),
    )
    width: float = field(
        default=1.0,
        metadata=_range(
            0.25,
            4.0,
            "channel multiplier for CNN presets",
            label="Width (channel multiplier)",
            widget="slider",
            step=0.25,
            help="Scales every layer's channels; 2 doubles them (about 4× the compute).",
        ),
    )
    dropout: float = field(
        default=0.0,
        metadata=_range(
            0.0,
            0.9,
            "dropout before the output layer",
            label="Dropout before the output layer",
            widget="slider",
            step=0.05,
        ),
    )
    blocks: tuple[ConvBlock, ...] = field(
        default=DEFAULT_BLOCKS,
        metadata=_plain("custom: the conv blocks, in order", label="Conv blocks"),
    )
    head: HeadConfig = field(
        default=HeadConfig(), metadata=_plain("custom: the classifier head", label="Head")
    )

    def __post_init__(self) -> None:
        _validate(self)
        if not 1 <= len(self.blocks) <= MAX_BLOCKS:
            raise ConfigError(f"ModelConfig.blocks must hold between 1 and {MAX_BLOCKS} blocks")
        if self.start_from and not RUN_ID_RE.fullmatch(self.start_from):
            raise ConfigError(
                f"ModelConfig.start_from must be a run id (letters, digits, '-', '_', '.'), "
                f"not {self.start_from[:60]!r}"
            )
        if self.start_from and self.preset not in TRANSFER_PRESETS:
            raise ConfigError(
                "ModelConfig.start_from (fine-tuning a trained run) needs a transfer preset "
                f"({', '.join(TRANSFER_PRESETS)}), not {self.preset!r}"
            )


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """How to fit: optimizer, schedule, regularisation, hardware."""

    # Defaults are the "fast" recipe (lib/recipes.py), measured by bench/bench_time_to_accuracy.py.
    epochs: int = field(
        default=6, metadata=_range(1, 1000, "passes over the training split", label="Epochs")
    )
    batch_size: int = field(
        default=128, metadata=_range(1, 8192, "images per step", label="Batch size")
    )
    optimizer: str = field(
        default="adam",
        metadata=_choice(
            OPTIMIZERS,
            label="Optimizer",
            labels={"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"},
        ),
    )
    learning_rate: float = field(
        default=3e-3,
        metadata=_range(
            1e-6,
            10.0,
            "peak learning rate",
            label="Learning rate",
            format="%.1e",
            step=1e-4,
            log=True,
        ),
    )
    momentum: float = field(
        default=0.9,
        metadata=_range(
            0.0, 0.999, "SGD/RMSprop momentum", label="Momentum", format="%.3f", step=0.01
        ),
    )
    nesterov: bool = field(
        default=True, metadata=_plain("SGD only: Nesterov momentum", label="Nesterov (SGD)")
    )
    schedule: str = field(
        default="warmup_cosine",
        metadata=_choice(
            SCHEDULES,
            "learning-rate schedule",
            label="LR schedule",
            labels={
                "constant": "constant",
                "cosine": "cosine decay",
                "warmup_cosine": "warm-up + cosine",
                "one_cycle": "one-cycle",
                "step": "step decay",
                "reduce_on_plateau": "reduce on plateau",
            },
        ),
    )
    warmup_epochs: float = field(
        default=0.3,
        metadata=_range(
            0.0, 100.0, "linear warm-up length", label="Warm-up epochs", format="%.1f", step=0.5
        ),
    )
    step_epochs: int = field(
        default=10,
        metadata=_range(
            1,
            1000,
            "step schedule: epochs per drop",
            label="Step: epochs per drop",
            help="step schedule: epochs between drops; plateau: patience",
        ),
    )
    step_factor: float = field(
        default=0.1,
        metadata=_range(
            0.001,
            1.0,
            "step/plateau: LR multiplier",
            label="Step / plateau factor",
            format="%.3f",
            step=0.05,
        ),
    )
    weight_decay: float = field(
        default=0.0,
        metadata=_range(
            0.0, 0.5, "decoupled weight decay", label="Weight decay", format="%.4f", step=1e-4
        ),
    )
    label_smoothing: float = field(
        default=0.1,
        metadata=_range(
            0.0, 0.5, "share of the target spread over the other classes",
            label="Label smoothing", format="%.2f", step=0.05,
        ),
    )  # fmt: skip
    early_stopping_patience: int = field(
        default=0,
        metadata=_range(
            0,
            1000,
            "epochs without improvement; 0 turns it off",
            label="Early-stopping patience",
        ),
    )
    class_weights: str = field(
        default="none",
        metadata=_choice(
            ("none", "balanced"),
            "weigh each class by the inverse of its share of the training images",
            label="Class weights",
        ),
    )
    seed: int = field(
        default=0, metadata=_range(0, 2**31 - 1, "weights and shuffling seed", label="Seed")
    )
    mixed_precision: str = field(
        default="auto",
        metadata=_choice(
            ("auto", "on", "off"),
            "half-precision compute; auto: float16 on GPUs with tensor cores, bfloat16 on "
            "CPUs with AVX-512 BF16 or AMX (not for ImageNet backbones), float32 elsewhere",
            label="Mixed precision",
        ),
    )
    device: str = field(
        default="auto", metadata=_choice(("auto", "cpu", "gpu"), "where to train", label="Device")
    )
    tta_flip: bool = field(
        default=False,
        metadata=_plain(
            "evaluate with horizontal-flip test-time augmentation",
            label="Flip test-time augmentation",
        ),
    )

    def __post_init__(self) -> None:
        _validate(self)
        if self.schedule == "warmup_cosine" and self.warmup_epochs >= self.epochs > 1:
            raise ConfigError(
                f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must be shorter than "
                f"epochs ({self.epochs})"
            )


@dataclass(frozen=True)
class RunConfig(_JsonMixin):
    """One whole recipe: data, augmentation, model and training."""

    name: str = field(
        default="",
        metadata=_plain(
            "a label for the runs table; empty gets a generated one", label="Run name (optional)"
        ),
    )
    # The four parts: each has its own page, whose widgets bind the part's fields.
    data: DataConfig = field(default=DataConfig(), metadata=_plain("the dataset", part="Dataset"))
    augment: AugmentConfig = field(
        default=AugmentConfig(), metadata=_plain("training-time transforms", part="Augmentation")
    )
    model: ModelConfig = field(default=ModelConfig(), metadata=_plain("the network", part="Model"))
    train: TrainConfig = field(default=TrainConfig(), metadata=_plain("how to fit", part="Train"))
    version: int = field(
        default=CONFIG_VERSION, metadata=_range(1, CONFIG_VERSION, "format version", cli_only=True)
    )

    def __post_init__(self) -> None:
        _validate(self)
        if len(self.name) > 120:
            raise ConfigError("RunConfig.name must be at most 120 characters")

    @classmethod
    def load(cls, path: str) -> RunConfig:
        """Read a recipe file; a ValueError names the file on any problem."""
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read run config {path}: {exc.strerror}") from None
        try:
            return cls.from_json(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json() + "\n")
