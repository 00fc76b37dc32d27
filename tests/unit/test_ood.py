"""Unknown detection: scores, the fitted threshold, storage, the card, and the Predictor's answer."""

from pathlib import Path

import keras
import numpy as np
import pytest

from lib import ood, predict, registry

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
K, D = 3, 8


def clusters(n_per_class: int, seed: int):
    """Features of K well-separated Gaussian classes and logits that agree with them."""
    rng = np.random.default_rng(seed)
    centres = np.eye(K, D) * 6.0
    labels = np.repeat(np.arange(K), n_per_class)
    feats = centres[labels] + rng.normal(0, 1.0, (len(labels), D))
    logits = feats[:, :K] * 2.0
    return feats.astype(np.float32), logits.astype(np.float32), labels


@pytest.fixture(scope="module")
def detector():
    tf, _, tl = clusters(300, 0)
    vf, vz, _ = clusters(400, 1)
    return ood.fit_statistics(tf, tl, vf, vz, ["a", "b", "c"])


def test_threshold_keeps_95_percent_of_validation(detector):
    vf, vz, _ = clusters(400, 1)
    scores = detector.score(vf, vz)
    kept = np.mean(scores <= detector.threshold())
    assert kept == pytest.approx(0.95, abs=0.01)
    assert detector.rejection_share(detector.threshold()) == pytest.approx(0.05, abs=0.005)


def test_rejection_share_moves_with_the_threshold(detector):
    shares = [
        detector.rejection_share(detector.threshold_for_rejection(s)) for s in (0.01, 0.2, 0.5)
    ]
    assert shares == pytest.approx([0.01, 0.2, 0.5], abs=0.01)
    low, high = detector.score_range()
    assert detector.rejection_share(low - 1) == 1.0
    assert detector.rejection_share(high + 1) == 0.0
    assert detector.threshold_for_rejection(0.3) < detector.threshold_for_rejection(0.1)


def test_unseen_in_distribution_is_known_and_far_points_are_unknown(detector):
    tf, tz, _ = clusters(200, 5)  # new draws of the same classes
    known = detector.score(tf, tz)
    assert np.mean(known > detector.threshold()) < 0.1
    rng = np.random.default_rng(9)
    far = rng.normal(0, 1, (100, D)).astype(np.float32) + 25.0  # far from every class
    flat = np.zeros((100, K), np.float32)  # the logits know nothing either
    assert np.all(detector.score(far, flat) > detector.threshold())
    # each part of the combined score catches what the other misses
    confident_far = np.c_[far[:, :1] * 0 + 40.0, np.zeros((100, K - 1))].astype(np.float32)
    assert np.all(detector.score(far, confident_far) > detector.threshold())
    assert ood.auroc(known, detector.score(far, flat)) == 1.0
    assert ood.fpr_at_tpr(known, detector.score(far, flat)) == 0.0


def test_nearest_classes_are_the_nearest_means(detector):
    feats = np.eye(K, D).astype(np.float32) * 6.0
    nearest = detector.nearest_classes(feats, k=2)
    assert [row[0][0] for row in nearest] == ["a", "b", "c"]
    assert nearest[0][0][1] < nearest[0][1][1]


def test_save_load_round_trip(tmp_path, detector):
    path = detector.save(tmp_path / ood.STATS_FILE)
    again = ood.Detector.load(path)
    f, z, _ = clusters(50, 3)
    np.testing.assert_allclose(again.score(f, z), detector.score(f, z), rtol=1e-4, atol=1e-4)
    assert again.threshold() == pytest.approx(detector.threshold())
    assert again.summary()["threshold"] == detector.summary()["threshold"]


def test_damaged_statistics_say_how_to_refit(tmp_path):
    path = tmp_path / ood.STATS_FILE
    path.write_bytes(b"not an npz")
    with pytest.raises(ood.OODError, match="ood fit"):
        ood.Detector.load(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"keep": 1.2}, "keep"), ({"score_name": "magic"}, "unknown score")],
)
def test_fit_refuses_bad_settings(kwargs, match):
    tf, _, tl = clusters(30, 0)
    vf, vz, _ = clusters(30, 1)
    with pytest.raises(ood.OODError, match=match):
        ood.fit_statistics(tf, tl, vf, vz, ["a", "b", "c"], **kwargs)


def test_fit_needs_validation_images_and_every_class():
    tf, _, tl = clusters(30, 0)
    vf, vz, _ = clusters(3, 1)
    with pytest.raises(ood.OODError, match="validation"):
        ood.fit_statistics(tf, tl, vf, vz, ["a", "b", "c"])
    vf, vz, _ = clusters(30, 1)
    with pytest.raises(ood.OODError, match="class"):
        ood.fit_statistics(tf, np.zeros_like(tl), vf, vz, ["a", "b", "c"])


def test_card_without_unknown_loads_and_a_bad_block_is_refused():
    base = {"name": "m", "class_names": ["a", "b"], "input_shape": [8, 8, 1], "preprocessing": {}}
    assert registry.ModelCard.from_dict(dict(base)).unknown == {}
    with pytest.raises(registry.RegistryError, match="unknown"):
        registry.ModelCard.from_dict({**base, "unknown": [1]})


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_features_are_the_last_dense_layers_input_and_top1_is_unchanged():
    model = tiny_model()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(60) % 3
    feats, logits = ood.features_and_logits(ood.feature_model(model), images)
    assert feats.shape == (60, 16)
    np.testing.assert_allclose(
        logits, model.predict(images.astype(np.float32), verbose=0), atol=1e-5
    )
    det = ood.fit(model, images, labels, images[:40], ["a", "b", "c"])
    card = registry.ModelCard(
        "m", ("a", "b", "c"), (8, 8, 1), registry.preprocessing_for((8, 8, 1))
    )
    plain = predict.Predictor(model, card).predict(list(images[:10]))
    with_detection = predict.Predictor(model, card, det).predict(list(images[:10]))
    assert [p.class_index for p in plain] == [p.class_index for p in with_detection]
    assert all(p.unknown_score is not None and len(p.nearest) == 3 for p in with_detection)
    assert all(p.unknown_score is None and not p.is_unknown() for p in plain)
    p = with_detection[0]
    assert p.is_unknown(p.unknown_score - 1e-6) and not p.is_unknown(p.unknown_score + 1e-6)
    rows = predict.results_rows(["x"], [p], threshold=p.unknown_score - 1.0)
    assert rows[0]["unknown"] is True


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_shipped_fashion_demo_calls_noise_unknown_and_clothes_known():
    from lib.config import DataConfig
    from lib.data import load_dataset

    entry = next(e for e in registry.list_models() if e.name == "fashion-mnist-demo")
    assert entry.card.unknown["score"] == ood.DEFAULT_SCORE
    predictor = predict.get_predictor(entry)
    assert predictor.detector is not None
    noise = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    assert all(p.is_unknown() for p in predictor.predict(list(noise)))
    ds = load_dataset(DataConfig.from_dict(entry.card.training_config["data"]))
    clothes = ds.splits["test"].images(np.arange(200))
    preds = predictor.predict(list(clothes))
    assert np.mean([p.is_unknown() for p in preds]) < 0.12


def test_the_export_bundle_carries_the_card_and_the_statistics(tmp_path):
    import io
    import json
    import zipfile

    from lib import export

    entry = next(e for e in registry.list_models() if e.name == "fashion-mnist-demo")
    with zipfile.ZipFile(io.BytesIO(export.unknown_bundle(entry))) as zf:
        card = json.loads(zf.read("card.json"))
        (tmp_path / ood.STATS_FILE).write_bytes(zf.read(ood.STATS_FILE))
    assert card["unknown"]["how_to_apply"] and card["unknown"]["logits_only"]["score"] == "energy"
    det = ood.Detector.load(tmp_path / ood.STATS_FILE)
    assert det.threshold() == pytest.approx(card["unknown"]["threshold"], abs=1e-5)
    assert det.threshold("energy") == pytest.approx(
        card["unknown"]["logits_only"]["threshold"], abs=1e-5
    )


def test_a_runs_detection_is_fitted_in_the_background_and_predict_picks_it_up():
    import os

    from lib import cli, runstore
    from tests.tiny_runs import make_finished_run, wait_for

    run_dir = make_finished_run(epochs=1)
    entry = registry.run_entry(run_dir)
    assert predict.get_predictor(entry).detector is None
    ood.start_fit(run_dir.name)
    status = ood.fit_status(run_dir)
    assert status.state == "running" and status.pid and status.pid != os.getpid()
    with pytest.raises(ood.OODError, match="being fitted already"):
        ood.start_fit(run_dir.name)
    done = wait_for(
        lambda: ood.fit_status(run_dir).state != "running" and ood.fit_status(run_dir),
        120,
        "the background fit",
        poll=False,
    )
    log = ood.job_dir(run_dir) / runstore.LOG_FILE
    assert done.state == "completed", (done.error, log.read_text())
    assert (run_dir / ood.STATS_FILE).is_file()
    # The predictor of the same model file now carries the detector (its cache key moved).
    entry = registry.run_entry(run_dir)
    assert entry.card.unknown and predict.get_predictor(entry).detector is not None
    # Unknown names: the CLI says which names exist and exits 2; the page's start raises.
    assert cli.main(["ood", "fit", "no-such-model"]) == 2
    with pytest.raises(ood.OODError, match="no registry model or completed run"):
        ood.start_fit("no-such-model")
