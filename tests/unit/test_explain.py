"""Grad-CAM: the layer it picks, the map's size, flat maps, and that it points at the shape."""

import keras
import numpy as np
import pytest

from lib import predict, registry
from lib.architectures import build_model
from lib.config import ModelConfig
from lib.data.shapes import CLASS_NAMES, _mask, generate_shapes, shape_boxes
from lib.explain import (
    colorize,
    find_target_layer,
    grad_cam,
    overlay,
    peak_in_box,
    target_side,
)


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
            lambda s, k: build_model(ModelConfig(preset="fast_cnn"), s, k),
            (28, 28, 1),
            "block1_conv",
        ),
        (  # 32 px input: the last map of at least 16×16, not the 8×8 after all pooling
            lambda s, k: build_model(ModelConfig(preset="vgg_small"), s, k),
            (32, 32, 3),
            "block2_2_relu",
        ),
    ],
    ids=["conv-bn-relu-pool", "seed_cnn", "fast_cnn", "vgg_small"],
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
    assert not cam.flat and cam.heat.max() > 0.5  # normalised (upsampling softens the peak)
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


@pytest.mark.parametrize(("side", "want"), [(8, 7), (28, 14), (32, 16), (64, 28), (224, 28)])
def test_target_side_is_half_the_input_within_bounds(side, want):
    assert target_side(side) == want


def _constant_feature_model(head_weight: float):
    """Features equal everywhere (zero kernel, bias 1), pooled globally, then a dense head."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(
        4, 3, padding="same", activation="relu", name="conv",
        kernel_initializer="zeros", bias_initializer="ones",
    )(inputs)  # fmt: skip
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(3, kernel_initializer=keras.initializers.Constant(head_weight))
    return keras.Model(inputs, dense(x))


@pytest.mark.parametrize(
    ("head_weight", "reason"),
    [(0.0, "zero gradient"), (1.0, "about equally"), (-1.0, "no region")],
    ids=["zero-gradient", "uniform", "all-negative"],
)
def test_a_flat_map_is_reported_not_normalised(head_weight, reason):
    model = _constant_feature_model(head_weight)
    cam = grad_cam(model, np.random.default_rng(0).uniform(0, 255, (12, 12, 3)))
    assert cam.flat and reason in cam.flat_reason and "conv" in cam.flat_reason
    assert cam.heat.shape == (12, 12) and not cam.heat.any()


def test_a_flatten_head_gives_a_map_not_a_speck():
    """fast_cnn's flatten head: averaged gradients cancel; per-position weights do not."""
    entry = next((e for e in registry.list_models() if e.name == "fashion-mnist-demo"), None)
    assert entry is not None, "models/fashion-mnist-demo is missing: run make demo-models"
    model = predict.get_predictor(entry).model
    rng = np.random.default_rng(3)
    for _ in range(4):
        image = np.zeros((28, 28, 1), np.uint8)
        image[6:22, 8:20] = rng.integers(120, 255)  # a bright block on black, like a garment
        cam = grad_cam(model, image[None])
        assert not cam.flat, cam.flat_reason
        assert (cam.heat > 0.25).mean() > 0.02  # more than a pixel or two


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
    assert top[0] > top[2] + 50  # red where hot
    assert list(bottom) == [128, 128, 128]  # cold regions keep the image's own pixels
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


def test_the_peak_falls_inside_the_shape_on_new_shapes_images():
    """The shapes demo (≥ 95 % accurate) points at the shape it recognised, measured by box.

    ``bench/bench_gradcam.py`` measures the same on 600 images.
    """
    entry = next((e for e in registry.list_models() if e.name == "shapes-demo"), None)
    assert entry is not None, "models/shapes-demo is missing: run make demo-models"
    model = predict.get_predictor(entry).model
    n, side, seed = 120, 64, 777  # the demo trained on seed 0
    images, labels = generate_shapes(n, side, seed)
    boxes = shape_boxes(n, side, seed)
    hits = correct = 0
    for image, label, box in zip(images, labels, boxes, strict=True):
        cam = grad_cam(model, image[None])
        if cam.class_index == label:
            correct += 1
            hits += (not cam.flat) and peak_in_box(cam.heat, box)
    assert correct / n >= 0.95, f"the shapes demo recognised only {correct}/{n}"
    assert hits / correct >= 0.80, f"peak inside the shape's box for {hits}/{correct}"


def test_peak_in_box_uses_pixel_centres():
    heat = np.zeros((10, 10), np.float32)
    heat[2, 7] = 1.0  # row 2, column 7: centre (7.5, 2.5)
    assert peak_in_box(heat, (7, 2, 8, 3))
    assert not peak_in_box(heat, (0, 0, 7.4, 10))
