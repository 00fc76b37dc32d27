"""Grad-CAM: the layer it picks, the map's size, and that it points at the shape."""

import keras
import numpy as np
import pytest

from lib import predict, registry
from lib.architectures import build_model
from lib.config import ModelConfig
from lib.data.shapes import CLASS_NAMES, _mask
from lib.explain import colorize, find_target_layer, grad_cam, overlay


def _conv_bn_relu_pool(shape, k):
    """Conv → BatchNorm → ReLU → max-pool → dropout → head: the target skips pool and dropout."""
    inputs = keras.Input(shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Dropout(0.1, name="drop1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(k)(x))


@pytest.mark.parametrize(
    ("build", "shape", "layer"),
    [
        (_conv_bn_relu_pool, (28, 28, 1), "relu1"),
        (
            lambda s, k: build_model(ModelConfig(preset="seed_cnn"), s, k),
            (28, 28, 1),
            "block1_conv",
        ),
        (
            lambda s, k: build_model(ModelConfig(preset="vgg_small"), s, k),
            (32, 32, 3),
            "block3_2_relu",
        ),
    ],
    ids=["conv-bn-relu-pool", "seed_cnn", "vgg_small"],
)
def test_target_layer_and_heat_map_size(build, shape, layer):
    keras.utils.set_random_seed(0)
    model = build(shape, 5)
    assert find_target_layer(model) == layer
    x = np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype("float32")
    cam = grad_cam(model, x)
    assert cam.layer == layer
    assert cam.heat.shape == shape[:2] and cam.heat.dtype == np.float32
    assert cam.heat.min() >= 0.0 and cam.heat.max() <= 1.0
    logits = np.asarray(model(x))
    assert cam.class_index == int(logits.argmax())
    chosen = grad_cam(model, x[0], class_index=2)
    assert chosen.class_index == 2 and chosen.heat.shape == shape[:2]


def test_a_nested_backbone_is_explained_at_its_output():
    """Transfer presets nest the backbone as a sub-model; Grad-CAM uses its output map."""
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((16, 16, 3))
    inner = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inner_in)
    backbone = keras.Model(inner_in, keras.layers.MaxPooling2D()(inner), name="backbone")
    pixels = keras.Input((16, 16, 3))
    x = backbone(keras.layers.Rescaling(1 / 255)(pixels))
    model = keras.Model(pixels, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    assert find_target_layer(model) == "backbone"
    cam = grad_cam(model, np.random.default_rng(1).uniform(0, 255, (16, 16, 3)))
    assert cam.layer == "backbone" and cam.feature_shape == (8, 8) and cam.heat.shape == (16, 16)


def test_a_model_without_feature_maps_is_refused():
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="no convolutional feature map"):
        find_target_layer(model)


def test_overlay_keeps_the_image_size_and_colours_heat():
    image = np.full((50, 70, 1), 128, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[:4] = 1.0  # top half hot
    out = overlay(image, heat)
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8
    top, bottom = out[5, 35].astype(int), out[45, 35].astype(int)
    assert top[0] > top[2] and bottom[2] > bottom[0]  # red where hot, blue where cold
    assert colorize(np.array([[0.0, 1.0]])).shape == (1, 2, 3)


def _scene(kind: str, rng: np.random.Generator, size: int = 64):
    """A shapes-style image (gradient background, one shape) and the shape's mask."""
    c0 = rng.uniform(0, 255, 3)
    c1 = np.clip(c0 + rng.normal(0, 60, 3), 0, 255)
    t = np.linspace(0, 1, size)[None, :, None]
    background = c0 + (c1 - c0) * t
    colour = np.where((c0 + c1) / 2 > 127, 20.0, 235.0)  # contrasting, like the generator
    r = rng.uniform(0.22, 0.32) * size
    cx, cy = rng.uniform(r, size - r, 2)
    mask = _mask(kind, size, cx, cy, r, rng.uniform(0, 2 * np.pi))
    image = background + (colour - background) * mask[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def test_grad_cam_highlights_the_shape_more_than_the_background():
    entry = next((e for e in registry.list_models() if e.name == "shapes-demo"), None)
    assert entry is not None, "models/shapes-demo is missing: run make demo-models"
    predictor = predict.get_predictor(entry)
    rng = np.random.default_rng(7)
    inside, outside, correct = [], [], 0
    for i in range(18):
        kind = CLASS_NAMES[i % len(CLASS_NAMES)]
        image, mask = _scene(kind, rng)
        x = predict.preprocess(image, entry.card)[None]
        cam = grad_cam(predictor.model, x)
        correct += CLASS_NAMES[cam.class_index] == kind
        inside.append(float(cam.heat[mask > 0.5].mean()))
        outside.append(float(cam.heat[mask < 0.05].mean()))
    inside, outside = np.array(inside), np.array(outside)
    assert correct >= 12, f"the shapes demo recognised only {correct}/18 scenes"
    assert inside.mean() > outside.mean() + 0.1, (inside.mean(), outside.mean())
    assert (inside > outside).mean() >= 0.75, list(zip(inside, outside, strict=True))
