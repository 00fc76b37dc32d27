"""Run diff: flips between two runs on the same images, matched by content."""

import numpy as np
import pytest

from lib import run_diff
from lib.evaluation import Predictions


def _preds(y_true, y_pred, names=("a", "b", "c")):
    k = len(names)
    probs = np.full((len(y_pred), k), 0.1, np.float32)
    probs[np.arange(len(y_pred)), y_pred] = 0.8
    n = len(y_true)
    return Predictions(
        y_true=np.asarray(y_true), probs=probs, indices=np.arange(n), split="test",
        refs=np.array([""] * n), class_names=tuple(names),
    )  # fmt: skip


def test_flips_and_confusion_delta_on_reordered_images():
    images = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 1), dtype=np.uint8)
    keys = run_diff.image_keys(images)
    a = _preds([0, 1, 2, 0, 1, 2], [0, 1, 1, 2, 1, 2])  # wrong at 2 and 3
    order = [5, 4, 3, 2, 1, 0]  # run B saw the same images in reverse order, minus none
    b = _preds([2, 1, 0, 2, 1, 0], [2, 0, 0, 2, 1, 0])  # wrong at B-position 1 = A's 4
    diff = run_diff.diff_predictions(a, b, keys, [keys[i] for i in order])
    assert diff.common == 6 and diff.only_a == 0 and diff.only_b == 0
    assert diff.pos_a[diff.wrong_to_right].tolist() == [2, 3]
    assert diff.pos_a[diff.right_to_wrong].tolist() == [4]
    assert diff.accuracy_a == pytest.approx(4 / 6) and diff.accuracy_b == pytest.approx(5 / 6)
    delta = diff.confusion_delta
    assert delta.sum() == 0
    assert delta[1, 0] == 1 and delta[1, 1] == -1  # the image of class b now read as a
    assert delta[2, 1] == -1 and delta[2, 2] == 1
    assert run_diff.confusion_delta_figure(diff).data[0].z.shape == (3, 3)


def test_only_common_images_count_and_relabels_are_flagged():
    images = np.random.default_rng(1).integers(0, 255, (5, 4, 4, 3), dtype=np.uint8)
    keys = run_diff.image_keys(images)
    a = _preds([0, 1, 2, 0, 1], [0, 1, 2, 0, 1])
    b = _preds([0, 2, 2], [0, 2, 2])  # B lost two images and relabelled one
    diff = run_diff.diff_predictions(a, b, keys, keys[:3])
    assert (diff.common, diff.only_a, diff.only_b) == (3, 2, 0)
    assert diff.label_changed.tolist() == [False, True, False]
    assert diff.y_true.tolist() == [0, 2, 2]  # scored against the newer labels


def test_refusals_name_the_problem():
    images = np.zeros((2, 2, 2, 1), np.uint8)
    images[1] += 1
    keys = run_diff.image_keys(images)
    a = _preds([0, 1], [0, 1])
    with pytest.raises(run_diff.RunDiffError, match="no test image in common"):
        run_diff.diff_predictions(a, a, keys[:1], keys[1:])
    other = _preds([0, 1], [0, 1], names=("x", "y", "z"))
    with pytest.raises(run_diff.RunDiffError, match="different classes"):
        run_diff.diff_predictions(a, other, keys, keys)


def test_the_delta_figure_labels_every_class_even_when_the_names_are_numbers():
    names = tuple(str(i) for i in range(10))
    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1)
    keys = run_diff.image_keys(images)
    a = _preds(list(range(10)), list(range(10)), names=names)
    diff = run_diff.diff_predictions(a, a, keys, keys)
    layout = run_diff.confusion_delta_figure(diff).layout
    # A numeric axis would label 0, 2, 4, …: every class needs its own row and column label.
    assert layout.xaxis.type == "category" and layout.yaxis.type == "category"
