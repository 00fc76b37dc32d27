"""Export a registry model (or a run's model) for use outside Kestrel, with parity checks.

    from lib.export import export_model, parity_images
    images = parity_images(entry)                       # ≥ 200 test images, model-shaped
    result = export_model(entry, "tflite", images)      # ExportResult: bytes + Parity
    result.parity.top1_agreement, result.parity.max_prob_diff

Formats (:data:`FORMATS`):

- ``keras``: the ``.keras`` file itself (Keras 3; load with ``keras.saving.load_model``);
- ``savedmodel``: a zipped TensorFlow SavedModel (``model.export``), for TF Serving;
- ``tflite``: TensorFlow Lite, float32;
- ``tflite_dynamic``: TensorFlow Lite with dynamic-range quantisation (int8
  weights, float activations: about 4× smaller);
- ``onnx``: ONNX through tf2onnx, checked with onnxruntime (both pinned in
  requirements.txt; hidden if someone removes them).

Every converted format is run on the same test images as the Keras model, and
the result reports top-1 agreement and the largest probability difference, so a
broken conversion is visible before anyone downloads it. Every exported model
takes raw pixels 0..255 (N, H, W, C) and returns logits, like the Keras model.
Temporary files go to the workspace's ``tmp`` area.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib.errors import KestrelError
from lib.predict import Predictor, get_predictor, preprocess, softmax
from lib.registry import ModelEntry, load_model
from lib.workspace import area

PARITY_IMAGES = 256  # at least the 200 the issue asks for
PARITY_THRESHOLD = 0.99  # top-1 agreement below this marks an export as suspect

FORMATS: dict[str, tuple[str, str]] = {
    # kind: (label, file suffix)
    "keras": ("Keras (.keras)", ".keras"),
    "savedmodel": ("TensorFlow SavedModel (.zip)", "_savedmodel.zip"),
    "tflite": ("TFLite float32 (.tflite)", ".tflite"),
    "tflite_dynamic": ("TFLite dynamic-range quantised (.tflite)", "_dynamic.tflite"),
    "onnx": ("ONNX (.onnx)", ".onnx"),
}


MESSAGE_CHARS = 300  # of a converter's error shown on the page


class ExportError(KestrelError):
    """An export that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class Parity:
    """How closely an exported model matches the Keras model on the same images."""

    images: int
    top1_agreement: float  # share of images where both pick the same class
    max_prob_diff: float  # largest absolute difference of any class probability

    @property
    def ok(self) -> bool:
        return self.top1_agreement >= PARITY_THRESHOLD


@dataclass(frozen=True)
class ExportResult:
    kind: str
    filename: str
    data: bytes
    parity: Parity | None  # None for the .keras file itself (it is the model)
    seconds: float  # conversion plus parity check


def onnx_available() -> bool:
    """Whether the optional ONNX converter and runtime are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("tf2onnx", "onnxruntime"))


def available_formats() -> list[str]:
    return [k for k in FORMATS if k != "onnx" or onnx_available()]


def parity_images(
    entry: ModelEntry, fallback_data: Any = None, n: int = PARITY_IMAGES
) -> np.ndarray:
    """Test images for parity checks, preprocessed to the model's input shape.

    Uses the test split of the dataset in the model's card (its training
    config), else ``fallback_data`` (a DataConfig, e.g. the active dataset),
    else the procedural shapes set: parity compares two versions of one model,
    so any real images serve.

    Returns:
        uint8 (n, H, W, C).
    """
    from lib.config import DataConfig
    from lib.data import load_dataset

    candidates = []
    data = (entry.card.training_config or {}).get("data")
    if isinstance(data, dict):
        with contextlib.suppress(ValueError):  # an unreadable config: use the fallbacks
            candidates.append(DataConfig.from_dict(data))
    if fallback_data is not None:
        candidates.append(fallback_data)
    candidates.append(DataConfig(source="shapes", shapes_count=max(600, 3 * n)))
    for cfg in candidates:
        try:
            ds = load_dataset(cfg)
        except Exception:  # a missing dataset just means: try the next one
            continue
        pool = []
        for split_name in ("test", "val", "train"):
            split = ds.splits.get(split_name)
            if split is not None and len(split):
                take = min(n - sum(len(p) for p in pool), len(split))
                pool.append(split.images(np.arange(take)))
            if sum(len(p) for p in pool) >= n:
                break
        images = np.concatenate(pool) if pool else np.zeros((0,))
        if len(images):
            return np.stack([preprocess(img, entry.card) for img in images])
    raise ExportError("no images are available for the parity check")


def export_model(entry: ModelEntry, kind: str, images: np.ndarray | None = None) -> ExportResult:
    """Export ``entry`` as ``kind`` and check it against the Keras model on ``images``.

    Args:
        entry: the model (registry, run or upload).
        kind: one of :data:`FORMATS`.
        images: preprocessed uint8 images (N, H, W, C) for the parity check;
            default :func:`parity_images`.

    Raises:
        ExportError: unknown or unavailable format, or the conversion failed.
    """
    if kind not in FORMATS:
        raise ExportError(f"unknown export format {kind!r}; choose one of {', '.join(FORMATS)}")
    if kind == "onnx" and not onnx_available():
        raise ExportError(
            "ONNX export needs tf2onnx and onnxruntime, which are not installed "
            "(pip install tf2onnx onnxruntime)"
        )
    t0 = time.perf_counter()
    stem = entry.name.rsplit(".keras", 1)[0] or "model"
    filename = stem + FORMATS[kind][1]
    if kind == "keras":
        data = Path(entry.model_path).read_bytes()
        return ExportResult(kind, filename, data, None, time.perf_counter() - t0)
    predictor = get_predictor(entry)
    model = load_model(entry)
    try:
        if kind == "savedmodel":
            data, probs_fn = savedmodel_zip(model), None
        elif kind in ("tflite", "tflite_dynamic"):
            data = tflite_bytes(model, entry.card.input_shape, quantize=kind == "tflite_dynamic")
            probs_fn = tflite_runner(data)
        else:
            data = onnx_bytes(model, entry.card.input_shape)
            probs_fn = onnx_runner(data)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(conversion_failure(FORMATS[kind][0], exc)) from None
    if images is None:
        images = parity_images(entry)
    if kind == "savedmodel":
        probs_fn = savedmodel_runner(data)
    result_parity = check_parity(predictor, probs_fn, images, entry.card.output)
    return ExportResult(kind, filename, data, result_parity, time.perf_counter() - t0)


def conversion_failure(what: str, exc: BaseException) -> str:
    """The message a page shows for a failed conversion to ``what``.

    Converters put whole MLIR dumps in their errors: the server's log keeps all of
    it, the message its first line, cut to MESSAGE_CHARS, and what to do.
    """
    logging.getLogger(__name__).error("%s conversion failed", what, exc_info=exc)
    text = (str(exc).strip().splitlines() or [""])[0].rstrip(". ")
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS - 1].rstrip() + "…"
    return (
        f"{what} conversion failed: {type(exc).__name__}: {text}. "
        "Try another format; the whole error is in the server's log"
    )


def check_parity(
    predictor: Predictor, run_exported, images: np.ndarray, output: str = "logits"
) -> Parity:
    """Compare the exported model's probabilities with the Keras model's on ``images``."""
    x = np.asarray(images, np.float32)
    ref = predictor.probabilities(x)
    out = np.asarray(run_exported(x), np.float32)
    got = out if output == "probabilities" else softmax(out)
    agree = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
    return Parity(images=len(x), top1_agreement=agree, max_prob_diff=float(np.abs(ref - got).max()))


# ---------------------------------------------------------------- SavedModel


def _tmp_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(dir=area("tmp"), prefix="export-")


def savedmodel_zip(model: Any) -> bytes:
    """The model as a zipped TensorFlow SavedModel (serving endpoint ``serve``)."""
    with _tmp_dir() as tmp:
        folder = Path(tmp) / "savedmodel"
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(str(folder), format="tf_saved_model", verbose=False)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, Path("savedmodel") / path.relative_to(folder))
        return buffer.getvalue()


def savedmodel_runner(data: bytes):
    """A function running a zipped SavedModel (from :func:`savedmodel_zip`) on a batch."""
    import tensorflow as tf

    tmp = _tmp_dir()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(tmp.name)  # our own archive, just written
    loaded = tf.saved_model.load(str(Path(tmp.name) / "savedmodel"))

    def run(x: np.ndarray) -> np.ndarray:
        parts = [loaded.serve(tf.constant(x[i : i + 64])) for i in range(0, len(x), 64)]
        return np.concatenate([np.asarray(p) for p in parts])

    run.tmp = tmp  # keep the folder alive as long as the runner
    return run


# ---------------------------------------------------------------- TFLite


def tflite_bytes(model: Any, input_shape: tuple[int, int, int], quantize: bool = False) -> bytes:
    """Convert to TensorFlow Lite (float32, or dynamic-range quantised weights).

    ``from_keras_model`` traces the model through Keras' own export, which
    freezes its variables (a bare concrete function of a Keras 3 model does not).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no dataset: dynamic range
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the traced signature
        return converter.convert()


def tflite_runner(data: bytes, chunk: int = 64):
    """A function running a TFLite model on a batch (resizing its batch dimension)."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_content=data, num_threads=2)
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(x), chunk):
            part = np.ascontiguousarray(x[start : start + chunk], np.float32)
            interpreter.resize_tensor_input(inp, part.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(inp, part)
            interpreter.invoke()
            parts.append(interpreter.get_tensor(out).copy())
        return np.concatenate(parts)

    return run


# ---------------------------------------------------------------- ONNX (optional)


def onnx_bytes(model: Any, input_shape: tuple[int, int, int], opset: int = 17) -> bytes:
    """Convert with tf2onnx (optional dependency) from a traced call of the model."""
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec([None, *input_shape], tf.float32, name="pixels")]
    fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    return proto.SerializeToString()


def onnx_runner(data: bytes):
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.asarray(x, np.float32)})[0]

    return run


# ---------------------------------------------------------------- unknown detection


def unknown_bundle(entry: ModelEntry) -> bytes | None:
    """A zip to ship beside any export: the card (its ``unknown`` block says how to apply
    detection, and ``logits_only`` gives the energy threshold for logits-only exports such as
    TFLite and ONNX) and the statistics file. None when the model has no unknown detection.
    """
    import json

    from lib.ood import STATS_FILE

    stats = Path(entry.model_path).parent / STATS_FILE
    if not entry.card.unknown or not stats.is_file():
        return None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("card.json", json.dumps(entry.card.to_dict(), indent=2))
        zf.write(stats, STATS_FILE)
    return buffer.getvalue()
