"""Prediction: preprocessing per card (channels, size, EXIF), fast path, the shipped demo."""

import io
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from lib import predict, registry
from lib.architectures import build_model
from lib.config import DataConfig, ModelConfig, RunConfig
from lib.data import load_dataset
from lib.data.images import resize_image, to_channels

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def card_for(shape, k=4):
    return registry.ModelCard(
        name="t",
        class_names=tuple(f"c{i}" for i in range(k)),
        input_shape=shape,
        preprocessing=registry.preprocessing_for(shape),
    )


@pytest.fixture(scope="module")
def models():
    """Untrained but real fast_cnn models, grayscale 28×28 and RGB 32×32."""
    keras.utils.set_random_seed(1)
    return {
        c: build_model(ModelConfig(preset="fast_cnn", width=0.25), shape, 4)
        for c, shape in ((1, (28, 28, 1)), (3, (32, 32, 3)))
    }


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze()).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("model_shape", "image_shape"),
    [
        ((28, 28, 1), (28, 28, 1)),
        ((28, 28, 1), (300, 200, 3)),  # RGB photo into a grayscale model
        ((28, 28, 1), (7, 9, 1)),  # tiny image: upscaled
        ((32, 32, 3), (32, 32, 1)),  # grayscale into an RGB model
        ((32, 32, 3), (480, 640, 3)),
        ((32, 32, 3), (50, 40, 4)),  # RGBA array: alpha dropped
        ((32, 32, 3), (64, 64)),  # 2-D array: grayscale
    ],
)
def test_preprocess_gives_the_card_shape(model_shape, image_shape):
    image = np.random.default_rng(0).integers(0, 256, image_shape, dtype=np.uint8)
    out = predict.preprocess(image, card_for(model_shape))
    assert out.shape == model_shape and out.dtype == np.uint8


def test_rgb_upload_into_grayscale_model_uses_luma():
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: luma 76
    out = predict.preprocess(rgb, card_for((28, 28, 1)))
    assert np.all(out == 76)


def test_grayscale_upload_into_rgb_model_repeats_the_channel():
    gray = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32, 1).astype(np.uint8)
    out = predict.preprocess(gray, card_for((32, 32, 3)))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray[..., 0])


def test_preprocessing_matches_the_dataset_loader():
    """A photo is fed exactly like a training image (same resize, same luma)."""
    image = np.random.default_rng(2).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    expected = resize_image(to_channels(image, 1), 28, 28)
    np.testing.assert_array_equal(predict.preprocess(image, card_for((28, 28, 1))), expected)


def test_exif_rotated_photo_predicts_like_the_upright_one(models):
    rng = np.random.default_rng(3)
    upright = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)  # portrait, not square
    upright[:10] = 255  # a clear "top"
    # Stored rotated 90° clockwise on disk, with EXIF orientation 8 saying "rotate back".
    stored = Image.fromarray(np.rot90(upright, k=-1).copy())
    exif = Image.Exif()
    exif[0x0112] = 8
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif.tobytes())
    decoded = predict.decode_upload(buffer.getvalue(), "phone.png")
    np.testing.assert_array_equal(decoded, upright)
    card = card_for((32, 32, 3))
    predictor = predict.Predictor(models[3], card)
    a = predictor.predict_one(decoded)
    b = predictor.predict_one(upright)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)


def test_predictor_matches_a_direct_model_call(models):
    card = card_for((28, 28, 1))
    predictor = predict.Predictor(models[1], card)
    images = [
        np.random.default_rng(i).integers(0, 256, (28, 28, 1), dtype=np.uint8) for i in range(5)
    ]
    preds = predictor.predict(images, k=3)
    logits = np.asarray(models[1](np.stack(images).astype("float32"), training=False))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for pred, row in zip(preds, expected, strict=True):
        np.testing.assert_allclose(pred.probs, row, rtol=1e-5, atol=1e-6)
        assert pred.class_index == int(row.argmax())
        assert [name for name, _ in pred.top_k] == [f"c{i}" for i in np.argsort(-row)[:3]]
        assert pred.seconds > 0
    assert predictor.predict([]) == []


def test_upload_of_a_png_round_trips_through_decode(models):
    image = np.random.default_rng(4).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    decoded = predict.decode_upload(_png(image), "x.png")
    np.testing.assert_array_equal(decoded, image)


def test_bad_upload_is_a_typed_error():
    with pytest.raises(predict.ImageDecodeError, match=r"notes\.txt"):
        predict.decode_upload(b"hello", "notes.txt")


def test_results_table_and_csv_are_safe():
    card = card_for((28, 28, 1), k=3)
    pred = predict.Prediction(
        probs=np.array([0.7, 0.2, 0.1], np.float32), class_index=0,
        top_k=(("c0", 0.7), ("c1", 0.2), ("c2", 0.1)), seconds=0.001,
    )  # fmt: skip
    rows = predict.results_rows(["=HYPERLINK(1)", "ok.png"], [pred, pred])
    csv_text = predict.results_csv(rows).decode()
    assert csv_text.splitlines()[0] == "file,prediction,confidence,top2,top2_prob,top3,top3_prob"
    assert "'=HYPERLINK(1)" in csv_text and "\nok.png,c0,0.7," in csv_text
    assert card.num_classes == 3
    url = predict.thumbnail_data_url(np.zeros((28, 28, 1), np.uint8))
    assert url.startswith("data:image/png;base64,")


@pytest.mark.skipif(
    not FASHION_DIR.is_dir() and not os.environ.get("CI"),
    reason="Fashion-MNIST IDX files are not installed (apt-get install dataset-fashion-mnist)",
)
def test_the_demo_model_scores_its_card_accuracy():
    entry = next((e for e in registry.list_models() if e.name == "fashion-mnist-demo"), None)
    assert entry is not None, "models/fashion-mnist-demo is missing: run make demo-models"
    assert entry.model_path.stat().st_size <= 5 * 1024 * 1024
    card = entry.card
    data = RunConfig.from_dict(card.training_config).data
    assert data == DataConfig.from_dict(card.training_config["data"])
    ds = load_dataset(data)
    assert ds.test_is_own and list(ds.class_names) == list(card.class_names)
    test = ds.splits["test"]
    predictor = predict.get_predictor(entry)
    images = test.images()
    probs = np.concatenate(
        [predictor.probabilities(images[i : i + 1000]) for i in range(0, len(images), 1000)]
    )
    accuracy = float((probs.argmax(axis=1) == test.labels).mean())
    assert len(test) == 10_000
    assert abs(accuracy - card.metrics["test_accuracy"]) <= 0.005, (accuracy, card.metrics)


# Extreme but valid uploads: a strip, a column, a big photo, a tiny digit.
BOUNDED_CASES = [(1, 5000, 3), (5000, 1, 3), (1, 5000, 1), (3000, 2, 3), (4000, 3000, 3), (8, 8, 1)]


@pytest.mark.parametrize("shape", BOUNDED_CASES, ids=lambda s: "x".join(map(str, s)))
def test_display_copies_are_bounded_and_keep_the_aspect(shape):
    from lib import evaluation
    from lib.explain import overlay

    image = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    h, w = shape[:2]
    for shown in (predict.display_image(image), evaluation.display_image(image)):
        sh, sw = shown.shape[:2]
        assert max(sh, sw) <= predict.DISPLAY_MAX_SIDE and sh * sw <= predict.DISPLAY_MAX_PIXELS
        assert min(sh, sw) >= 1 and shown.dtype == np.uint8
        assert max(sh, sw) / min(sh, sw) <= predict.DISPLAY_MAX_ASPECT + 0.1
        if max(h, w) / min(h, w) <= predict.DISPLAY_MAX_ASPECT:  # the aspect ratio survives
            assert abs(sw / sh - w / h) / (w / h) < 0.1
        else:  # an extreme strip is padded with a grey band, not stretched
            assert (sh > sw) == (h > w) and (shown == predict.PAD_GREY).any()
    shown = predict.display_image(image)
    assert shown.ndim == 3 and shown.shape[2] == 3
    heat = np.random.default_rng(6).uniform(0, 1, (8, 8)).astype(np.float32)
    assert overlay(shown, heat).shape == shown.shape


def test_small_images_are_enlarged_crisply_up_to_the_bound():
    digit = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    shown = predict.display_image(digit)
    assert shown.shape == (224, 224, 3)  # 28× by pixel repetition
    np.testing.assert_array_equal(shown[::28, ::28, 0], digit[:, :, 0])
    # A 2×600 strip cannot reach a 224 px short side within the 1024 px long side.
    assert predict.display_image(np.zeros((2, 600, 3), np.uint8), pad=False).shape == (2, 600, 3)
    assert predict.display_image(np.zeros((2, 600, 3), np.uint8)).shape == (60, 600, 3)
    assert predict.bounded_size(100, 50, min_side=224) == (500, 250)


@pytest.mark.parametrize("shape", BOUNDED_CASES, ids=lambda s: "x".join(map(str, s)))
def test_thumbnails_are_bounded(shape):
    import base64

    image = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    url = predict.thumbnail_data_url(image)
    png = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(png.size) <= predict.THUMBNAIL_SIDE and min(png.size) >= 1
