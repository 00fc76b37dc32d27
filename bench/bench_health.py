"""Data health: planted label noise and planted train/test leakage on Fashion-MNIST.

    python -m bench --only health           # through `make bench`
    python bench/bench_health.py [tiny|full]

10,000 Fashion-MNIST training images (1,000 per class); 5 % of their labels are
flipped at random to another class (N flipped). Kestrel's check
(``lib.health.check_arrays``: 4-fold cross-validated CNN with flips, cleanlab's
label quality ranking) is scored by the share of the flipped images among its
top 1.5×N (``recall_at_1_5n``, target ≥ 0.92) and the share of its top N that
were truly flipped (``precision_at_n``, target ≥ 0.85). The baseline, measured in
the same invocation: a plain two-conv CNN, 4-fold cross-validated for 4 epochs,
fed to cleanlab's ``find_label_issues`` ranked by self-confidence.

Leakage: 60 Fashion-MNIST test images are copied into the train split (20 exact,
20 resized down and back up, 20 re-encoded as JPEG at quality 75), each on top of
a random train image; the share the check reports as leakage is ``recall``
(target ≥ 0.95). ``seconds`` is the whole check on the 10,000 images (target
≤ 60 s). The machine's load average is recorded beside every time.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NOISE = 0.05
LEAKS_PER_KIND = 20
SIZES = {"tiny": {"per_class": 100, "repeats": 1}, "full": {"per_class": 1000, "repeats": 1}}
SEED = 7


def _load(per_class: int):
    from lib.config import DataConfig
    from lib.data import load_dataset

    ds = load_dataset(
        DataConfig(source="fashion_mnist", max_per_class=per_class, val_fraction=0.0), cache=False
    )
    return ds.class_names, ds.splits["train"], ds.splits["test"]


def plant_noise(y: np.ndarray, num_classes: int, rate: float, seed: int):
    """Flip ``rate`` of the labels to a different random class; (noisy labels, flipped idx)."""
    rng = np.random.default_rng(seed)
    n = round(rate * len(y))
    idx = np.sort(rng.choice(len(y), n, replace=False))
    noisy = y.copy()
    noisy[idx] = (y[idx] + rng.integers(1, num_classes, n)) % num_classes
    return noisy, idx


def plant_leaks(x_train, x_test, per_kind: int, seed: int):
    """Overwrite train images with test copies: exact, resized, JPEG; (x, train idx, test idx)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = x_train.copy()
    n = 3 * per_kind
    tr = rng.choice(len(x), n, replace=False)
    te = rng.choice(len(x_test), n, replace=False)
    h, w = x.shape[1:3]
    for j, (a, b) in enumerate(zip(tr, te, strict=True)):
        img = Image.fromarray(x_test[b][..., 0])
        if j // per_kind == 1:
            img = img.resize((w * 3 // 4, h * 3 // 4), Image.BILINEAR).resize(
                (w, h), Image.BILINEAR
            )
        elif j // per_kind == 2:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=75)
            img = Image.open(io.BytesIO(buf.getvalue())).convert("L")
        x[a] = np.asarray(img, np.uint8)[..., None]
    return x, tr, te


def baseline_probs(x, y, num_classes: int, folds: int = 4, epochs: int = 4, seed: int = 0):
    """The plain recipe: a two-conv CNN, K-fold out-of-fold probabilities."""
    import keras
    from keras import layers
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(y), num_classes))
    for k, (tr, te) in enumerate(
        StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)
    ):
        keras.utils.set_random_seed(seed + k)
        model = keras.Sequential([
            keras.Input(x.shape[1:]),
            layers.Rescaling(1 / 255.0),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ])  # fmt: skip
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x[tr], y[tr], batch_size=64, epochs=epochs, verbose=0)
        probs[te] = model.predict(x[te], batch_size=512, verbose=0)
    return probs


def _score(ranking: np.ndarray, flipped: np.ndarray) -> dict:
    n = len(flipped)
    truth = set(flipped.tolist())
    top15 = set(ranking[: round(1.5 * n)].tolist())
    topn = set(ranking[:n].tolist())
    return {
        "recall_at_1_5n": round(len(truth & top15) / n, 4),
        "precision_at_n": round(len(truth & topn) / n, 4),
    }


def _load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def run(size: str = "full") -> dict:
    """Measure Kestrel's check against the baseline; returns a JSON-ready dict."""
    from cleanlab.filter import find_label_issues

    from lib import health

    cfg = SIZES[size]
    names, train, test = _load(cfg["per_class"])
    x, y = train.images(), train.labels.astype(np.int64)
    xt, yt = test.images(), test.labels.astype(np.int64)
    k = len(names)
    noisy, flipped = plant_noise(y, k, NOISE, SEED)
    per_kind = LEAKS_PER_KIND if size == "full" else 5
    x_leaky, leak_train, leak_test = plant_leaks(x, xt, per_kind, SEED)

    load_before = _load_avg()
    t = time.perf_counter()
    report = health.check_arrays({"train": (x_leaky, noisy), "test": (xt, yt)}, names, seed=0)
    kestrel_seconds = time.perf_counter() - t
    load_kestrel = _load_avg()
    kestrel = _score(report.label_ranking, flipped)
    flagged = {q.index for q in report.queue if q.issue == "label"}
    kestrel["flagged"] = len(flagged)
    kestrel["flagged_truly_flipped"] = len(flagged & set(flipped.tolist()))

    found_pairs = {
        (q.index, int(q.other.split(":")[1]))
        for q in report.queue
        if q.issue == "leakage" and q.split == "train" and q.other.startswith("test:")
    }
    planted = set(zip(leak_train.tolist(), leak_test.tolist(), strict=True))
    kinds = {}
    for j, name in enumerate(("exact", "resized", "jpeg")):
        part = list(planted)[0:0] + [
            (int(a), int(b))
            for a, b in zip(
                leak_train[j * per_kind : (j + 1) * per_kind],
                leak_test[j * per_kind : (j + 1) * per_kind],
                strict=True,
            )
        ]
        kinds[name] = round(sum(p in found_pairs for p in part) / len(part), 4)
    leakage = {
        "planted": len(planted),
        "recall": round(len(planted & found_pairs) / len(planted), 4),
        "recall_by_kind": kinds,
        "other_pairs_reported": len(found_pairs - planted),
    }

    t = time.perf_counter()
    bprobs = baseline_probs(x, noisy, k)
    ranked = find_label_issues(noisy, bprobs, return_indices_ranked_by="self_confidence", n_jobs=1)
    from cleanlab.rank import get_label_quality_scores

    rest = np.argsort(get_label_quality_scores(noisy, bprobs), kind="stable")
    ranking = np.concatenate([ranked, rest[~np.isin(rest, ranked)]])
    baseline_seconds = time.perf_counter() - t
    load_baseline = _load_avg()
    baseline = _score(ranking, flipped)
    baseline["flagged"] = len(ranked)

    return {
        "images": len(y),
        "flipped": len(flipped),
        "cpus": os.cpu_count(),
        "label_noise": {
            "kestrel": kestrel,
            "baseline_two_conv_cnn_4fold_4epochs": baseline,
            "recall_at_1_5n": kestrel["recall_at_1_5n"],
            "precision_at_n": kestrel["precision_at_n"],
        },
        "leakage": leakage,
        "seconds": round(kestrel_seconds, 1),
        "seconds_by_phase": {k: round(v, 1) for k, v in report.seconds.items()},
        "baseline_seconds": round(baseline_seconds, 1),
        "load_avg_1min": {
            "before": load_before,
            "after_kestrel": load_kestrel,
            "after_baseline": load_baseline,
        },
        "counts": report.counts,
        "targets": {
            "recall_at_1_5n": 0.92,
            "precision_at_n": 0.85,
            "leakage_recall": 0.95,
            "seconds": 60,
        },
        "note": "one repetition each (the check is a whole K-fold training)",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
