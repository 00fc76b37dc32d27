"""Model architectures: CNN presets, transfer-learning backbones and the custom CNN builder.

    from lib.architectures import build_model, check_model_config
    check_model_config(cfg, (28, 28, 1), 10)   # ModelConfigError naming the block and why
    model = build_model(cfg, (28, 28, 1), 10)

Every model takes float32 raw pixels in [0, 255] and rescales inside itself (a
``Rescaling`` layer, or the backbone's own preprocessing), so a saved model
classifies raw images. Every model outputs logits: the last layer is a float32
``Dense`` named ``logits`` without softmax, which keeps mixed precision
numerically safe and matches the trainer's ``from_logits=True`` loss.

Layer names start with the stage they belong to (``block2_conv1``,
``stage3_block1_add``, ``head_dense1``), which the summary and the block
diagram use to group layers.

Keras is imported inside functions: pages import this module for the preset
descriptions and the validation, and must not pay for TensorFlow to do so.

How fast_cnn was chosen: candidates were screened by time to accuracy on
Fashion-MNIST, first alternating epoch by epoch in one process, then through the
real trainer with the default recipe (bench/bench_time_to_accuracy.py; the
figures are in bench/results/). The tutorial net (conv32 → pool → dense128), a
stride-2 conv32 net, BatchNorm variants and deeper conv stacks all reached a
given accuracy later than conv16 (same padding) → pool → dense256.
Convolutions at 28 px resolution, not the dense layer, dominate the step on a
CPU, which is why the airbench-style BatchNorm/global-pooling stacks lose there
(they win on GPUs).
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from pathlib import Path

from lib.config import TRANSFER_PRESETS, ConvBlock, ModelConfig
from lib.errors import KestrelError

# Sides the transfer presets resize to: MobileNetV2's imagenet weights exist for
# these square sizes only, and one rule for all three backbones is easy to explain.
# Small images (MNIST-like) go to 96: large enough that the backbones' five
# stride-2 stages still leave a 3x3 map, small enough to train on a CPU.
TRANSFER_SIZES = (96, 128, 160, 192, 224)
WEIGHTS_TIMEOUT_S = 10.0  # per socket operation while fetching imagenet weights
MAX_HEAD_WEIGHTS = 200_000_000  # a flatten head bigger than this cannot train in memory
MAX_ACTIVATION_BYTES = 1 << 30  # per image, float32; beyond this a batch cannot fit


class ModelConfigError(KestrelError):
    """A model configuration that cannot be built; the message says which part and why."""


class WeightsUnavailableError(ModelConfigError):
    """Pretrained weights are neither cached nor downloadable (usually: offline)."""


@dataclass(frozen=True)
class PresetInfo:
    """What the Model page says about a preset."""

    title: str
    summary: str  # what the preset is, without measured figures
    kind: str  # "cnn", "transfer" or "custom"
    measured_by: str = ""  # the lib.recipes recipe whose bench/results figures it quotes

    @property
    def description(self) -> str:
        """The summary, then the measured figures when a recipe measures this preset."""
        if not self.measured_by:
            return self.summary
        from lib import measured

        return f"{self.summary} {measured.recipe_sentence(self.measured_by)}"


PRESET_INFO: dict[str, PresetInfo] = {
    "seed_cnn": PresetInfo(
        "Tutorial CNN",
        "Conv(32) → max-pool → flatten → dense(128): the classic Keras tutorial baseline.",
        "cnn",
    ),
    "lenet5": PresetInfo(
        "LeNet-5",
        "LeCun's 1998 layout: two 5×5 convs (6, 16) with average pooling, dense 120 → 84.",
        "cnn",
    ),
    "fast_cnn": PresetInfo(
        "Fast CNN (default)",
        "Conv(16) → max-pool → flatten → dense(256): the most accuracy per CPU-second "
        "among the CNNs we measured (with the fast recipe).",
        "cnn",
        measured_by="fast",
    ),
    "accurate_cnn": PresetInfo(
        "Accurate CNN",
        "Two conv + BatchNorm + max-pool stages (32, 64) and a dropout dense(256) head: "
        "several times the cost of the fast CNN per image (the ablation benchmark in "
        "bench/results/ gives the cost of its parts).",
        "cnn",
    ),
    "vgg_small": PresetInfo(
        "Small VGG",
        "Three VGG stages of two 3×3 convs (32, 64, 128) with BatchNorm, then dense(256).",
        "cnn",
    ),
    "resnet20": PresetInfo(
        "ResNet-20",
        "He et al.'s CIFAR ResNet: 3 stages × 3 residual blocks (16, 32, 64 filters).",
        "cnn",
    ),
    "mobilenetv2": PresetInfo(
        "MobileNetV2 (transfer)",
        "keras.applications MobileNetV2 backbone (2.3 M params) with a new head; "
        "images resized to at least 96 px.",
        "transfer",
    ),
    "efficientnetb0": PresetInfo(
        "EfficientNetB0 (transfer)",
        "keras.applications EfficientNetB0 backbone (4.0 M params) with a new head; "
        "images resized to at least 96 px.",
        "transfer",
    ),
    "resnet50": PresetInfo(
        "ResNet50 (transfer)",
        "keras.applications ResNet50 backbone (23.6 M params) with a new head; "
        "images resized to at least 96 px. Slow on a CPU.",
        "transfer",
    ),
    "custom": PresetInfo(
        "Custom CNN",
        "Your own stack of conv blocks and a classifier head, built from the form.",
        "custom",
    ),
}


# --------------------------------------------------------------------------- checks


def transfer_input_size(input_shape: tuple[int, int, int]) -> int:
    """The square side a transfer backbone gets: the smallest supported size ≥ the image."""
    side = max(input_shape[0], input_shape[1])
    return next((s for s in TRANSFER_SIZES if s >= side), TRANSFER_SIZES[-1])


def custom_feature_sizes(
    blocks: tuple[ConvBlock, ...], input_hw: tuple[int, int]
) -> list[tuple[int, int]]:
    """The (height, width) after each custom block; a zero means the block is impossible.

    Convolutions use "same" padding, so a stride-s conv gives ceil(n / s); 2×2
    pooling gives floor(n / 2), which is how a map reaches zero.
    """
    h, w = input_hw
    sizes = []
    for block in blocks:
        h, w = math.ceil(h / block.stride), math.ceil(w / block.stride)
        if block.pool != "none":
            h, w = h // 2, w // 2
        sizes.append((h, w))
        if h < 1 or w < 1:
            break
    return sizes


def _describe_block(i: int, block: ConvBlock) -> str:
    pool = "no pooling" if block.pool == "none" else f"{block.pool} pooling"
    return f"Block {i} ({block.filters} filters, stride {block.stride}, {pool})"


def _check_input(input_shape, num_classes) -> None:
    if (
        len(input_shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in input_shape)
        or min(input_shape) < 1
    ):
        raise ModelConfigError(
            f"input_shape must be (height, width, channels) with positive sizes, got {input_shape!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelConfigError(
            f"num_classes must be at least 2 (a classifier needs two classes), got {num_classes!r}"
        )


def _check_custom(cfg: ModelConfig, input_shape: tuple[int, int, int]) -> None:
    h, w, _ = input_shape
    for i, block in enumerate(cfg.blocks, 1):
        # The config refuses these already; a config built around its validation
        # (object.__setattr__, an old JSON) must still not reach Keras.
        if block.filters < 1:
            raise ModelConfigError(f"Block {i}: filters must be at least 1, got {block.filters}")
        if block.kernel < 1 or block.stride < 1 or block.convs < 1:
            raise ModelConfigError(
                f"Block {i}: kernel, stride and convs must be at least 1, "
                f"got kernel {block.kernel}, stride {block.stride}, convs {block.convs}"
            )
    sizes = custom_feature_sizes(cfg.blocks, (h, w))
    trail = f"{h}×{w}"
    for i, (block, (bh, bw)) in enumerate(zip(cfg.blocks, sizes, strict=False), 1):
        if bh < 1 or bw < 1:
            raise ModelConfigError(
                f"{_describe_block(i, block)}: the feature map would shrink to {bh}×{bw} px "
                f"(input {trail} → {bh}×{bw}). Remove pooling or stride from this or an "
                "earlier block, or use larger images."
            )
        trail += f" → {bh}×{bw}"
    per_image = 0
    ph, pw = h, w
    for block, (bh, bw) in zip(cfg.blocks, sizes, strict=False):
        ch, cw = math.ceil(ph / block.stride), math.ceil(pw / block.stride)
        # conv output, plus BatchNorm and activation outputs kept for backprop
        tensors = 3 if block.batch_norm else 2
        per_image += ch * cw * block.filters * block.convs * tensors * 4
        ph, pw = bh, bw
    if per_image > MAX_ACTIVATION_BYTES:
        raise ModelConfigError(
            f"the conv blocks would need {per_image / 2**30:.1f} GiB of activations per image "
            f"at {h}×{w} px, more than fits a training batch. Add pooling or stride to the "
            "first blocks, use fewer filters, or use smaller images."
        )
    last = cfg.blocks[-1]
    bh, bw = sizes[-1]
    features = bh * bw * last.filters if cfg.head.pooling == "flatten" else last.filters
    widths = (*cfg.head.dense,)
    if widths and features * widths[0] > MAX_HEAD_WEIGHTS:
        raise ModelConfigError(
            f"Head: flattening {bh}×{bw}×{last.filters} features into a dense layer of "
            f"{widths[0]} units needs {features * widths[0]:,} weights. Use global pooling, "
            "more pooling in the blocks, or a narrower dense layer."
        )


def check_model_config(cfg: ModelConfig, input_shape, num_classes: int) -> None:
    """Refuse a configuration that cannot be built for this input, before building it.

    Args:
        cfg: the model configuration.
        input_shape: (height, width, channels) of the images.
        num_classes: the number of output classes.

    Raises:
        ModelConfigError: names the block (or part) and why, and what to change.
    """
    input_shape = tuple(input_shape)
    _check_input(input_shape, num_classes)
    h, w, c = input_shape
    if cfg.preset == "custom":
        _check_custom(cfg, input_shape)
    elif cfg.preset in TRANSFER_PRESETS:
        if c not in (1, 3):
            raise ModelConfigError(
                f"{cfg.preset} needs grayscale (1 channel) or RGB (3 channel) images, got {c} "
                "channels. Set the dataset's colour mode to rgb or grayscale."
            )
    elif cfg.preset == "seed_cnn" and min(h, w) < 3:
        raise ModelConfigError(
            f"{cfg.preset}'s unpadded 3×3 convolution needs images of at least 3×3 px, got {h}×{w}"
        )


def model_warnings(cfg: ModelConfig, input_shape, num_classes: int) -> list[str]:
    """Buildable but probably unintended choices, as sentences for the page."""
    notes = []
    h, w, _ = tuple(input_shape)
    if cfg.preset in TRANSFER_PRESETS:
        size = transfer_input_size(input_shape)
        if (h, w) != (size, size):
            notes.append(
                f"{cfg.preset} resizes the {h}×{w} images to {size}×{size} inside the model."
            )
        if cfg.start_from:
            notes.append(
                f"The weights come from run {cfg.start_from} (its trained backbone and head); "
                "'Initial weights' does not apply."
            )
        elif cfg.weights == "none" and cfg.freeze_backbone:
            notes.append(
                "The backbone is frozen but randomly initialised: only the head will learn. "
                "Choose imagenet weights, or unfreeze the backbone."
            )
        if cfg.weights == "imagenet" and max(h, w) < 64:
            notes.append(
                "ImageNet features transfer poorly to images this small; a CNN preset "
                "trained from scratch is usually better and much faster."
            )
    if cfg.preset == "custom" and cfg.head.pooling == "flatten":
        sizes = custom_feature_sizes(cfg.blocks, (h, w))
        bh, bw = sizes[-1]
        features = bh * bw * cfg.blocks[-1].filters
        if cfg.head.dense and features * cfg.head.dense[0] > 5_000_000:
            notes.append(
                f"The flatten head has {features * cfg.head.dense[0]:,} weights in its first "
                "dense layer; global pooling is smaller and usually generalises better."
            )
    return notes


# --------------------------------------------------------------------------- building


def build_model(cfg: ModelConfig, input_shape, num_classes: int):
    """Build the Keras model a ModelConfig describes.

    Args:
        cfg: preset (or custom blocks and head) and options.
        input_shape: (height, width, channels) of the images.
        num_classes: the number of output classes.

    Returns:
        an uncompiled ``keras.Model`` taking float32 pixels in [0, 255], shape
        (B, H, W, C), and returning float32 logits of shape (B, num_classes).
        Layers follow the global dtype policy (mixed precision), except the
        float32 output layer.

    Raises:
        ModelConfigError: the configuration cannot be built for this input.
        WeightsUnavailableError: imagenet weights are not cached and cannot be downloaded.
    """
    import keras

    input_shape = tuple(int(d) for d in input_shape)
    check_model_config(cfg, input_shape, num_classes)
    inputs = keras.Input(shape=input_shape, name="pixels")
    if cfg.preset in TRANSFER_PRESETS:
        features = _transfer_features(cfg, inputs)
    else:
        x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
        features = _CNN_BUILDERS[cfg.preset](cfg, x)
    x = features
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=cfg.preset)


def _width(cfg: ModelConfig, channels: int) -> int:
    return max(1, round(channels * cfg.width))


def _activation(name: str, layer_name: str):
    import keras

    return keras.layers.Activation(name, name=layer_name)


def _conv_bn_act(x, filters, kernel, *, name, stride=1, activation="relu", batch_norm=True):
    """Conv ("same" padding) → BatchNorm → activation, named ``{name}_conv`` etc."""
    import keras

    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=not batch_norm,  # BatchNorm's shift makes a conv bias redundant
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return _activation(activation, f"{name}_{activation}")(x)


def _pool_if_room(x, name, kind="max"):
    """2×2 pooling, skipped when the map is already below 2 px (tiny inputs such as 8×8)."""
    import keras

    if min(x.shape[1], x.shape[2]) < 2:
        return x
    layer = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    return layer(2, name=name)(x)


def _seed_cnn(cfg, x):
    import keras

    x = keras.layers.Conv2D(_width(cfg, 32), 3, activation="relu", name="block1_conv")(x)
    x = _pool_if_room(x, "block1_pool")
    # Larger images get more pooling, so the flattened map stays ≤ 16 px a side
    # and the dense layer stays small (28 px: one pooling; 224 px: four).
    extra = 2
    while max(x.shape[1], x.shape[2]) > 16:
        x = keras.layers.MaxPooling2D(2, name=f"block1_pool{extra}")(x)
        extra += 1
    x = keras.layers.Flatten(name="head_flatten")(x)
    return keras.layers.Dense(128, activation="relu", name="head_dense1")(x)


def _lenet5(cfg, x):
    import keras

    # "same" padding (the 1998 net padded 28 px digits to 32) so it fits any size.
    for i, filters in enumerate((6, 16), 1):
        x = keras.layers.Conv2D(
            _width(cfg, filters), 5, padding="same", activation="relu", name=f"block{i}_conv"
        )(x)
        x = _pool_if_room(x, f"block{i}_pool", "avg")
    x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dense(_width(cfg, 120), activation="relu", name="head_dense1")(x)
    return keras.layers.Dense(_width(cfg, 84), activation="relu", name="head_dense2")(x)


def _fast_cnn(cfg, x):
    import keras

    # Chosen by time to accuracy through the real trainer on a CPU
    # (bench/bench_time_to_accuracy.py; figures in bench/results/): same padding
    # beat unpadded, and a stride-2 conv32 + dense128 ran faster per epoch but
    # stopped lower. Full-resolution convolutions dominate a CPU step, so few
    # filters there and the capacity in the dense layer; BatchNorm slowed steps
    # for no gain.
    x = keras.layers.Conv2D(
        _width(cfg, 16), 3, padding="same", activation="relu", name="block1_conv"
    )(x)
    x = _pool_if_room(x, "block1_pool1")
    # Larger images get more pooling, so the flattened map stays ≤ 16 px a side
    # and the dense layer small (28 px: none more; 64 px: one; 224 px: three).
    i = 2
    while max(x.shape[1], x.shape[2]) > 16:
        x = keras.layers.MaxPooling2D(2, name=f"block1_pool{i}")(x)
        i += 1
    x = keras.layers.Flatten(name="head_flatten")(x)
    return keras.layers.Dense(_width(cfg, 256), activation="relu", name="head_dense1")(x)


def _accurate_cnn(cfg, x):
    import keras

    # The zalando Fashion-MNIST benchmark table's "2 conv + pooling + BatchNorm"
    # net, with a dropout-regularised dense head; several times fast_cnn's cost
    # per image.
    for i, filters in enumerate((32, 64), 1):
        x = _conv_bn_act(x, _width(cfg, filters), 3, name=f"block{i}")
        x = _pool_if_room(x, f"block{i}_pool")
    x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dropout(0.3, name="head_dropout1")(x)
    return keras.layers.Dense(_width(cfg, 256), activation="relu", name="head_dense1")(x)


def _vgg_small(cfg, x):
    import keras

    for i, filters in enumerate((32, 64, 128), 1):
        x = _conv_bn_act(x, _width(cfg, filters), 3, name=f"block{i}_1")
        x = _conv_bn_act(x, _width(cfg, filters), 3, name=f"block{i}_2")
        x = _pool_if_room(x, f"block{i}_pool")
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    return keras.layers.Dense(_width(cfg, 256), activation="relu", name="head_dense1")(x)


def _resnet20(cfg, x):
    import keras

    x = _conv_bn_act(x, _width(cfg, 16), 3, name="stem")
    for stage, filters in enumerate((16, 32, 64), 1):
        filters = _width(cfg, filters)
        for block in range(1, 4):
            name = f"stage{stage}_block{block}"
            stride = 2 if stage > 1 and block == 1 and min(x.shape[1], x.shape[2]) >= 2 else 1
            shortcut = x
            y = _conv_bn_act(x, filters, 3, stride=stride, name=f"{name}_1")
            y = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv"
            )(y)
            y = keras.layers.BatchNormalization(name=f"{name}_2_bn")(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                # projection shortcut (ResNet option B) where the shape changes
                shortcut = keras.layers.Conv2D(
                    filters, 1, strides=stride, use_bias=False, name=f"{name}_proj_conv"
                )(shortcut)
                shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
            x = keras.layers.Activation("relu", name=f"{name}_out")(x)
    return keras.layers.GlobalAveragePooling2D(name="head_gap")(x)


def _custom(cfg, x):
    import keras

    for i, block in enumerate(cfg.blocks, 1):
        for j in range(1, block.convs + 1):
            x = _conv_bn_act(
                x,
                block.filters,
                block.kernel,
                stride=block.stride if j == 1 else 1,  # stride on the first conv only
                activation=block.activation,
                batch_norm=block.batch_norm,
                name=f"block{i}_{j}",
            )
        if block.pool != "none":
            layer = (
                keras.layers.MaxPooling2D if block.pool == "max" else keras.layers.AveragePooling2D
            )
            x = layer(2, name=f"block{i}_pool")(x)
        if block.dropout > 0:
            x = keras.layers.Dropout(block.dropout, name=f"block{i}_dropout")(x)
    head = cfg.head
    pool = {
        "global_avg": keras.layers.GlobalAveragePooling2D(name="head_gap"),
        "global_max": keras.layers.GlobalMaxPooling2D(name="head_gmp"),
        "flatten": keras.layers.Flatten(name="head_flatten"),
    }[head.pooling]
    x = pool(x)
    # The head has no activation field; it uses the last block's, so a GELU net stays GELU.
    activation = cfg.blocks[-1].activation
    for k, units in enumerate(head.dense, 1):
        if head.dropout > 0:
            x = keras.layers.Dropout(head.dropout, name=f"head_dropout{k}")(x)
        x = keras.layers.Dense(units, name=f"head_dense{k}")(x)
        x = _activation(activation, f"head_{activation}{k}")(x)
    return x


_CNN_BUILDERS = {
    "seed_cnn": _seed_cnn,
    "lenet5": _lenet5,
    "fast_cnn": _fast_cnn,
    "accurate_cnn": _accurate_cnn,
    "vgg_small": _vgg_small,
    "resnet20": _resnet20,
    "custom": _custom,
}


# --------------------------------------------------------------------------- transfer

# ImageNet channel means in BGR order, for ResNet50's "caffe" preprocessing.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _transfer_features(cfg: ModelConfig, inputs):
    """Resize, expand grayscale, preprocess as the backbone expects, run the backbone, pool."""
    import keras
    import numpy as np

    h, w, c = inputs.shape[1:]
    size = transfer_input_size((h, w, c))
    x = inputs
    if (h, w) != (size, size):
        x = keras.layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    # Preprocessing uses built-in layers only (no Lambda), so the saved model
    # loads with safe_mode=True; tests check it equals the backbone's preprocess_input.
    if cfg.preset == "resnet50":
        # caffe mode: RGB→BGR and mean subtraction as one fixed 1×1 conv, which
        # also expands grayscale to three channels.
        kernel = np.zeros((1, 1, c, 3), dtype="float32")
        for out_ch, in_ch in enumerate((2, 1, 0)):
            kernel[0, 0, in_ch if c == 3 else 0, out_ch] = 1.0
        bias = -np.asarray(_CAFFE_MEAN_BGR, dtype="float32")
        prep = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
        x = prep(x)
        prep.set_weights([kernel, bias])
    else:
        if c == 1:
            x = keras.layers.Concatenate(name="rgb")([x, x, x])
        if cfg.preset == "mobilenetv2":
            # "tf" mode: [0, 255] → [-1, 1]
            x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(x)
        # EfficientNet rescales and normalises inside itself: raw pixels go in.
    backbone = _backbone(cfg, size)
    x = backbone(x)
    return keras.layers.GlobalAveragePooling2D(name="head_gap")(x)


def _weights_spec(preset: str, size: int) -> tuple[str, str, str | None]:
    """(file name, URL, sha256 or None) of a backbone's imagenet no-top weights."""
    from lib import compat

    return compat.imagenet_weights_spec(preset, size)


def keras_cache_dir() -> Path:
    """Where keras.applications looks for downloads: $KERAS_HOME at import, else ~/.keras."""
    from lib import compat

    return compat.keras_home()


def imagenet_weights_path(preset: str, size: int) -> Path:
    """The cached imagenet weights file of a transfer preset at this input size."""
    name, _, _ = _weights_spec(preset, size)
    return keras_cache_dir() / "models" / name


def _backbone(cfg: ModelConfig, size: int):
    import keras

    constructor = {
        "mobilenetv2": keras.applications.MobileNetV2,
        "efficientnetb0": keras.applications.EfficientNetB0,
        "resnet50": keras.applications.ResNet50,
    }[cfg.preset]
    kwargs = {"include_top": False, "input_shape": (size, size, 3), "weights": None}
    if cfg.weights == "imagenet":
        kwargs["weights"] = "imagenet"
        backbone = _with_weights_download(cfg.preset, size, lambda: constructor(**kwargs))
    else:
        backbone = constructor(**kwargs)
    backbone.name = f"{cfg.preset}_backbone"
    _set_trainable(backbone, cfg)
    return backbone


def _with_weights_download(preset: str, size: int, build):
    """Run ``build`` (which loads imagenet weights) after making sure the file is cached.

    Keras' ``get_file`` has no timeout and hangs on a dead network, so the
    download runs under a short socket timeout, and any failure becomes a
    WeightsUnavailableError that tells the user what to do.
    """
    from keras.utils import get_file

    name, url, file_hash = _weights_spec(preset, size)
    cache = keras_cache_dir()
    target = cache / "models" / name
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(WEIGHTS_TIMEOUT_S)
    try:
        if not target.exists():
            get_file(name, url, cache_subdir="models", cache_dir=str(cache), file_hash=file_hash)
        return build()
    except WeightsUnavailableError:
        raise
    except Exception as exc:  # network errors come wrapped in a plain Exception by get_file
        raise WeightsUnavailableError(
            f"ImageNet weights for {preset} are not cached ({target}) and could not be "
            f"downloaded ({type(exc).__name__}: {str(exc)[:200]}). Choose weights 'none' to "
            f"train from random initialisation, or download {url} on a machine with internet "
            f"access and copy it to {target}."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _set_trainable(backbone, cfg: ModelConfig) -> None:
    """Freeze the backbone, leaving its last ``unfreeze_last`` layers trainable.

    BatchNorm layers stay frozen while the rest of the backbone is frozen: in
    Keras a frozen BatchNorm runs in inference mode, which keeps fine-tuning
    from wrecking the pretrained statistics on small batches.
    """
    import keras

    if not cfg.freeze_backbone:
        backbone.trainable = True
        for layer in backbone.layers:
            layer.trainable = True
        return
    if cfg.unfreeze_last == 0:
        backbone.trainable = False
        return
    backbone.trainable = True  # the layers below decide; a frozen parent would hide them
    layers = backbone.layers
    cut = max(0, len(layers) - cfg.unfreeze_last)
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
