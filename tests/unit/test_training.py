"""The trainer: real tiny runs on digits, in this process (one TensorFlow import)."""

from __future__ import annotations

import itertools
import json
import threading
import time

import numpy as np
import pytest

from lib import hardware, jobs, runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
from lib.hardware import GpuInfo

TINY_MODEL = ModelConfig(
    preset="custom", blocks=(ConvBlock(filters=8, batch_norm=False),), head=HeadConfig(dense=(16,))
)


def tiny_config(**train) -> RunConfig:
    """Digits (8×8, 1439 training images), one conv block: a few seconds per epoch."""
    base = {"epochs": 2, "batch_size": 64, "schedule": "constant", "learning_rate": 0.01}
    return RunConfig(
        name="tiny",
        data=DataConfig(source="digits"),
        model=TINY_MODEL,
        train=TrainConfig(**{**base, **train}),
    )


def events(run_dir) -> list[dict]:
    lines = (run_dir / runstore.PROGRESS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_tiny_digits_run_completes_and_writes_every_artifact():
    import keras

    path = runstore.create_run(tiny_config(epochs=3, schedule="warmup_cosine", warmup_epochs=0.5))
    assert jobs.run_here(path, echo=False, claim=True) == 0

    status = runstore.read_status(path)
    assert status.state == "completed", status.error
    assert status.pid is not None and status.ended >= status.started
    for name in (
        runstore.CONFIG_FILE,
        runstore.HISTORY_FILE,
        runstore.PROGRESS_FILE,
        runstore.MODEL_FILE,
        runstore.LAST_WEIGHTS_FILE,
        runstore.METRICS_FILE,
        runstore.PREDICTIONS_FILE,
        runstore.LR_PLAN_FILE,
    ):
        assert (path / name).is_file(), name
    assert any((path / runstore.TENSORBOARD_DIR).rglob("events.out.tfevents.*"))
    assert not (path / runstore.BACKUP_DIR).exists()  # only a resumable run keeps it

    history = jobs.read_history(path)
    assert history["epoch"] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history)
    metrics = runstore.read_metrics(path)
    assert metrics["epochs_done"] == 3 and metrics["train_seconds"] > 0
    assert metrics["eval_split"] == "test"
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and np.isfinite(metrics["test_loss"])
    assert metrics["best_val_accuracy"] == pytest.approx(max(history["val_accuracy"]))
    assert metrics["class_names"] == [str(d) for d in range(10)]
    from lib.evaluation import count_parameters

    assert metrics["params"] == count_parameters(path) > 0

    evs = events(path)
    kinds = [e["type"] for e in evs]
    assert kinds.count("start") == 1 and kinds.count("epoch") == 3 and "batch" in kinds
    batch_times = [e["time"] for e in evs if e["type"] == "batch"]
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(batch_times))
    last_batch = [e for e in evs if e["type"] == "batch"][-1]
    for key in (
        "epoch",
        "batch",
        "steps",
        "loss",
        "accuracy",
        "lr",
        "images_per_sec",
        "elapsed",
        "eta",
    ):
        assert key in last_batch

    model = keras.saving.load_model(str(path / runstore.MODEL_FILE), safe_mode=True, compile=False)
    assert model.output_shape == (None, 10)
    plan = jobs.read_lr_plan(path)
    assert plan["learning_rate"][0] == pytest.approx(1e-4, rel=1e-3)  # warm-up starts at lr/100
    assert max(plan["learning_rate"]) == pytest.approx(0.01, rel=1e-3)


def test_stop_request_ends_after_the_current_batch_with_a_checkpoint():
    path = runstore.create_run(tiny_config(epochs=200))

    def stop_when_training():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (path / runstore.HISTORY_FILE).exists() and jobs.read_history(path):
                jobs.request_stop(path.name)
                return
            time.sleep(0.1)

    stopper = threading.Thread(target=stop_when_training, daemon=True)
    stopper.start()
    assert jobs.run_here(path, echo=False, claim=True) == 0
    stopper.join()

    status = runstore.read_status(path)
    assert status.state == "stopped" and not status.stop_requested
    assert not (path / runstore.STOP_FILE).exists()
    done = len(jobs.read_history(path)["epoch"])
    assert 1 <= done < 200
    meta = json.loads((path / runstore.BACKUP_DIR / "training_metadata.json").read_text())
    assert meta["epoch"] == done  # resume continues right after the stopped epoch
    assert not (path / runstore.METRICS_FILE).exists()


def test_nan_loss_fails_cleanly_and_keeps_the_checkpoint():
    import keras

    # A real divergence: no normalisation, SGD with momentum and a warm-up towards lr=10.
    # Epoch 1 ends finite (lr still small); the loss overflows to NaN in epoch 2.
    model = ModelConfig(
        preset="custom",
        head=HeadConfig(dense=(16,)),
        blocks=(
            ConvBlock(filters=8, batch_norm=False, activation="elu", pool="none"),
            ConvBlock(filters=8, batch_norm=False, activation="elu"),
        ),
    )
    cfg = tiny_config(
        epochs=6,
        optimizer="sgd",
        momentum=0.9,
        learning_rate=10.0,
        schedule="warmup_cosine",
        warmup_epochs=4.0,
        label_smoothing=0.0,
    ).replace(model=model)
    path = runstore.create_run(cfg)
    assert jobs.run_here(path, echo=False, claim=True) == 1

    status = runstore.read_status(path)
    assert status.state == "failed"
    assert "NaN" in status.error and "learning rate" in status.error
    good_epochs = len(jobs.read_history(path).get("epoch", []))
    assert 1 <= good_epochs < 6
    # The diverged weights never reached the checkpoints.
    kept = keras.saving.load_model(str(path / runstore.MODEL_FILE), safe_mode=True, compile=False)
    assert all(np.isfinite(w).all() for w in kept.get_weights())
    meta = json.loads((path / runstore.BACKUP_DIR / "training_metadata.json").read_text())
    assert meta["epoch"] == good_epochs
    assert not (path / runstore.METRICS_FILE).exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": TrainConfig(batch_size=5000)}, "larger than the training split"),
        ({"model": ModelConfig(preset="custom", blocks=(ConvBlock(),) * 5)}, "model"),
        # The check uses the real split: what half+half held-out leaves to train on.
        (
            {"data": DataConfig(source="digits", val_fraction=0.5, test_fraction=0.5)},
            r"training split \(\d+ images\)",
        ),
    ],
)
def test_invalid_run_config_is_refused_before_anything_starts(change, message):
    from lib.training import RunConfigError

    cfg = tiny_config().replace(**change)
    with pytest.raises((RunConfigError, ValueError), match=message):
        jobs.start_run(cfg)
    assert jobs.list_runs() == []


@pytest.mark.parametrize(
    "train",
    [TrainConfig(epochs=3, early_stopping_patience=2), TrainConfig(schedule="reduce_on_plateau")],
)
def test_several_workers_refuse_metric_driven_decisions(monkeypatch, train):
    from lib.training import RunConfigError, validate_run

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}}))
    with pytest.raises(RunConfigError, match="not available with several workers"):
        validate_run(tiny_config().replace(train=train))


@pytest.mark.parametrize(
    ("schedule", "checks"),
    [
        # (fraction of training, expected lr / peak lr)
        ("constant", [(0.0, 1.0), (0.5, 1.0), (1.0, 1.0)]),
        ("cosine", [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]),
        ("warmup_cosine", [(0.0, 0.01), (0.25, 1.0), (1.0, 0.0)]),
        ("one_cycle", [(0.0, 0.04), (0.3, 1.0), (1.0, 0.0)]),
        ("step", [(0.0, 1.0), (0.45, 1.0), (0.5, 0.1), (1.0, 0.01)]),
    ],
)
def test_learning_rate_schedules(schedule, checks):
    from lib.training import lr_plan, make_schedule

    steps = 10
    cfg = TrainConfig(
        epochs=4,
        schedule=schedule,
        learning_rate=0.1,
        warmup_epochs=1.0,
        step_epochs=2,
        step_factor=0.1,
    )
    sched = make_schedule(cfg, steps)
    for fraction, expected in checks:
        step = round(fraction * 4 * steps)
        lr = float(sched(step)) if callable(sched) else sched
        assert lr == pytest.approx(0.1 * expected, abs=2e-3), (schedule, fraction)
    plan = lr_plan(cfg, steps)
    assert plan["epoch"][0] == 0 and plan["epoch"][-1] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("name", "cls", "extra"),
    [
        ("adam", "Adam", {}),
        ("adamw", "AdamW", {}),
        ("sgd", "SGD", {"momentum": 0.8, "nesterov": True}),
        ("rmsprop", "RMSprop", {"momentum": 0.5}),
    ],
)
def test_optimizers(name, cls, extra):
    from lib.training import make_optimizer

    opt = make_optimizer(
        TrainConfig(
            optimizer=name, schedule="constant", learning_rate=0.02, weight_decay=0.05, **extra
        ),
        steps_per_epoch=5,
    )
    assert type(opt).__name__ == cls
    assert float(opt.learning_rate) == pytest.approx(0.02)
    assert opt.weight_decay == pytest.approx(0.05)
    for key, value in extra.items():
        assert getattr(opt, key) == pytest.approx(value)


def test_balanced_class_weights_equalise_the_classes():
    from lib.training import balanced_class_weights

    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights == {0: pytest.approx(4 / 9), 1: pytest.approx(4 / 3)}  # class 2 absent


def test_trim_history_drops_epochs_that_will_be_trained_again(workspace):
    from lib.training import trim_history

    path = workspace / "run"
    path.mkdir()
    (path / runstore.HISTORY_FILE).write_text("epoch,loss\r\n0,1.0\r\n1,0.5\r\n2,0.4\r\n")
    rows = trim_history(path, 2)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert jobs.read_history(path)["epoch"] == [1, 2]


@pytest.mark.parametrize(
    ("mode", "gpus", "expected"),
    [
        ("auto", [], "float32"),
        ("auto", [GpuInfo("g0", "T4", (7, 5))], "mixed_float16"),
        ("auto", [GpuInfo("g0", "P100", (6, 0))], "float32"),
        ("auto", [GpuInfo("g0", "A100", (8, 0)), GpuInfo("g1", "K80", (3, 7))], "float32"),
        ("on", [GpuInfo("g0", "P100", (6, 0))], "mixed_float16"),
        ("on", [], "mixed_bfloat16"),
        ("off", [GpuInfo("g0", "H100", (9, 0))], "float32"),
    ],
)
def test_mixed_precision_choice(mode, gpus, expected):
    assert hardware.choose_precision(mode, gpus) == expected


@pytest.mark.parametrize(
    ("mode", "gpus", "backbone", "expected"),
    [
        ("auto", [], False, "mixed_bfloat16"),  # Kestrel's own CNNs: cheaper per image
        ("auto", [], True, "float32"),  # a MobileNetV2 measured dearer in bfloat16
        ("auto", [GpuInfo("g0", "P100", (6, 0))], False, "float32"),  # the GPU decides
        ("on", [], True, "mixed_bfloat16"),
        ("off", [], False, "float32"),
    ],
)
def test_auto_uses_bfloat16_on_a_cpu_that_computes_it_natively(mode, gpus, backbone, expected):
    got = hardware.choose_precision(mode, gpus, cpu_bfloat16=True, imagenet_backbone=backbone)
    assert got == expected


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
        ("fpu avx2 amx_bf16 amx_tile", True),
        ("fpu avx2 avx512f avx512_vnni", False),  # bfloat16 would be emulated: slower
    ],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    assert hardware.cpu_native_bfloat16(str(cpuinfo)) is native
    assert hardware.cpu_native_bfloat16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize(
    ("flags", "mode", "backbone", "words"),
    [
        (
            "avx2 amx_bf16",
            "auto",
            False,
            "Here it trains in bfloat16 (mixed): this server's CPU computes",
        ),
        ("avx2 amx_bf16", "auto", True, "Here it trains in float32 (an ImageNet backbone stays"),
        ("avx2 fma", "auto", False, "Here it trains in float32: this server's CPU has no native"),
        ("avx2 fma", "on", False, "Here it trains in bfloat16 (mixed), emulated: this server's"),
        ("avx2 fma", "off", False, "Here it trains in float32."),
    ],
)
def test_the_form_says_what_mixed_precision_trains_in_here(tmp_path, flags, mode, backbone, words):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    here = hardware.precision_here(
        mode, backbone, cpuinfo=str(cpuinfo), proc=str(tmp_path / "no-driver")
    )
    assert here is not None and here.startswith(words), here
    if "fma" in flags and mode == "on":
        assert "slower than float32" in here
    assert hardware.emulates_bfloat16(cpuinfo=str(cpuinfo), proc=str(tmp_path / "none")) is (
        "amx_bf16" not in flags
    )
    # With an NVIDIA driver listing a GPU, the GPU decides: nothing is claimed.
    gpus = tmp_path / "gpus"
    (gpus / "0000:01:00.0").mkdir(parents=True)
    assert hardware.precision_here(mode, backbone, cpuinfo=str(cpuinfo), proc=str(gpus)) is None
    assert hardware.emulates_bfloat16(cpuinfo=str(cpuinfo), proc=str(gpus)) is False


def test_a_bfloat16_run_scores_the_float32_model_and_leaves_the_callers_policy(monkeypatch):
    """What "auto" trains with on a bfloat16 CPU (forced here, so any CPU tests it)."""
    import keras

    from lib.registry import load_model_file

    monkeypatch.setattr(hardware, "cpu_native_bfloat16", lambda *a: True)
    path = runstore.create_run(tiny_config(epochs=2))
    assert jobs.run_here(path, echo=False, claim=True) == 0
    assert runstore.read_status(path).state == "completed", runstore.read_status(path).error
    metrics = json.loads((path / runstore.METRICS_FILE).read_text())
    assert metrics["precision"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # this process's own policy
    # metrics.json scores the model as Predict and the exports run it: in float32.
    model = load_model_file(path / runstore.MODEL_FILE)
    from lib.data import load_dataset

    split = load_dataset(tiny_config().data).splits["test"]
    logits = np.asarray(model.predict(split.images().astype("float32"), verbose=0))
    assert metrics["test_accuracy"] == pytest.approx(
        float((logits.argmax(axis=1) == np.asarray(split.labels)).mean()), abs=1e-9
    )
    stored = np.load(path / runstore.PREDICTIONS_FILE)
    assert (np.asarray(stored["probs"]).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_gpu_request_without_a_gpu_is_refused():
    if hardware.detect_gpus():
        pytest.skip("this machine has a GPU")
    with pytest.raises(hardware.HardwareError, match="no GPU"):
        hardware.configure("gpu", "auto")


def test_a_run_loads_its_dataset_once_and_predicts_each_held_out_split_once(monkeypatch):
    import lib.data
    import lib.evaluation

    loads, predicted = [], []
    real_load, real_predict = lib.data.load_dataset, lib.evaluation.predict_probs

    def counting_load(cfg, *args, **kwargs):
        loads.append(cfg.source)
        return real_load(cfg, *args, **kwargs)

    def counting_predict(model, split, **kwargs):
        predicted.append(len(split))
        return real_predict(model, split, **kwargs)

    monkeypatch.setattr(lib.data, "load_dataset", counting_load)
    monkeypatch.setattr(lib.evaluation, "predict_probs", counting_predict)
    path = runstore.create_run(tiny_config(epochs=1, tta_flip=True))
    from lib.training import train_run

    outcome = train_run(path)
    assert outcome.state == "completed", outcome.error
    assert loads == ["digits"]
    metrics = outcome.metrics
    assert predicted == [metrics["val_count"], metrics["test_count"]]  # val, then test
    # predictions.npz holds the very probabilities metrics.json was computed from.
    from lib.evaluation import accuracy, cross_entropy, load_predictions

    preds = load_predictions(path)
    assert preds.split == "test" and len(preds) == metrics["test_count"]
    assert accuracy(preds.y_true, preds.y_pred) == pytest.approx(metrics["test_accuracy"])
    assert cross_entropy(preds.y_true, preds.probs) == pytest.approx(metrics["test_loss"], rel=1e-4)
    kinds = [e["type"] for e in events(path)]
    assert kinds[-1] == "end" and "metrics" in kinds


def failure_cases():
    import tensorflow as tf

    from lib.data import DatasetError
    from lib.hardware import HardwareError
    from lib.training import RunConfigError

    return [
        (RunConfigError("batch too large"), "batch too large"),
        (DatasetError("folder is empty"), "folder is empty"),
        (HardwareError("no GPU"), "no GPU"),
        (RuntimeError("NaN or Inf loss encountered at batch 3"), "NaN or infinite"),
        (
            tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"),
            "out of memory",
        ),
        (MemoryError(), "out of memory"),
        (RuntimeError("CUDA_ERROR_OUT_OF_MEMORY: out of memory"), "out of memory"),
        (
            tf.errors.FailedPreconditionError(
                None, None, "Input dataset was expected to contain 5 elements but contained only 0"
            ),
            "could not be decoded",
        ),
        (RuntimeError("something else"), None),
        (KeyError("bug"), None),
    ]


def test_one_classifier_turns_failures_a_user_can_fix_into_messages(workspace):
    from lib.errors import KestrelError
    from lib.training import RunConfigError, failure_message

    assert issubclass(RunConfigError, KestrelError)
    cfg = tiny_config()
    run_dir = workspace / "run"
    run_dir.mkdir()
    for exc, expected in failure_cases():
        message = failure_message(exc, run_dir, cfg)
        if expected is None:
            assert message is None, exc
        else:
            assert expected in message, (exc, message)
    nan = failure_message(RuntimeError("NaN or Inf loss"), run_dir, cfg)
    assert "learning rate" in nan and "no checkpoint yet" in nan
    oom = failure_message(MemoryError(), run_dir, cfg)
    assert "batch_size (now 64)" in oom


def _tensorboard_scalars(log_dir) -> dict:
    """{(subfolder, tag, step): value} of every scalar in a TensorBoard log folder."""
    from pathlib import Path

    import tensorflow as tf

    found = {}
    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = (
                    float(tf.make_ndarray(value.tensor))
                    if value.HasField("tensor")
                    else value.simple_value
                )
                found[(path.parent.name, value.tag, event.step)] = round(number, 6)
    return found


def test_epoch_tensorboard_writes_what_keras_tensorboard_writes_without_the_batch_hook(tmp_path):
    import keras

    from lib.training.callbacks import EpochTensorBoard

    def fit(callback):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
        x = np.arange(64 * 4, dtype="float32").reshape(64, 4) / 256
        model.fit(x, x[:, :3], validation_split=0.25, epochs=3, batch_size=8, verbose=0,
                  callbacks=[callback])  # fmt: skip

    stock = keras.callbacks.TensorBoard(
        str(tmp_path / "stock"), update_freq="epoch", profile_batch=0, write_graph=False
    )
    fit(stock)
    fit(EpochTensorBoard(str(tmp_path / "ours")))
    expected = _tensorboard_scalars(tmp_path / "stock")
    assert {tag for _, tag, _ in expected} >= {"epoch_loss", "epoch_mae", "epoch_learning_rate"}
    assert not [key for key in expected if key[1].startswith("batch_")]
    assert _tensorboard_scalars(tmp_path / "ours") == expected
