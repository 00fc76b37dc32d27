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

from lib.errors import KestrelError
from lib.registry import ModelEntry, load_model, sanitize_name
from lib.workspace import PROJECT_ROOT, area

WEB_DIR = PROJECT_ROOT / "web"
TEMPLATE = WEB_DIR / "demo" / "index.html"
ORT_PACKAGE = WEB_DIR / "node_modules" / "onnxruntime-web"
# The wasm backend only: the classic-script bundle, its module loader and the binary.
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
BROWSER_SCORES = ("msp", "energy")  # unknown-detection scores computable from the logits alone
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


def unknown_block(card: Any) -> dict[str, Any] | None:
    """The card's unknown-detection threshold as the page applies it, or None.

    Read defensively: a card without the block, or with an unexpected shape, has
    no unknown detection in the demo. Scores the page cannot compute from the
    logits alone (feature-space distances) are carried with ``applied: False``.
    """
    block = getattr(card, "unknown", None)
    if not isinstance(block, dict) or not block:
        return None
    threshold = block.get("threshold")
    score = block.get("score")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        return None
    score = str(score or "")
    return {
        "score": score,
        "threshold": float(threshold),
        "definition": str(block.get("definition", "")),
        "applied": score in BROWSER_SCORES,
    }


def demo_config(entry: ModelEntry) -> dict[str, Any]:
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
        "unknown": unknown_block(card),
        "accuracy": card.accuracy,
        "onnxruntime_web": ort_version(),
    }


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
    if onnx is None:
        try:
            onnx = export.onnx_bytes(load_model(entry), entry.card.input_shape)
        except Exception as exc:
            raise DemoExportError(f"ONNX conversion failed: {type(exc).__name__}: {exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dest / f.name)
    (dest / "model.onnx").write_bytes(onnx)
    (dest / "demo.json").write_text(json.dumps(demo_config(entry), indent=2) + "\n", "utf-8")
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
