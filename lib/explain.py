"""Grad-CAM: which parts of an image made the model choose a class.

    from lib.explain import grad_cam, overlay
    cam = grad_cam(model, batch_of_one)          # GradCam: heat (H, W) in [0, 1], layer name
    if cam.flat:
        print(cam.flat_reason)                   # nothing to draw: say why instead
    else:
        picture = overlay(image_uint8, cam.heat) # RGB uint8, heat blended over the image

The map is Grad-CAM (Selvaraju et al., 2017) with the per-position weighting of
LayerCAM (Jiang et al., 2021): each feature map is weighted, position by
position, by the positive part of the gradient of the class *logit* with
respect to it, then summed over channels and clipped at zero. Plain Grad-CAM
averages the gradient over space first; behind a flatten head (fast_cnn,
seed_cnn, lenet5) those averages cancel and the map comes out empty or a single
pixel, and at mid-network layers the average blurs the evidence into blobs. With
a global-pooling head the two agree up to the head's nonlinearity.

Which layer: the last layer that computes features (not pooling, dropout,
padding or input scaling) whose map is still at least :func:`target_side`
pixels on its shorter side (half the input's, between 7 and 28), so the map
keeps spatial detail instead of the 1×1 to 4×4 map left after all the pooling.
Measured on the procedural shapes (``python -m bench --only gradcam``):
the shapes demo (99.5 % accurate on 600 new images) puts the peak of its 32×32
block-2 map inside the shape's bounding box for 93.5 % of the correctly
classified ones; plain Grad-CAM on its 8×8 last block did so for 73 % (300 images).
A model whose maps are all smaller (a nested transfer backbone) is explained
at the largest map it has. :func:`find_target_layer` says which; the page shows it.

A map can carry no information: a zero gradient (saturated or dead units), no
positive contribution anywhere, or nearly the same value everywhere. Normalising
such a map would paint noise or a uniform tint, so :func:`grad_cam` returns it
with ``flat_reason`` set and an all-zero heat, and pages say so instead.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib.data.images import as_rgb
from lib.errors import KestrelError

# Layers that only shrink, pad or perturb a feature map: never a target.
_NOT_COMPUTING = ("Pooling", "Dropout", "ZeroPadding", "Cropping")
# Layers before any learned feature: never a Grad-CAM target.
_NOT_FEATURES = ("InputLayer", "Rescaling", "Normalization", "Resizing")
# The map's side the target layer should keep: half the input's, within these bounds.
MIN_TARGET_SIDE = 7
MAX_TARGET_SIDE = 28
# A map whose spread (max - min) is below this share of its peak is "nearly uniform".
FLAT_SPREAD = 0.05
# Gradients this small (absolute, on logits of order 1-10) are zero for our purpose.
ZERO_GRADIENT = 1e-10
# Smoothing of the raw map, as a share of its side (Gaussian sigma): per-position
# weights leave speckles on edges; at 1/16 they merge into readable regions, and
# on the shapes demo the peak lands in the box slightly more often (91 -> 92 %).
SMOOTH_SHARE = 1 / 16


class GradCamError(KestrelError):
    """A model Grad-CAM cannot explain (no convolutional feature map)."""


@dataclass(frozen=True)
class GradCam:
    """A Grad-CAM heat map and how it was made."""

    heat: np.ndarray  # float32 (H, W) in [0, 1], the model input's size; all 0 when flat
    layer: str  # the layer whose feature maps were weighted
    class_index: int  # the class whose logit was differentiated
    feature_shape: tuple[int, int]  # the layer's spatial size before upsampling
    flat_reason: str = ""  # why the map carries no information; "" when it does

    @property
    def flat(self) -> bool:
        """True when the map shows nothing (see ``flat_reason``); draw no overlay then."""
        return bool(self.flat_reason)


def _output_shape(layer: Any) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def target_side(input_side: int) -> int:
    """The shorter side a target layer's map should keep for an input of ``input_side`` px."""
    return int(min(MAX_TARGET_SIDE, max(MIN_TARGET_SIDE, math.ceil(input_side / 2))))


def find_target_layer(model: Any) -> str:
    """The name of the layer Grad-CAM uses (see the module docstring for the rule).

    Raises:
        GradCamError: the model has no 4-D feature map (e.g. a pure dense network).
    """
    maps = []
    for layer in model.layers:
        shape = _output_shape(layer)
        if shape is not None and len(shape) == 4 and type(layer).__name__ not in _NOT_FEATURES:
            maps.append((layer, min(shape[1] or 0, shape[2] or 0)))
    if not maps:
        raise GradCamError(
            f"model {model.name!r} has no convolutional feature map, so Grad-CAM cannot "
            "explain it; Grad-CAM needs a CNN (any preset but a pure dense network)"
        )
    computing = [
        (layer, side)
        for layer, side in maps
        if not any(tag in type(layer).__name__ for tag in _NOT_COMPUTING)
    ] or maps
    input_shape = tuple(model.inputs[0].shape)
    wanted = target_side(min(input_shape[1] or 0, input_shape[2] or 0))
    big_enough = [layer for layer, side in computing if side >= wanted]
    if big_enough:
        return big_enough[-1].name
    # Every map is small: the largest one, the latest of equals.
    largest = max(side for _, side in computing)
    return [layer for layer, side in computing if side == largest][-1].name


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


def flat_reason(cam: np.ndarray, grads: np.ndarray, layer: str) -> str:
    """Why a raw (unnormalised, non-negative) map carries no information, or "".

    Args:
        cam: the map before normalisation, (h, w), ≥ 0.
        grads: the gradient of the class logit with respect to the layer's features.
        layer: the layer's name, for the message.
    """
    if not np.isfinite(cam).all() or not np.isfinite(grads).all():
        return f"the gradient at layer {layer} is not a finite number"
    if float(np.abs(grads).max(initial=0.0)) <= ZERO_GRADIENT:
        return (
            f"the class score does not change with layer {layer}'s features for this image "
            "(zero gradient: the units after it are saturated or inactive)"
        )
    peak, low = float(cam.max()), float(cam.min())
    if peak <= 0.0:
        return f"no region of layer {layer}'s map raised the class score"
    if peak - low <= FLAT_SPREAD * peak:
        return (
            f"every region of layer {layer}'s map raised the class score about equally "
            f"(spread under {FLAT_SPREAD:.0%} of the peak), so no region stands out"
        )
    return ""


def smooth(cam: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur of a 2-D map (edges repeated), sigma in cells."""
    if sigma <= 0:
        return cam
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = np.asarray(cam, np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], "edge")
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
    return out.astype(np.float32)


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
        A :class:`GradCam` whose ``heat`` has the input's height and width,
        min-max normalised to [0, 1]; all zero, with ``flat_reason`` set, when
        the map carries no information.
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
    grads = tf.cast(grads, tf.float32)[0] if grads is not None else tf.zeros_like(features)
    # LayerCAM weighting: each position's own positive gradient, not the spatial mean.
    cam = tf.nn.relu(tf.reduce_sum(features * tf.nn.relu(grads), axis=-1)).numpy()
    fh, fw = cam.shape
    h, w = x.shape[1], x.shape[2]
    reason = flat_reason(cam, grads.numpy(), layer_name)
    if reason:
        heat = np.zeros((h, w), np.float32)
    else:
        cam = smooth(cam, SMOOTH_SHARE * max(fh, fw))
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        heat = tf.image.resize(cam[:, :, None], (h, w), method="bilinear").numpy()[:, :, 0]
    return GradCam(
        heat=np.clip(heat, 0.0, 1.0).astype(np.float32),
        layer=layer_name,
        class_index=int(class_index),
        feature_shape=(int(fh), int(fw)),
        flat_reason=reason,
    )


def peak_position(heat: np.ndarray) -> tuple[int, int]:
    """(row, column) of the heat map's hottest pixel (the first, if several tie)."""
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(row), int(col)


def peak_in_box(heat: np.ndarray, box) -> bool:
    """Whether the hottest pixel's centre lies in ``box`` = (x0, y0, x1, y1), in pixels."""
    row, col = peak_position(heat)
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0 <= col + 0.5 <= x1 and y0 <= row + 0.5 <= y1


# A compact "jet"-like colour map: blue (cold) -> cyan -> yellow -> red (hot).
_STOPS = np.array([0.0, 0.35, 0.65, 1.0])
_COLOURS = np.array([[0, 0, 160], [0, 200, 255], [255, 220, 0], [220, 0, 0]], np.float32)


def colorize(heat: np.ndarray) -> np.ndarray:
    """A heat map in [0, 1] (H, W) -> RGB uint8 (H, W, 3)."""
    h = np.clip(np.asarray(heat, np.float32), 0.0, 1.0)
    rgb = np.stack([np.interp(h, _STOPS, _COLOURS[:, i]) for i in range(3)], axis=-1)
    return rgb.astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a heat map over an image of any size; returns RGB uint8 of the image's size.

    Args:
        image: uint8 (H, W, C), C = 1 or 3 (the original upload or the model input).
        heat: float (h, w) in [0, 1]; resized to the image.
        alpha: heat-map opacity where the heat is highest; it falls with the heat, so
            regions that did not raise the score keep the image's own pixels.
    """
    from PIL import Image

    img = as_rgb(image)
    H, W = img.shape[:2]
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), "L")
    heat_big = np.asarray(heat_img.resize((W, H), Image.Resampling.BILINEAR), np.float32) / 255.0
    colours = colorize(heat_big).astype(np.float32)
    a = (alpha * heat_big)[:, :, None]
    out = img.astype(np.float32) * (1 - a) + colours * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
