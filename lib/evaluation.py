"""Evaluation of a finished run: stored test predictions and the metrics read from them.

A completed run is predicted once (:func:`compute_predictions`, called by the
training worker when a run completes, or by the Evaluate page on demand) and the
result is kept in the run directory as ``predictions.npz``. Every view reads
that file (:func:`load_predictions`) and computes its metrics here, with numpy
and scikit-learn, so nothing on a page ever runs the model again.

Positions vs indices: metric helpers return *positions* into the prediction
arrays; ``preds.indices[pos]`` is the image's index in its dataset split, which
is what :func:`load_images` needs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib import hardware, runs, runstore
from lib.errors import KestrelError

PREDICT_CHUNK = 1024  # images decoded at once: bounds memory on large test splits
PROB_FLOOR = 1e-7  # clip before log so a confident mistake costs ~16, not infinity


class PredictionsError(KestrelError):
    """Predictions cannot be made or read for a run (missing model, unreadable file)."""


@dataclass(frozen=True)
class Predictions:
    """The stored predictions of one run on its test (or validation) split."""

    y_true: np.ndarray  # int32 (N,) true class
    probs: np.ndarray  # float32 (N, K) softmax probabilities
    indices: np.ndarray  # int64 (N,) index into the split
    split: str  # "test" or "val"
    refs: np.ndarray  # str (N,) file path, or "" for in-memory datasets
    class_names: tuple[str, ...]  # K names, stored beside the arrays so views need no dataset

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the predicted class."""
        return self.probs.max(axis=1)

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def __len__(self) -> int:
        return int(self.y_true.shape[0])


# ---------------------------------------------------------------------------
# Computing and storing predictions


def softmax(logits: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """Softmax over the last axis, computed in float64 (stable: the row maximum is subtracted).

    The one softmax of the project: training, evaluation and prediction use it.
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype, copy=False)


_softmax = softmax  # the older private name


def _model_path(run_dir: Path) -> Path:
    """The run's model.keras; PredictionsError when training has not written it."""
    path = run_dir / runstore.MODEL_FILE
    if not path.is_file():
        raise PredictionsError(
            f"run {run_dir.name} has no {runstore.MODEL_FILE}; it did not finish training. "
            "Train it again (or resume it) before evaluating."
        )
    return path


def _load_model(run_dir: Path):
    """Load a run's model.keras in safe mode (no arbitrary code from the file)."""
    import keras

    path = _model_path(run_dir)
    try:
        return keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except Exception as exc:  # keras raises many types for a bad file
        raise PredictionsError(
            f"cannot load {path}: {exc}. The file may be damaged; train the run again."
        ) from None


def evaluation_split(ds: Any) -> str:
    """The split a run is evaluated on: ``test`` when it holds images, else ``val``."""
    test = ds.splits.get("test")
    if test is not None and len(test) > 0:
        return "test"
    val = ds.splits.get("val")
    if val is not None and len(val) > 0:
        return "val"
    raise PredictionsError(
        "the dataset has neither test nor validation images; raise "
        "DataConfig.test_fraction or val_fraction and train again"
    )


def predict_probs(
    model: Any,
    split: Any,
    *,
    batch_size: int,
    tta_flip: bool,
    distributed: bool = True,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Softmax probabilities of ``model`` on every image of ``split``, in split order.

    Args:
        model: a Keras model taking float32 raw pixels and returning logits.
        split: a lib.data Split (in memory or streamed; an unreadable file comes
            back blank, so the rows stay aligned with the split's labels).
        batch_size: images per model call.
        tta_flip: average the probabilities with those of the left-right
            mirrored images (test-time augmentation).
        distributed: ``model.predict`` (which a multi-worker strategy shards
            between workers); False calls the model batch by batch in this
            process, so that every worker gets the whole split.
        dtype: of the result (the softmax itself is computed in float64).

    Returns:
        ``(len(split), K)`` probabilities.
    """

    def probs_of(x: np.ndarray) -> np.ndarray:
        if distributed:
            logits = model.predict(x, batch_size=batch_size, verbose=0)
        else:
            parts = [
                np.asarray(model(x[i : i + batch_size], training=False))
                for i in range(0, len(x), batch_size)
            ]
            logits = np.concatenate(parts)
        return softmax(logits)

    n = len(split)
    out: list[np.ndarray] = []
    for start in range(0, n, PREDICT_CHUNK):
        idx = np.arange(start, min(start + PREDICT_CHUNK, n))
        # Models rescale inside themselves, so they take raw pixels as float32.
        x = split.images(idx).astype(np.float32)
        probs = probs_of(x)
        if tta_flip:
            probs = (probs + probs_of(np.ascontiguousarray(x[:, :, ::-1, :]))) / 2.0
        out.append(probs.astype(dtype, copy=False))
    if not out:
        return np.zeros((0, 0), dtype)
    return np.concatenate(out)


def compute_predictions(
    run_dir: Path | str,
    *,
    dataset: Any = None,
    probs: np.ndarray | None = None,
) -> Path:
    """Store ``predictions.npz``: a completed run's probabilities on its evaluation split.

    Args:
        run_dir: the run directory (``runstore.run_dir(run_id)``).
        dataset: the run's loaded dataset, when the caller has it (the trainer
            does); else it is loaded from config.json.
        probs: the evaluation split's probabilities, when the caller computed
            them already (the trainer does, for metrics.json); else the run's
            model.keras predicts them.

    Returns:
        The path of the written ``predictions.npz``.

    Raises:
        PredictionsError: no model, a model whose output does not match the
            dataset's classes, or a dataset without test/validation images.
        lib.data.DatasetError: the run's dataset cannot be loaded any more.
    """
    run_dir = Path(run_dir)
    cfg = runstore.read_config(run_dir)
    if probs is None:
        model = _load_model(run_dir)
    else:
        _model_path(run_dir)  # predictions belong to the run's saved model
    if dataset is None:
        from lib.data import load_dataset

        dataset = load_dataset(cfg.data)
    split_name = evaluation_split(dataset)
    split = dataset.splits[split_name]
    if probs is None:
        probs = predict_probs(
            model, split, batch_size=min(cfg.train.batch_size, 256), tta_flip=cfg.train.tta_flip
        )
    if probs.shape[1] != len(dataset.class_names):
        raise PredictionsError(
            f"the model of run {run_dir.name} predicts {probs.shape[1]} classes but its "
            f"dataset has {len(dataset.class_names)}; the dataset changed since training. "
            "Train the run again."
        )
    refs = split.refs
    n = len(split)
    ref_array = np.array(list(refs) if refs is not None else [""] * n, dtype=str)
    buf = io.BytesIO()
    np.savez(
        buf,
        y_true=np.asarray(split.labels, np.int32),
        probs=np.asarray(probs, np.float32),
        indices=np.arange(n, dtype=np.int64),
        split=np.array(split_name),
        refs=ref_array,
        class_names=np.array(list(dataset.class_names), dtype=str),
    )
    path = run_dir / runstore.PREDICTIONS_FILE
    runstore.atomic_write_bytes(path, buf.getvalue())
    return path


def has_predictions(run_dir: Path | str) -> bool:
    return (Path(run_dir) / runstore.PREDICTIONS_FILE).is_file()


def load_predictions(run_dir: Path | str) -> Predictions:
    """Read a run's ``predictions.npz``.

    Raises:
        PredictionsError: the file is missing or not a predictions file.
    """
    path = Path(run_dir) / runstore.PREDICTIONS_FILE
    if not path.is_file():
        raise PredictionsError(
            f"run {Path(run_dir).name} has no {runstore.PREDICTIONS_FILE} yet; "
            "compute predictions first"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            preds = Predictions(
                y_true=data["y_true"].astype(np.int64),
                probs=data["probs"].astype(np.float32),
                indices=data["indices"].astype(np.int64),
                split=str(data["split"]),
                refs=data["refs"].astype(str),
                class_names=tuple(str(c) for c in data["class_names"])
                if "class_names" in data
                else _dataset_class_names(run_dir),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise PredictionsError(f"{path} is unreadable ({exc}); compute predictions again") from None
    n = len(preds.y_true)
    if (
        preds.probs.ndim != 2
        or preds.probs.shape[0] != n
        or len(preds.indices) != n
        or len(preds.class_names) != preds.probs.shape[1]
    ):
        raise PredictionsError(f"{path} has inconsistent arrays; compute predictions again")
    return preds


def _dataset_class_names(run_dir: Path | str) -> tuple[str, ...]:
    from lib.data import load_dataset

    return tuple(load_dataset(runstore.read_config(Path(run_dir)).data).class_names)


def load_images(run_dir: Path | str, preds: Predictions, positions: np.ndarray) -> np.ndarray:
    """The uint8 images (n, H, W, C) at ``positions`` of ``preds``, decoded from the run's dataset."""
    from lib.data import load_dataset

    cfg = runstore.read_config(Path(run_dir))
    split = load_dataset(cfg.data).splits[preds.split]
    return split.images(preds.indices[np.asarray(positions, dtype=np.int64)])


def display_image(image: np.ndarray, min_side: int = 96) -> np.ndarray:
    """``image`` (H, W, C) enlarged by a whole factor (nearest) to at least ``min_side``, bounded.

    Tiny images (8×8 digits, 28×28 Fashion-MNIST) would otherwise be shown as
    blurry specks; large or extreme ones (a 5000×1 strip) are shrunk to the
    display bounds of :func:`lib.predict.fit_image` and padded to a sensible
    aspect ratio (:func:`lib.predict.pad_to_aspect`). Grayscale becomes (H, W)
    because that is what st.image takes.
    """
    from lib.predict import fit_image, pad_to_aspect

    img = pad_to_aspect(fit_image(np.asarray(image), min_side=min_side))
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return img


# ---------------------------------------------------------------------------
# Metrics (pure functions of y_true and probabilities)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the ``k`` most probable.

    Ties are broken by class order (stable sort), like ``np.argsort``.
    """
    if len(y_true) == 0:
        return 0.0
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == np.asarray(y_true)[:, None]).any(axis=1)))


def default_top_k(num_classes: int) -> int | None:
    """k for the headline top-k accuracy: 5 when there are more than 5 classes, else 3, else none."""
    if num_classes > 5:
        return 5
    if num_classes > 3:
        return 3
    return None


def sample_losses(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy ``-log p(true class)``."""
    p = probs[np.arange(len(y_true)), np.asarray(y_true)]
    return -np.log(np.clip(p.astype(np.float64), PROB_FLOOR, 1.0))


def cross_entropy(y_true: np.ndarray, probs: np.ndarray) -> float:
    return float(sample_losses(y_true, probs).mean()) if len(y_true) else 0.0


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (K, K) of counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def normalise_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (recall on the diagonal); empty rows stay zero."""
    totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(cm, totals, out=np.zeros(cm.shape, np.float64), where=totals > 0)


def summary(preds: Predictions) -> dict[str, Any]:
    """Headline metrics: accuracy, top-k accuracy, macro/weighted F1, loss."""
    from sklearn.metrics import f1_score

    y_pred = preds.y_pred
    labels = np.arange(preds.num_classes)
    k = default_top_k(preds.num_classes)
    return {
        "n": len(preds),
        "split": preds.split,
        "accuracy": accuracy(preds.y_true, y_pred),
        "top_k": k,
        "top_k_accuracy": top_k_accuracy(preds.y_true, preds.probs, k) if k else None,
        "macro_f1": float(
            f1_score(preds.y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            f1_score(preds.y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "loss": cross_entropy(preds.y_true, preds.probs),
    }


def per_class_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]):
    """Precision, recall, F1 and support per class, worst (lowest F1) first.

    Returns:
        A pandas DataFrame with columns class, precision, recall, f1, support.
    """
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.arange(len(class_names))
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    table = pd.DataFrame(
        {"class": list(class_names), "precision": p, "recall": r, "f1": f, "support": s}
    )
    table = table.sort_values(["f1", "recall", "support"], ascending=[True, True, False])
    return table.reset_index(drop=True)


def most_confused(cm: np.ndarray, class_names: list[str], top: int = 10) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images, largest first.

    Returns:
        Dicts with true, predicted (class names), i, j, count and share (of the true class).
    """
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = cm.sum(axis=1)
    result = []
    for i, j in zip(*np.unravel_index(flat, cm.shape), strict=True):
        count = int(off[i, j])
        if count == 0:
            break
        result.append(
            {
                "true": class_names[i],
                "predicted": class_names[j],
                "i": int(i),
                "j": int(j),
                "count": count,
                "share": count / int(rows[i]),
            }
        )
    return result


def cell_positions(preds: Predictions, i: int, j: int) -> np.ndarray:
    """Positions of the images with true class ``i`` predicted as ``j``, most confident first."""
    pos = np.flatnonzero((preds.y_true == i) & (preds.y_pred == j))
    order = np.argsort(-preds.confidence[pos], kind="stable")
    return pos[order]


def top_losses(preds: Predictions, n: int = 16) -> np.ndarray:
    """Positions of the ``n`` wrong predictions with the highest loss (confident and wrong)."""
    wrong = np.flatnonzero(preds.y_true != preds.y_pred)
    losses = sample_losses(preds.y_true[wrong], preds.probs[wrong])
    return wrong[np.argsort(-losses, kind="stable")[:n]]


@dataclass(frozen=True)
class Curve:
    """A one-vs-rest curve of one class, with its area summary."""

    x: np.ndarray
    y: np.ndarray
    area: float  # ROC: AUC; PR: average precision
    positives: int  # test images of the class


def roc_curve_ovr(y_true: np.ndarray, probs: np.ndarray, cls: int) -> Curve | None:
    """One-vs-rest ROC of class ``cls`` (x = false positive rate, y = true positive rate).

    Returns None when the class has no images or every image is of it (undefined).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    target = np.asarray(y_true) == cls
    if target.all() or not target.any():
        return None
    fpr, tpr, _ = roc_curve(target, probs[:, cls])
    return Curve(fpr, tpr, float(roc_auc_score(target, probs[:, cls])), int(target.sum()))


def pr_curve_ovr(y_true: np.ndarray, probs: np.ndarray, cls: int) -> Curve | None:
    """One-vs-rest precision-recall curve of ``cls`` (x = recall, y = precision); None if no positives."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    target = np.asarray(y_true) == cls
    if not target.any():
        return None
    precision, recall, _ = precision_recall_curve(target, probs[:, cls])
    ap = float(average_precision_score(target, probs[:, cls]))
    return Curve(recall, precision, ap, int(target.sum()))


@dataclass(frozen=True)
class Reliability:
    """Reliability diagram data: per confidence bin, the accuracy and mean confidence."""

    edges: np.ndarray  # (bins + 1,) bin edges over [0, 1]
    accuracy: np.ndarray  # (bins,) accuracy in the bin (nan where empty)
    confidence: np.ndarray  # (bins,) mean confidence in the bin (nan where empty)
    counts: np.ndarray  # (bins,) samples in the bin
    ece: float  # expected calibration error


def reliability(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> Reliability:
    """Equal-width confidence bins, right-inclusive ((0.4, 0.5] etc.), and the ECE.

    ECE = sum over bins of (bin size / N) * |accuracy(bin) - mean confidence(bin)|.
    """
    conf = probs.max(axis=1).astype(np.float64)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")
    counts = np.bincount(which, minlength=bins)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(counts > 0, acc_sum / counts, np.nan)
        mean_conf = np.where(counts > 0, conf_sum / counts, np.nan)
    n = max(len(conf), 1)
    ece = float(np.nansum(counts / n * np.abs(acc - mean_conf)))
    return Reliability(edges, acc, mean_conf, counts, ece)


# ---------------------------------------------------------------------------
# Tables and downloads


def predictions_table(preds: Predictions, class_names: list[str]):
    """One row per image: index, reference, true/predicted class, confidence, loss."""
    import pandas as pd

    y_pred = preds.y_pred
    return pd.DataFrame(
        {
            "index": preds.indices,
            "ref": preds.refs,
            "true": [class_names[i] for i in preds.y_true],
            "predicted": [class_names[i] for i in y_pred],
            "correct": preds.y_true == y_pred,
            "confidence": preds.confidence,
            "prob_true": preds.probs[np.arange(len(preds)), preds.y_true],
            "loss": sample_losses(preds.y_true, preds.probs),
        }
    )


def confusion_csv(cm: np.ndarray, class_names: list[str]) -> str:
    """The confusion matrix as CSV: first column the true class, one column per predicted class."""
    import pandas as pd

    frame = pd.DataFrame(
        cm, index=pd.Index(class_names, name="true \\ predicted"), columns=class_names
    )
    return frame.to_csv()


# ---------------------------------------------------------------------------
# Runs: which can be evaluated, their history and a one-line summary


def completed_runs(root: Path | None = None) -> list[Path]:
    """Completed runs that have a model, newest first."""
    return [view.path for view in runs.completed_views(root)]


def run_label(run_dir: Path) -> str:
    """``name · id`` for a run, or just the id when it has no name."""
    view = runs.view_of(run_dir)
    return f"{view.name} · {view.run_id}" if view.name else view.run_id


def load_history(run_dir: Path | str):
    """The run's per-epoch history as a DataFrame (``epoch`` 0-based, as CSVLogger writes it).

    Read by :func:`lib.runstore.read_history`; empty if there is none yet.
    """
    import pandas as pd

    columns = dict(runs.view_of(run_dir).history)
    if "epoch" in columns:
        columns["epoch"] = [int(e) - 1 for e in columns["epoch"]]
    return pd.DataFrame(columns)


_PARAM_CACHE: dict[tuple[str, float], int] = {}


def count_parameters(run_dir: Path | str) -> int | None:
    """Total parameters of the run's model: from metrics.json when recorded, else from model.keras."""
    view = runs.view_of(run_dir)
    for key in ("params", "parameters", "num_params"):
        if isinstance(view.metrics.get(key), int):
            return view.metrics[key]
    run_dir = view.path
    path = run_dir / runstore.MODEL_FILE
    if not view.has_model:
        return None
    key = (str(path), path.stat().st_mtime)
    if key not in _PARAM_CACHE:
        try:
            _PARAM_CACHE[key] = int(_load_model(run_dir).count_params())
        except PredictionsError:
            return None
    return _PARAM_CACHE[key]


# What a run computed in (metrics.json's Keras dtype policy), in the Compare table's words:
# "auto" can mean any of them, depending on the hardware that trained the run.
PRECISION_WORDS = hardware.POLICY_WORDS


def run_summary(run_dir: Path | str) -> dict[str, Any]:
    """What the Compare page's table shows for one run.

    Raises:
        lib.runs.RunReadError: the run's config.json cannot be read.
    """
    view = runs.view_of(run_dir)
    if view.config_error:
        raise runs.RunReadError(view.config_error)
    cfg, metrics = view.config, view.metrics
    seconds = view.duration_s
    test_acc = view.test_accuracy
    if test_acc is None:
        test_acc = metrics.get("val_accuracy")
    if test_acc is None and has_predictions(view.path):
        preds = load_predictions(view.path)
        test_acc = accuracy(preds.y_true, preds.y_pred)
    return {
        "run": run_label(view.path),
        "dataset": cfg.data.source,
        "model": view.model,
        "parameters": count_parameters(view.path),
        "augmentation": cfg.augment.preset,
        "optimizer": f"{cfg.train.optimizer} · {cfg.train.learning_rate:g}",
        "batch_size": cfg.train.batch_size,
        "epochs": int(metrics.get("epochs_done", view.epochs_done)),
        "train_seconds": None if seconds is None else round(float(seconds), 1),
        "precision": PRECISION_WORDS.get(metrics.get("precision"), metrics.get("precision")),
        "best_val_accuracy": view.best_val_accuracy,
        "test_accuracy": test_acc,
    }
