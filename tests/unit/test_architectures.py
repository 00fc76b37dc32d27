"""Model presets, the custom CNN builder's validation, and imagenet weights offline."""

import dataclasses
import time

import h5py
import keras
import numpy as np
import pytest

from lib import architectures
from lib.architectures import (
    ModelConfigError,
    WeightsUnavailableError,
    build_model,
    check_model_config,
    transfer_input_size,
)
from lib.config import MODEL_PRESETS, TRANSFER_PRESETS, ConvBlock, HeadConfig, ModelConfig

SHAPES = [(8, 8, 1), (28, 28, 1), (32, 32, 3), (64, 64, 3)]
CNN_PRESETS = [p for p in MODEL_PRESETS if p not in TRANSFER_PRESETS]


def _forward(model, shape, batch):
    x = np.random.default_rng(0).uniform(0, 255, (batch, *shape)).astype("float32")
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("classes", [10, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("preset", CNN_PRESETS)
def test_cnn_preset_builds_and_outputs_logits(preset, shape, classes):
    model = build_model(ModelConfig(preset=preset), shape, classes)
    out = _forward(model, shape, batch=3)
    assert out.shape == (3, classes)
    assert np.all(np.isfinite(out))
    logits = model.get_layer("logits")
    assert logits.activation is keras.activations.linear
    # logits, not probabilities: rows do not sum to one
    assert not np.allclose(out.sum(axis=1), 1.0, atol=1e-3)


# A transfer backbone takes seconds to build, so each (preset, shape) is built
# once, alternating the class count (every preset still meets both head sizes),
# and the same model is checked for its preprocessing and freezing.
PREPROCESS = {
    "mobilenetv2": keras.applications.mobilenet_v2.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
}


@pytest.mark.parametrize(
    ("shape", "classes"), list(zip(SHAPES, [10, 2, 10, 2], strict=True)), ids=str
)
@pytest.mark.parametrize("preset", TRANSFER_PRESETS)
def test_transfer_preset_builds_and_outputs_logits(preset, shape, classes):
    cfg = ModelConfig(preset=preset, weights="none")
    model = build_model(cfg, shape, classes)
    out = _forward(model, shape, batch=1)
    assert out.shape == (1, classes)
    assert np.all(np.isfinite(out))
    size = transfer_input_size(shape)
    backbone = model.get_layer(f"{preset}_backbone")
    assert backbone.input_shape == (None, size, size, 3)
    # frozen by default: only the head (logits kernel and bias) trains
    assert not backbone.trainable
    assert len(model.trainable_weights) == 2
    # the backbone gets exactly what its own preprocess_input makes of the resized image
    x = np.random.default_rng(1).uniform(0, 255, (2, *shape)).astype("float32")
    resized = np.asarray(keras.Model(model.input, model.get_layer("resize").output)(x))
    rgb = np.repeat(resized, 3, axis=-1) if shape[-1] == 1 else resized
    if preset in PREPROCESS:
        prep = keras.Model(model.input, model.get_layer("preprocess").output)
        expected = np.asarray(PREPROCESS[preset](rgb.copy()))
        np.testing.assert_allclose(np.asarray(prep(x)), expected, atol=1e-3)
    else:  # EfficientNet rescales inside itself; its preprocess_input is the identity
        assert "preprocess" not in [layer.name for layer in model.layers]
        fed = model.get_layer("rgb").output if shape[-1] == 1 else model.get_layer("resize").output
        np.testing.assert_allclose(np.asarray(keras.Model(model.input, fed)(x)), rgb, atol=1e-3)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((8, 8, 1), 96),
        ((28, 28, 1), 96),
        ((96, 96, 3), 96),
        ((100, 80, 3), 128),
        ((500, 300, 3), 224),
    ],
)
def test_transfer_input_size(shape, size):
    assert transfer_input_size(shape) == size


def test_transfer_freezing_options():
    model = build_model(ModelConfig(preset="mobilenetv2"), (32, 32, 3), 4)
    backbone = model.get_layer("mobilenetv2_backbone")
    convs = [
        layer
        for layer in backbone.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)
    ]
    assert not backbone.trainable_weights  # frozen by default

    architectures._set_trainable(backbone, ModelConfig(preset="mobilenetv2", unfreeze_last=12))
    trainable = {id(w) for w in backbone.trainable_weights}
    last = {id(w) for layer in backbone.layers[-12:] for w in layer.trainable_weights}
    assert trainable and trainable <= last
    assert 0 < sum(layer.trainable for layer in convs) < len(convs)
    assert not any(
        layer.trainable
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )

    architectures._set_trainable(backbone, ModelConfig(preset="mobilenetv2", freeze_backbone=False))
    assert all(layer.trainable for layer in backbone.layers)
    assert len(model.trainable_weights) > 100


@pytest.mark.parametrize("preset", ["fast_cnn", "resnet20", "custom", "mobilenetv2"])
def test_final_layer_is_float32_under_mixed_precision(preset):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model(ModelConfig(preset=preset), (32, 32, 3), 5)
        assert model.get_layer("logits").dtype_policy.name == "float32"
        conv = next(
            layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)
        )
        assert conv.compute_dtype == "float16"
        out = model(np.full((2, 32, 32, 3), 128.0, dtype="float32"))
        assert out.dtype == "float32"
        assert out.shape == (2, 5)
    finally:
        keras.config.set_dtype_policy(previous)


def test_width_and_dropout_options():
    narrow = build_model(ModelConfig(preset="fast_cnn", width=0.5), (28, 28, 1), 10)
    wide = build_model(ModelConfig(preset="fast_cnn", width=2.0), (28, 28, 1), 10)
    assert narrow.count_params() < wide.count_params()
    assert wide.get_layer("block1_conv").filters == 32
    assert wide.get_layer("head_dense1").units == 512
    with_dropout = build_model(ModelConfig(preset="fast_cnn", dropout=0.3), (28, 28, 1), 10)
    assert with_dropout.get_layer("dropout").rate == pytest.approx(0.3)


def test_custom_builder_follows_blocks_and_head():
    cfg = ModelConfig(
        preset="custom",
        blocks=(
            ConvBlock(filters=8, convs=2, activation="gelu", pool="avg", dropout=0.1),
            ConvBlock(filters=16, stride=2, batch_norm=False, pool="none"),
        ),
        head=HeadConfig(pooling="flatten", dense=(32, 16), dropout=0.2),
    )
    model = build_model(cfg, (16, 16, 1), 3)
    names = [layer.name for layer in model.layers]
    assert names[:2] == ["pixels", "rescale"]
    for expected in (
        "block1_1_conv",
        "block1_2_bn",
        "block1_2_gelu",
        "block1_pool",
        "block1_dropout",
        "block2_1_conv",
        "head_flatten",
        "head_dense1",
        "head_dense2",
        "logits",
    ):
        assert expected in names
    assert "block2_1_bn" not in names and "block2_pool" not in names
    assert model.get_layer("block2_1_conv").strides == (2, 2)
    assert model.get_layer("head_flatten").output.shape[1:] == (4 * 4 * 16,)  # 16 →pool 8 →stride 4


def _bypass(cfg_obj, **fields):
    """A copy with fields set past the dataclass validation (as a hand-edited file could)."""
    copy = dataclasses.replace(cfg_obj)
    for name, value in fields.items():
        object.__setattr__(copy, name, value)
    return copy


def _custom(*blocks, head=None):
    return ModelConfig(preset="custom", blocks=tuple(blocks), head=head or HeadConfig())


IMPOSSIBLE = [
    # (config, input shape, classes, message pattern)
    (
        _custom(*[ConvBlock(filters=8, pool="max")] * 4),
        (8, 8, 1),
        10,
        r"Block 4 \(8 filters, stride 1, max pooling\): the feature map would shrink to 0×0 px "
        r"\(input 8×8 → 4×4 → 2×2 → 1×1 → 0×0\)",
    ),
    (
        _custom(ConvBlock(stride=4, pool="max"), ConvBlock(filters=64, stride=4, pool="avg")),
        (28, 28, 1),
        10,
        r"Block 2 \(64 filters, stride 4, avg pooling\): the feature map would shrink to 0×0",
    ),
    (
        _custom(ConvBlock(pool="none"), ConvBlock(pool="max")),
        (1, 64, 3),
        10,
        r"Block 2 .* would shrink to 0×32 px",
    ),
    (
        _custom(ConvBlock(), _bypass(ConvBlock(), filters=0)),
        (28, 28, 1),
        10,
        r"Block 2: filters must be at least 1, got 0",
    ),
    (
        _custom(
            ConvBlock(filters=1024, pool="none"), head=HeadConfig(pooling="flatten", dense=(8192,))
        ),
        (256, 256, 3),
        10,
        r"Head: flattening 256×256×1024 features into a dense layer of 8192 units",
    ),
    (
        _custom(ConvBlock(filters=1024, convs=4, pool="none")),
        (512, 512, 3),
        10,
        r"GiB of activations per image at 512×512 px",
    ),
    (ModelConfig(), (28, 28, 1), 1, r"num_classes must be at least 2"),
    (ModelConfig(), (28, 28), 10, r"input_shape must be \(height, width, channels\)"),
    (
        ModelConfig(preset="mobilenetv2"),
        (32, 32, 2),
        10,
        r"mobilenetv2 needs grayscale .* got 2 channels",
    ),
    (
        ModelConfig(preset="seed_cnn"),
        (2, 2, 1),
        10,
        r"seed_cnn's unpadded 3×3 convolution needs .* got 2×2",
    ),
]


@pytest.mark.parametrize(("cfg", "shape", "classes", "message"), IMPOSSIBLE)
def test_impossible_configs_are_refused_before_building(cfg, shape, classes, message):
    with pytest.raises(ModelConfigError, match=message):
        check_model_config(cfg, shape, classes)
    with pytest.raises(ModelConfigError, match=message):
        build_model(cfg, shape, classes)


def test_the_edge_of_possible_builds():
    # 8 → 4 → 2 → 1: three pooling blocks fit an 8×8 image exactly
    cfg = _custom(*[ConvBlock(filters=4, pool="max")] * 3)
    check_model_config(cfg, (8, 8, 1), 2)
    assert _forward(build_model(cfg, (8, 8, 1), 2), (8, 8, 1), 1).shape == (1, 2)


def test_custom_config_json_round_trip_builds_the_same_model():
    cfg = _custom(
        ConvBlock(filters=12, kernel=5, activation="swish", pool="avg"),
        ConvBlock(filters=24, stride=2, convs=3, batch_norm=False, pool="none", dropout=0.25),
        head=HeadConfig(pooling="global_max", dense=(64,), dropout=0.1),
    ).replace(dropout=0.2)
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    a, b = build_model(cfg, (20, 20, 3), 4), build_model(again, (20, 20, 3), 4)
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]
    assert a.count_params() == b.count_params()


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    """Point Keras' download cache (KERAS_HOME) at an empty folder."""
    from keras.src.backend import config

    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))  # keras reads the env var at import
    monkeypatch.setattr(architectures, "WEIGHTS_TIMEOUT_S", 3.0)
    return home


def test_missing_imagenet_weights_offline_fail_fast_and_clearly(empty_keras_home):
    cfg = ModelConfig(preset="mobilenetv2", weights="imagenet")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(cfg, (28, 28, 1), 10)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "not cached" in message and "weights 'none'" in message
    assert (
        str(
            empty_keras_home
            / "models"
            / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
        )
        in message
    )
    assert isinstance(info.value, ValueError)


def test_cached_imagenet_weights_load_without_network(empty_keras_home):
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    # a stand-in "imagenet" file in Keras' legacy h5 layout, written where Keras caches it
    reference = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(96, 96, 3)
    )
    path = architectures.imagenet_weights_path("mobilenetv2", 96)
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as fh:
        save_weights_to_hdf5_group(fh, reference)
    model = build_model(ModelConfig(preset="mobilenetv2", weights="imagenet"), (64, 64, 3), 3)
    loaded = model.get_layer("mobilenetv2_backbone").get_layer("Conv1").get_weights()[0]
    np.testing.assert_array_equal(loaded, reference.get_layer("Conv1").get_weights()[0])
