"""Attacks (lib.attacks) and hardened training (lib.training.harden) on a tiny real model."""

import keras
import numpy as np
import pytest

from lib import attacks
from lib.config import AugmentConfig
from lib.training import harden


def digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.float32)[..., None]
    return x, bunch.target.astype(np.int64)


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(32, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


@pytest.fixture(scope="module")
def trained():
    x, y = digits()
    model = tiny_model()
    model.fit(
        x[:1400], keras.utils.to_categorical(y[:1400], 10), epochs=15, batch_size=64, verbose=0
    )
    return model, x[1400:1700], y[1400:1700]


@pytest.mark.parametrize("method", attacks.METHODS)
def test_an_attack_lowers_accuracy_and_epsilon_zero_does_not(trained, method):
    model, x, y = trained
    clean = attacks.accuracy(model, x, y)
    assert clean > 0.85
    assert attacks.adversarial_accuracy(model, x, y, method, 0) == clean
    attacked = attacks.adversarial_accuracy(model, x, y, method, 16)
    assert attacked < clean - 0.2


def test_attacks_stay_within_the_budget_and_the_pixel_range(trained):
    model, x, y = trained
    for method in attacks.METHODS:
        adv = attacks.perturb(model, x[:50], y[:50], method, 4)
        assert np.abs(adv - x[:50]).max() <= 4 + 1e-3
        assert adv.min() >= 0 and adv.max() <= 255


def test_pgd_is_at_least_as_strong_as_fgsm(trained):
    model, x, y = trained
    fgsm = attacks.adversarial_accuracy(model, x, y, "fgsm", 8)
    pgd = attacks.adversarial_accuracy(model, x, y, "pgd", 8)
    assert pgd <= fgsm + 0.02


def test_bad_attacks_are_refused(trained):
    model, x, y = trained
    with pytest.raises(attacks.AttackError, match="unknown attack"):
        attacks.perturb(model, x, y, "deepfool", 2)
    with pytest.raises(attacks.AttackError, match="0 or more"):
        attacks.perturb(model, x, y, "fgsm", -1)


def test_adversarial_training_makes_the_model_more_robust():
    x, y = digits()
    yo = keras.utils.to_categorical(y[:1400], 10)
    plain = tiny_model(1)
    plain.fit(x[:1400], yo, epochs=12, batch_size=64, verbose=0)
    hardened = harden.install(tiny_model(1), AugmentConfig(adversarial_epsilon=16), seed=1)
    hardened.fit(x[:1400], yo, epochs=12, batch_size=64, verbose=0)
    xt, yt = x[1400:], y[1400:]
    before = attacks.adversarial_accuracy(plain, xt, yt, "fgsm", 16)
    after = attacks.adversarial_accuracy(hardened, xt, yt, "fgsm", 16)
    assert after > before + 0.05  # measured: 0.665 -> 0.753
    assert attacks.accuracy(hardened, xt, yt) > 0.8


def test_corruption_training_runs_and_an_ordinary_recipe_is_untouched():
    x, y = digits()
    model = tiny_model(2)
    step = model.train_step
    assert harden.install(model, AugmentConfig(), seed=0).train_step == step
    harden.install(model, AugmentConfig(corruption=1.0), seed=0)
    history = model.fit(x[:256], keras.utils.to_categorical(y[:256], 10), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_corrupt_batch_changes_the_share_asked_for():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(60, 200, (400, 8, 8, 1)).astype(np.float32))
    seeds = keras.random.SeedGenerator(0)
    out = harden.corrupt_batch(x, 0.5, seeds).numpy()
    changed = np.mean(np.any(out != x.numpy(), axis=(1, 2, 3)))
    assert 0.35 < changed < 0.65
    assert np.array_equal(harden.corrupt_batch(x, 0.0, seeds).numpy(), x.numpy())
