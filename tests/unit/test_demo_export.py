"""lib.demo_export: the browser demo folder, its config, unknown detection and missing npm."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lib import demo_export, registry
from lib.demo_export import DemoExportError, build_demo, demo_zip, unknown_block


@pytest.fixture(scope="module")
def digits_entry(tmp_path_factory):
    """A finished tiny digits run (no unknown detection) as a registry entry."""
    home = tmp_path_factory.mktemp("demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KESTREL_HOME", str(home))
        from tests.tiny_runs import make_finished_run

        run = make_finished_run(epochs=3)
        yield registry.run_entry(run)


@pytest.mark.parametrize(
    ("unknown", "expected"),
    [
        (None, None),
        ({}, None),
        ("not a dict", None),
        ({"score": "combined", "threshold": "high"}, None),
        ({"score": "msp", "threshold": -0.5}, {"score": "msp", "applied": True}),
        ({"score": "energy", "threshold": -3.0}, {"score": "energy", "applied": True}),
        (
            {"score": "combined", "threshold": 2.0,
             "logits_only": {"score": "energy", "threshold": -3.2}},
            {"score": "energy", "threshold": -3.2, "applied": True},
        ),
        ({"score": "combined", "threshold": 2.0}, {"score": "combined", "applied": False}),
        ({"score": "combined", "threshold": True}, None),
    ],
)  # fmt: skip
def test_unknown_block_reads_the_card_defensively(unknown, expected, tmp_path):
    card = SimpleNamespace(unknown=unknown)
    block, stats = unknown_block(card, tmp_path)  # no statistics file in tmp_path
    assert stats is None
    if expected is None:
        assert block is None
    else:
        assert {k: block[k] for k in expected} == expected
        assert block["needs_features"] is False


def test_a_card_without_the_field_has_no_unknown_detection():
    assert unknown_block(SimpleNamespace(), None) == (None, None)


def test_demo_folder_holds_the_page_runtime_model_and_config(digits_entry, tmp_path):
    import onnxruntime as ort

    folder = build_demo(digits_entry, tmp_path / "site")
    names = {p.name for p in folder.iterdir()}
    assert names == {"index.html", "model.onnx", "demo.json", *demo_export.RUNTIME_FILES}
    config = json.loads((folder / "demo.json").read_text())
    card = digits_entry.card
    assert config["class_names"] == list(card.class_names)
    assert config["input"] == dict(
        zip(("height", "width", "channels"), card.input_shape, strict=True)
    )
    assert config["output"] == "logits" and config["unknown"] is None
    assert (
        config["onnxruntime_web"]
        == json.loads((demo_export.WEB_DIR / "package.json").read_text())["dependencies"][
            "onnxruntime-web"
        ]
    )  # the version pinned in web/package.json is the one copied
    html = (folder / "index.html").read_text()
    assert "https://" not in html.split("<script", 1)[1]  # no CDN

    from lib.compress import CompressOptions, load_splits
    from lib.predict import get_predictor

    _, _, x, _ = load_splits(card, CompressOptions(test_images=100))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(
        [config["outputs"]["logits"]], {session.get_inputs()[0].name: x.astype(np.float32)}
    )[0]
    ref = get_predictor(digits_entry).raw_logits(x)
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.99


def test_zip_holds_one_folder(digits_entry):
    data, name = demo_zip(digits_entry)
    assert name == f"{digits_entry.name}-browser-demo.zip"
    names = zipfile.ZipFile(BytesIO(data)).namelist()
    assert {n.split("/")[0] for n in names} == {name[: -len(".zip")]}
    assert f"{name[:-4]}/index.html" in names


def test_a_folder_that_is_not_empty_is_refused(digits_entry, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "mine.txt").write_text("keep")
    with pytest.raises(DemoExportError, match="not empty"):
        build_demo(digits_entry, tmp_path / "site")
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["mine.txt"]


def test_without_node_and_npm_the_message_gives_the_apt_get_command(
    monkeypatch, tmp_path, digits_entry
):
    monkeypatch.setattr(demo_export, "ORT_PACKAGE", tmp_path / "missing")
    monkeypatch.setattr(demo_export.shutil, "which", lambda name: None)
    with pytest.raises(
        DemoExportError, match="apt-get install -y --no-install-recommends nodejs npm"
    ):
        build_demo(digits_entry, tmp_path / "site")
    assert not (tmp_path / "site").exists()
    monkeypatch.setattr(demo_export.shutil, "which", lambda name: "/usr/bin/npm")
    with pytest.raises(DemoExportError, match="make web"):
        demo_export.runtime_files()


def test_combined_unknown_detection_travels_with_features_and_statistics(tmp_path):
    """The shapes demo's card has the combined score: the demo gets features and statistics."""
    import onnxruntime as ort

    from lib import ood
    from lib.compress import CompressOptions, load_splits

    entry = next(e for e in registry.list_models() if e.name == "shapes-demo")
    block = getattr(entry.card, "unknown", None)
    if not block or block.get("score") != "combined":
        pytest.fail(
            "models/shapes-demo's card has no combined unknown detection (python -m lib ood fit)"
        )
    folder = build_demo(entry, tmp_path / "site")
    config = json.loads((folder / "demo.json").read_text())
    u = config["unknown"]
    assert u["applied"] and u["needs_features"] and u["score"] == "combined"
    k, d = u["classes"], u["dims"]
    stats = np.fromfile(folder / u["stats_file"], "<f4")
    assert stats.size == k * d + d * d
    means, precision = stats[: k * d].reshape(k, d), stats[k * d :].reshape(d, d)

    # The page's arithmetic (index.html), here in numpy on the ONNX outputs, equals lib.ood's.
    _, _, x, _ = load_splits(entry.card, CompressOptions(test_images=40))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [config["outputs"]["features"], config["outputs"]["logits"]]
    feats, logits = session.run(names, {session.get_inputs()[0].name: x.astype(np.float32)})
    maha = ood.class_distances(feats, means, precision).min(axis=1)
    energy = ood.energy_score(logits)
    p = u["parts"]
    combined = np.maximum(
        (energy - p["energy"]["center"]) / p["energy"]["scale"],
        (maha - p["mahalanobis"]["center"]) / p["mahalanobis"]["scale"],
    )
    detector = ood.load_beside(entry.model_path)
    kf, kl = ood.features_and_logits(ood.feature_model(registry.load_model(entry)), x)
    np.testing.assert_allclose(combined, detector.score(kf, kl, "combined"), rtol=1e-3, atol=1e-3)
    assert u["threshold"] == pytest.approx(block["threshold"])
    assert Path(folder / "index.html").is_file()
