"""BatchNormalization's training step through TensorFlow's fused kernel: the same numbers
as Keras' own path, the same model file, Keras' path wherever the kernel does not apply."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from lib.training import batchnorm


def _pair(policy: str, **kwargs):
    """Two identical BatchNormalization layers (weights set away from their defaults)."""
    rng = np.random.default_rng(0)
    layers = [keras.layers.BatchNormalization(dtype=policy, momentum=0.9, **kwargs) for _ in "ab"]
    for layer in layers:
        layer.build((None, 6, 6, 5))
    values = [
        rng.normal(1, 0.3, 5),
        rng.normal(0, 0.3, 5),
        rng.normal(0, 1, 5),
        rng.uniform(0.5, 2, 5),
    ]
    for layer in layers:
        for var, value in zip(layer.weights, values, strict=False):  # renorm adds more
            var.assign(value.astype("float32"))
    return layers


def _step(layer, x, training=True):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        # Weights that vary within a channel, so gamma's gradient is not zero by symmetry.
        weights = np.random.default_rng(4).normal(0, 1, x.shape).astype("float32")
        loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return y, grads


@pytest.mark.parametrize(("policy", "tol"), [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
def test_the_fused_training_step_computes_what_keras_computes(policy, tol):
    keras_bn, fused_bn = _pair(policy)
    batchnorm.install(keras.Sequential([keras.Input((6, 6, 5)), fused_bn]))
    assert fused_bn.call.__func__ is batchnorm.fused_call
    x = tf.constant(np.random.default_rng(1).normal(3, 2, (8, 6, 6, 5)), "float32")
    if policy != "float32":
        x = tf.cast(x, "bfloat16")
    y_keras, g_keras = _step(keras_bn, x)
    y_fused, g_fused = _step(fused_bn, x)
    assert y_fused.dtype == y_keras.dtype
    np.testing.assert_allclose(
        tf.cast(y_fused, "float32"), tf.cast(y_keras, "float32"), rtol=tol, atol=tol
    )
    for a, b in zip(g_fused, g_keras, strict=True):  # input, gamma, beta
        np.testing.assert_allclose(tf.cast(a, "float32"), tf.cast(b, "float32"), rtol=tol, atol=tol)
    # The moving statistics moved by the same amount (population variance, momentum 0.9).
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(
            getattr(fused_bn, name).numpy(), getattr(keras_bn, name).numpy(), rtol=1e-5
        )
    assert not np.allclose(keras_bn.moving_mean.numpy(), 0.0)
    # Inference is Keras' own path, to the bit (on the same weights).
    fused_bn.set_weights(keras_bn.get_weights())
    np.testing.assert_array_equal(
        fused_bn(x, training=False).numpy(), keras_bn(x, training=False).numpy()
    )


def test_where_the_kernel_does_not_apply_keras_path_runs():
    x = tf.constant(np.random.default_rng(2).normal(0, 1, (4, 6, 6, 5)), "float32")
    for kwargs in ({"renorm": True}, {"epsilon": 1e-6}, {"synchronized": True}):
        keras_bn, fused_bn = _pair("float32", **kwargs)
        fused_bn.call = batchnorm.fused_call.__get__(fused_bn)
        np.testing.assert_allclose(
            fused_bn(x, training=True).numpy(), keras_bn(x, training=True).numpy(), atol=1e-6
        )
    # A 2-D input (BatchNorm after a dense layer) and a frozen layer: Keras' path.
    keras_bn, fused_bn = _pair("float32")
    fused_bn.trainable = keras_bn.trainable = False
    fused_bn.call = batchnorm.fused_call.__get__(fused_bn)
    np.testing.assert_array_equal(fused_bn(x, training=True), keras_bn(x, training=True))
    dense_bn = keras.layers.BatchNormalization()
    flat = tf.reshape(x, (4, -1))
    plain = keras.layers.BatchNormalization()
    dense_bn.build(flat.shape)
    plain.build(flat.shape)
    dense_bn.call = batchnorm.fused_call.__get__(dense_bn)
    np.testing.assert_allclose(dense_bn(flat, training=True), plain(flat, training=True), atol=1e-6)


def test_a_trained_model_saves_as_keras_standard_batchnorm(tmp_path):
    from lib.architectures import build_model
    from lib.config import ModelConfig

    model = build_model(ModelConfig(preset="accurate_cnn"), (28, 28, 1), 10)
    assert batchnorm.install(model) == 2
    model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(3).uniform(0, 255, (32, 28, 28, 1)).astype("float32")
    y = np.eye(10, dtype="float32")[np.arange(32) % 10]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    # Plain Keras, no custom objects: the file holds its own BatchNormalization.
    loaded = keras.saving.load_model(path, safe_mode=True)
    kinds = {type(layer) for layer in loaded.layers if "bn" in layer.name}
    assert kinds == {keras.layers.BatchNormalization}
    assert all("call" not in vars(layer) for layer in loaded.layers)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_a_run_says_how_many_batchnorm_layers_trained_fused():
    import json

    from lib import runstore
    from lib.config import ModelConfig
    from lib.progress import PhaseEvent, read_events
    from lib.training import train_run
    from tests.tiny_runs import tiny_config

    cfg = tiny_config(epochs=1).replace(model=ModelConfig(preset="accurate_cnn"))
    run = runstore.create_run(cfg)
    assert train_run(run).state == "completed"
    metrics = json.loads((run / runstore.METRICS_FILE).read_text())
    assert metrics["batchnorm_fused_layers"] == 2
    phases = [e.phase for e in read_events(run) if isinstance(e, PhaseEvent)]
    assert "BatchNorm: 2 layers train through TensorFlow's fused kernel" in phases
    # The fast CNN has none, and says nothing.
    plain = runstore.create_run(tiny_config(epochs=1))
    assert train_run(plain).state == "completed"
    assert json.loads((plain / runstore.METRICS_FILE).read_text())["batchnorm_fused_layers"] == 0


def test_moving_statistics_span_about_an_epoch_between_pytorch_and_keras_defaults():
    assert batchnorm.momentum_for(422) == 0.99  # Fashion-MNIST at batch 128: Keras' own
    assert batchnorm.momentum_for(100) == 0.99
    assert batchnorm.momentum_for(12) == pytest.approx(1 - 1 / 12)
    assert batchnorm.momentum_for(3) == 0.9 and batchnorm.momentum_for(0) == 0.9


def test_a_batchnorm_recipe_on_a_small_dataset_validates_above_chance_early():
    """Digits: 12 steps an epoch. With Keras' momentum (0.99) the two-convolution
    BatchNorm CNN (accurate_cnn, 30 epochs of the fast recipe's settings) validated at
    10 % for 30 epochs while it trained past 99 %."""
    import json

    import keras

    from lib import runstore
    from lib.config import AugmentConfig, DataConfig, ModelConfig
    from lib.recipes import RECIPES
    from lib.training import train_run

    cfg = RECIPES["fast"].replace(
        data=DataConfig(source="digits"),
        model=ModelConfig(preset="accurate_cnn"),
        augment=AugmentConfig(),
    )
    cfg = cfg.replace(train=cfg.train.replace(epochs=8))
    run = runstore.create_run(cfg)
    assert train_run(run).state == "completed"
    rows = (run / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    val = [float(r.split(",")[header.index("val_accuracy")]) for r in rows[1:]]
    assert max(val[:6]) >= 0.8, val
    metrics = json.loads((run / runstore.METRICS_FILE).read_text())
    assert metrics["test_accuracy"] >= 0.9, metrics["test_accuracy"]
    model = keras.saving.load_model(run / runstore.MODEL_FILE, safe_mode=True)
    momenta = {
        round(layer.momentum, 4)
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert momenta == {round(1 - 1 / 12, 4)}
