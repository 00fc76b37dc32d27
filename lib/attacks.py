"""Adversarial attacks on a Kestrel model: FGSM and PGD under an L-infinity budget.

    from lib.attacks import adversarial_accuracy
    adversarial_accuracy(model, images, labels, "pgd", epsilon=2)   # ε = 2/255

Kestrel models take raw pixels 0..255 and return logits, so an ε of k/255 (of
the [0, 1] range) is k grey levels here: every attack works in pixel units and
clips to 0..255. FGSM (Goodfellow et al. 2015) takes one step of size ε along
the sign of the loss gradient; PGD (Madry et al. 2018) starts at a random point
of the ε-ball and takes ``steps`` signed steps of ``2.5 ε / steps``, projecting
back onto the ball after each. The same functions make the adversarial
examples of hardened training (lib.training.harden).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lib.errors import KestrelError

METHODS = ("fgsm", "pgd")
EPSILONS = (1, 2, 4, 8)  # of 255: the robustness report's budgets
PGD_STEPS = 10
BATCH = 128


class AttackError(KestrelError):
    """An attack that cannot run as asked; the message says what to change."""


def _loss_gradient(model: Any, x, y_onehot):
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model(x, training=False), tf.float32)
        loss = keras.losses.categorical_crossentropy(y_onehot, logits, from_logits=True)
    return tape.gradient(loss, x)


def fgsm_tf(model: Any, x, y_onehot, epsilon: float, gradient=None):
    """FGSM on a float32 tensor batch (raw pixels); ``epsilon`` in pixel levels.

    ``gradient(x, y)`` replaces the eager loss gradient (a traced one is faster).
    """
    import tensorflow as tf

    grad = (gradient or (lambda a, b: _loss_gradient(model, a, b)))(x, y_onehot)
    return tf.clip_by_value(x + epsilon * tf.sign(grad), 0.0, 255.0)


def pgd_tf(
    model: Any, x, y_onehot, epsilon: float, steps: int = PGD_STEPS, seed=None, gradient=None
):
    """PGD with a random start on a float32 tensor batch; ``epsilon`` in pixel levels."""
    import tensorflow as tf

    gradient = gradient or (lambda a, b: _loss_gradient(model, a, b))
    step = 2.5 * epsilon / max(steps, 1)
    noise = tf.random.uniform(tf.shape(x), -epsilon, epsilon, seed=seed)
    adv = tf.clip_by_value(x + noise, 0.0, 255.0)
    for _ in range(steps):
        grad = gradient(adv, y_onehot)
        adv = adv + step * tf.sign(grad)
        adv = tf.clip_by_value(tf.clip_by_value(adv, x - epsilon, x + epsilon), 0.0, 255.0)
    return adv


def perturb(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    method: str,
    epsilon: float,
    *,
    steps: int = PGD_STEPS,
    seed: int = 0,
    batch: int = BATCH,
) -> np.ndarray:
    """Adversarial versions of ``images`` (uint8 or float, raw 0..255), float32.

    Args:
        model: a Keras model returning logits.
        images: (N, H, W, C) raw pixels.
        labels: int class indices (N,).
        method: "fgsm" or "pgd".
        epsilon: the L-infinity budget in grey levels (2 means ε = 2/255).

    Raises:
        AttackError: unknown method or a negative budget.
    """
    import tensorflow as tf

    if method not in METHODS:
        raise AttackError(f"unknown attack {method!r}; choose one of {', '.join(METHODS)}")
    if epsilon < 0:
        raise AttackError(f"the attack budget ε must be 0 or more, not {epsilon}")
    x_all = np.asarray(images, np.float32)
    if epsilon == 0:
        return x_all.copy()
    k = int(model.output_shape[-1])
    out = []
    tf.random.set_seed(seed)
    gradient = tf.function(lambda a, b: _loss_gradient(model, a, b), reduce_retracing=True)
    for start in range(0, len(x_all), batch):
        x = tf.constant(x_all[start : start + batch])
        y = tf.one_hot(np.asarray(labels[start : start + batch], np.int64), k)
        if method == "fgsm":
            adv = fgsm_tf(model, x, y, float(epsilon), gradient)
        else:
            adv = pgd_tf(model, x, y, float(epsilon), steps, gradient=gradient)
        out.append(adv.numpy())
    return np.concatenate(out) if out else x_all.copy()


def accuracy(model: Any, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` on raw-pixel ``images``."""
    if len(images) == 0:
        return float("nan")
    preds = []
    for start in range(0, len(images), batch):
        x = np.asarray(images[start : start + batch], np.float32)
        preds.append(np.asarray(model(x, training=False)).argmax(axis=1))
    return float(np.mean(np.concatenate(preds) == np.asarray(labels)))


def adversarial_accuracy(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    method: str,
    epsilon: float,
    **kwargs,
) -> float:
    """Accuracy on the adversarial versions of ``images`` (ε in grey levels of 255)."""
    return accuracy(model, perturb(model, images, labels, method, epsilon, **kwargs), labels)
