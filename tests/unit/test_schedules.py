"""Learning-rate schedules last the whole run: planned over the steps that really run.

A streamed folder split whose files cannot all be decoded used to have an unknown
number of batches; Keras then advanced the optimizer's step once more per epoch
than it trained, and a decaying schedule reached its floor epochs before the end.
These tests train for real (tiny model, a few dozen 8×8 PNGs, verbose=0).
"""

from __future__ import annotations

import io
import json
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

from lib import runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
from lib.training import callbacks as training_callbacks
from lib.training import lr_plan, make_schedule, train_run

TINY_MODEL = ModelConfig(
    preset="custom",
    blocks=(ConvBlock(filters=4, batch_norm=False),),
    head=HeadConfig(dense=(8,)),
)
PER_CLASS = 16  # 3 classes: 48 files, 47 of them readable headers
BATCH = 8


def png_bytes(rng: np.random.Generator, colour: int) -> bytes:
    img = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
    img[..., colour] += 180  # a learnable class signal
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    """Class folders of 8×8 PNGs, one file that is no image and two cut short mid-data."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for k in range(3):
        folder = root / f"class{k}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            (folder / f"{i:02d}.png").write_bytes(png_bytes(rng, k))
    (root / "class0" / "not-an-image.png").write_bytes(b"hello")  # skipped by the scan
    for k in (1, 2):  # a good header, truncated pixels: dropped while decoding
        (root / f"class{k}" / "cut.png").write_bytes(png_bytes(rng, k)[:100])
    return root


def streamed_config(folder, schedule: str, epochs: int) -> RunConfig:
    return RunConfig(
        name="streamed",
        data=DataConfig(source="folder", path=str(folder), val_fraction=0.2, test_fraction=0.1),
        model=TINY_MODEL,
        train=TrainConfig(
            epochs=epochs,
            batch_size=BATCH,
            schedule=schedule,
            learning_rate=0.01,
            warmup_epochs=1.0,
            step_epochs=1,
            step_factor=0.5,
            tta_flip=False,
        ),
    )


class StepCounter(keras.callbacks.Callback):
    """Batches trained per epoch, and the optimizer's step when fit ends."""

    def __init__(self):
        super().__init__()
        self.batches: dict[int, int] = {}
        self.final_step = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.batches[epoch] = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches[self.epoch] += 1

    def on_train_end(self, logs=None):
        self.final_step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))


class StopMidEpoch(keras.callbacks.Callback):
    """Asks the run to stop (its stop file) after the first batch of ``epoch``."""

    def __init__(self, run_dir, epoch: int):
        super().__init__()
        self.stop_file = run_dir / runstore.STOP_FILE
        self.stop_epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.stop_epoch and batch == 0:
            self.stop_file.write_text("stop\n")


def read_plan(path) -> dict:
    return json.loads((path / runstore.LR_PLAN_FILE).read_text(encoding="utf-8"))


def logged_lrs(path) -> list[float]:
    return runstore.read_history(path)["learning_rate"]


def planned_lr_at(plan: dict, step: int) -> float:
    return plan["learning_rate"][plan["step"].index(step)]


def test_the_folder_really_has_files_that_fail(image_folder):
    from lib.data import load_dataset

    ds = load_dataset(streamed_config(image_folder, "cosine", 1).data)
    assert ds.streamed and any("not-an-image" in f for f, _ in ds.skipped)
    train = ds.splits["train"]
    assert any(ref.endswith("cut.png") for ref in train.refs)  # decoding drops it
    assert len(train) % BATCH != 0  # a last, smaller batch


def test_warmup_cosine_stopped_and_resumed_ends_at_its_floor_at_the_last_step(
    image_folder, monkeypatch
):
    monkeypatch.setattr(training_callbacks, "STOP_CHECK_INTERVAL_S", 0.0)
    epochs = 6
    path = runstore.create_run(streamed_config(image_folder, "warmup_cosine", epochs))

    first, second = StepCounter(), StepCounter()
    stopped = train_run(path, extra_callbacks=[first, StopMidEpoch(path, epoch=2)])
    assert stopped.state == "stopped", stopped.error
    (path / runstore.STOP_FILE).unlink()
    done = train_run(path, extra_callbacks=[second])
    assert done.state == "completed", done.error

    plan = read_plan(path)
    steps = plan["steps_per_epoch"]
    # Every epoch not cut short by the stop trained exactly the planned batches...
    assert first.batches[0] == first.batches[1] == steps and first.batches[2] < steps
    assert all(n == steps for n in second.batches.values())
    assert sorted(second.batches) == [3, 4, 5]
    # ...and the optimizer's step ends where the plan ends.
    assert plan["total_steps"] == plan["step"][-1] == epochs * steps == second.final_step

    lrs = logged_lrs(path)
    assert len(lrs) == epochs
    # History logs the rate at each epoch's end: the plan's rate at that step (the
    # stopped epoch ended after fewer batches; the resume starts at the planned step).
    ends = [(e + 1) * steps for e in range(epochs)]
    ends[2] = 2 * steps + first.batches[2]
    for lr, step in zip(lrs, ends, strict=True):
        assert lr == pytest.approx(planned_lr_at(plan, step), rel=1e-4, abs=1e-9)
    floor = plan["learning_rate"][-1]
    assert floor == pytest.approx(0.0, abs=1e-9)
    assert all(lr > floor + 1e-6 for lr in lrs[:-1])  # above the floor until the last epoch
    assert lrs[-1] == pytest.approx(floor, abs=1e-9)


@pytest.mark.parametrize("schedule", ["cosine", "one_cycle", "step"])
def test_other_schedules_reach_their_end_exactly_at_the_last_step(image_folder, schedule):
    epochs = 3
    path = runstore.create_run(streamed_config(image_folder, schedule, epochs))
    counter = StepCounter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = train_run(path, extra_callbacks=[counter])
    assert outcome.state == "completed", outcome.error
    # The validation split's end is no "ran out of data" alarm in the run's log.
    assert not [w for w in caught if "ran out of data" in str(w.message)]

    plan = read_plan(path)
    steps = plan["steps_per_epoch"]
    assert counter.final_step == plan["total_steps"] == epochs * steps
    lrs = logged_lrs(path)
    expected = [planned_lr_at(plan, (e + 1) * steps) for e in range(epochs)]
    assert lrs == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert lrs[-1] == pytest.approx(plan["learning_rate"][-1], rel=1e-4, abs=1e-9)
    if schedule != "step":  # a staircase only ends on its last stair
        assert lrs[-2] > plan["learning_rate"][-1] * 1.5


@pytest.mark.parametrize(
    ("schedule", "floor"),
    [
        ("cosine", 0.0),
        ("warmup_cosine", 0.0),
        ("one_cycle", 0.1 / 25 / 1e4),
    ],
)
@pytest.mark.parametrize("steps_per_epoch", [1, 7, 23])
def test_decaying_schedules_reach_the_floor_at_the_last_step_not_before(
    schedule, floor, steps_per_epoch
):
    cfg = TrainConfig(epochs=5, schedule=schedule, learning_rate=0.1, warmup_epochs=1.0)
    sched = make_schedule(cfg, steps_per_epoch)
    total = 5 * steps_per_epoch

    def lr(step: int) -> float:
        return float(keras.ops.convert_to_numpy(sched(step)))

    assert lr(total) == pytest.approx(floor, abs=1e-9)
    assert lr(total - 1) > floor + 1e-7
    plan = lr_plan(cfg, steps_per_epoch)
    assert plan["step"][-1] == plan["total_steps"] == total
    assert plan["epoch"][-1] == pytest.approx(5.0)
    assert plan["learning_rate"][-1] == pytest.approx(lr(total), abs=1e-9)


def test_step_schedule_takes_its_last_stair_at_its_planned_step():
    cfg = TrainConfig(epochs=4, schedule="step", learning_rate=0.1, step_epochs=2, step_factor=0.1)
    sched = make_schedule(cfg, 10)
    assert float(sched(19)) == pytest.approx(0.1)
    assert float(sched(20)) == pytest.approx(0.01)
    assert float(sched(40)) == pytest.approx(0.001)
    assert lr_plan(cfg, 10)["learning_rate"][-1] == pytest.approx(0.001)


def test_a_pass_short_of_batches_is_topped_up_to_the_planned_count():
    import tensorflow as tf

    from lib.training import exact_steps

    # 10 elements, batches of 4 → 3 planned; the filter drops two, like undecodable files.
    data = tf.data.Dataset.range(10).filter(lambda x: x % 5 != 0).batch(4)
    assert int(data.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    fixed = exact_steps(data, 3)
    assert int(fixed.cardinality()) == 3
    batches = [b.numpy().tolist() for b in fixed]
    assert batches[:2] == [[1, 2, 3, 4], [6, 7, 8, 9]] and batches[2] == [1, 2, 3, 4]
    known = tf.data.Dataset.range(10).batch(4)
    assert exact_steps(known, 3) is known
