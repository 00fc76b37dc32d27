"""lib.compress: TFLite variants, magnitude pruning, the trade-off table and its job."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from lib import compress, jobs, registry
from lib.compress import CompressError, CompressOptions
from lib.progress import EndEvent, PhaseEvent, read_events


def _tiny_cnn(seed: int = 0):
    """A small trained CNN on random 16×16 images (raw pixels in, logits out)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),  # 72 weights: kept
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),  # 1152: pruned
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(64, activation="relu"),  # 1024: pruned
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (192, 16, 16, 1)).astype(np.uint8)
    y = (x.reshape(len(x), -1).mean(axis=1) > 127.5).astype(np.int32) + (
        x[:, :8].mean((1, 2, 3)) > 127.5
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.astype(np.float32), y, epochs=2, batch_size=32, verbose=0)
    return model, x, y


@pytest.fixture(scope="module")
def tiny():
    return _tiny_cnn()


def test_int8_model_holds_int8_tensors(tiny):
    model, x, _ = tiny
    data = compress.convert(model, "int8", representative=x[:32])
    dtypes = compress.tensor_dtypes(data)
    float_tensors = compress.tensor_dtypes(compress.convert(model, "tflite"))
    assert dtypes.get("int8", 0) >= 8  # weights and activations of every layer
    assert float_tensors.get("int8", 0) == 0
    runner = compress.TFLiteModel(data)
    assert runner.input["dtype"] == np.float32  # float in/out around an int8 body by default
    ref = np.asarray(model(x[:64].astype(np.float32))).argmax(1)
    assert np.mean(runner(x[:64]).argmax(1) == ref) >= 0.9


def test_int8_io_makes_input_and_output_int8(tiny):
    model, x, _ = tiny
    data = compress.convert(model, "int8", representative=x[:32], int8_io=True)
    runner = compress.TFLiteModel(data)
    assert runner.input["dtype"] == np.int8
    assert runner.output["dtype"] == np.int8
    ref = np.asarray(model(x[:64].astype(np.float32))).argmax(1)
    assert np.mean(runner(x[:64]).argmax(1) == ref) >= 0.9  # quantise/dequantise by the card
    assert runner.one(x[:1].astype(np.float32)).dtype == np.int8


def test_float16_and_dynamic_shrink_the_file(tiny):
    model = tiny[0]
    f32 = compress.convert(model, "tflite")
    f16 = compress.convert(model, "float16")
    dyn = compress.convert(model, "dynamic")
    assert len(f16) < 0.75 * len(f32)
    assert len(dyn) < len(f16)
    assert "float16" in compress.tensor_dtypes(f16)


def test_int8_without_images_is_refused(tiny):
    with pytest.raises(CompressError, match="representative"):
        compress.convert(tiny[0], "int8")


def test_pruning_reaches_its_sparsity_and_leaves_the_model(tiny):
    model, x, y = tiny
    before = [np.asarray(k.numpy()).copy() for k in compress.prunable_kernels(model)]
    opts = CompressOptions(sparsity=0.7, prune_epochs=2, prune_train_images=192)
    pruned = compress.prune(model, x, y, opts)
    kernels = compress.prunable_kernels(pruned)
    assert [tuple(k.shape) for k in kernels] == [(3, 3, 8, 16), (16, 64)]
    for k in kernels:
        assert np.mean(np.asarray(k.numpy()) == 0) == pytest.approx(0.7, abs=0.002)
    assert compress.sparsity_of(pruned) == pytest.approx(0.7, abs=0.002)
    after = [np.asarray(k.numpy()) for k in compress.prunable_kernels(model)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    # The zeros survive conversion and make the gzipped file smaller.
    assert compress.gzip_size(compress.convert(pruned, "tflite")) < 0.7 * compress.gzip_size(
        compress.convert(model, "tflite")
    )


def test_pruning_keeps_batchnorm_statistics_and_prunes_a_short_run_gradually(monkeypatch):
    import keras

    rng = np.random.default_rng(3)
    x = rng.integers(0, 255, (256, 8, 8, 1), dtype=np.uint8)
    y = (x.reshape(256, -1).mean(1) > 127).astype(np.int64)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(32, 3, padding="same")(keras.layers.Rescaling(1 / 255)(inputs))
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model(x[:4].astype(np.float32))
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(32, 0.25, np.float32))  # "trained" statistics
    updates = []
    cls = compress._pruning_callback_class()
    original = cls._update

    def counting(self, sparsity):
        updates.append(sparsity)
        original(self, sparsity)

    monkeypatch.setattr(cls, "_update", counting)
    monkeypatch.setattr(compress, "_pruning_callback_class", lambda: cls)
    # 256 images, 2 passes in batches of 64: 8 steps, so the mask follows every step.
    opts = CompressOptions(sparsity=0.8, prune_epochs=2)
    pruned = compress.prune(model, x, y, opts)
    np.testing.assert_array_equal(pruned.get_layer("bn").moving_mean.numpy(), np.full(32, 0.25))
    assert compress.sparsity_of(pruned) == pytest.approx(0.8, abs=0.002)
    assert len(set(updates)) >= 5, updates  # gradual, not 0 then 0.8 at once


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("polynomial", 0, 0.0),
        ("polynomial", 35, 0.8 * (1 - 0.5**3)),
        ("polynomial", 70, 0.8),
        ("polynomial", 100, 0.8),
        ("constant", 0, 0.8),
    ],
)
def test_sparsity_schedule(schedule, step, expected):
    assert compress.sparsity_at(step, 100, 0.8, schedule) == pytest.approx(expected)


def test_magnitude_masks_zero_the_smallest():
    w = np.array([[0.1, -5.0], [0.3, -0.2]], np.float32)
    (mask,) = compress.magnitude_masks([w], 0.5)
    assert mask.tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"variants": ("int4",)}, "variants"),
        ({"variants": ()}, "variants"),
        ({"sparsity": 0.99}, "sparsity"),
        ({"schedule": "cubic"}, "schedule"),
        ({"test_images": 3}, "test_images"),
        ({"latency_repeats": True}, "latency_repeats"),
    ],
)
def test_options_name_the_bad_field(change, match):
    with pytest.raises(CompressError, match=match):
        CompressOptions(**change).validate()


def test_options_round_trip():
    opts = CompressOptions(variants=("tflite", "int8"), int8_io=True, sparsity=0.5)
    assert CompressOptions.from_dict(opts.to_dict()) == opts


def test_tradeoff_table_flags_classes_and_rates_variants(tmp_path):
    from tests.tiny_runs import make_finished_run

    run = make_finished_run(epochs=4, hidden=32)
    entry = registry.run_entry(run)
    opts = CompressOptions(
        test_images=200, prune_train_images=400, prune_epochs=1, latency_repeats=5, sparsity=0.5
    )
    table = compress.tradeoff(entry, opts, out_dir=tmp_path)
    rows = {r["variant"]: r for r in table["rows"]}
    assert list(rows) == ["keras", *compress.VARIANTS]
    assert rows["keras"]["top1_agreement"] == 1.0
    for name, row in rows.items():
        assert 0 <= row["accuracy"] <= 1
        assert row["gzip_bytes"] > 0 and row["latency_p50_ms"] > 0
        assert len(row["per_class"]) == entry.card.num_classes
        flagged = [p["class"] for p in row["per_class"] if p["change_points"] is not None
                   and p["change_points"] < -compress.FLAG_POINTS]  # fmt: skip
        assert row["flagged_classes"] == flagged
        if name != "keras":
            assert (tmp_path / row["file"]).is_file()
    assert rows["pruned"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert rows["int8"]["size_bytes"] < rows["tflite"]["size_bytes"]
    ratios = compress.baseline_ratios(table)
    assert ratios["tflite"]["size_ratio"] == 1.0
    assert set(ratios["int8"]) == {
        "size_ratio",
        "gzip_ratio",
        "latency_ratio",
        "accuracy_drop_points",
    }


def test_job_runs_in_its_own_process_and_stores_the_table_with_the_run():
    from tests.tiny_runs import make_finished_run

    run = make_finished_run(epochs=2)
    entry = registry.run_entry(run)
    opts = CompressOptions(variants=("tflite", "int8"), test_images=200, latency_repeats=5)
    folder = compress.start(entry, opts)
    assert folder == run / "compress"
    # start() returns once the worker is recorded; the worker needs seconds to import
    # TensorFlow alone, so the job is running here, in another process.
    status = compress.read_job(folder)
    assert status.state == "running", status
    assert status.pid != os.getpid() and jobs.process_alive(status.pid, status.pid_start)
    with pytest.raises(CompressError, match="already running"):
        compress.start(entry, opts)
    deadline = time.monotonic() + 300
    while (status := compress.read_job(folder)).running and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status.state == "completed", status.error
    assert (status.stage, status.progress) == ("done", 1.0)
    assert [r["variant"] for r in status.table["rows"]] == ["keras", "tflite", "int8"]
    assert (folder / status.table["rows"][2]["file"]).is_file()
    # Its stages were recorded as phase events with their share done, and its end.
    events = read_events(folder)
    phases = [e for e in events if isinstance(e, PhaseEvent)]
    assert phases and all(e.total == compress.SHARE_STEPS for e in phases)
    assert any("int8" in e.phase for e in phases), [e.phase for e in phases]
    assert isinstance(events[-1], EndEvent) and events[-1].state == "completed"


def test_a_dead_job_is_marked_failed(tmp_path):
    compress.atomic_write_json(
        tmp_path / compress.STATUS_FILE, {"state": "running", "pid": 2**22 + 12345}
    )
    status = compress.read_job(tmp_path)
    assert status.state == "failed" and "ended without finishing" in status.error
    assert compress.read_job(tmp_path / "none").state == "none"  # never started


def test_a_card_without_dataset_is_refused_before_starting(tmp_path):
    card = registry.ModelCard(name="x", class_names=("a", "b"), input_shape=(8, 8, 1),
                              preprocessing={})  # fmt: skip
    entry = registry.ModelEntry("x", "upload", tmp_path / "model.keras", card)
    with pytest.raises(CompressError, match="names no dataset"):
        compress.start(entry, CompressOptions())
    assert not (tmp_path / compress.JOB_FOLDER).exists()


def test_cli_exports_int8_and_refuses_unknown_models(tmp_path, capsys):
    from lib.cli import main
    from tests.tiny_runs import make_finished_run

    run = make_finished_run(epochs=2)
    out = tmp_path / "digits_int8.tflite"
    assert main(["export", run.name, "--format", "int8", "--out", str(out)]) == 0
    assert compress.tensor_dtypes(out.read_bytes()).get("int8", 0) > 0
    assert str(out) in capsys.readouterr().out
    assert main(["export", "no-such-model", "--format", "int8"]) == 2
    assert "no registry model or completed run named 'no-such-model'" in capsys.readouterr().err
    assert main(["export", run.name, "--format", "pruned", "--sparsity", "1.5"]) == 2
    assert "sparsity must be between" in capsys.readouterr().err
