"""Compression of the shipped Fashion-MNIST model: int8 and pruning against float32 TFLite.

    python -m bench --only compress
    python bench/bench_compress.py [tiny|full]

One invocation builds every variant of ``models/fashion-mnist-demo`` with
``lib.compress.tradeoff`` (the same code as the trade-off job) and measures it
on the test split against the float32 TFLite model built in the same run:

- int8 (full-integer, float in/out): size ≤ 0.27×, accuracy loss ≤ 0.3 points,
  single-image p50 latency ≤ 0.7×;
- pruned at 80 % sparsity (polynomial schedule, 2 fine-tuning passes): accuracy
  loss ≤ 1 point, gzipped file ≤ 0.35× the unpruned float32 file gzipped.

Latency: single image, model call only, TFLite interpreter with 1 thread and
its default XNNPACK delegate; ``blocks`` blocks of ``rounds`` rounds, each
round calling every variant once in rotating order (interleaved), the p50 of
each block per variant; the ratio is the median over blocks of int8 p50 /
float32 p50, with its min and max. ``tiny`` uses 500 test images, a short
fine-tuning and few rounds, to check that it runs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS = {
    "int8_size_ratio": 0.27,
    "int8_accuracy_drop_points": 0.3,
    "int8_latency_ratio": 0.7,
    "pruned_accuracy_drop_points": 1.0,
    "pruned_gzip_ratio": 0.35,
}
SIZES = {
    "tiny": {"test_images": 500, "prune_train_images": 2000, "prune_epochs": 0.5,
             "blocks": 5, "rounds": 20},
    "full": {"test_images": 10000, "prune_train_images": 60000, "prune_epochs": 2.0,
             "blocks": 7, "rounds": 200},
}  # fmt: skip


def _blocked_latency(runners: dict, images: np.ndarray, blocks: int, rounds: int) -> dict:
    """Per variant: the p50 (ms) of each block of interleaved rounds."""
    from lib.compress import interleaved_latency

    per_block: dict[str, list[float]] = {name: [] for name in runners}
    for b in range(blocks):
        lat = interleaved_latency(runners, images, rounds, warmup=10 if b == 0 else 2)
        for name, figures in lat.items():
            per_block[name].append(figures["p50_ms"])
    return per_block


def _int8_isa() -> str:
    """The CPU's int8 dot-product extensions (VNNI), which set how much int8 kernels gain."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return "unknown"
    found = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return ", ".join(found) if found else "none (no VNNI; AVX2 only)" if "avx2" in flags else "none"


def run(size: str = "full") -> dict:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    cfg = SIZES[size]
    import tensorflow as tf

    from lib import compress, registry
    from lib.compress import CompressOptions, TFLiteModel

    entry = next(e for e in registry.list_models() if e.name == "fashion-mnist-demo")
    opts = CompressOptions(
        test_images=cfg["test_images"],
        prune_train_images=cfg["prune_train_images"],
        prune_epochs=cfg["prune_epochs"],
        sparsity=0.8,
        latency_repeats=20,
    )
    with tempfile.TemporaryDirectory() as tmp:
        table = compress.tradeoff(entry, opts, out_dir=Path(tmp))
        rows = {r["variant"]: r for r in table["rows"]}
        runners = {
            name: TFLiteModel((Path(tmp) / rows[name]["file"]).read_bytes()).one
            for name in ("tflite", "int8", "pruned")
        }
    _, _, test_x, _ = compress.load_splits(entry.card, opts)
    blocks = _blocked_latency(runners, test_x[:64], cfg["blocks"], cfg["rounds"])

    base = rows["tflite"]
    block_ratios = [i / f for i, f in zip(blocks["int8"], blocks["tflite"], strict=True)]
    int8, pruned = rows["int8"], rows["pruned"]
    result = {
        "size": size,
        "model": entry.name,
        "tensorflow": tf.__version__,
        "test_images": table["test_images"],
        "targets": TARGETS,
        "latency": (
            f"single image, model call only, TFLite 1 thread + XNNPACK; {cfg['blocks']} blocks "
            f"of {cfg['rounds']} interleaved rounds (tflite, int8, pruned), p50 per block; "
            f"load average {os.getloadavg()[0]:.2f} before; the CPU's int8 dot-product "
            f"instructions: {_int8_isa()}"
        ),
        "tflite": {
            "size_bytes": base["size_bytes"],
            "gzip_bytes": base["gzip_bytes"],
            "accuracy": base["accuracy"],
            "latency_p50_ms_blocks": blocks["tflite"],
            "latency_p50_ms": float(np.median(blocks["tflite"])),
        },
        "int8": {
            "size_bytes": int8["size_bytes"],
            "accuracy": int8["accuracy"],
            "size_ratio": round(int8["size_bytes"] / base["size_bytes"], 4),
            "accuracy_drop_points": round((base["accuracy"] - int8["accuracy"]) * 100, 3),
            "latency_ratio": round(float(np.median(block_ratios)), 4),
            "latency_ratio_min": round(min(block_ratios), 4),
            "latency_ratio_max": round(max(block_ratios), 4),
            "latency_p50_ms_blocks": blocks["int8"],
            "latency_p50_ms": float(np.median(blocks["int8"])),
            "top1_agreement_with_keras": int8["top1_agreement"],
            "flagged_classes": int8["flagged_classes"],
        },
        "pruned": {
            "sparsity": pruned.get("sparsity"),
            "gzip_bytes": pruned["gzip_bytes"],
            "accuracy": pruned["accuracy"],
            "gzip_ratio": round(pruned["gzip_bytes"] / base["gzip_bytes"], 4),
            "accuracy_drop_points": round((base["accuracy"] - pruned["accuracy"]) * 100, 3),
            "latency_p50_ms": float(np.median(blocks["pruned"])),
            "top1_agreement_with_keras": pruned["top1_agreement"],
            "flagged_classes": pruned["flagged_classes"],
            "fine_tuning": {
                "epochs": opts.prune_epochs,
                "train_images": opts.prune_train_images,
                "schedule": opts.schedule,
                "learning_rate": opts.prune_learning_rate,
            },
        },
        "table": [
            {
                k: r[k]
                for k in (
                    "variant",
                    "size_bytes",
                    "gzip_bytes",
                    "accuracy",
                    "top1_agreement",
                    "latency_p50_ms",
                    "latency_p95_ms",
                )
            }
            for r in table["rows"]
        ],
    }
    i, p = result["int8"], result["pruned"]
    result["meets_target"] = {
        "int8_size_ratio": i["size_ratio"] <= TARGETS["int8_size_ratio"],
        "int8_accuracy_drop_points": i["accuracy_drop_points"] <= TARGETS["int8_accuracy_drop_points"],
        "int8_latency_ratio": i["latency_ratio"] <= TARGETS["int8_latency_ratio"],
        "pruned_accuracy_drop_points": p["accuracy_drop_points"] <= TARGETS["pruned_accuracy_drop_points"],
        "pruned_gzip_ratio": p["gzip_ratio"] <= TARGETS["pruned_gzip_ratio"],
    }  # fmt: skip
    return result


def markdown(result: dict) -> str:
    i, p, t = result["int8"], result["pruned"], result["tflite"]
    met = result["meets_target"]

    def mark(key: str) -> str:
        return "met" if met[key] else "MISSED"

    lines = [
        f"{result['model']}, {result['test_images']} test images, against float32 TFLite "
        f"({t['size_bytes'] / 1024:.0f} KB, accuracy {t['accuracy']:.2%}, "
        f"p50 {t['latency_p50_ms']:.3f} ms). {result['latency']}.",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| int8 size ratio | {i['size_ratio']:.3f} | ≤ 0.27 ({mark('int8_size_ratio')}) |",
        f"| int8 accuracy drop (points) | {i['accuracy_drop_points']:.2f} | ≤ 0.3 "
        f"({mark('int8_accuracy_drop_points')}) |",
        f"| int8 p50 latency ratio (min–max over blocks) | {i['latency_ratio']:.3f} "
        f"({i['latency_ratio_min']:.3f}–{i['latency_ratio_max']:.3f}) | ≤ 0.7 "
        f"({mark('int8_latency_ratio')}) |",
        f"| pruned ({p['sparsity']:.0%} sparse) gzip ratio | {p['gzip_ratio']:.3f} | ≤ 0.35 "
        f"({mark('pruned_gzip_ratio')}) |",
        f"| pruned accuracy drop (points) | {p['accuracy_drop_points']:.2f} | ≤ 1 "
        f"({mark('pruned_accuracy_drop_points')}) |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    out = run(sys.argv[1] if len(sys.argv) > 1 else "full")
    print(json.dumps(out, indent=2))
    print(markdown(out))
