"""Data health: label issues, outliers, near-duplicates and train/test leakage.

A health check reads one dataset (the train, validation and test splits of a
DataConfig), and answers:

- **label issues**: images whose given label the data itself contradicts. Each
  train image gets out-of-sample predicted probabilities (3-fold cross-validation
  of a small one-conv CNN; each prediction averages the last two epochs' models,
  blended with the given labels of the image's nearest neighbours in that model's
  embedding space);
  cleanlab's ``find_label_issues`` flags the issues and
  ``get_label_quality_scores`` ranks every image (lowest score first).
- **outliers** inside the train split: cleanlab's k-nearest-neighbour outlier
  score on the out-of-sample embeddings of the same models; **near-duplicates**:
  pairs of those embeddings with a cosine similarity close to 1.
- **leakage**: exact and near copies of a validation or test image in another
  split. A copy is found by a perceptual hash (``imagehash.phash``, robust to
  resizing and JPEG re-encoding) or by the cosine similarity of small grey
  thumbnails (robust to what a hash misses: a slight shift in brightness).

The result is a :class:`HealthReport` (counts and a review queue, most likely
problems first). :func:`start_check` runs the same check as a background job:
a process and a folder under ``<workspace>/health/<id>/`` that is its source of
truth (see ``lib.health_store``-style layout below), with progress written as
``lib.progress`` events.

Layout of ``<workspace>/health/<check_id>/``::

    request.json     what to check: {"data": DataConfig, "run_id": ..., "folds": ...}
    status.json      the same schema as a run's (lib.runstore.RunStatus)
    progress.jsonl   lib.progress events (phase, end)
    report.json      counts, settings and timings of the finished check
    queue.csv        the review queue: split, index, ref, issue, given, suggested, score
    decisions.json   the reviewer's relabel / exclude / keep decisions (by queue key)
    cleaned.json     the DataConfig of the dataset version the decisions were saved as
    log.txt          the worker's output

This module imports neither Streamlit nor (until a model is trained) TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lib.errors import KestrelError

ISSUE_TYPES = ("label", "leakage", "near_duplicate", "outlier")
ISSUE_LABELS = {
    "label": "Label issues",
    "leakage": "Train/test leakage",
    "near_duplicate": "Near-duplicates",
    "outlier": "Outliers",
}

# Measured on 10,000 Fashion-MNIST images with 5 % of the labels flipped (bench/bench_health.py,
# 2 cores): 3 folds at batch 128 found as many flips as 4 folds at batch 64 in half the time,
# and training with flips plus flipped predictions found fewer. The fast_cnn-shaped net
# (conv16 → pool → dense 256) for 8 epochs, against two valid-padded conv blocks for 5: out-of-
# fold accuracy 87.4-88.2 % against 84.8 %, recall at 1.5N 0.920-0.928 against 0.902-0.908,
# precision at N 0.842-0.856 against 0.828-0.848 (4 and 2 seeds), in about the same time. Label
# smoothing, random shifts (in training or as test-time views), batch norm, 10 epochs, a third
# snapshot, batch 64, a higher learning rate and averaging two models did not help.
DEFAULT_FOLDS = 3
DEFAULT_EPOCHS = 8
SNAPSHOTS = 2  # the last epochs whose predictions are averaged
BATCH = 128
LEARNING_RATE = 3e-3  # cosine-decayed to 0 over the fold's epochs
EMBEDDING_SIZE = 256
CONV_FILTERS = 16
DROPOUT = 0.5
# Each image's probabilities are blended with the labels of its nearest neighbours in
# the embedding space of the model that predicted it (the same held-out fold): on the
# planted-noise bench this raised precision at N by 0.4-1.8 points on each of 6
# plantings and seeds, and kept recall (bench_health).
NEIGHBOURS = 40
NEIGHBOUR_WEIGHT = 0.3
# Copies across splits: candidates are pairs whose perceptual hashes (64 bits) and grey
# thumbnails are both close; a candidate is a copy when the two images, blurred, differ
# by at most COPY_MAX_MAE grey levels on average. Measured on Fashion-MNIST: resized
# and JPEG-re-encoded copies 0-4 bits, cosine >= 0.96, blurred difference <= 5.7;
# distinct look-alikes that pass the candidate test differ by 2-7 (a few are real
# near-duplicates of the set).
PHASH_MAX_DISTANCE = 6
THUMB_MIN_COSINE = 0.95
COPY_MAX_MAE = 6.0
COPY_SIDE = 64  # images are compared at most this large
THUMB_SIDE = 16  # thumbnails compared by cosine similarity
MAX_LEAK_PAIRS_PER_IMAGE = 3
OUTLIER_SHARE = 0.005  # the most unusual 0.5 % of the train split are shown as outliers
DUPLICATE_MIN_COSINE = 0.995  # of the check's embeddings: near-identical images

REQUEST_FILE = "request.json"
STATUS_FILE = "status.json"
PROGRESS_FILE = "progress.jsonl"
REPORT_FILE = "report.json"
QUEUE_FILE = "queue.csv"
DECISIONS_FILE = "decisions.json"
CLEANED_FILE = "cleaned.json"
QUEUE_FIELDS = ("key", "issue", "split", "index", "ref", "given", "suggested", "score", "other")


class HealthError(KestrelError):
    """A health check that cannot run as asked; the message says what to do."""


@dataclass
class QueueItem:
    """One image to review."""

    issue: str  # one of ISSUE_TYPES
    split: str  # "train", "val" or "test"
    index: int  # position in its split
    given: int  # the label it has
    suggested: int  # the label the check suggests (== given for non-label issues)
    score: float  # how likely a problem: 1 is certain, 0 is not at all
    ref: str = ""  # file path for streamed datasets, "" for in-memory ones
    other: str = ""  # the related image for duplicates and leakage ("test:17")

    @property
    def key(self) -> str:
        return f"{self.split}:{self.index}"


@dataclass
class HealthReport:
    """What a check found: counts per issue type and the ranked queue."""

    class_names: list[str]
    counts: dict[str, int]
    queue: list[QueueItem]
    sizes: dict[str, int] = field(default_factory=dict)  # images per split
    seconds: dict[str, float] = field(default_factory=dict)  # per phase
    settings: dict[str, Any] = field(default_factory=dict)
    label_ranking: np.ndarray | None = None  # train indices, most likely label issue first

    def summary(self) -> str:
        """A few plain-text lines: sizes, counts per issue type, time."""
        lines = [
            "images: " + ", ".join(f"{k} {v:,}" for k, v in self.sizes.items()),
        ]
        for issue in ISSUE_TYPES:
            lines.append(f"{ISSUE_LABELS[issue]}: {self.counts.get(issue, 0):,}")
        total = sum(self.seconds.values())
        lines.append(f"checked in {total:.1f} s")
        return "\n".join(lines)


# --------------------------------------------------------------------------- models


def _cnn(input_shape: tuple[int, int, int], num_classes: int, seed: int):
    """The small CNN whose out-of-fold predictions score the labels.

    The shape of the app's fast_cnn (one same-padded conv → pool → dense): on a CPU
    it trains an epoch in well under the time of two valid-padded conv blocks
    (32, 64), and after 8 epochs its out-of-fold accuracy was higher (bench_health).
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255.0)(inputs)
    if min(input_shape[:2]) > 64:  # large images: the check looks at a 64 px version
        x = layers.Resizing(64, 64)(x)
    elif min(input_shape[:2]) < 20:  # tiny ones (8×8 digits) are looked at larger
        x = layers.Resizing(28, 28)(x)
    # No batch norm: its running statistics lag on a few hundred steps.
    x = layers.Conv2D(CONV_FILTERS, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    while max(x.shape[1], x.shape[2]) > 16:  # 64 px: the dense layer sees 16 px, not 32
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    embedding = layers.Dense(EMBEDDING_SIZE, activation="relu", name="embedding")(x)
    x = layers.Dropout(DROPOUT)(embedding)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _fit_predict(
    x_tr, y_tr, x_out: list[np.ndarray], num_classes: int, epochs: int, seed: int, flip: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train one CNN on (x_tr, y_tr); (probabilities, embeddings) of each array in x_out.

    The probabilities average the last ``SNAPSHOTS`` epochs' predictions (and, with
    ``flip``, each image's mirror): cheaper than more models, steadier than one.
    The images go through ``lib.data.pipeline.make_pipeline``, like a run's: one
    ``fit`` over all epochs, on the pipeline whose tf.data autotuning is off (Keras
    fed numpy arrays waited seconds at every epoch's start for the last iterator).
    """
    import keras

    from lib.data.dataset import Dataset, Split
    from lib.data.pipeline import make_pipeline

    model = _cnn(tuple(x_tr.shape[1:]), num_classes, seed)
    steps = max(1, -(-len(x_tr) // BATCH))
    lr = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=steps * epochs)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    feats = keras.Model(model.input, [model.output, model.get_layer("embedding").output])
    splits = {"train": Split(y_tr, array=x_tr)}
    views: list[list[str]] = []
    for n, x in enumerate(x_out):
        variants = {f"out{n}": x}
        if flip:
            variants[f"out{n}_mirrored"] = x[:, :, ::-1]
        views.append(list(variants) if len(x) else [])
        for name, arr in variants.items():
            splits[name] = Split(np.zeros(len(arr), np.int32), array=np.ascontiguousarray(arr))
    data = Dataset(
        class_names=[str(c) for c in range(num_classes)],
        image_shape=tuple(x_tr.shape[1:]),
        splits=splits,
    )
    augment = None
    if flip:  # horizontal flips: half the images, fresh each epoch

        def augment(images, labels):
            import tensorflow as tf

            return tf.image.random_flip_left_right(images, seed=seed), labels

    train = make_pipeline(
        data, "train", batch_size=BATCH, shuffle=True, seed=seed, one_hot=False, augment=augment
    )
    sums = [np.zeros((len(x), num_classes)) for x in x_out]
    embs = [np.zeros((len(x), EMBEDDING_SIZE), np.float32) for x in x_out]

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch < epochs - SNAPSHOTS:
                return
            for n in range(len(x_out)):
                for view in views[n]:
                    batches = make_pipeline(
                        data, view, batch_size=512, shuffle=False, seed=seed, one_hot=False
                    )
                    p, e = feats.predict(batches, verbose=0)
                    sums[n] += p
                    embs[n] += e

    model.fit(train, epochs=epochs, verbose=0, shuffle=False, callbacks=[Snapshot()])
    out = []
    for p, e in zip(sums, embs, strict=True):
        total = p.sum(axis=1, keepdims=True)
        out.append((p / np.clip(total, 1e-12, None), e))
    return out


def out_of_fold(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    folds: int = DEFAULT_FOLDS,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    flip: bool = False,
    on_fold=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-sample probabilities and embeddings of every image by K-fold CV.

    Each held-out image's probabilities are the fold model's, blended
    (``NEIGHBOUR_WEIGHT``) with :func:`neighbour_labels` among the same held-out fold.

    Args:
        x: uint8 (N, H, W, C) images; y: int labels (N,).
        folds: K; each image is predicted by the model that did not train on it.
        flip: train with horizontal flips and average each prediction with its mirror.
        on_fold: called with the fold number (1-based) as each fold starts.

    Returns:
        ``(probs (N, K classes) float64, embeddings (N, EMBEDDING_SIZE) float32)``.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y, np.int64)
    counts = np.bincount(y, minlength=num_classes)
    present = counts[counts > 0]
    if len(present) < 2:
        raise HealthError(
            "a health check needs at least two classes with images in the train split"
        )
    folds = int(max(2, min(folds, present.min()))) if present.min() >= 2 else 2
    probs = np.zeros((len(y), num_classes), np.float64)
    emb = np.zeros((len(y), EMBEDDING_SIZE), np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class smaller than K: sklearn warns, splits anyway
        parts = list(splitter.split(np.zeros(len(y)), y))
    for k, (tr, te) in enumerate(parts):
        if on_fold is not None:
            on_fold(k + 1, folds)
        ((p, e),) = _fit_predict(x[tr], y[tr], [x[te]], num_classes, epochs, seed + k, flip)
        vote = neighbour_labels(e, y[te], num_classes)
        probs[te] = (1 - NEIGHBOUR_WEIGHT) * p + NEIGHBOUR_WEIGHT * vote
        emb[te] = e
    return probs, emb


def neighbour_labels(emb: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each image's share of each class among its nearest neighbours' given labels.

    Neighbours are by cosine distance of ``emb`` (one model's embeddings), the image
    itself left out; there are ``NEIGHBOURS`` of them, fewer where a class holds under
    twice that many images (a small set must not vote with other classes' images).

    Returns:
        ``(N, num_classes)`` rows summing to 1.
    """
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels, np.int64)
    n = len(labels)
    counts = np.bincount(labels, minlength=num_classes)
    k = int(min(NEIGHBOURS, n - 1, max(1, counts[counts > 0].min() // 2)))
    if k < 1:
        return np.eye(num_classes)[labels]
    _, idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(emb).kneighbors(emb)
    own = idx == np.arange(n)[:, None]
    own[~own.any(axis=1), -1] = True  # a tie put the image itself past k: drop the last
    others = idx[~own].reshape(n, k)
    vote = np.zeros((n, num_classes))
    np.add.at(vote, (np.repeat(np.arange(n), k), labels[others].ravel()), 1.0 / k)
    return vote


# --------------------------------------------------------------------------- issues


def label_issues(
    labels: np.ndarray, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cleanlab's verdict on out-of-sample probabilities.

    Returns:
        ``(ranking, flagged, quality)``: every index ranked by cleanlab's label
        quality score (lowest first), the boolean mask ``find_label_issues`` flags,
        and the quality scores (1 is a clean label).
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, np.int64)
    k = probs.shape[1]
    # cleanlab needs every class present in the labels; a missing class gets no issues.
    present = np.unique(labels)
    sub = probs[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    remap = np.full(k, -1, np.int64)
    remap[present] = np.arange(len(present))
    lab = remap[labels]
    quality = get_label_quality_scores(lab, sub, method="self_confidence")
    if len(present) >= 2 and len(labels) >= 2 * len(present):
        # n_jobs=1: cleanlab's process pool forks a process that holds TensorFlow's
        # threads, which can deadlock (a check hung for 10 minutes that way).
        flagged = find_label_issues(lab, sub, filter_by="prune_by_noise_rate", n_jobs=1)
    else:
        flagged = np.zeros(len(labels), bool)
    ranking = np.argsort(quality, kind="stable")
    return ranking, np.asarray(flagged, bool), quality


def outliers_and_duplicates(
    features: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
    """Outliers and near-duplicates from one k-nearest-neighbour graph of feature vectors.

    As cleanlab's Datalab does, one neighbour search serves both: outliers are
    scored by cleanlab's transform of the average distance to the k nearest
    neighbours (lower is more unusual) and flagged below the score of the
    ``OUTLIER_SHARE`` quantile; near-duplicates are neighbours whose cosine
    similarity is at least ``DUPLICATE_MIN_COSINE``. The search is Euclidean on
    unit vectors, which orders neighbours as cosine does: scikit-learn's cosine
    search measured 4.7 s for 10,000 vectors against 0.6 s (Datalab itself would
    need the Hugging Face ``datasets`` stack).

    Returns:
        ``(outlier_mask, outlier_score, duplicate_mask, duplicate_sets)``.
    """
    # cleanlab's own distance-to-score transform (exp(-t·d/scale)), as its Datalab and
    # OutOfDistribution use it; pinned in requirements.txt.
    from cleanlab.internal.outlier import transform_distances_to_scores
    from sklearn.neighbors import NearestNeighbors

    n = len(labels)
    if n < 12:
        return np.zeros(n, bool), np.ones(n), np.zeros(n, bool), [[] for _ in range(n)]
    feats = np.asarray(features, np.float32)
    unit = feats / np.clip(np.linalg.norm(feats, axis=1, keepdims=True), 1e-6, None)
    k = min(10, n - 1)
    dist, idx = NearestNeighbors(n_neighbors=k, metric="euclidean").fit(unit).kneighbors()
    cosine_dist = np.clip(dist.astype(np.float64) ** 2 / 2, 0.0, 2.0)  # |a-b|² = 2 - 2 cos
    avg = cosine_dist.mean(axis=1)
    scale = float(max(np.median(avg), 100 * np.finfo(np.float64).eps))
    score = np.asarray(transform_distances_to_scores(avg, t=1, scaling_factor=scale), float)
    outlier = score <= np.quantile(score, OUTLIER_SHARE)
    sets: list[list[int]] = []
    for i in range(n):
        close = [int(j) for d, j in zip(cosine_dist[i, :MAX_LEAK_PAIRS_PER_IMAGE],
                                        idx[i, :MAX_LEAK_PAIRS_PER_IMAGE], strict=True)
                 if j != i and 1 - d >= DUPLICATE_MIN_COSINE]  # fmt: skip
        sets.append(close)
    dup = np.array([bool(s) for s in sets])
    return outlier, score, dup, sets


def _phashes(images: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes of uint8 (N, H, W, C) images, as uint64."""
    import imagehash
    from PIL import Image

    out = np.empty(len(images), np.uint64)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        bits = imagehash.phash(pil).hash.reshape(-1)
        out[i] = np.packbits(bits).view(">u8")[0]
    return out


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


def _thumbnails(images: np.ndarray) -> np.ndarray:
    """Unit-length, mean-removed grey thumbnails (THUMB_SIDE²) for cosine similarity."""
    from lib.data.dataset import resize_batch

    grey = images if images.shape[-1] == 1 else images.mean(axis=-1, keepdims=True)
    grey = np.asarray(grey, np.uint8)
    small = resize_batch(grey, THUMB_SIDE, THUMB_SIDE).reshape(len(grey), -1).astype(np.float32)
    small -= small.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(small, axis=1, keepdims=True)
    return small / np.clip(norm, 1e-6, None)


@dataclass
class Leak:
    """An image of ``split`` that copies (exactly or nearly) ``other_split[other_index]``."""

    split: str
    index: int
    other_split: str
    other_index: int
    hash_distance: int
    cosine: float
    exact: bool
    difference: float = 0.0  # mean grey-level difference of the blurred images


def _blurred(images: np.ndarray) -> np.ndarray:
    """Grey, at most COPY_SIDE px, Gaussian-blurred (radius 1) float32 images."""
    from PIL import Image, ImageFilter

    h, w = images.shape[1:3]
    scale = min(1.0, COPY_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = []
    for img in images:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert("L")
        if scale < 1:
            pil = pil.resize(size, Image.BILINEAR)
        out.append(np.asarray(pil.filter(ImageFilter.GaussianBlur(1)), np.float32))
    return np.stack(out)


def find_leakage(splits: dict[str, np.ndarray]) -> list[Leak]:
    """Copies across splits: each image of a later split that a train/val image copies.

    Pairs (train, val), (train, test) and (val, test) are compared. Candidates
    have perceptual hashes within ``PHASH_MAX_DISTANCE`` bits and thumbnails with
    a cosine similarity of at least ``THUMB_MIN_COSINE``; a candidate is a copy
    when the blurred images differ by at most ``COPY_MAX_MAE`` grey levels.
    """
    names = [s for s in ("train", "val", "test") if s in splits and len(splits[s])]
    hashes = {s: _phashes(splits[s]) for s in names}
    thumbs = {s: _thumbnails(splits[s]) for s in names}
    leaks: list[Leak] = []
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            for start in range(0, len(splits[b]), 1024):
                hb = hashes[b][start : start + 1024]
                cos = thumbs[b][start : start + 1024] @ thumbs[a].T  # (chunk, len a)
                dist = _popcount(hb[:, None] ^ hashes[a][None, :])
                rows, cols = np.nonzero((dist <= PHASH_MAX_DISTANCE) & (cos >= THUMB_MIN_COSINE))
                if not len(rows):
                    continue
                blur_a = _blurred(splits[a][cols])
                blur_b = _blurred(splits[b][start + rows])
                mae = np.abs(blur_a - blur_b).reshape(len(rows), -1).mean(axis=1)
                per_image: dict[int, int] = {}
                for r, c, m in sorted(zip(rows, cols, mae, strict=True), key=lambda t: t[2]):
                    if m > COPY_MAX_MAE or per_image.get(r, 0) >= MAX_LEAK_PAIRS_PER_IMAGE:
                        continue
                    per_image[r] = per_image.get(r, 0) + 1
                    exact = bool(np.array_equal(splits[a][c], splits[b][start + r]))
                    leaks.append(
                        Leak(a, int(c), b, int(start + r), int(dist[r, c]),
                             float(cos[r, c]), exact, float(m))
                    )  # fmt: skip
    return leaks


# --------------------------------------------------------------------------- the check


def check_arrays(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    *,
    refs: dict[str, list[str]] | None = None,
    folds: int = DEFAULT_FOLDS,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    on_phase=None,
) -> HealthReport:
    """Run the whole check on in-memory splits ``{name: (images uint8, labels)}``."""
    say = on_phase or (lambda text: None)
    seconds: dict[str, float] = {}
    x, y = splits["train"]
    if len(y) < 20:
        raise HealthError(
            f"the train split holds {len(y)} images; a health check needs at least 20"
        )
    k = len(class_names)
    t = time.perf_counter()
    say("cross-validating the labels")
    probs, emb = out_of_fold(
        x, y, k, folds=folds, epochs=epochs, seed=seed,
        on_fold=lambda i, n: say(f"cross-validating the labels: fold {i} of {n}"),
    )  # fmt: skip
    seconds["cross-validation"] = time.perf_counter() - t

    t = time.perf_counter()
    say("scoring label issues")
    ranking, flagged, quality = label_issues(y, probs)
    seconds["label issues"] = time.perf_counter() - t

    t = time.perf_counter()
    say("finding outliers and near-duplicates")
    out_mask, out_score, dup_mask, dup_sets = outliers_and_duplicates(emb, y)
    seconds["outliers and duplicates"] = time.perf_counter() - t

    t = time.perf_counter()
    say("looking for copies across splits")
    leaks = find_leakage({name: arr for name, (arr, _) in splits.items()})
    seconds["leakage"] = time.perf_counter() - t

    def ref_of(split: str, i: int) -> str:
        return refs[split][i] if refs and split in refs else ""

    queue: list[QueueItem] = []
    suggested = probs.argmax(axis=1)
    for i in ranking[flagged[ranking]]:
        queue.append(
            QueueItem("label", "train", int(i), int(y[i]), int(suggested[i]),
                      float(1 - quality[i]), ref_of("train", int(i)))
        )  # fmt: skip
    for leak in sorted(leaks, key=lambda lk: lk.difference):
        given = int(splits[leak.other_split][1][leak.other_index])
        queue.append(
            QueueItem("leakage", leak.split, leak.index,
                      int(splits[leak.split][1][leak.index]), given,
                      1.0 if leak.exact else max(0.0, 1 - leak.difference / 255),
                      ref_of(leak.split, leak.index), f"{leak.other_split}:{leak.other_index}")
        )  # fmt: skip
    for i in np.flatnonzero(dup_mask):
        others = [j for j in dup_sets[i] if j != i][:MAX_LEAK_PAIRS_PER_IMAGE]
        if others and min(others) < i:  # one entry per group: its first member is kept
            queue.append(
                QueueItem("near_duplicate", "train", int(i), int(y[i]), int(y[i]), 0.9,
                          ref_of("train", int(i)), ",".join(f"train:{j}" for j in others))
            )  # fmt: skip
    order = np.argsort(out_score[out_mask])
    for i in np.flatnonzero(out_mask)[order]:
        queue.append(
            QueueItem("outlier", "train", int(i), int(y[i]), int(y[i]),
                      float(1 - out_score[i]), ref_of("train", int(i)))
        )  # fmt: skip
    counts = {issue: sum(1 for q in queue if q.issue == issue) for issue in ISSUE_TYPES}
    return HealthReport(
        class_names=list(class_names),
        counts=counts,
        queue=queue,
        sizes={name: len(lab) for name, (_, lab) in splits.items()},
        seconds=seconds,
        settings={"folds": folds, "epochs": epochs, "seed": seed},
        label_ranking=ranking,
    )


# --------------------------------------------------------------------------- the report on disk


def write_report(folder: Path, report: HealthReport, extra: dict[str, Any] | None = None) -> None:
    """Write report.json and queue.csv (atomically) into ``folder``."""
    from lib.runstore import atomic_write_bytes, atomic_write_json

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(QUEUE_FIELDS)
    for q in report.queue:
        writer.writerow(
            (q.key, q.issue, q.split, q.index, q.ref, report.class_names[q.given],
             report.class_names[q.suggested], f"{q.score:.4f}", q.other)
        )  # fmt: skip
    atomic_write_bytes(folder / QUEUE_FILE, buf.getvalue().encode("utf-8"))
    data = {
        "class_names": report.class_names,
        "counts": report.counts,
        "sizes": report.sizes,
        "seconds": {k: round(v, 2) for k, v in report.seconds.items()},
        "settings": report.settings,
        "finished": time.time(),
        **(extra or {}),
    }
    atomic_write_json(folder / REPORT_FILE, data)


def read_report(folder: Path) -> dict[str, Any]:
    """report.json of a finished check; {} when there is none (yet)."""
    try:
        return json.loads((Path(folder) / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_queue(folder: Path) -> list[dict[str, Any]]:
    """The review queue rows of queue.csv, in order (class names as text)."""
    try:
        text = (Path(folder) / QUEUE_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        row["index"] = int(row["index"])
        row["score"] = float(row["score"])
        rows.append(row)
    return rows


DECISIONS = ("relabel", "exclude", "keep")


def read_decisions(folder: Path) -> dict[str, dict[str, str]]:
    """The reviewer's decisions: ``{"train:12": {"action": "relabel", "label": "Shirt"}}``."""
    try:
        data = json.loads((Path(folder) / DECISIONS_FILE).read_text(encoding="utf-8"))
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}
    except (OSError, ValueError, TypeError):
        return {}


def decide(folder: Path, key: str, action: str, label: str = "") -> dict[str, dict[str, str]]:
    """Record one decision (the last one for an image wins) and return them all.

    Raises:
        HealthError: an unknown action, or a relabel without a class name.
    """
    from lib.runstore import atomic_write_json

    if action not in DECISIONS:
        raise HealthError(f"unknown decision {action!r}; choose one of {', '.join(DECISIONS)}")
    if action == "relabel" and not label:
        raise HealthError("choose the class to relabel the image to")
    decisions = read_decisions(folder)
    decisions[key] = {"action": action, "label": label}
    atomic_write_json(Path(folder) / DECISIONS_FILE, decisions)
    return decisions


def write_cleaned(folder: Path, data) -> None:
    """Remember the dataset version the decisions were saved as (a DataConfig)."""
    from lib.runstore import atomic_write_json

    atomic_write_json(Path(folder) / CLEANED_FILE, json.loads(data.to_json()))


def read_cleaned(folder: Path):
    """The DataConfig of the cleaned version, or None before one is saved."""
    from lib.config import DataConfig

    try:
        return DataConfig.from_dict(
            json.loads((Path(folder) / CLEANED_FILE).read_text(encoding="utf-8"))
        )
    except (OSError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------- the background job


def checks_root() -> Path:
    from lib.workspace import area

    return area("health")


def check_dir(check_id: str) -> Path:
    """The folder of ``check_id``; refuses ids that would leave the health folder."""
    from lib.workspace import safe_join

    return safe_join(checks_root(), check_id)


def list_checks() -> list[Path]:
    """Check folders, newest first."""
    root = checks_root()
    dirs = [p for p in root.iterdir() if p.is_dir() and (p / REQUEST_FILE).is_file()]
    return sorted(dirs, key=lambda p: p.name, reverse=True)


def resolve_target(target: str):
    """``(DataConfig, run_id or "")`` for a run id or a dataset name (a DataConfig source).

    Raises:
        HealthError: neither a run of the workspace nor a known dataset source.
    """
    from lib import runstore
    from lib.config import DATA_SOURCES, DataConfig

    try:
        path = runstore.run_dir(target)
    except KestrelError:
        path = None
    if path is not None and (path / runstore.CONFIG_FILE).is_file():
        return runstore.read_config(path).data, target
    if target in DATA_SOURCES and target not in ("folder", "upload"):
        return DataConfig(source=target), ""
    folder = Path(target).expanduser()
    if folder.is_dir():
        return DataConfig(source="folder", path=str(folder.resolve())), ""
    raise HealthError(
        f"{target!r} is neither a run id of this workspace nor a dataset; give a run id "
        f"(python -m lib runs lists them), a built-in dataset "
        f"({', '.join(s for s in DATA_SOURCES if s not in ('folder', 'upload'))}) "
        "or a folder with one sub-folder per class"
    )


def create_check(data, *, run_id: str = "", folds: int = DEFAULT_FOLDS,
                 epochs: int = DEFAULT_EPOCHS) -> Path:  # fmt: skip
    """A new queued check folder for the dataset ``data`` (a DataConfig)."""
    from lib import runstore
    from lib.workspace import new_id

    check_id = time.strftime("%Y%m%d-%H%M%S-") + new_id()
    path = check_dir(check_id)
    path.mkdir(parents=True)
    runstore.atomic_write_json(
        path / REQUEST_FILE,
        {"data": json.loads(data.to_json()), "run_id": run_id, "folds": folds, "epochs": epochs},
    )
    runstore.write_status(path, runstore.RunStatus(created=time.time()))
    return path


def read_request(path: Path) -> dict[str, Any]:
    from lib.config import DataConfig

    raw = json.loads((Path(path) / REQUEST_FILE).read_text(encoding="utf-8"))
    raw["data"] = DataConfig.from_dict(raw["data"])
    return raw


def start_check(data, *, run_id: str = "", folds: int = DEFAULT_FOLDS,
                epochs: int = DEFAULT_EPOCHS) -> str:  # fmt: skip
    """Create a check and start its worker process; returns the check id."""
    from lib import jobs

    path = create_check(data, run_id=run_id, folds=folds, epochs=epochs)
    jobs.start_side_job(path, ["-m", "lib.health", str(path)])
    return path.name


def check_status(path: Path):
    """The check's status; a "running" check whose process is gone reads as failed."""
    from lib import jobs

    return jobs.side_job_status(path, "the check")


def load_splits(data) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], dict]:
    """The dataset's splits as arrays, its class names, and file refs of streamed splits."""
    from lib.data import load_dataset

    ds = load_dataset(data)
    splits, refs = {}, {}
    for name, split in ds.splits.items():
        if len(split) == 0:
            continue
        splits[name] = (split.images(), np.asarray(split.labels, np.int64))
        if split.refs is not None:
            refs[name] = list(split.refs)
    if "train" not in splits:
        raise HealthError("the dataset has no train images to check")
    return splits, list(ds.class_names), refs


def run_check(path: Path) -> int:
    """The worker: run the check of ``path`` and record the outcome; an exit code."""
    from lib import jobs

    path = Path(path)

    def work(phase):
        request = read_request(path)
        phase("loading data")
        splits, names, refs = load_splits(request["data"])
        report = check_arrays(
            splits, names, refs=refs, folds=int(request.get("folds", DEFAULT_FOLDS)),
            epochs=int(request.get("epochs", DEFAULT_EPOCHS)), on_phase=phase,
        )  # fmt: skip
        write_report(path, report, {"run_id": request.get("run_id", "")})

    state, error, _ = jobs.run_side_job(path, work)
    print(f"health check {path.name}: {state}" + (f" — {error}" if error else ""), flush=True)
    return 0 if state == "completed" else 1


def review_for_run(run_id: str) -> Path:
    """The folder that holds decisions made outside a check (the Evaluate galleries).

    One per run: a completed "check" with an empty queue whose decisions the Data
    health page saves as a cleaned version like any other check's.
    """
    from lib import runstore
    from lib.config import DataConfig

    for path in list_checks():
        try:
            request = json.loads((path / REQUEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if request.get("kind") == "review" and request.get("run_id") == run_id:
            return path
    data: DataConfig = runstore.read_config(runstore.run_dir(run_id)).data
    path = create_check(data, run_id=run_id, folds=0, epochs=0)
    request = json.loads((path / REQUEST_FILE).read_text(encoding="utf-8"))
    runstore.atomic_write_json(path / REQUEST_FILE, {**request, "kind": "review"})
    from lib.evaluation import load_predictions

    names = list(load_predictions(runstore.run_dir(run_id)).class_names)
    report = HealthReport(class_names=names, counts=dict.fromkeys(ISSUE_TYPES, 0), queue=[])
    write_report(path, report, {"run_id": run_id, "kind": "review"})
    runstore.update_status(path, state="completed", started=time.time(), ended=time.time())
    return path


def latest_phase(path: Path) -> str:
    """The last phase the worker reported ("" before the first)."""
    from lib.progress import PhaseEvent, read_events

    phases = [e.phase for e in read_events(path) if isinstance(e, PhaseEvent)]
    return phases[-1] if phases else ""


if __name__ == "__main__":
    sys.exit(run_check(Path(sys.argv[1])))
