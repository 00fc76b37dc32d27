"""Hardening on Fashion-MNIST: accuracy under attack (ε = 2/255) and clean, before and after.

    python -m bench --only robustness        # through `make bench`
    python bench/bench_robustness.py [tiny|full]

Two runs of the same recipe train through Kestrel's own trainer (lib.training,
in this process) on a small Fashion-MNIST subset (``max_per_class`` images per
class, the fast_cnn preset, a few epochs): an ordinary one, and its hardened
clone (``AugmentConfig.adversarial_epsilon = 2``: FGSM adversarial training at
ε = 2/255, the clean and adversarial images of every batch together). Both are
measured on the same held-out test images: clean accuracy, FGSM and PGD (10
steps) accuracy at ε = 2/255, and the mean accuracy over the report's seven
corruptions at three severities (lib.robustness). Also timed: one whole
robustness report of the ordinary run (corruptions plus FGSM/PGD at ε = 1, 2,
4, 8), the job the Evaluate page starts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = {
    "tiny": {"per_class": 60, "epochs": 1, "test": 200},
    "full": {"per_class": 500, "epochs": 5, "test": 1000},
}
EPSILON = 2  # of 255


def _train(config) -> Path:
    from lib import runstore
    from lib.training import train_run

    run_dir = runstore.create_run(config)
    outcome = train_run(run_dir)
    if outcome.state != "completed":
        raise RuntimeError(f"training failed: {outcome.error}")
    runstore.update_status(run_dir, state="completed")
    return run_dir


def _measure(run_dir: Path, images, labels) -> dict:
    from lib import attacks, robustness, runstore
    from lib.registry import load_model_file

    model = load_model_file(run_dir / runstore.MODEL_FILE)
    corr = [
        attacks.accuracy(model, robustness.corrupt(images, name, s), labels)
        for name in robustness.CORRUPTIONS
        for s in robustness.SEVERITIES
    ]
    return {
        "clean_accuracy": round(attacks.accuracy(model, images, labels), 4),
        "fgsm_eps2_accuracy": round(
            attacks.adversarial_accuracy(model, images, labels, "fgsm", EPSILON), 4
        ),
        "pgd_eps2_accuracy": round(
            attacks.adversarial_accuracy(model, images, labels, "pgd", EPSILON), 4
        ),
        "mean_corruption_accuracy": round(sum(corr) / len(corr), 4),
        "train_seconds": runstore.read_metrics(run_dir).get("train_seconds"),
    }


def run(size: str = "full") -> dict:
    import numpy as np
    import tensorflow as tf

    from lib import robustness
    from lib.config import AugmentConfig, DataConfig, ModelConfig, RunConfig, TrainConfig

    try:
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:
        pass
    n = SIZES[size]
    base = RunConfig(
        name="bench robustness",
        data=DataConfig(source="fashion_mnist", max_per_class=n["per_class"], seed=0),
        model=ModelConfig(preset="fast_cnn"),
        train=TrainConfig(epochs=n["epochs"], batch_size=64, device="cpu", mixed_precision="off"),
    )
    hardened = base.replace(augment=AugmentConfig(adversarial_epsilon=float(EPSILON)))
    plain_dir = _train(base)
    hard_dir = _train(hardened)
    images, labels, split = robustness.report_images(plain_dir, n["test"])
    before = _measure(plain_dir, images, labels)
    after = _measure(hard_dir, images, labels)
    t0 = time.perf_counter()
    report = robustness.compute_report(plain_dir)
    report_seconds = time.perf_counter() - t0
    train_images = int(len(np.unique(labels)) * n["per_class"] * 0.8)  # train share of the cap
    return {
        "setup": (
            f"Fashion-MNIST, at most {n['per_class']} images per class (about {train_images} "
            f"training images), fast_cnn, {n['epochs']} epochs, batch 64, CPU; measured on "
            f"{len(images)} {split} images; hardened = FGSM adversarial training at ε = "
            f"{EPSILON}/255"
        ),
        "before": before,
        "after": after,
        "pgd_eps2_gained": round(after["pgd_eps2_accuracy"] - before["pgd_eps2_accuracy"], 4),
        "fgsm_eps2_gained": round(after["fgsm_eps2_accuracy"] - before["fgsm_eps2_accuracy"], 4),
        "clean_lost": round(before["clean_accuracy"] - after["clean_accuracy"], 4),
        "report_seconds": round(report_seconds, 1),
        "report_images": report["images"],
    }


def markdown(result: dict) -> str:
    if "error" in result:
        return f"error: {result['error']}\n"
    b, a = result["before"], result["after"]
    rows = [
        "| | clean | FGSM ε=2/255 | PGD ε=2/255 | corruptions (mean) | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in (("before (ordinary)", b), ("after (hardened)", a)):
        rows.append(
            f"| {name} | {r['clean_accuracy']:.4f} | {r['fgsm_eps2_accuracy']:.4f} | "
            f"{r['pgd_eps2_accuracy']:.4f} | {r['mean_corruption_accuracy']:.4f} | "
            f"{r['train_seconds']} |"
        )
    return (
        result["setup"]
        + ".\n\n"
        + "\n".join(rows)
        + f"\n\nPGD ε=2/255 accuracy gained {result['pgd_eps2_gained']:+.4f}, clean accuracy "
        f"lost {result['clean_lost']:+.4f}. One whole robustness report "
        f"({result['report_images']} images): {result['report_seconds']} s.\n"
    )


if __name__ == "__main__":
    out = run(sys.argv[1] if len(sys.argv) > 1 else "full")
    print(json.dumps(out, indent=2))
