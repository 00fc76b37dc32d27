"""Data health: planted label noise and planted train/test leakage on Fashion-MNIST.

    python -m bench --only health           # through `make bench`
    python bench/bench_health.py [tiny|full]

10,000 Fashion-MNIST training images (1,000 per class); 5 % of their labels are
flipped at random to another class (N flipped). Kestrel's check
(``lib.health.check_arrays``: a 3-fold cross-validated small CNN whose
probabilities are blended with each image's nearest neighbours' labels, cleanlab's
label quality ranking) is scored by the share of the flipped images among its
top 1.5×N (``recall_at_1_5n``, target ≥ 0.92) and the share of its top N that
were truly flipped (``precision_at_n``, target ≥ 0.85). The baseline, measured in
the same invocation: a plain two-conv CNN, 4-fold cross-validated for 4 epochs,
fed to cleanlab's ``find_label_issues`` ranked by self-confidence, on the same
images and labels as the check.

Leakage: 60 Fashion-MNIST test images are copied into the train split (20 exact,
20 resized down and back up, 20 re-encoded as JPEG at quality 75), each on top of
a random unflipped train image and with its own label; the share the check reports
as leakage is ``recall`` (target ≥ 0.95). ``seconds`` is the whole check on the
10,000 images (target ≤ 60 s). The machine's load average is recorded beside every
time.
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
# Label figures move by 1-2 points with the training seed alone, so they are the median over
# the check's training seeds (the whole check runs with the first; the others repeat only the
# cross-validation and the ranking), and the baseline is trained with the same seeds.
SIZES = {
    "tiny": {"per_class": 100, "seeds": (0,)},
    "full": {"per_class": 1000, "seeds": (0, 1, 2)},
}
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


def plant_leaks(x_train, x_test, per_kind: int, seed: int, avoid=()):
    """Overwrite train images with test copies: exact, resized, JPEG; (x, train idx, test idx).

    The train images overwritten are chosen outside ``avoid`` (the flipped ones), and
    the caller gives each copy its test label: a leaked image is a copy, not a wrong
    label. (Copies that kept the overwritten image's label were real label errors the
    check found, counted against its precision.)
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = x_train.copy()
    n = 3 * per_kind
    free = np.setdiff1d(np.arange(len(x)), np.asarray(avoid, np.int64))
    tr = rng.choice(free, n, replace=False)
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


def _median_of(runs: list[dict]) -> dict:
    """The median of each label figure over seeds, with every seed's figures beside it."""
    out = {
        key: round(float(np.median([r[key] for r in runs])), 4)
        for key in ("recall_at_1_5n", "precision_at_n")
    }
    out.update({k: v for k, v in runs[0].items() if k.startswith("flagged")})
    out["by_seed"] = runs
    return out


def _load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def run(size: str = "full") -> dict:
    """Measure Kestrel's check against the baseline; returns a JSON-ready dict."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from lib import health

    cfg = SIZES[size]
    names, train, test = _load(cfg["per_class"])
    x, y = train.images(), train.labels.astype(np.int64)
    xt, yt = test.images(), test.labels.astype(np.int64)
    k = len(names)
    noisy, flipped = plant_noise(y, k, NOISE, SEED)
    per_kind = LEAKS_PER_KIND if size == "full" else 5
    x_leaky, leak_train, leak_test = plant_leaks(x, xt, per_kind, SEED, avoid=flipped)
    noisy[leak_train] = yt[leak_test]

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

    baseline_runs, baseline_seconds = [], []
    for seed in cfg["seeds"]:
        t = time.perf_counter()
        bprobs = baseline_probs(x_leaky, noisy, k, seed=seed)  # the check's images and labels
        ranked = find_label_issues(
            noisy, bprobs, return_indices_ranked_by="self_confidence", n_jobs=1
        )
        rest = np.argsort(get_label_quality_scores(noisy, bprobs), kind="stable")
        ranking = np.concatenate([ranked, rest[~np.isin(rest, ranked)]])
        baseline_seconds.append(time.perf_counter() - t)
        baseline_runs.append({**_score(ranking, flipped), "flagged": len(ranked), "seed": seed})
    load_baseline = _load_avg()

    kestrel_runs = [{**kestrel, "seed": 0}]
    for seed in cfg["seeds"][1:]:
        probs, _ = health.out_of_fold(x_leaky, noisy, k, seed=seed)
        ranking, _, _ = health.label_issues(noisy, probs)
        kestrel_runs.append({**_score(ranking, flipped), "seed": seed})
    kestrel = _median_of(kestrel_runs)
    baseline = _median_of(baseline_runs)

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
        "baseline_seconds": round(float(np.median(baseline_seconds)), 1),
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
        "seeds": list(cfg["seeds"]),
        "note": (
            "label figures: the median over the training seeds, each seed's in by_seed; "
            "seconds: the whole check once (the first seed), the baseline's median"
        ),
    }


def markdown(result: dict) -> str:
    """The README's section: label figures per seed against the baseline, leakage, time."""
    label = result["label_noise"]
    ours, base = label["kestrel"], label["baseline_two_conv_cnn_4fold_4epochs"]
    targets = result["targets"]

    def cell(entry: dict, key: str) -> str:
        seeds = entry.get("by_seed", [entry])
        each = ", ".join(f"{r[key]:.3f}" for r in seeds)
        return f"{entry[key]:.3f} ({each})" if len(seeds) > 1 else f"{entry[key]:.3f}"

    def verdict(value: float, target: float, higher: bool = True) -> str:
        return "met" if (value >= target if higher else value <= target) else "**not met**"

    rows = [
        "| figure | Kestrel | baseline (2-conv CNN, 4 folds, 4 epochs) | target |",
        "|---|---|---|---|",
        f"| label noise: recall at 1.5N | {cell(ours, 'recall_at_1_5n')} | "
        f"{cell(base, 'recall_at_1_5n')} | ≥ {targets['recall_at_1_5n']}: "
        f"{verdict(ours['recall_at_1_5n'], targets['recall_at_1_5n'])} |",
        f"| label noise: precision at N | {cell(ours, 'precision_at_n')} | "
        f"{cell(base, 'precision_at_n')} | ≥ {targets['precision_at_n']}: "
        f"{verdict(ours['precision_at_n'], targets['precision_at_n'])} |",
        f"| leakage: recall ({result['leakage']['planted']} planted) | "
        f"{result['leakage']['recall']:.3f} | – | ≥ {targets['leakage_recall']}: "
        f"{verdict(result['leakage']['recall'], targets['leakage_recall'])} |",
        f"| seconds, whole check | {result['seconds']} | {result['baseline_seconds']} "
        f"(labels only) | ≤ {targets['seconds']}: "
        f"{verdict(result['seconds'], targets['seconds'], higher=False)} |",
    ]
    phases = ", ".join(f"{k} {v} s" for k, v in result["seconds_by_phase"].items())
    seeds = ", ".join(str(s) for s in result.get("seeds", [0]))
    return (
        f"{result['images']:,} Fashion-MNIST train images, {result['flipped']} labels flipped "
        f"at random. Label figures: the median over training seeds {seeds} (each seed's in "
        "brackets); the baseline trained with the same seeds on the same images and labels.\n\n"
        + "\n".join(rows)
        + f"\n\nThe check's phases: {phases}. Load average before, after the check, after the "
        f"baseline: {result['load_avg_1min']['before']}, {result['load_avg_1min']['after_kestrel']}"
        f", {result['load_avg_1min']['after_baseline']}.\n"
    )


if __name__ == "__main__":
    import json

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
