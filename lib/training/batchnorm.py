"""Keras' BatchNormalization, trained through TensorFlow's fused kernel.

    from lib.training import batchnorm
    batchnorm.install(model)   # before compile; returns how many layers it routed

Keras 3's BatchNormalization computes a training step from separate operations: it
casts the whole activation to float32, takes the moments, normalizes, and casts back,
each a pass over memory, and as many again for the gradient. TensorFlow's
``FusedBatchNormV3`` does the same arithmetic (statistics in float32 whatever the input
type) in one kernel forward and one backward. The ablation benchmark's
``keras_batchnorm`` rows time Keras' own path against it in every run
(bench/results/ has the figures).

Only the training step changes, and only where the kernel computes exactly what the
layer does: 4-D channels-last input, no mask, no renormalization, no synchronized
statistics, epsilon the kernel accepts. Everything else, inference included, runs
Keras' own ``call``, so predictions, Grad-CAM and exports are untouched. The routing
is set on the layer object, not its class: a saved model holds Keras' standard
BatchNormalization and loads anywhere Keras does.
"""

from __future__ import annotations

import types
from typing import Any

# FusedBatchNormV3 refuses smaller epsilons (cuDNN's CUDNN_BN_MIN_EPSILON).
MIN_EPSILON = 1.001e-5


def _fusable(layer: Any, inputs: Any, training: Any, mask: Any) -> bool:
    axis = layer.axis if isinstance(layer.axis, int) else None
    return (
        training is True
        and layer.trainable
        and mask is None
        and not layer.renorm
        and not layer.synchronized
        and len(inputs.shape) == 4
        and axis in (-1, 3)
        and layer.epsilon >= MIN_EPSILON
    )


def fused_call(layer: Any, inputs: Any, training: Any = None, mask: Any = None) -> Any:
    """``layer.call`` with its training step computed by ``FusedBatchNormV3``.

    The output is normalized with the batch's mean and (population) variance, and the
    moving statistics move as Keras' layer moves them, by ``momentum``.
    """
    if not _fusable(layer, inputs, training, mask):
        return type(layer).call(layer, inputs, training=training, mask=mask)
    import tensorflow as tf

    x = (
        inputs
        if inputs.dtype in (tf.float16, tf.bfloat16, tf.float32)
        else tf.cast(inputs, "float32")
    )
    channels = x.shape[-1]
    scale = tf.cast(layer.gamma, "float32") if layer.scale else tf.ones([channels])
    offset = tf.cast(layer.beta, "float32") if layer.center else tf.zeros([channels])
    y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=scale,
        offset=offset,
        mean=tf.zeros([0]),
        variance=tf.zeros([0]),
        epsilon=layer.epsilon,
        data_format="NHWC",
        is_training=True,
    )
    # The kernel normalizes with the population variance but returns the sample
    # variance (Bessel's correction); Keras' moving variance follows the population one.
    n = tf.cast(tf.size(x, out_type=tf.int64) // channels, "float32")
    variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
    m = layer.momentum
    layer.moving_mean.assign(
        layer.moving_mean * m + tf.cast(mean, layer.moving_mean.dtype) * (1.0 - m)
    )
    layer.moving_variance.assign(
        layer.moving_variance * m + tf.cast(variance, layer.moving_variance.dtype) * (1.0 - m)
    )
    return tf.cast(y, layer.compute_dtype)


def install(model: Any) -> int:
    """Route every BatchNormalization layer of ``model`` (nested models included) through
    :func:`fused_call`; returns how many. Call it before ``compile``/``fit``."""
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.call = types.MethodType(fused_call, layer)
            count += 1
    return count


def fused_layers(model: Any) -> int:
    """How many layers of ``model`` train through :func:`fused_call`."""
    return sum(
        1
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if getattr(vars(layer).get("call"), "__func__", None) is fused_call
    )


KERAS_MOMENTUM = 0.99  # keras.layers.BatchNormalization's default
MIN_MOMENTUM = 0.9  # PyTorch's default (its momentum=0.1 is Keras' 0.9)


def momentum_for(steps_per_epoch: int) -> float:
    """The moving statistics' momentum for a run of ``steps_per_epoch`` steps an epoch.

    Keras' 0.99 averages over about the last 100 steps and starts from mean 0 and
    variance 1. On a small dataset that is many epochs: on digits (12 steps an epoch)
    the two-convolution BatchNorm CNN's validation accuracy stayed at chance (10 %) for
    30 epochs while its training accuracy passed 99 %, because evaluation normalized with statistics
    still mostly the initial ones. Here the average spans about one epoch
    (1 - 1/steps), never shorter than PyTorch's default nor longer than Keras': 0.99
    from 100 steps an epoch (Fashion-MNIST's 422 keep Keras' value), 0.917 for 12.
    """
    return min(KERAS_MOMENTUM, max(MIN_MOMENTUM, 1.0 - 1.0 / max(steps_per_epoch, 1)))


def fit_momentum(model: Any, steps_per_epoch: int) -> int:
    """Set :func:`momentum_for` on every trainable BatchNormalization layer of ``model``
    that has Keras' default momentum; returns how many changed."""
    import keras

    momentum = momentum_for(steps_per_epoch)
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if (
            isinstance(layer, keras.layers.BatchNormalization)
            and layer.trainable
            and layer.momentum == KERAS_MOMENTUM
            and momentum != KERAS_MOMENTUM
        ):
            layer.momentum = momentum
            count += 1
    return count
