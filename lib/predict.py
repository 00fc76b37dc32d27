"""Prediction: preprocess images the way a model card says, and classify them fast.

    from lib import registry
    from lib.predict import get_predictor, decode_upload
    predictor = get_predictor(registry.default_entry())
    image = decode_upload(data, "photo.jpg")          # the safe decode, EXIF applied
    result = predictor.predict_one(image)              # Prediction: probs, top-k, seconds

Preprocessing follows the card: channels converted (RGB -> L by ITU-R 601 luma,
L -> RGB by repetition), then resized to the card's size with the same function
the dataset loader uses, so a photo is fed exactly like a training image.
Pixels stay raw 0..255 floats: every Kestrel model rescales inside itself.

Speed: a :class:`Predictor` wraps the model in one ``tf.function`` with a fixed
signature (any batch size), traced once, so one image costs one graph call, not
``model.predict``'s per-call set-up.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib.data.images import ImageDecodeError, as_rgb, decode_image, resize_image, to_channels
from lib.registry import ModelCard, ModelEntry, load_model_file

UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
MAX_BATCH = 64  # images per graph call when classifying many


@dataclass(frozen=True)
class Prediction:
    """The outcome for one image."""

    probs: np.ndarray  # float32 (K,), softmax of the logits
    class_index: int  # argmax
    top_k: tuple[tuple[str, float], ...]  # (class name, probability), best first
    seconds: float  # model time for this image (its share of a batch)
    # Unknown detection (lib.ood), when the model has it: the score, the card's
    # threshold and the classes nearest in feature space. The class is unchanged.
    unknown_score: float | None = None
    threshold: float | None = None
    nearest: tuple[tuple[str, float], ...] = ()

    def is_unknown(self, threshold: float | None = None) -> bool:
        """Whether the image is unlike the training classes (at ``threshold`` or the card's)."""
        limit = self.threshold if threshold is None else threshold
        return self.unknown_score is not None and limit is not None and self.unknown_score > limit

    @property
    def label(self) -> str:
        return self.top_k[0][0]

    @property
    def confidence(self) -> float:
        return self.top_k[0][1]


def decode_upload(data: bytes, name: str) -> np.ndarray:
    """Decode uploaded image bytes (the one safe decoder; EXIF orientation applied).

    Raises:
        ImageDecodeError: not a readable, supported image; the message names the file.
    """
    return decode_image(data, name, color_mode="auto")


def preprocess(image: np.ndarray, card: ModelCard) -> np.ndarray:
    """One uint8 (H, W, C) image -> uint8 (h, w, c) of the card's input shape.

    Any size and either channel count is accepted; 2-D arrays are grayscale.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageDecodeError("image", f"expected an (H, W, C) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    h, w, c = card.input_shape
    return resize_image(to_channels(image, c), h, w)


def softmax(logits: np.ndarray) -> np.ndarray:
    """float32 probabilities of ``logits`` (lib.evaluation's softmax)."""
    from lib.evaluation import softmax as stable_softmax

    return stable_softmax(logits, np.float32)


class Predictor:
    """A model and its card, ready to classify raw images quickly.

    Args:
        model: a Keras model taking float32 raw pixels (B, H, W, C).
        card: its card (input shape, class names, output kind).
        detector: unknown detection (lib.ood.Detector) fitted for this model, if any.
    """

    def __init__(self, model: Any, card: ModelCard, detector: Any = None):
        import tensorflow as tf

        self.model = model
        self.card = card
        self.detector = detector
        h, w, c = card.input_shape
        self._lock = threading.Lock()
        # One trace serves every batch size; training=False fixes dropout/BN.
        self._call = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, h, w, c], tf.float32)],
        )
        self._call_features = None
        if detector is not None:
            from lib.ood import feature_model

            both = feature_model(model)
            self._call_features = tf.function(
                lambda x: both(x, training=False),
                input_signature=[tf.TensorSpec([None, h, w, c], tf.float32)],
            )
        self._warm = False

    def warm_up(self) -> None:
        """Trace the graph once (the first call costs far more than the rest)."""
        if not self._warm:
            with self._lock:
                if not self._warm:
                    zeros = np.zeros((1, *self.card.input_shape), np.uint8)
                    self.raw_logits(zeros)
                    if self._call_features is not None:
                        self.features_and_logits(zeros)
                    self._warm = True

    def raw_logits(self, batch: np.ndarray) -> np.ndarray:
        """Model outputs for an already preprocessed uint8/float batch (B, H, W, C)."""
        x = np.asarray(batch, np.float32)
        return np.asarray(self._call(x), np.float32)

    def features_and_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (B, D) and outputs (B, K) of a preprocessed batch (needs a detector)."""
        features, logits = self._call_features(np.asarray(batch, np.float32))
        features = np.asarray(features, np.float32).reshape(len(batch), -1)
        return features, np.asarray(logits, np.float32)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (B, K) for a preprocessed batch."""
        out = self.raw_logits(batch)
        return out if self.card.output == "probabilities" else softmax(out)

    def prepare(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Preprocess many images into one uint8 batch (B, H, W, C) of the card's shape."""
        return np.stack([preprocess(img, self.card) for img in images])

    def predict(self, images: list[np.ndarray] | np.ndarray, k: int = 5) -> list[Prediction]:
        """Classify raw images of any size and channel count.

        Args:
            images: uint8 (H, W, C) arrays, as :func:`decode_upload` returns them.
            k: how many classes to list per image.

        Returns:
            One :class:`Prediction` per image; ``seconds`` is the model time per image.
        """
        if len(images) == 0:
            return []
        self.warm_up()
        batch = self.prepare(images)
        if self.detector is not None:
            return self._predict_with_detection(batch, k)
        probs_parts = []
        t0 = time.perf_counter()
        for start in range(0, len(batch), MAX_BATCH):
            probs_parts.append(self.probabilities(batch[start : start + MAX_BATCH]))
        per_image = (time.perf_counter() - t0) / len(batch)
        probs = np.concatenate(probs_parts)
        return [self._result(p, k, per_image) for p in probs]

    def _predict_with_detection(self, batch: np.ndarray, k: int) -> list[Prediction]:
        """Classify and score for unknown detection in one graph call per chunk."""
        import dataclasses

        feats, logits = [], []
        t0 = time.perf_counter()
        for start in range(0, len(batch), MAX_BATCH):
            f, z = self.features_and_logits(batch[start : start + MAX_BATCH])
            feats.append(f)
            logits.append(z)
        per_image = (time.perf_counter() - t0) / len(batch)
        features, out = np.concatenate(feats), np.concatenate(logits)
        probs = out if self.card.output == "probabilities" else softmax(out)
        scores = self.detector.score(features, out)
        nearest = self.detector.nearest_classes(features, k=3)
        threshold = self.detector.threshold()
        return [
            dataclasses.replace(
                self._result(p, k, per_image),
                unknown_score=float(s),
                threshold=threshold,
                nearest=tuple(n),
            )
            for p, s, n in zip(probs, scores, nearest, strict=True)
        ]

    def predict_one(self, image: np.ndarray, k: int = 5) -> Prediction:
        return self.predict([image], k)[0]

    def _result(self, probs: np.ndarray, k: int, seconds: float) -> Prediction:
        names = self.card.class_names
        order = np.argsort(-probs, kind="stable")[: max(1, min(k, len(names)))]
        top = tuple((names[i], float(probs[i])) for i in order)
        return Prediction(probs=probs, class_index=int(order[0]), top_k=top, seconds=seconds)


_predictors: dict[tuple[str, int, int, int], Predictor] = {}
_predictors_lock = threading.Lock()
PREDICTOR_CACHE_SIZE = 6


def get_predictor(entry: ModelEntry) -> Predictor:
    """A warmed-up Predictor for ``entry``, shared per model file in this process."""
    path = entry.model_path
    stat = path.stat()
    # The statistics beside the model count too: a detector fitted later is picked up.
    from lib.ood import STATS_FILE

    stats = path.parent / STATS_FILE
    stats_stamp = stats.stat().st_mtime_ns if stats.is_file() else 0
    key = (str(path), stat.st_mtime_ns, stat.st_size, stats_stamp)
    with _predictors_lock:
        predictor = _predictors.get(key)
    if predictor is None:
        predictor = Predictor(load_model_file(path), entry.card, _detector_for(entry))
        predictor.warm_up()
        settle_garbage_collector()
        with _predictors_lock:
            _predictors[key] = predictor
            while len(_predictors) > PREDICTOR_CACHE_SIZE:
                _predictors.pop(next(iter(_predictors)))
    return predictor


def _detector_for(entry: ModelEntry) -> Any:
    """The unknown-detection statistics stored beside the model, if its card has them."""
    if not entry.card.unknown or entry.source == "upload":
        return None
    from lib import ood

    try:
        return ood.load_beside(entry.model_path)
    except ood.OODError as exc:  # a damaged file: predict without detection, and say why
        import logging

        logging.getLogger(__name__).warning("%s", exc)
        return None


def settle_garbage_collector() -> None:
    """Collect once, then move every live object out of the collector's reach.

    TensorFlow, Keras and a loaded model leave hundreds of thousands of long-lived
    objects; in a Streamlit server every rerun makes garbage, and each full
    collection then walks them all (measured: 0.5-1 s pauses landing inside a
    2 ms prediction). ``gc.freeze`` (meant for exactly such long-lived heaps)
    puts them in a permanent generation that later collections skip.
    """
    gc.collect()
    gc.freeze()


def latency(
    predictor: Predictor, image: np.ndarray, *, warmup: int = 10, repeats: int = 100
) -> dict:
    """Single-image latency (preprocess + model call) after warm-up, in milliseconds."""
    for _ in range(warmup):
        predictor.predict_one(image)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict_one(image)
        times.append((time.perf_counter() - t0) * 1000)
    arr = np.asarray(times)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "mean_ms": float(arr.mean()),
        "repeats": repeats,
    }


# ---------------------------------------------------------------- presentation helpers


# Bounds of every picture derived from an upload (display copies, Grad-CAM overlays,
# thumbnails): a valid upload may be 7000×5700 px or 5000×1 px, and a display copy
# of it scaled up to a minimum side would be hundreds of MB sent to the browser.
DISPLAY_MAX_SIDE = 1024  # px, the longest side of a display copy
DISPLAY_MAX_PIXELS = 1_000_000  # px in all, so a square copy stays ~1000×1000
THUMBNAIL_SIDE = 64  # px, the longest side of a table thumbnail
DISPLAY_MAX_ASPECT = 10  # longest side : shortest side; beyond it, a grey band pads
PAD_GREY = 240


def bounded_size(
    height: int,
    width: int,
    *,
    min_side: int = 0,
    max_side: int = DISPLAY_MAX_SIDE,
    max_pixels: int = DISPLAY_MAX_PIXELS,
) -> tuple[int, int]:
    """(height, width) of a copy with the same aspect ratio, within the bounds.

    Enlarged by a whole factor until the shorter side reaches ``min_side`` (so
    small images stay crisp), but never past ``max_side`` or ``max_pixels``;
    larger images are shrunk to fit them. Each side is at least 1 px.
    """
    h, w = max(1, int(height)), max(1, int(width))
    if max(h, w) > max_side or h * w > max_pixels:
        scale = min(max_side / max(h, w), (max_pixels / (h * w)) ** 0.5)
        return max(1, int(h * scale)), max(1, int(w * scale))
    factor = max(1, -(-min_side // min(h, w)))
    factor = min(factor, max_side // max(h, w), int((max_pixels / (h * w)) ** 0.5))
    factor = max(1, factor)
    return h * factor, w * factor


def fit_image(
    image: np.ndarray,
    *,
    min_side: int = 0,
    max_side: int = DISPLAY_MAX_SIDE,
    max_pixels: int = DISPLAY_MAX_PIXELS,
) -> np.ndarray:
    """``image`` (H, W[, C]) uint8 resized to :func:`bounded_size`, channels kept.

    Enlarging repeats pixels (crisp digits); shrinking averages them (Pillow's
    box filter after a reducing step, which is fast on huge images).
    """
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    th, tw = bounded_size(h, w, min_side=min_side, max_side=max_side, max_pixels=max_pixels)
    if (th, tw) == (h, w):
        return img
    if th % h == 0 and tw % w == 0 and th // h == tw // w:  # whole-factor enlargement
        f = th // h
        return np.repeat(np.repeat(img, f, axis=0), f, axis=1)
    squeeze = img.ndim == 3 and img.shape[2] == 1
    pil = Image.fromarray(img[:, :, 0] if squeeze else img)
    pil = pil.resize((tw, th), Image.Resampling.BOX, reducing_gap=2.0)
    out = np.asarray(pil)
    return out[:, :, None] if squeeze else out


def pad_to_aspect(image: np.ndarray, max_aspect: float = DISPLAY_MAX_ASPECT) -> np.ndarray:
    """``image`` centred on a light grey band so its sides are at most ``max_aspect`` : 1.

    A 1024×1 strip shown 320 px wide would be less than a pixel tall (and
    Streamlit refuses to scale it); padded, it is shown as it is, in a frame.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    th, tw = max(h, -(-w // max_aspect)), max(w, -(-h // max_aspect))
    th, tw = int(th), int(tw)
    if (th, tw) == (h, w):
        return img
    out = np.full((th, tw, *img.shape[2:]), PAD_GREY, np.uint8)
    top, left = (th - h) // 2, (tw - w) // 2
    out[top : top + h, left : left + w] = img
    return out


def display_image(image: np.ndarray, min_side: int = 224, *, pad: bool = True) -> np.ndarray:
    """An RGB uint8 copy to look at: tiny images enlarged, huge or extreme ones bounded.

    The result's longest side is at most :data:`DISPLAY_MAX_SIDE` and its area at
    most :data:`DISPLAY_MAX_PIXELS`, whatever the upload: a 5000×1 strip becomes
    1024×1, padded (unless ``pad`` is False) to 1024×103 by :func:`pad_to_aspect`.
    """
    img = as_rgb(fit_image(image, min_side=min_side))
    return pad_to_aspect(img) if pad else img


def thumbnail_data_url(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    """A small PNG of ``image`` as a data URL (for table image columns), at most side×side."""
    import base64
    import io

    from PIL import Image

    img = fit_image(image, min_side=side, max_side=side, max_pixels=side * side)
    pil = Image.fromarray(img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img[..., :3])
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def results_rows(
    names: list[str], predictions: list[Prediction], k: int = 3, threshold: float | None = None
) -> list[dict]:
    """One row per image for the results table and its CSV (``threshold``: unknown detection's)."""
    rows = []
    for name, pred in zip(names, predictions, strict=True):
        row = {"file": name, "prediction": pred.label, "confidence": round(pred.confidence, 4)}
        if pred.unknown_score is not None:
            row["unknown"] = pred.is_unknown(threshold)
            row["unknown_score"] = round(pred.unknown_score, 4)
        for i, (cls, p) in enumerate(pred.top_k[1:k], 2):  # top 1 is the prediction
            row[f"top{i}"] = cls
            row[f"top{i}_prob"] = round(p, 4)
        rows.append(row)
    return rows


def results_csv(rows: list[dict]) -> bytes:
    """The results table as CSV bytes (UTF-8, header row)."""
    import csv
    import io

    if not rows:
        return b""
    fields = list(rows[0])
    for row in rows[1:]:
        fields += [f for f in row if f not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    # Upload names are user text: keep spreadsheets from reading them as formulas.
    writer.writerows({k: _csv_safe(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue().encode("utf-8")


def _csv_safe(value):
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
