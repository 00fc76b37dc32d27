"""Run diff: which test images two runs disagree on, and how their confusion matrices differ.

Two runs are compared on the images both were evaluated on. Images are matched
by content (a hash of their pixels after the run's own preprocessing), so a run
on a cleaned dataset version, whose split holds the same images in another
order or a few fewer, is still compared image by image; runs whose evaluation
splits share no image are refused with a message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.errors import KestrelError


class RunDiffError(KestrelError):
    """Two runs that cannot be compared image by image; the message says why."""


@dataclass
class RunDiff:
    """The comparison of run A (before) and run B (after) on their common images."""

    class_names: tuple[str, ...]
    common: int  # images both runs were evaluated on
    only_a: int  # images only A's split holds
    only_b: int
    y_true: np.ndarray  # (common,) labels (B's, where a relabel changed one)
    pred_a: np.ndarray
    pred_b: np.ndarray
    pos_a: np.ndarray  # positions of the common images in A's predictions
    pos_b: np.ndarray
    label_changed: np.ndarray  # bool (common,): the label differs between the two splits
    confusion_a: np.ndarray
    confusion_b: np.ndarray

    @property
    def right_to_wrong(self) -> np.ndarray:
        """Indices (into the common images) A got right and B gets wrong."""
        return np.flatnonzero((self.pred_a == self.y_true) & (self.pred_b != self.y_true))

    @property
    def wrong_to_right(self) -> np.ndarray:
        return np.flatnonzero((self.pred_a != self.y_true) & (self.pred_b == self.y_true))

    @property
    def confusion_delta(self) -> np.ndarray:
        """B's confusion counts minus A's (rows true, columns predicted)."""
        return self.confusion_b - self.confusion_a

    @property
    def accuracy_a(self) -> float:
        return float(np.mean(self.pred_a == self.y_true)) if self.common else 0.0

    @property
    def accuracy_b(self) -> float:
        return float(np.mean(self.pred_b == self.y_true)) if self.common else 0.0


def image_keys(images: np.ndarray) -> list[str]:
    """A content hash per uint8 image (identical pixels, identical key)."""
    return [hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).hexdigest()
            for im in images]  # fmt: skip


def diff_predictions(a, b, keys_a: list[str], keys_b: list[str]) -> RunDiff:
    """Compare two lib.evaluation.Predictions whose images have the given content keys."""
    if tuple(a.class_names) != tuple(b.class_names):
        raise RunDiffError(
            "the two runs have different classes ("
            f"{', '.join(a.class_names)} vs {', '.join(b.class_names)}); "
            "compare runs of the same dataset"
        )
    first_b: dict[str, int] = {}
    for i, k in enumerate(keys_b):
        first_b.setdefault(k, i)
    pos_a, pos_b, seen = [], [], set()
    for i, k in enumerate(keys_a):
        j = first_b.get(k)
        if j is not None and k not in seen:
            seen.add(k)
            pos_a.append(i)
            pos_b.append(j)
    if not pos_a:
        raise RunDiffError(
            "the two runs were evaluated on different images (no test image in common); "
            "compare runs whose test splits overlap"
        )
    pos_a, pos_b = np.asarray(pos_a), np.asarray(pos_b)
    ya, yb = a.y_true[pos_a], b.y_true[pos_b]
    y = yb
    pa, pb = a.y_pred[pos_a], b.y_pred[pos_b]
    k = len(a.class_names)
    from lib.evaluation import confusion_counts

    return RunDiff(
        class_names=tuple(a.class_names), common=len(pos_a),
        only_a=len(keys_a) - len(pos_a), only_b=len(keys_b) - len(pos_b),
        y_true=y, pred_a=pa, pred_b=pb, pos_a=pos_a, pos_b=pos_b,
        label_changed=ya != yb,
        confusion_a=confusion_counts(y, pa, k), confusion_b=confusion_counts(y, pb, k),
    )  # fmt: skip


def diff_runs(run_a: str, run_b: str) -> RunDiff:
    """Load both runs' predictions and images and compare them.

    Raises:
        RunDiffError: different classes or no common test image.
        lib.evaluation.PredictionsError: a run without predictions.
    """
    from lib import runstore
    from lib.evaluation import load_images, load_predictions

    out = []
    for run_id in (run_a, run_b):
        path = Path(runstore.run_dir(run_id))
        preds = load_predictions(path)
        images = load_images(path, preds, np.arange(len(preds)))
        out.append((preds, image_keys(images)))
    (a, ka), (b, kb) = out
    return diff_predictions(a, b, ka, kb)


def confusion_delta_figure(diff: RunDiff):
    """A Plotly heatmap of B's confusion counts minus A's (blue: more, red: fewer)."""
    import plotly.graph_objects as go

    from lib.text import plotly_text

    names = [plotly_text(n) for n in diff.class_names]
    delta = diff.confusion_delta
    bound = max(1, int(np.abs(delta).max()))
    fig = go.Figure(
        go.Heatmap(
            z=delta, x=names, y=names, zmin=-bound, zmax=bound, colorscale="RdBu",
            text=[[f"{v:+d}" if v else "0" for v in row] for row in delta],
            texttemplate="%{text}",
            hovertemplate="true %{y}<br>predicted %{x}<br>change %{z:+d}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
        # Class names such as "0".."9" would make numeric axes that label every other class.
        xaxis_type="category", yaxis_type="category",
        height=max(300, 40 * len(names) + 120), margin=dict(l=10, r=10, t=30, b=10),
    )  # fmt: skip
    return fig
