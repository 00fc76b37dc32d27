"""lib.evaluation: metrics against scikit-learn and hand-computed answers, stored predictions."""

import numpy as np
import pytest
from sklearn import metrics as skm
from tiny_runs import make_finished_run

from lib import evaluation as ev
from lib import runstore
from lib.config import RunConfig, TrainConfig
from lib.data import Split
from lib.plots import evaluation as plots

# A hand-made case: 8 images, 4 classes. Rows are probabilities; argmax per row is
#   y_pred = [0, 1, 1, 1, 2, 0, 3, 2]  against  y_true = [0, 0, 1, 1, 2, 2, 3, 3]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 3, 3])
PROBS = np.array(
    [
        [0.70, 0.10, 0.10, 0.10],
        [0.30, 0.50, 0.10, 0.10],
        [0.10, 0.80, 0.05, 0.05],
        [0.20, 0.40, 0.30, 0.10],
        [0.05, 0.05, 0.85, 0.05],
        [0.60, 0.10, 0.20, 0.10],
        [0.10, 0.10, 0.10, 0.70],
        [0.10, 0.20, 0.40, 0.30],
    ]
)
# Counts by hand: row = true, column = predicted.
CM = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1]])


def _preds(y_true, probs, split="test") -> ev.Predictions:
    n, k = probs.shape
    return ev.Predictions(
        y_true=np.asarray(y_true),
        probs=np.asarray(probs, np.float32),
        indices=np.arange(n) + 100,
        split=split,
        refs=np.array([""] * n),
        class_names=tuple(f"c{i}" for i in range(k)),
    )


def _random_case(seed: int, n: int = 300, k: int = 7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5  # better than chance, still many mistakes
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def test_hand_made_case_known_answers():
    preds = _preds(Y_TRUE, PROBS)
    np.testing.assert_array_equal(preds.y_pred, [0, 1, 1, 1, 2, 0, 3, 2])
    assert ev.accuracy(Y_TRUE, preds.y_pred) == pytest.approx(5 / 8)
    np.testing.assert_array_equal(ev.confusion_counts(Y_TRUE, preds.y_pred, 4), CM)
    # True class among the top 2: rows 0-4 and 6 yes; row 5 (true 2: 0.2 is 2nd) yes;
    # row 7 (true 3: 0.3 is 2nd) yes -> all 8.
    assert ev.top_k_accuracy(Y_TRUE, PROBS, 2) == pytest.approx(1.0)
    assert ev.top_k_accuracy(Y_TRUE, PROBS, 1) == pytest.approx(5 / 8)
    expected_loss = -np.mean(np.log([0.7, 0.3, 0.8, 0.4, 0.85, 0.2, 0.7, 0.3]))
    assert ev.cross_entropy(Y_TRUE, PROBS) == pytest.approx(expected_loss, rel=1e-6)
    # Class 0: precision 1/2, recall 1/2; class 1: precision 2/3, recall 1.
    table = ev.per_class_metrics(Y_TRUE, preds.y_pred, list(preds.class_names)).set_index("class")
    assert table.loc["c0", "precision"] == pytest.approx(0.5)
    assert table.loc["c1", "precision"] == pytest.approx(2 / 3)
    assert table.loc["c1", "recall"] == pytest.approx(1.0)
    assert table["support"].tolist() == [2, 2, 2, 2]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda y, p: ev.accuracy(y, p.argmax(1)), lambda y, p: skm.accuracy_score(y, p.argmax(1))),
        (
            lambda y, p: ev.top_k_accuracy(y, p, 3),
            lambda y, p: skm.top_k_accuracy_score(y, p, k=3, labels=range(p.shape[1])),
        ),
        (
            lambda y, p: ev.summary(_preds(y, p))["macro_f1"],
            lambda y, p: skm.f1_score(y, p.argmax(1), average="macro"),
        ),
        (
            lambda y, p: ev.summary(_preds(y, p))["weighted_f1"],
            lambda y, p: skm.f1_score(y, p.argmax(1), average="weighted"),
        ),
        (
            lambda y, p: ev.cross_entropy(y, p),
            lambda y, p: skm.log_loss(y, p, labels=range(p.shape[1])),
        ),
    ],
    ids=["accuracy", "top3", "macro_f1", "weighted_f1", "loss"],
)
def test_metric_equals_scikit_learn(seed, ours, theirs):
    for y, p in (_random_case(seed), (Y_TRUE, PROBS)):
        assert ours(y, p) == pytest.approx(theirs(y, p), rel=1e-5, abs=1e-6)


def test_confusion_and_per_class_equal_scikit_learn():
    y, p = _random_case(3)
    y_pred = p.argmax(1)
    cm = ev.confusion_counts(y, y_pred, 7)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, y_pred, labels=range(7)))
    assert cm.sum() == len(y)  # every test image is in exactly one cell
    norm = ev.normalise_rows(cm)
    np.testing.assert_allclose(
        norm, skm.confusion_matrix(y, y_pred, labels=range(7), normalize="true")
    )
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, y_pred, labels=range(7))
    table = ev.per_class_metrics(y, y_pred, [f"c{i}" for i in range(7)])
    by_class = table.set_index("class").loc[[f"c{i}" for i in range(7)]]
    np.testing.assert_allclose(by_class["precision"], prec)
    np.testing.assert_allclose(by_class["recall"], rec)
    np.testing.assert_allclose(by_class["f1"], f1)
    np.testing.assert_array_equal(by_class["support"], sup)
    assert table["f1"].is_monotonic_increasing  # worst classes first


def test_normalise_rows_keeps_an_empty_row_zero():
    cm = np.array([[2, 2], [0, 0]])
    np.testing.assert_allclose(ev.normalise_rows(cm), [[0.5, 0.5], [0.0, 0.0]])


@pytest.mark.parametrize(
    ("k", "expected"), [(2, None), (3, None), (4, 3), (5, 3), (6, 5), (100, 5)]
)
def test_default_top_k(k, expected):
    assert ev.default_top_k(k) == expected


def test_gallery_cell_holds_exactly_the_images_of_that_cell():
    y, p = _random_case(4, n=200, k=5)
    preds = _preds(y, p)
    seen = []
    for i in range(5):
        for j in range(5):
            pos = ev.cell_positions(preds, i, j)
            expected = {n for n in range(200) if y[n] == i and p[n].argmax() == j}
            assert set(pos.tolist()) == expected and len(pos) == len(expected)
            conf = p[pos].max(axis=1)
            assert np.all(np.diff(conf) <= 0)  # most confident first
            seen.extend(pos.tolist())
    assert sorted(seen) == list(range(200))
    # The hand-made case: true 2 predicted 0 is image 5 only.
    assert ev.cell_positions(_preds(Y_TRUE, PROBS), 2, 0).tolist() == [5]


def test_most_confused_and_top_losses():
    preds = _preds(Y_TRUE, PROBS)
    pairs = ev.most_confused(CM, list(preds.class_names))
    assert [(p["i"], p["j"], p["count"]) for p in pairs] == [(0, 1, 1), (2, 0, 1), (3, 2, 1)]
    assert pairs[0]["share"] == pytest.approx(0.5)
    losses = ev.top_losses(preds, n=10)
    # Wrong: images 1 (p_true .3), 5 (.2), 7 (.3); highest loss = lowest p_true first.
    assert losses.tolist() == [5, 1, 7]
    assert ev.most_confused(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_ece_on_a_hand_computed_case():
    # Confidences .85 (right), .85 (wrong), .55 (right), .25 (wrong); 4 classes.
    probs = np.array(
        [
            [0.85, 0.05, 0.05, 0.05],
            [0.85, 0.05, 0.05, 0.05],
            [0.15, 0.55, 0.15, 0.15],
            [0.25, 0.25, 0.25, 0.25],  # a tie predicts class 0
        ]
    )
    y_true = np.array([0, 1, 1, 1])
    rel = ev.reliability(y_true, probs, bins=10)
    # bin (.8,.9]: 2 images, accuracy .5, confidence .85 -> 2/4 * .35
    # bin (.5,.6]: 1 image, accuracy 1, confidence .55  -> 1/4 * .45
    # bin (.2,.3]: 1 image, accuracy 0, confidence .25  -> 1/4 * .25
    assert rel.ece == pytest.approx(0.5 * 0.35 + 0.25 * 0.45 + 0.25 * 0.25)
    assert rel.counts.tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 2, 0]
    assert rel.accuracy[8] == pytest.approx(0.5) and np.isnan(rel.accuracy[0])
    # Right-inclusive bins: a confidence of exactly .5 belongs to (.4, .5].
    assert ev.reliability(np.array([0]), np.array([[0.5, 0.5]]), 10).counts[4] == 1
    # Perfectly calibrated by construction: ECE 0.
    assert ev.reliability(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]])).ece == 0


def test_roc_and_pr_equal_scikit_learn():
    y, p = _random_case(5)
    roc = ev.roc_curve_ovr(y, p, 2)
    pr = ev.pr_curve_ovr(y, p, 2)
    assert roc.area == pytest.approx(skm.roc_auc_score(y == 2, p[:, 2]))
    assert pr.area == pytest.approx(skm.average_precision_score(y == 2, p[:, 2]))
    assert roc.positives == pr.positives == int((y == 2).sum())
    assert roc.x[0] == 0 and roc.y[-1] == 1
    absent = np.zeros(len(y), int)
    assert ev.roc_curve_ovr(absent, p, 3) is None and ev.pr_curve_ovr(absent, p, 3) is None


def test_tables_for_download():
    preds = _preds(Y_TRUE, PROBS)
    table = ev.predictions_table(preds, list(preds.class_names))
    assert len(table) == 8 and table["correct"].sum() == 5
    assert table["index"].tolist() == list(range(100, 108))
    csv = ev.confusion_csv(CM, list(preds.class_names)).splitlines()
    assert csv[0].endswith("c0,c1,c2,c3") and csv[3] == "c2,1,0,1,0"


def test_confusion_figure_cells_click_back_to_their_cell():
    fig = plots.confusion_matrix_figure(CM, ["a", "b", "c", "d"], selected=(3, 2))
    heat, tiles = fig.data
    np.testing.assert_array_equal(heat.z, CM)
    assert len(tiles.x) == 16 and tiles.type == "scatter"
    for point in tiles.customdata:
        i, j = plots.cell_from_point({"customdata": list(point)})
        assert int(point[2]) == CM[i, j]
        assert (tiles.x[4 * i + j], tiles.y[4 * i + j]) == (j, i)  # marker sits on its tile
    assert plots.cell_from_point({"x": 2, "y": 3}) == (3, 2)
    (outline,) = fig.layout.shapes  # the selected tile is outlined
    assert (outline.x0, outline.x1, outline.y0, outline.y1) == (1.5, 2.5, 2.5, 3.5)
    shares = plots.confusion_matrix_figure(CM, ["a", "b", "c", "d"], normalised=True).data[0].z
    np.testing.assert_allclose(np.asarray(shares).sum(axis=1), 1)
    many = plots.confusion_matrix_figure(np.eye(100, dtype=int), [f"c{i}" for i in range(100)])
    assert many.data[1].type == "scattergl" and many.layout.height >= 100 * 10


def test_tta_flip_averages_with_mirrored_images():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    x = np.random.default_rng(0).integers(0, 256, (5, 6, 6, 1), dtype=np.uint8)
    split = Split(np.zeros(5, np.int32), array=x)
    plain = ev.predict_probs(model, split, batch_size=4, tta_flip=False)
    tta = ev.predict_probs(model, split, batch_size=4, tta_flip=True)
    flipped = ev.predict_probs(
        model, Split(np.zeros(5), array=x[:, :, ::-1]), batch_size=4, tta_flip=False
    )
    np.testing.assert_allclose(plain.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(tta, (plain + flipped) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain, flipped)  # the mirror really changed the input


def test_compute_and_load_predictions_of_a_real_tiny_run():
    run_dir = make_finished_run(epochs=2)
    path = ev.compute_predictions(run_dir)
    assert path == run_dir / runstore.PREDICTIONS_FILE
    with np.load(path) as raw:  # the contract's fields and dtypes
        assert raw["y_true"].dtype == np.int32 and raw["probs"].dtype == np.float32
        assert raw["indices"].dtype == np.int64 and str(raw["split"]) == "test"
        assert raw["refs"].tolist() == [""] * len(raw["y_true"])
    preds = ev.load_predictions(run_dir)
    from lib.data import load_dataset

    test = load_dataset(runstore.read_config(run_dir).data).splits["test"]
    np.testing.assert_array_equal(preds.y_true, test.labels)
    np.testing.assert_allclose(preds.probs.sum(axis=1), 1, rtol=1e-5)
    assert preds.class_names == tuple(str(d) for d in range(10))
    # The stored accuracy is the model's own test accuracy (trainer's metrics.json).
    measured = ev.accuracy(preds.y_true, preds.y_pred)
    assert measured == pytest.approx(runstore.read_metrics(run_dir)["test_accuracy"], abs=1e-6)
    cm = ev.confusion_counts(preds.y_true, preds.y_pred, preds.num_classes)
    assert cm.sum() == len(test)
    off_diagonal = cm - np.diag(np.diag(cm))
    i, j = divmod(int(np.argmax(off_diagonal)), 10)  # the most confused cell
    pos = ev.cell_positions(preds, i, j)
    images = ev.load_images(run_dir, preds, pos)
    np.testing.assert_array_equal(images, test.images(preds.indices[pos]))
    summary = ev.run_summary(run_dir)
    assert summary["dataset"] == "digits" and summary["epochs"] == 2
    assert summary["parameters"] == 8 * 8 * 16 + 16 + 16 * 10 + 10
    assert summary["precision"] is None  # the tiny run's metrics do not say: "—"
    metrics = runstore.read_metrics(run_dir)
    for policy, words in (("mixed_bfloat16", "bfloat16 (mixed)"), ("float32", "float32")):
        runstore.atomic_write_json(
            run_dir / runstore.METRICS_FILE, {**metrics, "precision": policy}
        )
        assert ev.run_summary(run_dir)["precision"] == words
    runstore.atomic_write_json(run_dir / runstore.METRICS_FILE, metrics)
    assert ev.completed_runs() == [run_dir]
    assert len(ev.load_history(run_dir)) == 2


def test_missing_or_broken_files_are_user_errors():
    run_dir = runstore.create_run(RunConfig(train=TrainConfig(epochs=2)))
    with pytest.raises(ev.PredictionsError, match=r"no model\.keras"):
        ev.compute_predictions(run_dir)
    with pytest.raises(ev.PredictionsError, match="compute predictions first"):
        ev.load_predictions(run_dir)
    (run_dir / runstore.PREDICTIONS_FILE).write_bytes(b"not a zip")
    with pytest.raises(ev.PredictionsError, match="unreadable"):
        ev.load_predictions(run_dir)
    assert ev.completed_runs() == []  # queued, no model: nothing to evaluate
