"""A folder of JPEGs: decode-and-resize throughput of the streamed pipeline against Pillow.

    python -m bench --only decode
    python -m bench.bench_decode --size tiny

One invocation writes a class-per-folder set of photo-like JPEGs, loads it as a
Kestrel folder dataset (``DataConfig(source="folder", image_size=...)``) and
times three things, interleaved, each the median of at least 5 repetitions with
its spread, background work drained before each (bench.timing):

- ``pipeline``: one pass of ``lib.data.make_pipeline`` over the training split
  (a fresh pipeline each time, so nothing comes from its in-memory cache): the
  safe decoder (which has libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale when the
  model's side allows), resize to the model's side, batching, as training reads it;
- ``pillow_loop``: the plain loop most scripts write, one file after another:
  ``Image.open(path).convert("RGB").resize((side, side))`` into a NumPy array;
- ``decode_limit``: the machine's JPEG decode limit, full-size decoding only
  (``Image.open(path).load()``, libjpeg-turbo, which releases the GIL) in one
  thread per core: what any loader could reach before resizing.

Reported: images/s of each, the pipeline's speed-up over the Pillow loop, and
the share of the decode limit it reaches. The files are read once before timing,
so every variant reads them from the OS page cache alike.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SIZES = {
    # images per class (2 classes), JPEG width × height, model side, repetitions
    "full": {"per_class": 200, "image": (640, 480), "side": 128, "repeats": 5},
    "tiny": {"per_class": 8, "image": (160, 120), "side": 32, "repeats": 5},
}
QUALITY = 90


def write_jpegs(folder: Path, per_class: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields, shapes, sensor noise) in two class folders."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.empty((h, w, 3), np.float32)
            for c in range(3):
                fx, fy, ph = [*rng.uniform(0.5, 4, 2).tolist(), rng.uniform(0, 6.3)]
                base[..., c] = 128 + 80 * np.sin(fx * xx / w * 6.3 + fy * yy / h * 6.3 + ph)
            base += rng.normal(0, 8, base.shape)
            img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(img)
            for _ in range(6):
                x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
                x1, y1 = x0 + int(rng.integers(10, w // 3)), y0 + int(rng.integers(10, h // 3))
                fill = tuple(int(v) for v in rng.integers(0, 256, 3))
                (draw.ellipse if label == "a" else draw.rectangle)((x0, y0, x1, y1), fill=fill)
            path = folder / label / f"{i:04d}.jpg"
            img.save(path, quality=QUALITY)
            paths.append(path)
    return paths


def _folder_dataset(folder: Path, side: int):
    from lib.config import DataConfig
    from lib.data import load_dataset

    cfg = DataConfig(
        source="folder", path=str(folder), image_size=side, color_mode="rgb",
        val_fraction=0.05, test_fraction=0.05,
    )  # fmt: skip
    return load_dataset(cfg, cache=False)


def run(size: str = "full") -> dict:
    """Write the JPEG folder, then time the three readers; returns a JSON-ready dict."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from PIL import Image

    from bench import timing
    from lib.data import make_pipeline

    plan = SIZES[size]
    side = plan["side"]
    with tempfile.TemporaryDirectory(prefix="kestrel-decode-") as tmp:
        folder = Path(tmp) / "jpegs"
        write_jpegs(folder, plan["per_class"], plan["image"])
        # The folder is this benchmark's own: let the data-root check accept it.
        roots_before = os.environ.get("KESTREL_DATA_ROOTS")
        os.environ["KESTREL_DATA_ROOTS"] = tmp
        try:
            ds = _folder_dataset(folder, side)
        finally:
            if roots_before is None:
                os.environ.pop("KESTREL_DATA_ROOTS", None)
            else:
                os.environ["KESTREL_DATA_ROOTS"] = roots_before
        split = ds.splits["train"]
        refs = [str(r) for r in split.refs]
        n = len(refs)
        megabytes = sum(os.path.getsize(r) for r in refs) / 2**20
        for ref in refs:  # into the OS page cache for every variant alike
            Path(ref).read_bytes()
        workers = timing.cores()

        def pipeline():
            t0 = time.perf_counter()
            seen = 0
            for images, _ in make_pipeline(ds, "train", batch_size=64, shuffle=False, seed=0):
                seen += int(images.shape[0])
            assert seen == n and tuple(images.shape[1:]) == (side, side, 3)
            return n / (time.perf_counter() - t0)

        def pillow_loop():
            t0 = time.perf_counter()
            out = np.empty((n, side, side, 3), np.uint8)
            for i, ref in enumerate(refs):
                with Image.open(ref) as img:
                    out[i] = np.asarray(img.convert("RGB").resize((side, side)))
            return n / (time.perf_counter() - t0)

        def _decode(ref):
            with Image.open(ref) as img:
                img.load()

        def decode_limit():
            t0 = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(_decode, refs, chunksize=8))
            return n / (time.perf_counter() - t0)

        load = timing.load_check()
        runs = timing.interleaved(
            {"pipeline": pipeline, "pillow_loop": pillow_loop, "decode_limit": decode_limit},
            repeats=plan["repeats"],
            warmup=1,
            between=lambda: timing.drain(timeout_s=10.0),
        )
    speedup = timing.ratio(runs["pipeline"], runs["pillow_loop"])
    share = timing.ratio(runs["pipeline"], runs["decode_limit"])
    return {
        "size": size,
        "images": n,
        "jpeg": {
            "width": plan["image"][0],
            "height": plan["image"][1],
            "quality": QUALITY,
            "megabytes": round(megabytes, 1),
        },
        "resize_to": side,
        "threads_for_limit": workers,
        "repeats": plan["repeats"],
        "load_before": load,
        "load_after": timing.load_average(),
        "images_per_s": {name: runs[name] for name in runs},
        "pipeline_images_per_s": runs["pipeline"]["median"],
        "pillow_loop_images_per_s": runs["pillow_loop"]["median"],
        "decode_limit_images_per_s": runs["decode_limit"]["median"],
        "speedup_over_pillow": speedup["median"],
        "speedup_range": [speedup["low"], speedup["high"]],
        "share_of_decode_limit": share["median"],
        "share_range": [share["low"], share["high"]],
        "decision": (
            f"the streamed pipeline reads {speedup['median']:.2f}× the Pillow loop's images/s "
            f"and reaches {share['median']:.0%} of the machine's full-size JPEG decode limit"
        ),
    }


def markdown(result: dict) -> str:
    """The figures as a small table."""
    j = result["jpeg"]
    load = "/".join(str(v) for v in result["load_before"]["load_average"]) or "?"
    lines = [
        f"{result['images']} JPEGs {j['width']}×{j['height']} (quality {j['quality']}, "
        f"{j['megabytes']} MB) resized to {result['resize_to']}² RGB; {result['repeats']} "
        f"interleaved passes each; load average before: {load}.",
        "",
        "| reader | images/s, median (min–max) |",
        "|---|---|",
    ]
    labels = {
        "pipeline": "Kestrel streamed pipeline (decode + resize + batch)",
        "pillow_loop": "plain Pillow loop (decode + resize)",
        "decode_limit": f"decode limit: full-size decode only, {result['threads_for_limit']} threads",
    }
    for name, label in labels.items():
        s = result["images_per_s"][name]
        lines.append(f"| {label} | {s['median']:,.0f} ({s['min']:,.0f}–{s['max']:,.0f}) |")
    lines += ["", f"Decision: {result['decision']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.bench_decode")
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    print(markdown(run(parser.parse_args().size)))
