"""Data health on small planted sets: flipped labels, copies across splits, versions, the job."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from lib import datasets, health, health_versions, runstore
from lib.config import DataConfig
from lib.data import load_dataset
from lib.data.shapes import generate_shapes


@pytest.fixture(scope="module")
def digits():
    """400 digits (8×8, 10 classes) with 20 labels flipped to another class."""
    ds = load_dataset(DataConfig(source="digits", seed=0, val_fraction=0.0, test_fraction=0.2))
    x, y = ds.splits["train"].images()[:400], ds.splits["train"].labels[:400].astype(np.int64)
    rng = np.random.default_rng(3)
    flipped = np.sort(rng.choice(len(y), 20, replace=False))
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    return x, y, noisy, flipped, ds.class_names


@pytest.fixture(scope="module")
def digits_report(digits):
    x, _, noisy, _, names = digits
    return health.check_arrays({"train": (x, noisy)}, names, folds=4, epochs=8, seed=0)


def test_flipped_labels_rank_first(digits, digits_report):
    _, _, _, flipped, _ = digits
    n = len(flipped)
    top = set(digits_report.label_ranking[: round(1.5 * n)].tolist())
    found = len(top & set(flipped.tolist())) / n
    assert found >= 0.8, f"only {found:.0%} of the flipped labels are in the top 1.5×N"
    queued = {q.index for q in digits_report.queue if q.issue == "label"}
    assert len(queued & set(flipped.tolist())) >= 0.7 * n


def test_label_queue_suggests_the_true_class(digits, digits_report):
    _, y, noisy, flipped, _ = digits
    items = [q for q in digits_report.queue if q.issue == "label" and q.index in set(flipped)]
    assert items, "no flipped image in the queue"
    right = sum(q.suggested == y[q.index] for q in items)
    assert right / len(items) >= 0.8
    assert all(q.given == noisy[q.index] for q in items)
    scores = [q.score for q in digits_report.queue if q.issue == "label"]
    assert scores == sorted(scores, reverse=True)  # most likely problems first


def _resized(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    pil = Image.fromarray(img)
    return np.asarray(pil.resize((w * 3 // 4, h * 3 // 4)).resize((w, h)))


def _jpeg(img: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=75)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_neighbours_vote_with_their_labels_not_their_own():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 10
    labels = np.repeat([0, 1, 2], 30)
    emb = centres[labels] + rng.normal(0, 0.5, (90, 8))
    labels[5] = 2  # a wrong label inside the cluster of class 0, right next to image 6
    emb[5] = emb[6] + 0.01
    vote = health.neighbour_labels(emb, labels, 3)
    assert vote.shape == (90, 3) and np.allclose(vote.sum(axis=1), 1)
    assert vote[5].argmax() == 0 and vote[5, 2] == 0  # its own label does not vote
    assert vote[6].argmax() == 0 and vote[6, 0] < 1  # its neighbour, the wrong label, votes
    # A class of 4 images: 2 neighbours each, so class 0 is not outvoted by class 1.
    few = np.array([0] * 4 + [1] * 40)
    emb = np.vstack([np.ones((4, 2)) + rng.normal(0, 0.01, (4, 2)), rng.normal(0, 1, (40, 2))])
    emb[4:, 0] -= 5
    assert (health.neighbour_labels(emb, few, 2)[:4, 0] == 1).all()


def test_copies_across_splits_are_leakage():
    x, _ = generate_shapes(360, 48, seed=11)
    train, test = x[:300].copy(), x[300:]
    planted = {}
    for j, make in enumerate([lambda im: im, _resized, _jpeg] * 4):
        train[10 * j] = make(test[j])
        planted[10 * j] = j
    leaks = health.find_leakage({"train": train, "test": test})
    found = {(lk.index, lk.other_index) for lk in leaks if lk.split == "train"}
    hits = sum((a, b) in found for a, b in planted.items())
    assert hits == len(planted), f"{hits} of {len(planted)} copies found"
    others = {a for a, _ in found} - set(planted)
    assert len(others) <= 3, f"{len(others)} distinct images reported as copies"
    exact = [lk for lk in leaks if lk.exact]
    assert {lk.index for lk in exact} >= {0, 30, 60, 90}


def test_outliers_and_duplicates_on_features():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 16)) + np.repeat(np.eye(16)[:4] * 8, 50, axis=0)
    feats[7] = feats[8] * 1.0001  # a near-duplicate pair
    feats[150] = rng.normal(size=16) * 40  # far from everything
    labels = np.repeat(np.arange(4), 50)
    out, score, dup, sets = health.outliers_and_duplicates(feats, labels)
    assert out[150] and score[150] == score.min()
    assert dup[7] and dup[8] and 8 in sets[7]
    assert dup.sum() == 2


def test_decisions_round_trip_and_refuse_bad_ones(tmp_path):
    health.decide(tmp_path, "train:3", "relabel", "cat")
    health.decide(tmp_path, "train:4", "exclude")
    health.decide(tmp_path, "train:3", "keep")  # the last decision wins
    assert health.read_decisions(tmp_path) == {
        "train:3": {"action": "keep", "label": ""},
        "train:4": {"action": "exclude", "label": ""},
    }
    with pytest.raises(health.HealthError, match="choose the class"):
        health.decide(tmp_path, "train:5", "relabel", "")
    with pytest.raises(health.HealthError, match="unknown decision"):
        health.decide(tmp_path, "train:5", "delete")


def test_report_files_round_trip(tmp_path, digits_report):
    health.write_report(tmp_path, digits_report)
    rows = health.read_queue(tmp_path)
    assert len(rows) == len(digits_report.queue)
    assert rows[0]["key"] == digits_report.queue[0].key
    assert health.read_report(tmp_path)["counts"] == digits_report.counts


def test_cleaned_version_of_a_builtin_set_leaves_the_source_alone():
    data = DataConfig(source="shapes", shapes_count=120, shapes_size=32, seed=0)
    ds = load_dataset(data)
    y = ds.splits["train"].labels
    names = ds.class_names
    new_label = names[(int(y[0]) + 1) % len(names)]
    decisions = {
        "train:0": {"action": "relabel", "label": new_label},
        "train:1": {"action": "exclude", "label": ""},
        "train:2": {"action": "keep", "label": ""},
    }
    cfg, text = health_versions.save_cleaned(data, decisions, name="shapes-clean")
    # version 1 is the new dataset's empty classes, version 2 the cleaned images
    assert cfg.source == "dataset" and cfg.path == "shapes-clean@2"
    assert "1 relabelled, 1 excluded" in text
    counts = datasets.class_counts("shapes-clean", 2)
    assert sum(counts.values()) == sum(len(s) for s in ds.splits.values()) - 1
    before = np.bincount(np.concatenate([s.labels for s in ds.splits.values()]), minlength=6)
    after = np.array([counts[n] for n in names])
    delta = after - before
    delta[int(y[1])] += 1  # the excluded one
    expected = np.zeros(6, int)
    expected[int(y[0])] -= 1
    expected[names.index(new_label)] += 1
    assert delta.tolist() == expected.tolist()
    # a second round on the built version makes version 2 and keeps version 1 as it was
    ds1 = load_dataset(cfg)
    cfg2, _ = health_versions.save_cleaned(cfg, {"train:0": {"action": "exclude", "label": ""}})
    assert cfg2.path == "shapes-clean@3"
    assert datasets.class_counts("shapes-clean", 2) == counts
    assert sum(datasets.class_counts("shapes-clean", 3).values()) == sum(counts.values()) - 1
    assert len(ds1.splits["train"]) > 0


def test_nothing_to_save_and_bad_labels_are_refused():
    data = DataConfig(source="shapes", shapes_count=60, shapes_size=32)
    with pytest.raises(health_versions.CleanVersionError, match="nothing to save"):
        health_versions.save_cleaned(data, {"train:0": {"action": "keep", "label": ""}})
    with pytest.raises(health_versions.CleanVersionError, match="not a class"):
        health_versions.save_cleaned(data, {"train:0": {"action": "relabel", "label": "dog"}})
    with pytest.raises(health_versions.CleanVersionError, match="names no image"):
        health_versions.save_cleaned(data, {"train:99999": {"action": "exclude", "label": ""}})
    assert not datasets.list_datasets()


def test_the_check_job_writes_its_folder(monkeypatch):
    """run_check (the worker) on a tiny set: status, progress phases, report and queue."""
    data = DataConfig(source="shapes", shapes_count=120, shapes_size=32)
    path = health.create_check(data, folds=2, epochs=1)
    assert health.run_check(path) == 0
    assert runstore.read_status(path).state == "completed"
    report = health.read_report(path)
    assert set(report["counts"]) == set(health.ISSUE_TYPES)
    assert sum(report["sizes"].values()) == 120
    assert (path / health.QUEUE_FILE).is_file()
    assert "cross-validating" in "".join(
        json.loads(line).get("phase", "")
        for line in (path / health.PROGRESS_FILE).read_text().splitlines()
    )
    assert health.list_checks() == [path]


def test_unknown_target_says_what_to_give():
    with pytest.raises(health.HealthError, match="neither a run id"):
        health.resolve_target("no-such-thing")
    data, run_id = health.resolve_target("digits")
    assert data.source == "digits" and run_id == ""


def test_cli_prints_the_summary_and_writes_the_queue(monkeypatch, capsys, tmp_path):
    """python -m lib health digits: the check runs in the process; summary and queue out."""
    from lib import cli

    def fake_check(splits, names, **kw):
        y = splits["train"][1]
        item = health.QueueItem("label", "train", 4, int(y[4]), (int(y[4]) + 1) % 10, 0.97)
        counts = {"label": 1, "leakage": 0, "near_duplicate": 0, "outlier": 0}
        sizes = {k: len(v[1]) for k, v in splits.items()}
        return health.HealthReport(list(names), counts, [item], sizes=sizes)

    monkeypatch.setattr(health, "check_arrays", fake_check)
    out = tmp_path / "queue.csv"
    assert cli.main(["health", "digits", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Label issues: 1" in printed and "Train/test leakage: 0" in printed
    assert "images: train " in printed
    rows = out.read_text().splitlines()
    assert rows[0].startswith("key,issue,split") and rows[1].startswith("train:4,label,train,4")


def test_cli_refuses_an_unknown_target(capsys):
    from lib import cli

    assert cli.main(["health", "nope"]) == 2
    assert "neither a run id" in capsys.readouterr().err
