"""The browser demo: a folder (and a zip) that classifies images in the browser, no server code.

    from lib.demo_export import build_demo, demo_zip
    folder = build_demo(entry, Path("fashion-demo"))    # index.html, model.onnx, demo.json, ort
    data, filename = demo_zip(entry)                    # the same folder as one zip

The folder holds ``index.html`` (the page, from ``web/demo/index.html``),
``model.onnx`` (lib.export's ONNX conversion), ``demo.json`` (class names, input
size and channels, how to resize, the output kind and, when the card has one,
the unknown-detection threshold) and the onnxruntime-web files its wasm backend
needs, copied from ``web/node_modules`` (pinned in ``web/package.json``,
installed by ``make web``: ``npm ci``). Everything loads by relative path, so
any static file server serves it (``python -m http.server`` in the folder); no
CDN, no network once loaded. Preprocessing in the page follows the card
exactly as :func:`lib.predict.preprocess` does: channels first (ITU-R 601 luma
for grayscale), then Pillow's BOX filter when shrinking both sides, else its
bilinear filter, to the card's input size; raw 0-255 pixels go in (models
rescale inside).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lib.errors import KestrelError
from lib.registry import ModelEntry, load_model, sanitize_name
from lib.workspace import PROJECT_ROOT, area

WEB_DIR = PROJECT_ROOT / "web"
TEMPLATE = WEB_DIR / "demo" / "index.html"
ORT_PACKAGE = WEB_DIR / "node_modules" / "onnxruntime-web"
# The wasm backend only: the classic-script bundle, its module loader and the binary.
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
BROWSER_SCORES = ("msp", "energy")  # unknown-detection scores computable from the logits alone
FEATURE_PARTS = ("energy", "mahalanobis")  # the parts of lib.ood's combined score
STATS_FILE = "unknown-stats.bin"  # float32 little-endian: class means (K, D), then precision (D, D)
APT_COMMAND = "sudo apt-get install -y --no-install-recommends nodejs npm"


class DemoExportError(KestrelError):
    """A browser demo that cannot be built; the message says what to do."""


def ort_version() -> str:
    """The installed onnxruntime-web version ('' if it is not installed)."""
    try:
        return json.loads((ORT_PACKAGE / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return ""


def runtime_files() -> list[Path]:
    """The onnxruntime-web files the demo copies; says how to install them if missing.

    Raises:
        DemoExportError: Node.js/npm or the npm package are missing (with the command).
    """
    files = [ORT_PACKAGE / "dist" / name for name in RUNTIME_FILES]
    if all(f.is_file() for f in files):
        return files
    if shutil.which("npm") is None:
        raise DemoExportError(
            "the browser demo needs onnxruntime-web, which npm installs, and Node.js/npm are "
            f"not installed. Install them with `{APT_COMMAND}`, then run `make web` "
            "(npm ci in web/) in the project folder"
        )
    raise DemoExportError(
        "onnxruntime-web is not installed in web/node_modules; run `make web` "
        "(or `npm ci --prefix web`) in the project folder"
    )


def _features_stats(model_dir: Path, block: dict[str, Any]):
    """The unknown-detection statistics beside the model (lib.ood), or None if unreadable."""
    try:
        from lib import ood

        return ood.Detector.load(model_dir / str(block.get("stats_file") or ood.STATS_FILE))
    except Exception:  # no lib.ood, no file, or a damaged one: the demo goes without
        return None


def _combined_parts(parts: Any, stats: Any) -> dict[str, dict[str, float]] | None:
    """``{part: {"center", "scale"}}`` of the combined score: combined = max((x - center) / scale).

    Taken from the statistics object when it can say (``part_scale``), else from the
    card's ``parts`` (``center``/``scale``, or ``val_mean``/``val_std``); None if neither.
    """
    out = {}
    for name in FEATURE_PARTS:
        pair = None
        if stats is not None and hasattr(stats, "part_scale"):
            try:
                pair = tuple(float(v) for v in stats.part_scale(name))
            except Exception:
                pair = None
        if pair is None and isinstance(parts, dict) and isinstance(parts.get(name), dict):
            p = parts[name]
            for keys in (("center", "scale"), ("val_mean", "val_std")):
                if all(_number(p.get(k)) for k in keys):
                    pair = (float(p[keys[0]]), float(p[keys[1]]))
                    break
        if pair is None:
            return None
        out[name] = {"center": pair[0], "scale": max(pair[1], 1e-12)}
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unknown_block(card: Any, model_dir: Path | None = None) -> tuple[dict[str, Any] | None, Any]:
    """How the page applies the card's unknown detection: (demo.json block, statistics or None).

    Read defensively: a card without the block, or with an unexpected shape, has no
    unknown detection in the demo. ``msp`` and ``energy`` come from the logits;
    ``mahalanobis`` and ``combined`` need the penultimate features and the class
    statistics beside the model (then the ONNX model outputs the features too and
    the statistics travel as ``unknown-stats.bin``); without the statistics the
    card's ``logits_only`` energy threshold is used when it has one.
    """
    block = getattr(card, "unknown", None)
    if not isinstance(block, dict) or not block:
        return None, None
    score, threshold = str(block.get("score") or ""), block.get("threshold")
    if not _number(threshold):
        return None, None
    base = {"score": score, "threshold": float(threshold),
            "definition": str(block.get("definition", ""))}  # fmt: skip
    if score in BROWSER_SCORES:
        return base | {"applied": True, "needs_features": False}, None
    stats = _features_stats(model_dir, block) if model_dir is not None else None
    parts = _combined_parts(block.get("parts"), stats)
    if (
        score in ("mahalanobis", "combined")
        and stats is not None
        and (score == "mahalanobis" or parts is not None)
    ):
        k, d = stats.means.shape
        extra = {"applied": True, "needs_features": True, "classes": int(k), "dims": int(d),
                 "stats_file": STATS_FILE}  # fmt: skip
        if parts is not None:
            extra["parts"] = parts
        return base | extra, stats
    fallback = block.get("logits_only")
    usable = isinstance(fallback, dict) and fallback.get("score") in BROWSER_SCORES
    if usable and _number(fallback.get("threshold")):
        return {
            "score": str(fallback["score"]),
            "threshold": float(fallback["threshold"]),
            "definition": str(fallback.get("definition", "")),
            "applied": True,
            "needs_features": False,
            "note": f"the card's {score} score needs statistics not found beside the model; "
            "this is the card's logits-only threshold",
        }, None
    return base | {"applied": False, "needs_features": False}, None


def demo_config(entry: ModelEntry, unknown: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the page needs to know about the model (``demo.json``)."""
    card = entry.card
    h, w, c = card.input_shape
    return {
        "name": card.name or entry.name,
        "description": card.description,
        "class_names": list(card.class_names),
        "input": {"height": h, "width": w, "channels": c},
        "pixels": "raw 0-255, float32, NHWC",
        "resize": "Pillow BOX when shrinking both sides, else Pillow BILINEAR",
        "output": card.output,
        "top_k": min(5, card.num_classes),
        "unknown": unknown,
        "accuracy": card.accuracy,
        "onnxruntime_web": ort_version(),
    }


def _onnx_with_features(model: Any, input_shape: tuple[int, int, int]) -> bytes:
    """The model as ONNX with two outputs, ``features`` then ``logits`` (lib.ood.feature_model)."""
    import tensorflow as tf
    import tf2onnx

    from lib import ood

    fmodel = ood.feature_model(model)
    spec = [tf.TensorSpec([None, *input_shape], tf.float32, name="pixels")]

    def call(x):
        features, logits = fmodel(x, training=False)
        return {"features": tf.reshape(features, [tf.shape(x)[0], -1]), "logits": logits}

    fn = tf.function(call, input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    return proto.SerializeToString()


def _output_names(onnx: bytes, classes: int) -> dict[str, str]:
    """Which ONNX output is the logits and which the features (by onnxruntime's shapes)."""
    import onnxruntime as ort

    outputs = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"]).get_outputs()
    names = {"logits": outputs[0].name}
    for out in outputs:
        if "features" in out.name:
            names["features"] = out.name
        elif "logits" in out.name or out.shape[-1] == classes:
            names["logits"] = out.name
    return names


def build_demo(entry: ModelEntry, dest: Path, onnx: bytes | None = None) -> Path:
    """Write the demo folder for ``entry`` into ``dest`` (created; must be empty or new).

    Args:
        entry: the model.
        dest: the folder to write.
        onnx: the ONNX model if already converted (else converted here).

    Raises:
        DemoExportError: onnxruntime-web (or Node/npm) missing, ONNX unavailable,
            or ``dest`` not empty.
    """
    from lib import export

    files = runtime_files()  # before any slow conversion
    if not export.onnx_available():
        raise DemoExportError(
            "the browser demo runs an ONNX model, and tf2onnx/onnxruntime are not installed "
            "(pip install -r requirements.txt)"
        )
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DemoExportError(f"{dest} exists and is not empty; give a new folder")
    unknown, stats = unknown_block(entry.card, Path(entry.model_path).parent)
    if onnx is None:
        try:
            model = load_model(entry)
            if unknown and unknown["needs_features"]:
                onnx = _onnx_with_features(model, entry.card.input_shape)
            else:
                onnx = export.onnx_bytes(model, entry.card.input_shape)
        except Exception as exc:
            raise DemoExportError(export.conversion_failure("ONNX", exc)) from None
    config = demo_config(entry, unknown)
    config["outputs"] = _output_names(onnx, entry.card.num_classes)
    if unknown and unknown["needs_features"] and "features" not in config["outputs"]:
        config["unknown"] = unknown | {"applied": False}  # an ONNX model given without features
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dest / f.name)
    (dest / "model.onnx").write_bytes(onnx)
    if stats is not None and config["unknown"]["applied"]:
        blob = np.concatenate([np.asarray(stats.means, "<f4").ravel(),
                               np.asarray(stats.precision, "<f4").ravel()])  # fmt: skip
        (dest / STATS_FILE).write_bytes(blob.tobytes())
    (dest / "demo.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    shutil.copyfile(TEMPLATE, dest / "index.html")
    return dest


def demo_zip(entry: ModelEntry, onnx: bytes | None = None) -> tuple[bytes, str]:
    """The demo folder as a zip: (bytes, file name); the zip holds one folder of that name."""
    stem = sanitize_name(entry.name.rsplit(".keras", 1)[0] or "model") + "-browser-demo"
    with tempfile.TemporaryDirectory(dir=area("tmp"), prefix="demo-") as tmp:
        folder = build_demo(entry, Path(tmp) / stem, onnx)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, f"{stem}/{path.name}")
    return buffer.getvalue(), stem + ".zip"
