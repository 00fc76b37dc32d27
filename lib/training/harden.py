"""Hardened training: adversarial examples and common corruptions made inside the train step.

``install(model, augment_config, seed)`` replaces the model's ``train_step`` on
this instance only (the saved model is the ordinary model): each batch is first
given random common corruptions (``AugmentConfig.corruption``: the share of
images corrupted), then, with ``adversarial_epsilon`` > 0, FGSM or PGD copies
of the batch are made against the current weights (lib.attacks) and the model
trains on the clean and adversarial images together (Goodfellow et al.'s mix of
the two losses). Everything else (loss, metrics, optimizer, mixed precision) is
Keras' own ``train_step``.
"""

from __future__ import annotations

from typing import Any


def is_hardened(augment: Any) -> bool:
    return bool(augment.adversarial_epsilon > 0 or augment.corruption > 0)


def corrupt_batch(x, probability: float, seed_generator):
    """Each image, with ``probability``, under one random corruption (TF ops, raw pixels)."""
    import keras
    import tensorflow as tf

    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]

    def uniform(low, high, size=None):
        return keras.random.uniform(
            size if size is not None else tf.stack([b, 1, 1, 1]), low, high, seed=seed_generator
        )

    noise = x + keras.random.normal(tf.shape(x), seed=seed_generator) * uniform(5.0, 40.0)
    bright = x + uniform(-90.0, 90.0)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    low_contrast = mean + (x - mean) * uniform(0.2, 0.8)
    blurred = tf.nn.avg_pool2d(x, ksize=3, strides=1, padding="SAME")
    # a grey square of about a third of the side at a random place
    side_h, side_w = tf.maximum(h // 3, 1), tf.maximum(w // 3, 1)
    top = tf.cast(uniform(0.0, 1.0, tf.stack([b])) * tf.cast(h - side_h + 1, tf.float32), tf.int32)
    left = tf.cast(uniform(0.0, 1.0, tf.stack([b])) * tf.cast(w - side_w + 1, tf.float32), tf.int32)
    rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + side_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + side_w)[:, None])
    square = tf.cast(in_rows[:, :, None] & in_cols[:, None, :], x.dtype)[..., None]
    occluded = x * (1.0 - square) + 128.0 * square
    variants = tf.stack([noise, bright, low_contrast, blurred, occluded])  # (5, B, H, W, C)
    pick = tf.cast(uniform(0.0, 5.0, tf.stack([b])), tf.int32)
    pick = tf.minimum(pick, 4)
    chosen = tf.gather(tf.transpose(variants, [1, 0, 2, 3, 4]), pick, batch_dims=1)
    apply = uniform(0.0, 1.0) < probability
    return tf.clip_by_value(tf.where(apply, chosen, x), 0.0, 255.0)


def install(model: Any, augment: Any, seed: int = 0) -> Any:
    """Make ``model.fit`` train hardened as ``augment`` says; returns the model."""
    if not is_hardened(augment):
        return model
    import keras
    import tensorflow as tf

    from lib.attacks import fgsm_tf, pgd_tf

    epsilon = float(augment.adversarial_epsilon)
    steps = int(augment.adversarial_steps)
    probability = float(augment.corruption)
    seeds = keras.random.SeedGenerator(seed)
    keras_step = type(model).train_step

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        if probability > 0:
            x = corrupt_batch(x, probability, seeds)
        if epsilon > 0:
            y_float = tf.cast(y, tf.float32)
            if steps > 0:
                adv = pgd_tf(model, x, y_float, epsilon, steps)
            else:
                adv = fgsm_tf(model, x, y_float, epsilon)
            adv = tf.stop_gradient(adv)
            x = tf.concat([x, adv], axis=0)
            y = tf.concat([y, y], axis=0)
            if sample_weight is not None:
                sample_weight = tf.concat([sample_weight, sample_weight], axis=0)
        return keras_step(model, keras.utils.pack_x_y_sample_weight(x, y, sample_weight))

    model.train_step = train_step
    return model
