"""lib.augment: the builder's table, presets, inference identity, and one source of truth
for the preview, the trainer and the printed Keras code."""

import json

import numpy as np
import pytest

from lib import augment
from lib.config import AugmentConfig

RGB = (16, 16, 3)
GRAY = (16, 16, 1)
ALL_ON = AugmentConfig(
    preset="custom",
    horizontal_flip=True,
    vertical_flip=True,
    rotation=0.1,
    zoom=0.1,
    translate=0.1,
    crop=0.2,
    contrast=0.3,
    brightness=0.2,
    saturation=0.4,
    hue=0.05,
    noise=0.05,
    erasing=0.3,
    mixup=0.2,
    cutmix=0.5,
    randaugment_ops=2,
    randaugment_magnitude=0.3,
)


def _images(shape=RGB, n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _config(layer) -> dict:
    cfg = layer.get_config()
    for key in ("name", "trainable", "dtype", "data_format", "seed"):
        cfg.pop(key, None)
    return cfg


# (option values, Keras class, get_config entries the layer must report)
BUILDER_TABLE = [
    ({"horizontal_flip": True}, "RandomFlip", {"mode": "horizontal"}),
    ({"vertical_flip": True}, "RandomFlip", {"mode": "vertical"}),
    (
        {"horizontal_flip": True, "vertical_flip": True},
        "RandomFlip",
        {"mode": "horizontal_and_vertical"},
    ),
    ({"rotation": 15 / 360}, "RandomRotation", {"factor": (-15 / 360, 15 / 360)}),
    ({"zoom": 0.2}, "RandomZoom", {"height_factor": (-0.2, 0.2), "width_factor": None}),
    ({"translate": 0.1}, "RandomTranslation", {"height_factor": 0.1, "width_factor": 0.1}),
    ({"crop": 0.25}, "RandomResizedCrop", {"max_crop": 0.25}),
    ({"contrast": 0.2}, "RandomContrast", {"factor": (0.2, 0.2), "value_range": (0, 255)}),
    ({"brightness": 0.3}, "RandomBrightness", {"factor": (-0.3, 0.3), "value_range": [0, 255]}),
    ({"saturation": 0.4}, "RandomSaturation", {"factor": (0.3, 0.7), "value_range": [0, 255]}),
    ({"hue": 0.1}, "RandomHue", {"factor": (0, 0.2), "value_range": (0, 255)}),
    ({"noise": 0.1}, "RandomGaussianNoise", {"stddev": 25.5, "value_range": (0, 255)}),
    ({"erasing": 0.3}, "RandomErasing", {"factor": (0.5, 0.5), "scale": (0.02, 0.3)}),
    ({"erasing": 0.01}, "RandomErasing", {"scale": (0.01, 0.01)}),
    (
        {"randaugment_ops": 3, "randaugment_magnitude": 0.7},
        "RandAugment",
        {"num_ops": 3, "factor": (0, 0.7), "value_range": (0, 255)},
    ),
]


@pytest.mark.parametrize(("values", "class_name", "expected"), BUILDER_TABLE)
def test_each_option_adds_its_layer_with_its_parameters(values, class_name, expected):
    layers = augment.build_layers(AugmentConfig(**values), RGB, seed=0)
    assert [type(layer).__name__ for layer in layers] == [class_name]
    config = _config(layers[0])
    for key, value in expected.items():
        if value is None or isinstance(value, str):
            assert config[key] == value, key
        else:
            assert config[key] == pytest.approx(value), key


@pytest.mark.parametrize(
    ("values", "class_name", "expected"),
    [
        ({"mixup": 0.4}, "MixUp", {"alpha": 0.4}),
        ({"cutmix": 1.0}, "CutMix", {"factor": (1.0, 1.0)}),
    ],
)
def test_batch_options_are_batch_layers_not_per_image_layers(values, class_name, expected):
    cfg = AugmentConfig(**values)
    assert augment.build_layers(cfg, RGB, seed=0) == []
    aug = augment.make_augmenter(cfg, RGB, num_classes=4, seed=0)
    assert [type(layer).__name__ for layer in aug.batch_layers] == [class_name]
    config = _config(aug.batch_layers[0])
    for key, value in expected.items():
        assert config[key] == pytest.approx(value)


def test_layers_run_in_a_fixed_order_and_skip_colour_on_grayscale():
    colour = [type(layer).__name__ for layer in augment.build_layers(ALL_ON, RGB, seed=0)]
    assert colour == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomResizedCrop",
        "RandAugment",
        "RandomContrast",
        "RandomBrightness",
        "RandomSaturation",
        "RandomHue",
        "RandomGaussianNoise",
        "RandomErasing",
    ]
    gray = [type(layer).__name__ for layer in augment.build_layers(ALL_ON, GRAY, seed=0)]
    assert gray == [c for c in colour if c not in ("RandomSaturation", "RandomHue")]


def test_disabled_options_name_the_reason():
    assert augment.disabled_options(RGB) == {}
    disabled = augment.disabled_options(GRAY)
    assert set(disabled) == {"saturation", "hue"}
    assert all("grayscale" in reason for reason in disabled.values())
    assert set(augment.option_notes("mnist")) == {"horizontal_flip", "vertical_flip"}
    assert augment.option_notes("fashion_mnist") == {}


def test_seeds_are_per_option_and_stable_when_other_options_change():
    one = augment.layer_specs(AugmentConfig(rotation=0.1), RGB, seed=3)
    two = augment.layer_specs(AugmentConfig(rotation=0.1, zoom=0.2), RGB, seed=3)
    assert one[0].kwargs["seed"] == two[0].kwargs["seed"]
    assert two[0].kwargs["seed"] != two[1].kwargs["seed"]
    assert (
        augment.layer_specs(AugmentConfig(rotation=0.1), RGB, seed=4)[0].kwargs["seed"]
        != one[0].kwargs["seed"]
    )


def test_presets_are_named_valid_and_round_trip_through_json():
    assert list(augment.PRESETS) == ["none", "light", "standard", "strong"]
    for name, cfg in augment.PRESETS.items():
        assert cfg.preset == name
        assert AugmentConfig.from_json(cfg.to_json()) == cfg
        assert json.loads(cfg.to_json())["preset"] == name
        assert augment.matching_preset(cfg) == name
    assert augment.matching_preset(augment.PRESETS["light"].replace(rotation=0.2)) == "custom"
    # Presets grow: every transform of a lighter preset is in the stronger ones.
    light, standard, strong = (augment.PRESETS[n] for n in ("light", "standard", "strong"))
    for weaker, stronger in ((light, standard), (standard, strong)):
        for field in ("rotation", "zoom", "translate", "contrast", "brightness"):
            assert getattr(stronger, field) >= getattr(weaker, field)


def test_none_means_no_layers_and_no_augmenter():
    cfg = augment.PRESETS["none"]
    assert not augment.is_active(cfg)
    assert augment.build_layers(cfg, RGB, seed=0) == []
    assert augment.make_augmenter(cfg, RGB, num_classes=3, seed=0) is None
    # RandAugment strength alone changes nothing while its op count is 0.
    assert augment.make_augmenter(AugmentConfig(randaugment_magnitude=0.9), RGB, 3, 0) is None


@pytest.mark.parametrize("shape", [RGB, GRAY])
def test_every_preset_builds_and_runs_on_colour_and_grayscale(shape):
    images = _images(shape).astype("float32")
    labels = np.eye(8, dtype="float32")
    for name in ("light", "standard", "strong"):
        out, mixed = augment.make_augmenter(augment.PRESETS[name], shape, 8, seed=0)(images, labels)
        assert out.shape == images.shape
        assert np.asarray(out).min() >= 0 and np.asarray(out).max() <= 255
        np.testing.assert_allclose(np.asarray(mixed).sum(axis=1), 1.0, rtol=1e-5)


def test_every_layer_is_the_identity_at_inference_and_random_in_training():
    images = _images().astype("float32")
    aug = augment.make_augmenter(ALL_ON, RGB, num_classes=8, seed=0)
    for layer in aug.layers:
        np.testing.assert_allclose(
            np.asarray(layer(images, training=False)), images, err_msg=layer.name
        )
        assert not np.allclose(np.asarray(layer(images, training=True)), images), layer.name
    batch = {"images": images, "labels": np.eye(8, dtype="float32")}
    for layer in aug.batch_layers:
        out = layer(batch, training=False)
        np.testing.assert_allclose(np.asarray(out["images"]), images, err_msg=layer.name)
        np.testing.assert_allclose(np.asarray(out["labels"]), batch["labels"], err_msg=layer.name)
        assert not np.allclose(np.asarray(layer(batch, training=True)["images"]), images), (
            layer.name
        )


def test_the_trainer_applies_the_layers_the_preview_shows():
    """Same config and seed: make_augmenter's layers are build_layers', and its output is the grid."""
    images = _images()
    built = augment.build_layers(ALL_ON, RGB, seed=5)
    aug = augment.make_augmenter(ALL_ON, RGB, num_classes=8, seed=5)
    assert [(type(a).__name__, a.get_config()) for a in aug.layers] == [
        (type(b).__name__, b.get_config()) for b in built
    ]
    variants = 3
    grid = augment.preview(ALL_ON, images, variants, seed=5)
    copies = np.tile(images, (variants, 1, 1, 1)).astype("float32")
    labels = np.tile(np.eye(8, dtype="float32"), (variants, 1))
    trained, _ = augment.make_augmenter(ALL_ON, RGB, num_classes=8, seed=5)(copies, labels)
    trained = np.clip(np.round(np.asarray(trained)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(
        grid[:, 1:], trained.reshape(variants, 8, *RGB).transpose(1, 0, 2, 3, 4)
    )


def test_preview_grid_shape_is_deterministic_and_keeps_the_original_first():
    images = _images(GRAY, n=4)
    cfg = augment.PRESETS["strong"]
    grid = augment.preview(cfg, images, 4, seed=0)
    assert grid.shape == (4, 5, *GRAY) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:, 0], images)
    np.testing.assert_array_equal(grid, augment.preview(cfg, images, 4, seed=0))
    assert not np.array_equal(grid, augment.preview(cfg, images, 4, seed=1))
    assert not np.array_equal(grid[:, 1], grid[:, 2])  # variants differ from each other
    plain = augment.preview(augment.PRESETS["none"], images, 2, seed=0)
    np.testing.assert_array_equal(plain, np.repeat(images[:, None], 3, axis=1))
    assert augment.preview(cfg, images, 0, seed=0).shape == (4, 1, *GRAY)


@pytest.mark.parametrize(
    ("images", "variants", "message"),
    [
        (np.zeros((16, 16, 3), np.uint8), 2, "(N, H, W, 1 or 3)"),
        (np.zeros((2, 16, 16, 4), np.uint8), 2, "(N, H, W, 1 or 3)"),
        (np.zeros((2, 16, 16, 3), np.float32), 2, "uint8"),
        (np.zeros((2, 16, 16, 3), np.uint8), -1, "variants"),
    ],
)
def test_preview_refuses_bad_input_with_a_message(images, variants, message):
    with pytest.raises(augment.AugmentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        augment.preview(augment.PRESETS["light"], images, variants, seed=0)


def test_augmenter_is_tf_data_safe_deterministic_and_one_hot_encodes_int_labels():
    import tensorflow as tf

    images = _images(n=16).astype("float32")
    labels = np.arange(16, dtype="int32") % 4

    # RandAugment's graph is large to trace; the pipeline test below runs it in tf.data.
    cfg = ALL_ON.replace(randaugment_ops=0)

    def run_once():
        aug = augment.make_augmenter(cfg, RGB, num_classes=4, seed=1)
        data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).map(aug)
        return [(x.numpy(), y.numpy()) for x, y in data]

    first, second = run_once(), run_once()
    assert len(first) == 2
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert x1.dtype == np.float32 and x1.shape == (8, *RGB)
        assert y1.shape == (8, 4)
        np.testing.assert_allclose(y1.sum(axis=1), 1.0, rtol=1e-5)
        assert x1.min() >= 0 and x1.max() <= 255
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][0], first[1][0])


def test_augmenter_feeds_the_real_pipeline():
    from lib.config import DataConfig
    from lib.data import load_dataset, make_pipeline

    ds = load_dataset(DataConfig(source="shapes", shapes_count=60, shapes_size=16))
    cfg = augment.PRESETS["strong"].replace(randaugment_ops=1)
    aug = augment.make_augmenter(cfg, ds.image_shape, ds.num_classes, seed=0)
    pipe = make_pipeline(ds, "train", batch_size=8, shuffle=True, seed=0, augment=aug)
    images, labels = next(iter(pipe))
    assert images.dtype.name == "float32" and images.shape[1:] == ds.image_shape
    assert labels.shape == (images.shape[0], ds.num_classes)


def test_layers_stay_float32_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        aug = augment.make_augmenter(augment.PRESETS["strong"], RGB, num_classes=8, seed=0)
        out, _ = aug(_images().astype("float32"), np.eye(8, dtype="float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


@pytest.mark.parametrize(
    "cfg", [ALL_ON, augment.PRESETS["none"], AugmentConfig(mixup=0.3), AugmentConfig(crop=0.3)]
)
def test_keras_code_runs_and_matches_the_augmenter(cfg):
    code = augment.keras_code(cfg, RGB, seed=2)
    assert "import lib" not in code and "from lib" not in code  # stands alone
    namespace: dict = {}
    exec(compile(code, "<keras_code>", "exec"), namespace)
    images = _images().astype("float32")
    labels = np.eye(8, dtype="float32")
    got_images, got_labels = namespace["augment_batch"](images, labels)
    aug = augment.make_augmenter(cfg, RGB, num_classes=8, seed=2)
    want_images, want_labels = aug(images, labels) if aug else (images, labels)
    np.testing.assert_array_equal(np.asarray(got_images), np.asarray(want_images))
    np.testing.assert_array_equal(np.asarray(got_labels), np.asarray(want_labels))


def test_custom_layers_keep_the_shape_and_survive_serialisation():
    import keras

    from lib.augment_layers import RandomGaussianNoise, RandomResizedCrop

    images = _images(n=4).astype("float32")
    crop = RandomResizedCrop(0.4, seed=1)
    out = np.asarray(crop(images, training=True))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255
    single = np.asarray(crop(images[0], training=True))
    assert single.shape == images[0].shape
    noise = RandomGaussianNoise(500.0, seed=1)
    out = np.asarray(noise(images, training=True))
    assert out.min() == 0 and out.max() == 255  # clipped to the value range
    for layer in (crop, noise):
        again = keras.layers.deserialize(keras.layers.serialize(layer))
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="max_crop"):
        RandomResizedCrop(1.0)


def test_upload_helpers_fit_and_montage():
    big = np.zeros((600, 300, 3), np.uint8)
    assert augment.fit_for_preview(big).shape == (256, 128, 3)
    small = np.zeros((20, 10, 1), np.uint8)
    assert augment.fit_for_preview(small) is small
    grid = augment.preview(augment.PRESETS["light"], _images(GRAY, n=2), 3, seed=0)
    picture = augment.montage(grid, cell=32, gap=2)
    assert picture.shape == (2 * 32 + 2, 4 * 32 + 3 * 2, 3) and picture.dtype == np.uint8
