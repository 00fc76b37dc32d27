"""Grad-CAM: which parts of an image made the model choose a class.

    from lib.explain import grad_cam, overlay
    cam = grad_cam(model, batch_of_one)          # GradCam: heat (H, W) in [0, 1], layer name
    picture = overlay(image_uint8, cam.heat)     # RGB uint8, heat blended over the image

Grad-CAM (Selvaraju et al., 2017) weights the feature maps of a late
convolutional layer by the gradient of the class logit with respect to them,
averaged over space, sums them, keeps the positive part and upsamples it to the
input size. The gradient is taken of the *logit* (our models output logits), as
the paper prescribes, not of the softmax probability.

The layer used is the last top-level layer whose output is a 4-D feature map
(a conv, its activation, or a whole backbone sub-model for transfer presets),
skipping pooling and dropout right before the head so the map keeps its
resolution. :func:`find_target_layer` says which one; the page shows it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib.data.images import as_rgb

# Layers that only shrink or perturb a feature map; the one before them is more useful.
_SKIP_TAIL = ("Pooling", "Dropout", "ZeroPadding", "Cropping")
# Layers before any learned feature: never a Grad-CAM target.
_NOT_FEATURES = ("InputLayer", "Rescaling", "Normalization", "Resizing")


@dataclass(frozen=True)
class GradCam:
    """A Grad-CAM heat map and how it was made."""

    heat: np.ndarray  # float32 (H, W) in [0, 1], the model input's size
    layer: str  # the layer whose feature maps were weighted
    class_index: int  # the class whose logit was differentiated
    feature_shape: tuple[int, int]  # the layer's spatial size before upsampling


def _output_rank(layer: Any) -> int:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return 0
    return len(shape)


def find_target_layer(model: Any) -> str:
    """The name of the layer Grad-CAM uses: the last 4-D feature map before the head.

    Raises:
        ValueError: the model has no 4-D feature map (e.g. a pure dense network).
    """
    candidates = [
        layer
        for layer in model.layers
        if _output_rank(layer) == 4 and type(layer).__name__ not in _NOT_FEATURES
    ]
    if not candidates:
        raise ValueError(
            f"model {model.name!r} has no convolutional feature map, so Grad-CAM cannot explain it"
        )
    # Walk back over trailing pooling/dropout to the last layer that computes features.
    for layer in reversed(candidates):
        if not any(tag in type(layer).__name__ for tag in _SKIP_TAIL):
            return layer.name
    return candidates[-1].name


def _grad_model(model: Any, layer_name: str) -> Any:
    import keras

    layer = model.get_layer(layer_name)
    # ``layer.output`` of a nested sub-model (a transfer backbone) is its own
    # graph's tensor, not connected to the outer inputs; the node where the
    # outer model calls it holds the tensor we need.
    for node in reversed(getattr(layer, "_inbound_nodes", [])):
        for tensor in node.output_tensors:
            try:
                return keras.Model(model.inputs, [tensor, model.outputs[0]])
            except ValueError:
                continue
    return keras.Model(model.inputs, [layer.output, model.outputs[0]])


# Per model (weakly held, so a dropped model frees its graph): layer name -> grad model.
_grad_models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def grad_cam(
    model: Any,
    batch: np.ndarray,
    class_index: int | None = None,
    layer_name: str | None = None,
) -> GradCam:
    """Grad-CAM for one preprocessed image.

    Args:
        model: a Keras model taking raw pixels and returning logits.
        batch: one image, (1, H, W, C) or (H, W, C), already preprocessed to the
            model's input shape (``lib.predict.preprocess``).
        class_index: the class to explain; default the predicted one.
        layer_name: the feature layer; default :func:`find_target_layer`.

    Returns:
        A :class:`GradCam` whose ``heat`` has the input's height and width.
    """
    import tensorflow as tf

    x = np.asarray(batch, np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.shape[0] != 1:
        raise ValueError(f"grad_cam explains one image at a time, got a batch of {x.shape[0]}")
    layer_name = layer_name or find_target_layer(model)
    per_model = _grad_models.setdefault(model, {})
    grad_model = per_model.get(layer_name)
    if grad_model is None:
        grad_model = per_model[layer_name] = _grad_model(model, layer_name)
    inputs = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        features, logits = grad_model(inputs, training=False)
        logits = tf.cast(logits, tf.float32)
        if class_index is None:
            class_index = int(tf.argmax(logits[0]))
        score = logits[:, class_index]
    grads = tape.gradient(score, features)
    features = tf.cast(features, tf.float32)[0]
    grads = tf.cast(grads, tf.float32)[0]
    weights = tf.reduce_mean(grads, axis=(0, 1))  # one weight per channel
    cam = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1)).numpy()
    fh, fw = cam.shape
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    h, w = x.shape[1], x.shape[2]
    heat = tf.image.resize(cam[:, :, None], (h, w), method="bilinear").numpy()[:, :, 0]
    return GradCam(
        heat=np.clip(heat, 0.0, 1.0).astype(np.float32),
        layer=layer_name,
        class_index=int(class_index),
        feature_shape=(int(fh), int(fw)),
    )


# A compact "jet"-like colour map: blue (cold) -> cyan -> yellow -> red (hot).
_STOPS = np.array([0.0, 0.35, 0.65, 1.0])
_COLOURS = np.array([[0, 0, 160], [0, 200, 255], [255, 220, 0], [220, 0, 0]], np.float32)


def colorize(heat: np.ndarray) -> np.ndarray:
    """A heat map in [0, 1] (H, W) -> RGB uint8 (H, W, 3)."""
    h = np.clip(np.asarray(heat, np.float32), 0.0, 1.0)
    rgb = np.stack([np.interp(h, _STOPS, _COLOURS[:, i]) for i in range(3)], axis=-1)
    return rgb.astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a heat map over an image of any size; returns RGB uint8 of the image's size.

    Args:
        image: uint8 (H, W, C), C = 1 or 3 (the original upload or the model input).
        heat: float (h, w) in [0, 1]; resized to the image.
        alpha: heat-map opacity where the heat is highest (cold areas stay see-through).
    """
    from PIL import Image

    img = as_rgb(image)
    H, W = img.shape[:2]
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), "L")
    heat_big = np.asarray(heat_img.resize((W, H), Image.Resampling.BILINEAR), np.float32) / 255.0
    colours = colorize(heat_big).astype(np.float32)
    a = (alpha * (0.3 + 0.7 * heat_big))[:, :, None]
    out = img.astype(np.float32) * (1 - a) + colours * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
