"""Unknown detection: tell images unlike the training classes from the ones the model knows.

    from lib import ood
    detector = ood.fit(model, train_images, train_labels, val_images, class_names)
    detector.save(folder / ood.STATS_FILE)              # the statistics, beside card.json
    card_block = detector.summary()                     # ModelCard.unknown
    scores = detector.score(features, logits)           # one "unknownness" per image

Scores (each "higher means more unlike the training data"):

- ``msp``: minus the maximum softmax probability (the classic baseline);
- ``energy``: minus logsumexp of the logits (the free energy at temperature 1);
- ``mahalanobis``: the smallest squared Mahalanobis distance of the penultimate
  features (the input of the last Dense layer) to a class mean, with one shared
  covariance (Ledoit-Wolf shrinkage) fitted on the training split;
- ``combined`` (the default): each of ``energy`` and ``mahalanobis`` rescaled so
  that its median on the in-distribution validation split is 0 and its 99th
  percentile is 1, then the larger of the two. (Scaling by the upper tail, not
  the standard deviation, gives both parts the same false-alarm rate at a
  threshold, so the maximum acts as an "either" rule; measured better on every
  set than mean/sd standardisation.) Logit scores catch natural-looking images of other
  things; the feature-space distance catches noise and flat images the logits
  are confidently wrong about. Measured in ``bench/bench_ood.py``.

The threshold is the score below which ``keep`` (95 %) of the validation images
fall; a quantile table of the validation scores lets a user move it and see the
share of validation images it would reject. Detection never changes the
classifier's answer: it only adds "unknown" beside it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lib.errors import KestrelError

STATS_FILE = "ood.npz"  # beside model.keras / card.json
SCORES = ("msp", "energy", "mahalanobis", "combined")
DEFAULT_SCORE = "combined"
COMBINED_PARTS = ("energy", "mahalanobis")
DEFAULT_KEEP = 0.95  # share of in-distribution validation images the threshold keeps
MAX_FIT_IMAGES = 20000  # training images used for class means and covariance
QUANTILES = 201  # points of the validation score table (every 0.5 %)
TAIL = 0.99  # the combined score's parts are scaled by this validation quantile
BATCH = 256
FORMAT = 1

DEFINITIONS = {
    "msp": "minus the largest softmax probability",
    "energy": "minus logsumexp(logits)",
    "mahalanobis": (
        "min over classes c of (f - mean_c)^T precision (f - mean_c), f = the input of the "
        "last Dense layer"
    ),
    "combined": (
        "max over energy and mahalanobis of (score - center) / scale, where center is the "
        "score's median and center + scale its 99th percentile on the validation split"
    ),
}


HOW_TO_APPLY = (
    "features, logits = keras.Model(model.inputs, [model.layers[-1].input, model.outputs[0]])"
    "(pixels); with means, precision from the stats file: d_c = (f - means[c]) @ precision @ "
    "(f - means[c]); mahalanobis = min_c d_c; energy = -logsumexp(logits); combined = max("
    "(energy - parts.energy.center) / parts.energy.scale, (mahalanobis - "
    "parts.mahalanobis.center) / parts.mahalanobis.scale); unknown when combined > threshold"
)


class OODError(KestrelError):
    """Unknown detection cannot be fitted or applied; the message says what to do."""


# ---------------------------------------------------------------- features


def feature_model(model: Any) -> Any:
    """A Keras model returning ``[features, logits]``: the penultimate features and the output.

    The features are the input of the model's last layer (the logits Dense). A model
    whose last layer has no single input tensor gives its outputs as features.
    """
    import keras

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    try:
        features = model.layers[-1].input
        if isinstance(features, (list, tuple)):
            raise ValueError("several inputs")
        return keras.Model(inputs, [features, model.outputs[0]])
    except (AttributeError, ValueError, TypeError):
        return keras.Model(inputs, [model.outputs[0], model.outputs[0]])


def features_and_logits(fmodel: Any, images: np.ndarray, batch: int = BATCH) -> tuple:
    """float32 (N, D) features and (N, K) outputs of preprocessed images (raw 0..255)."""
    feats, logits = [], []
    for start in range(0, len(images), batch):
        x = np.asarray(images[start : start + batch], np.float32)
        f, z = fmodel(x, training=False)
        feats.append(np.asarray(f, np.float32).reshape(len(x), -1))
        logits.append(np.asarray(z, np.float32))
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(feats), np.concatenate(logits)


# ---------------------------------------------------------------- raw scores


def _logsumexp(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def msp_score(logits: np.ndarray, output: str = "logits") -> np.ndarray:
    z = np.asarray(logits, np.float64)
    probs = z if output == "probabilities" else np.exp(z - _logsumexp(z)[:, None])
    return -probs.max(axis=1)


def energy_score(logits: np.ndarray, output: str = "logits") -> np.ndarray:
    z = np.asarray(logits, np.float64)
    if output == "probabilities":
        z = np.log(np.clip(z, 1e-12, 1.0))
    return -_logsumexp(z)


def class_distances(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of every feature row to every class mean, (N, K)."""
    f = np.asarray(features, np.float64)
    mu = np.asarray(means, np.float64)
    p = np.asarray(precision, np.float64)
    fp = f @ p
    d = (fp * f).sum(axis=1)[:, None] - 2.0 * fp @ mu.T + ((mu @ p) * mu).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


# ---------------------------------------------------------------- the detector


@dataclass
class Detector:
    """The fitted statistics of unknown detection for one model."""

    class_names: tuple[str, ...]
    means: np.ndarray  # float32 (K, D) class means of the penultimate features
    precision: np.ndarray  # float32 (D, D) shared precision matrix
    val_mean: dict[str, float]  # per raw score, on the validation split
    val_std: dict[str, float]
    quantiles: dict[str, np.ndarray]  # per score, QUANTILES validation quantiles
    score_name: str = DEFAULT_SCORE
    keep: float = DEFAULT_KEEP
    output: str = "logits"
    fit_counts: dict[str, int] = field(default_factory=dict)

    # -- scoring

    def raw_scores(self, features: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Every score (msp, energy, mahalanobis, combined) for a batch."""
        out = {
            "msp": msp_score(logits, self.output),
            "energy": energy_score(logits, self.output),
            "mahalanobis": self.distances(features).min(axis=1),
        }
        out["combined"] = self._combine(out)
        return out

    def part_scale(self, name: str) -> tuple[float, float]:
        """(center, scale) of a part: its validation median, and 99th percentile minus median."""
        q = self.quantiles[name]
        levels = np.linspace(0.0, 1.0, len(q))
        center = float(np.interp(0.5, levels, q))
        high = float(np.interp(TAIL, levels, q))
        return center, max(high - center, 1e-12)

    def _combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        z = []
        for name in COMBINED_PARTS:
            center, scale = self.part_scale(name)
            z.append((parts[name] - center) / scale)
        return np.max(np.stack(z), axis=0)

    def distances(self, features: np.ndarray) -> np.ndarray:
        return class_distances(features, self.means, self.precision)

    def score(self, features: np.ndarray, logits: np.ndarray, name: str | None = None):
        """The chosen score (or ``name``) of a batch, float64 (N,)."""
        return self.raw_scores(features, logits)[name or self.score_name]

    def nearest_classes(self, features: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per image, the ``k`` classes whose feature means are nearest, with their distance."""
        d = self.distances(features)
        out = []
        for row in d:
            order = np.argsort(row, kind="stable")[:k]
            out.append([(self.class_names[i], float(np.sqrt(row[i]))) for i in order])
        return out

    # -- threshold

    def threshold(self, name: str | None = None, keep: float | None = None) -> float:
        """The score at which ``keep`` of the validation images are still known."""
        return self.threshold_for_rejection(1.0 - (self.keep if keep is None else keep), name)

    def threshold_for_rejection(self, share: float, name: str | None = None) -> float:
        q = self.quantiles[name or self.score_name]
        levels = np.linspace(0.0, 1.0, len(q))
        return float(np.interp(1.0 - float(share), levels, q))

    def rejection_share(self, threshold: float, name: str | None = None) -> float:
        """The share of validation images whose score is above ``threshold``."""
        q = self.quantiles[name or self.score_name]
        levels = np.linspace(0.0, 1.0, len(q))
        if threshold < q[0]:
            return 1.0
        if threshold >= q[-1]:
            return 0.0
        return float(1.0 - np.interp(threshold, q, levels))

    def score_range(self, name: str | None = None) -> tuple[float, float]:
        """Validation scores' smallest and largest (for a slider)."""
        q = self.quantiles[name or self.score_name]
        return float(q[0]), float(q[-1])

    # -- storage

    def summary(self, stats_file: str = STATS_FILE) -> dict[str, Any]:
        """The card's ``unknown`` block: the definition, threshold and where the statistics are."""
        name = self.score_name
        return {
            "format": FORMAT,
            "score": name,
            "definition": DEFINITIONS[name],
            "higher_means": "more unlike the training classes",
            "threshold": round(self.threshold(), 6),
            "keep": self.keep,
            "val_rejection": round(1.0 - self.keep, 4),
            "parts": {
                p: dict(zip(("center", "scale"), map(_round6, self.part_scale(p)), strict=True))
                for p in COMBINED_PARTS
            },
            "features": "input of the model's last Dense layer",
            "stats_file": stats_file,
            "stats": "class means (K, D) and shared precision (D, D) for the Mahalanobis distance",
            "fit_counts": dict(self.fit_counts),
            "rule": f"unknown when {name} > threshold; the predicted class is unchanged",
            "how_to_apply": HOW_TO_APPLY,
            # Exports that output logits only (TFLite, ONNX, the browser demo) have no
            # penultimate features: they can apply the energy score with its own threshold
            # (good on natural-looking images, weak on noise; see bench/bench_ood.py).
            "logits_only": {
                "score": "energy",
                "definition": DEFINITIONS["energy"],
                "threshold": round(self.threshold("energy"), 6),
            },
        }

    def to_bytes(self) -> bytes:
        arrays = {
            "means": self.means.astype(np.float32),
            "precision": self.precision.astype(np.float32),
            "class_names": np.asarray(self.class_names),
            "score_name": np.asarray(self.score_name),
            "keep": np.asarray(self.keep),
            "output": np.asarray(self.output),
            "format": np.asarray(FORMAT),
            "score_names": np.asarray(list(self.quantiles)),
            "val_mean": np.asarray([self.val_mean[n] for n in (*COMBINED_PARTS, "msp")]),
            "val_std": np.asarray([self.val_std[n] for n in (*COMBINED_PARTS, "msp")]),
            "fit_counts": np.asarray([self.fit_counts.get(k, 0) for k in ("train", "val")]),
        }
        for name, q in self.quantiles.items():
            arrays[f"q_{name}"] = np.asarray(q, np.float64)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    def save(self, path: Path) -> Path:
        from lib.runstore import atomic_write_bytes

        atomic_write_bytes(Path(path), self.to_bytes())
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Detector:
        """Read statistics written by :meth:`save`.

        Raises:
            OODError: the file is missing or damaged (refit with ``python -m lib ood fit``).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                names = [str(n) for n in f["score_names"]]
                parts = (*COMBINED_PARTS, "msp")
                counts = f["fit_counts"]
                return cls(
                    class_names=tuple(str(n) for n in f["class_names"]),
                    means=np.asarray(f["means"], np.float32),
                    precision=np.asarray(f["precision"], np.float32),
                    val_mean=dict(zip(parts, map(float, f["val_mean"]), strict=True)),
                    val_std=dict(zip(parts, map(float, f["val_std"]), strict=True)),
                    quantiles={n: np.asarray(f[f"q_{n}"], np.float64) for n in names},
                    score_name=str(f["score_name"]),
                    keep=float(f["keep"]),
                    output=str(f["output"]),
                    fit_counts={"train": int(counts[0]), "val": int(counts[1])},
                )
        except (OSError, KeyError, ValueError) as exc:
            raise OODError(
                f"cannot read the unknown-detection statistics {path.name}: {exc}; "
                "refit them with `python -m lib ood fit MODEL`"
            ) from None


def fit_statistics(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_logits: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    *,
    score_name: str = DEFAULT_SCORE,
    keep: float = DEFAULT_KEEP,
    output: str = "logits",
) -> Detector:
    """Fit class means and the shared precision on training features, then the threshold on val.

    Raises:
        OODError: too few images, a class without training images, a bad ``keep``.
    """
    from sklearn.covariance import LedoitWolf

    if score_name not in SCORES:
        raise OODError(f"unknown score {score_name!r}; choose one of {', '.join(SCORES)}")
    if not 0.5 <= keep < 1.0:
        raise OODError(f"keep must be between 0.5 and 1 (a share of validation images), not {keep}")
    labels = np.asarray(train_labels, np.int64)
    k = len(class_names)
    if len(val_features) < 20:
        raise OODError(
            f"unknown detection needs at least 20 validation images to fit its threshold; "
            f"this dataset has {len(val_features)}: give it a validation split"
        )
    missing = [class_names[c] for c in range(k) if not np.any(labels == c)]
    if missing:
        raise OODError(f"no training images of class(es) {', '.join(missing)}")
    f = np.asarray(train_features, np.float64)
    means = np.stack([f[labels == c].mean(axis=0) for c in range(k)])
    centred = f - means[labels]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    det = Detector(
        class_names=tuple(class_names),
        means=means.astype(np.float32),
        precision=precision.astype(np.float32),
        val_mean={},
        val_std={},
        quantiles={},
        score_name=score_name,
        keep=keep,
        output=output,
        fit_counts={"train": len(f), "val": len(val_features)},
    )
    raw = {
        "msp": msp_score(val_logits, output),
        "energy": energy_score(val_logits, output),
        "mahalanobis": det.distances(val_features).min(axis=1),
    }
    levels = np.linspace(0.0, 1.0, QUANTILES)
    for name, values in raw.items():
        det.val_mean[name] = float(np.mean(values))
        det.val_std[name] = float(np.std(values))
        det.quantiles[name] = np.quantile(values, levels)
    raw["combined"] = det._combine(raw)
    det.quantiles["combined"] = np.quantile(raw["combined"], levels)
    return det


def fit(
    model: Any,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    *,
    output: str = "logits",
    keep: float = DEFAULT_KEEP,
    score_name: str = DEFAULT_SCORE,
    seed: int = 0,
) -> Detector:
    """Fit unknown detection for ``model`` from preprocessed uint8 images (N, H, W, C)."""
    labels = np.asarray(train_labels, np.int64)
    if len(labels) > MAX_FIT_IMAGES:
        pick = np.sort(np.random.default_rng(seed).choice(len(labels), MAX_FIT_IMAGES, False))
        train_images, labels = train_images[pick], labels[pick]
    fmodel = feature_model(model)
    train_f, _ = features_and_logits(fmodel, train_images)
    val_f, val_z = features_and_logits(fmodel, val_images)
    return fit_statistics(
        train_f, labels, val_f, val_z, class_names, score_name=score_name, keep=keep, output=output
    )


# ---------------------------------------------------------------- datasets and folders


def fit_for_dataset(model: Any, dataset: Any, *, output: str = "logits", seed: int = 0) -> Detector:
    """Fit on a lib.data Dataset: means and covariance on train, threshold on val (else test)."""
    train = dataset.splits["train"]
    held = dataset.splits.get("val")
    if held is None or len(held) < 20:
        held = dataset.splits.get("test")
    if held is None:
        raise OODError("unknown detection needs a validation or test split to fit its threshold")
    idx = np.arange(len(train))
    if len(idx) > MAX_FIT_IMAGES:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), MAX_FIT_IMAGES, False))
    h, w, c = (int(s) for s in model.input_shape[1:4])
    train_images = _fit_images(train.images(idx), h, w, c)
    val_images = _fit_images(held.images(), h, w, c)
    return fit(
        model,
        train_images,
        train.labels[idx],
        val_images,
        list(dataset.class_names),
        output=output,
        seed=seed,
    )


def _fit_images(images: np.ndarray, h: int, w: int, c: int) -> np.ndarray:
    if tuple(images.shape[1:]) == (h, w, c):
        return images
    from lib.data.images import resize_image, to_channels

    return np.stack([resize_image(to_channels(img, c), h, w) for img in images])


def fit_for_run(run_dir: Path, model: Any = None, dataset: Any = None) -> Detector:
    """Fit and store ``ood.npz`` in a completed run's folder."""
    from lib import runstore

    run_dir = Path(run_dir)
    if model is None:
        from lib.registry import load_model_file

        model = load_model_file(run_dir / runstore.MODEL_FILE)
    if dataset is None:
        from lib.data import load_dataset

        dataset = load_dataset(runstore.read_config(run_dir).data)
    detector = fit_for_dataset(model, dataset, seed=runstore.read_config(run_dir).train.seed)
    detector.save(run_dir / runstore.OOD_FILE)
    return detector


def load_beside(model_path: Path) -> Detector | None:
    """The detector stored beside a model file, or None when there is none."""
    path = Path(model_path).parent / STATS_FILE
    if not path.is_file():
        return None
    return Detector.load(path)


# ---------------------------------------------------------------- measurement


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """AUROC of telling ``unknown`` (positive) from ``known`` by a higher score."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """Share of unknown images accepted as known when 95 % of known images are kept.

    (The usual "FPR at 95 % TPR" with known images as the positives.)
    """
    threshold = np.quantile(np.asarray(known, np.float64), tpr)
    return float(np.mean(np.asarray(unknown) <= threshold))


# ---------------------------------------------------------------- models and cards


def _resolve(name: str):
    """(registry entry, None) or (None, run folder) for ``name``; OODError when neither exists."""
    from lib import registry, runstore

    entry = next((e for e in registry.list_models() if e.name == name), None)
    if entry is not None:
        return entry, None
    try:
        run_dir = runstore.run_dir(name)
    except Exception:
        run_dir = None
    if run_dir is None or not (run_dir / runstore.MODEL_FILE).is_file():
        names = ", ".join(e.name for e in registry.list_models()) or "none"
        raise OODError(
            f"no registry model or completed run named {name!r}; registry models: {names}; "
            "runs: see `python -m lib runs`"
        )
    return None, run_dir


def model_folder(name: str) -> Path:
    """The folder holding ``name``'s model file: a registry model's or a completed run's."""
    entry, run_dir = _resolve(name)
    return entry.model_path.parent if entry is not None else run_dir


def fit_model(name: str) -> str:
    """Fit unknown detection for a registry model (by name) or a completed run (by id).

    A registry model gets ``ood.npz`` beside its card and the card's ``unknown``
    block rewritten (nothing else in the card, and never ``model.keras``); a run
    gets ``ood.npz`` in its folder. Returns a one-line report.

    Raises:
        OODError: no such model or run, or its dataset cannot be loaded.
    """
    import json

    from lib import registry, runstore
    from lib.config import DataConfig
    from lib.data import load_dataset

    entry, run_dir = _resolve(name)
    if entry is None:
        det = fit_for_run(run_dir)
        return f"run {name}: {det.score_name} threshold {det.threshold():.4g} -> {run_dir / runstore.OOD_FILE}"
    folder = entry.model_path.parent
    data = (entry.card.training_config or {}).get("data")
    if not isinstance(data, dict):
        raise OODError(f"{name}'s card names no dataset, so there is nothing to fit on")
    model = registry.load_model_file(entry.model_path)
    det = fit_for_dataset(
        model,
        load_dataset(DataConfig.from_dict(data)),
        output=entry.card.output,
        seed=int((entry.card.training_config.get("train") or {}).get("seed", 0)),
    )
    det.save(folder / STATS_FILE)
    card_path = folder / registry.CARD_FILE
    raw = json.loads(card_path.read_text(encoding="utf-8"))
    raw["unknown"] = det.summary()
    runstore.atomic_write_json(card_path, raw)
    return f"{name}: {det.score_name} threshold {det.threshold():.4g} -> {folder / STATS_FILE}"


def _round6(value: float) -> float:
    return round(float(value), 6)


# ---------------------------------------------------------------- the background fit

JOB_DIR = "ood-fit"  # beside the model file: the background fit's status, phases and log


def job_dir(folder: Path) -> Path:
    return Path(folder) / JOB_DIR


def fit_status(folder: Path):
    """The background fit's status (a RunStatus) for a model folder, or None if never started.

    A fit whose process is gone reads failed (lib.jobs.side_job_status).
    """
    from lib import jobs, runstore

    job = job_dir(folder)
    if not (job / runstore.STATUS_FILE).is_file():
        return None
    return jobs.side_job_status(job, "the fit")


def start_fit(name: str) -> None:
    """Fit ``name``'s unknown detection in a background process (refused while one runs).

    The page that asks goes on at once; the worker is ``python -m lib ood fit NAME``,
    which records its status and phases in the model's ``ood-fit/`` folder.
    """
    from lib import jobs, runstore

    folder = model_folder(name)
    status = fit_status(folder)
    if status is not None and status.state in ("queued", "running"):
        raise OODError("unknown detection of this model is being fitted already")
    job = job_dir(folder)
    job.mkdir(exist_ok=True)
    (job / runstore.PROGRESS_FILE).unlink(missing_ok=True)
    jobs.start_side_job(job, ["-m", "lib", "ood", "fit", name])


def fit_here(name: str, *, echo: bool = False) -> int:
    """Fit in this process, recording status and phases beside the model; an exit code."""
    import sys

    from lib import jobs

    try:
        folder = model_folder(name)
    except OODError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def work(phase):
        phase("fitting on the training and validation images")
        return fit_model(name)

    state, error, report = jobs.run_side_job(job_dir(folder), work, echo=echo)
    if report is not None and echo:
        print(report)
    if error:
        print(f"error: {error}", file=sys.stderr)
    return 0 if state == "completed" else 1
