"""Unknown detection on the shipped Fashion-MNIST demo: AUROC and FPR at 95 % TPR per score and set.

    python -m bench --only ood              # through `make bench`
    python bench/bench_ood.py [tiny|full]

In-distribution images are the Fashion-MNIST test split (the statistics and the
threshold were fitted on the training and validation splits). Out-of-distribution
sets that exist offline: scikit-learn's 8×8 digits upscaled to 28 px, the
procedural shapes (grayscale, 28 px), Gaussian noise (mean 128, sd 64, clipped)
and uniform noise 0..255, each drawn at the model's 28 px; and uniform noise drawn
at 64 px and resized to 28 px as an upload is (resizing smooths it: a harder case).
Every score of :mod:`lib.ood` is measured on the same
images in one invocation; ``chosen`` is the card's default score and ``msp``
(maximum softmax) the baseline. Also checked: detection leaves the classifier's
top-1 unchanged (the in-distribution accuracy with and without it), and the
share of test images the card's threshold rejects. Target: AUROC ≥ 0.95 on
every set for the chosen score.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET_AUROC = 0.95
SIZES = {"tiny": {"known": 500, "unknown": 200}, "full": {"known": 10000, "unknown": 1500}}
SETS = ("digits", "shapes", "gaussian_noise", "uniform_noise", "uniform_noise_64px")


def ood_sets(n: int, size: int = 28, seed: int = 7) -> dict[str, np.ndarray]:
    """Offline out-of-distribution images, uint8 (n, size, size, 1) per set."""
    from sklearn.datasets import load_digits

    from lib.data.images import resize_image, to_channels
    from lib.data.shapes import generate_shapes

    rng = np.random.default_rng(seed)
    digits = np.rint(load_digits().images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    digits = digits[rng.choice(len(digits), min(n, len(digits)), replace=False)]
    shapes, _ = generate_shapes(n, 64, seed)
    shape = (n, size, size, 1)
    big = rng.integers(0, 256, (n, 64, 64, 1), dtype=np.uint8)
    return {
        "digits": np.stack([resize_image(d[:, :, None], size, size) for d in digits]),
        "shapes": np.stack([resize_image(to_channels(s, 1), size, size) for s in shapes]),
        "gaussian_noise": np.clip(rng.normal(128, 64, shape), 0, 255).astype(np.uint8),
        "uniform_noise": rng.integers(0, 256, shape, dtype=np.uint8),
        "uniform_noise_64px": np.stack([resize_image(b, size, size) for b in big]),
    }


def run(size: str = "full") -> dict:
    import tensorflow as tf

    from lib import ood, registry
    from lib.config import DataConfig
    from lib.data import load_dataset

    try:
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:
        pass
    n = SIZES[size]
    folder = registry.SHIPPED_DIR / "fashion-mnist-demo"
    card = registry.read_card(folder)
    model = registry.load_model_file(folder / registry.MODEL_FILE)
    detector = ood.load_beside(folder / registry.MODEL_FILE)
    if detector is None:
        return {"error": "models/fashion-mnist-demo has no ood.npz: run python -m lib ood fit"}
    ds = load_dataset(DataConfig.from_dict(card.training_config["data"]))
    test = ds.splits["test"]
    known_x, known_y = test.images()[: n["known"]], test.labels[: n["known"]]
    fmodel = ood.feature_model(model)
    kf, kz = ood.features_and_logits(fmodel, known_x)
    known = detector.raw_scores(kf, kz)
    plain = np.asarray(model.predict(known_x.astype(np.float32), verbose=0, batch_size=256))
    result: dict = {
        "chosen_score": detector.score_name,
        "known_images": len(known_x),
        "unknown_images_per_set": n["unknown"],
        "accuracy_without_detection": float(np.mean(plain.argmax(1) == known_y)),
        "accuracy_with_detection": float(np.mean(kz.argmax(1) == known_y)),
        "top1_changed": int(np.sum(plain.argmax(1) != kz.argmax(1))),
        "test_rejected_at_card_threshold": float(
            np.mean(known[detector.score_name] > detector.threshold())
        ),
    }
    sets = ood_sets(n["unknown"])
    per_score: dict[str, dict] = {name: {} for name in ("chosen", *ood.SCORES)}
    for set_name, images in sets.items():
        uf, uz = ood.features_and_logits(fmodel, images)
        unknown = detector.raw_scores(uf, uz)
        for name in ood.SCORES:
            per_score[name][set_name] = {
                "auroc": round(ood.auroc(known[name], unknown[name]), 4),
                "fpr_at_95_tpr": round(ood.fpr_at_tpr(known[name], unknown[name]), 4),
            }
        per_score["chosen"][set_name] = per_score[detector.score_name][set_name]
    result.update(per_score)
    result["chosen_min_auroc"] = min(v["auroc"] for v in per_score["chosen"].values())
    result["msp_min_auroc"] = min(v["auroc"] for v in per_score["msp"].values())
    result["target_met"] = result["chosen_min_auroc"] >= TARGET_AUROC
    return result


def markdown(result: dict) -> str:
    if "error" in result:
        return f"error: {result['error']}\n"
    lines = [
        f"Chosen score: **{result['chosen_score']}**; known images: Fashion-MNIST test "
        f"({result['known_images']}), {result['unknown_images_per_set']} per unknown set.",
        "",
        "| score | " + " | ".join(f"{s} AUROC / FPR95" for s in SETS) + " |",
        "|---|" + "---|" * len(SETS),
    ]
    for name in ("msp", "energy", "mahalanobis", "combined"):
        cells = [
            f"{result[name][s]['auroc']:.3f} / {result[name][s]['fpr_at_95_tpr']:.3f}" for s in SETS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Accuracy without / with detection: {result['accuracy_without_detection']:.4f} / "
        f"{result['accuracy_with_detection']:.4f} (top-1 changed: {result['top1_changed']}); "
        f"test images rejected at the card's threshold: "
        f"{result['test_rejected_at_card_threshold']:.1%}. Target AUROC ≥ {TARGET_AUROC} on "
        f"every set: {'met' if result['target_met'] else 'NOT met'}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = run(sys.argv[1] if len(sys.argv) > 1 else "full")
    print(json.dumps(out, indent=2))
