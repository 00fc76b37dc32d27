"""Faults across processes: SIGKILLed workers, a full disk, an unusable workspace.

Everything goes through lib.jobs' public API, the way the pages use it: ``start_run``,
``poll`` (what the live panel calls on every refresh: reap + schedule), ``resume``.
The kill points are drawn from a seeded RNG (``KESTREL_FAULT_SEED``, printed on
failure) so a failing sequence can be replayed; ``bench/stress_kill.py`` runs many more.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib import jobs, runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
from lib.workspace import PROJECT_ROOT, WorkspaceError

pytestmark = pytest.mark.slow

REAP_DEADLINE_S = 10.0  # the bound: a dead worker is marked failed within 10 s
WORKER_TIMEOUT_S = 240.0  # a worker's cold TensorFlow import on 2 shared cores is slow
KILL_POINTS = ("startup", "mid_epoch", "epoch_end")


def tiny_config(epochs: int = 5, batch_size: int = 16, name: str = "fault") -> RunConfig:
    """Digits (8×8, in memory) and a one-block CNN: about a second per epoch on CPU."""
    return RunConfig(
        name=name,
        data=DataConfig(source="digits", seed=0),
        model=ModelConfig(
            preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
        ),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, schedule="constant", seed=0),
    )


# ---------------------------------------------------------------------------
# Reading a run from the outside, like the UI does


def events(run: Path) -> list[dict]:
    """Every complete line of progress.jsonl."""
    out = []
    try:
        lines = (run / runstore.PROGRESS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # the line being written when the worker died
    return out


def history_epochs(run: Path) -> list[int]:
    try:
        with open(run / runstore.HISTORY_FILE, newline="", encoding="utf-8") as fh:
            return [int(r["epoch"]) for r in csv.DictReader(fh) if r.get("epoch", "").isdigit()]
    except OSError:
        return []


def backup_epoch(run: Path) -> int:
    """Finished epochs according to the BackupAndRestore checkpoint (what resume uses)."""
    path = run / runstore.BACKUP_DIR / "training_metadata.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_end(run: Path, timeout: float = WORKER_TIMEOUT_S) -> runstore.RunStatus:
    """Poll like the page does until the run leaves queued/running."""

    def ended():
        jobs.poll()
        status = runstore.read_status(run)
        return status if status.state not in runstore.ACTIVE_STATES else None

    return wait_until(ended, timeout, f"run {run.name} to end", interval=0.25)


def kill_and_reap(run: Path) -> tuple[runstore.RunStatus, float]:
    """SIGKILL the run's worker; poll until it reads failed. Returns (status, seconds)."""
    pid = runstore.read_status(run).pid
    assert pid, "the run has no worker pid to kill"
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()

    def failed():
        jobs.poll()
        status = runstore.read_status(run)
        return status if status.state == "failed" else None

    status = wait_until(failed, REAP_DEADLINE_S, f"the killed run {run.name} to read failed", 0.2)
    return status, time.monotonic() - t0


def attempt_events(run: Path, after: float) -> list[dict]:
    """Progress events of the current attempt (from its ``start`` event on)."""
    evs = [e for e in events(run) if e.get("time", 0) >= after]
    starts = [i for i, e in enumerate(evs) if e.get("type") == "start"]
    return evs[starts[-1] :] if starts else []


def epochs_seen(run: Path, after: float) -> int:
    """Epochs the UI has seen finish so far: the attempt's start epoch + its epoch events."""
    evs = attempt_events(run, after)
    if not evs:
        return backup_epoch(run)
    return evs[0]["initial_epoch"] + sum(1 for e in evs if e.get("type") == "epoch")


def reach(run: Path, point: str, rng: random.Random, after: float) -> str:
    """Wait until the current attempt (begun after ``after``) reaches ``point``.

    ``startup``: 0–2 s into the worker (imports, data, model). ``mid_epoch``: a
    random share of the first or second epoch of the attempt. ``epoch_end``: the
    moment an epoch's end is reported, while its checkpoints are being written.
    Returns a description of the exact point, for the failure message.
    """
    if point == "startup":
        delay = rng.uniform(0.0, 2.0)
        time.sleep(delay)
        return f"startup+{delay:.1f}s"
    extra = rng.randint(0, 1)  # the attempt's first or second epoch
    if point == "mid_epoch":
        share = rng.uniform(0.15, 0.85)

        def there():
            evs = attempt_events(run, after)
            return any(
                e.get("type") == "batch"
                and e["epoch"] >= evs[0]["initial_epoch"] + extra
                and e["batch"] / e["steps"] >= share
                for e in evs
            ) or (runstore.read_status(run).state != "running")

        wait_until(there, WORKER_TIMEOUT_S, f"{share:.0%} into epoch +{extra}")
        return f"mid_epoch(+{extra}, {share:.0%})"

    def there():
        evs = attempt_events(run, after)
        done = sum(1 for e in evs if e.get("type") == "epoch")
        return done >= 1 + extra or (runstore.read_status(run).state != "running")

    wait_until(there, WORKER_TIMEOUT_S, f"the end of epoch +{extra}", interval=0.01)
    return f"epoch_end(+{extra})"


def load_final_model(run: Path):
    import keras
    import numpy as np

    model = keras.saving.load_model(run / runstore.MODEL_FILE, safe_mode=True)
    out = np.asarray(model(np.zeros((2, 8, 8, 1), "float32")))
    assert out.shape == (2, 10) and np.isfinite(out).all()
    return model


# ---------------------------------------------------------------------------
# SIGKILL at random points, then resume


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_and_completes(workspace):
    """Five SIGKILLs at random points of one run: each reaped ≤ 10 s, each resume loses ≤ 1 epoch."""
    seed = int(os.environ.get("KESTREL_FAULT_SEED", random.randrange(2**31)))
    rng = random.Random(seed)
    # Every kind of point at least once, then random ones; shuffled.
    points = [*KILL_POINTS, rng.choice(KILL_POINTS), rng.choice(KILL_POINTS)]
    rng.shuffle(points)
    cfg = tiny_config(epochs=40)  # many tiny epochs: a quiet machine cannot finish before the kills
    log = []  # (kill point, epochs seen finished, epoch the resume starts from, reap seconds)
    run = runstore.run_dir(jobs.start_run(cfg))
    attempt_began = time.time()
    try:
        for point in points:
            where = reach(run, point, rng, attempt_began)
            if runstore.read_status(run).state != "running":
                break  # finished before the kill point (fast machine): nothing left to kill
            status, reap_s = kill_and_reap(run)
            seen = max(epochs_seen(run, attempt_began), len(history_epochs(run)))
            resume_from = backup_epoch(run)
            log.append((where, seen, resume_from, round(reap_s, 2)))
            assert "killed" in status.error, status.error
            # At most the epoch being checkpointed when the kill landed is lost.
            assert resume_from >= seen - 1, log
            jobs.resume(run.name)
            attempt_began = time.time()
        status = wait_for_end(run)
    finally:
        print(f"KESTREL_FAULT_SEED={seed} kills={log}")
    assert len(log) == len(points) >= 5, log
    assert status.state == "completed", (
        status.error,
        (run / runstore.LOG_FILE).read_text()[-2000:],
    )
    # Each epoch trained to the end exactly once in the history (no duplicates, no gaps).
    assert history_epochs(run) == list(range(cfg.train.epochs)), log
    # Each resumed attempt really started where the checkpoint said (no silent restart).
    resumed_at = [e["initial_epoch"] for e in events(run) if e.get("type") == "start"][1:]
    assert resumed_at == sorted(resumed_at), (resumed_at, log)
    assert runstore.read_metrics(run)["epochs_done"] == cfg.train.epochs
    load_final_model(run)


@pytest.mark.slow
def test_sigkill_during_metadata_write_still_resumes(workspace):
    """A kill can land between truncating and writing training_metadata.json; resume copes."""
    cfg = tiny_config(epochs=3)
    run = runstore.run_dir(jobs.start_run(cfg))
    reach(run, "epoch_end", random.Random(0), time.time() - 1)
    wait_until(lambda: backup_epoch(run) >= 1, 60, "the first backup")
    kill_and_reap(run)
    # What open(..., "w") leaves when the kill comes before the write.
    (run / runstore.BACKUP_DIR / "training_metadata.json").write_text("")
    jobs.resume(run.name)
    status = wait_for_end(run)
    assert status.state == "completed", (
        status.error,
        (run / runstore.LOG_FILE).read_text()[-3000:],
    )
    assert history_epochs(run) == list(range(cfg.train.epochs))
    load_final_model(run)


# What a kill during BackupAndRestore's save (double_checkpoint=True) can leave in backup/:
# it copies the pair to *.bkp, then writes latest.weights.h5, then training_metadata.json.
# (metadata, weights, previous metadata, previous weights): "ok" = that epoch's good file,
# "empty"/"cut" = damaged, None = absent. Then the epoch a resume starts at (None: backup/
# deleted) and whether status gets a warning.
BACKUP_CASES = {
    "intact": (("ok", 2), ("ok", 2), ("ok", 1), ("ok", 1), 2, False),
    "killed-writing-metadata": (("empty", 2), ("ok", 2), ("ok", 1), ("ok", 1), 1, False),
    "metadata-cut-short": (("cut", 2), ("ok", 2), ("ok", 1), ("ok", 1), 1, False),
    "killed-writing-weights": (("ok", 1), ("cut", 2), ("ok", 1), ("ok", 1), 1, False),
    "first-save-metadata": (("empty", 1), ("ok", 1), None, None, None, True),
    "first-save-weights": (None, ("cut", 1), None, None, None, True),
    "previous-pair-damaged": (("empty", 3), ("ok", 3), ("empty", 2), ("ok", 2), None, True),
    "empty-folder": (None, None, None, None, None, False),
}


@pytest.mark.parametrize("case", list(BACKUP_CASES))
def test_repair_backup_restores_the_previous_pair_or_restarts(workspace, case):
    """Resume never fails on a half-written backup, and keeps the history it still covers."""
    import keras
    import numpy as np

    from lib.training import read_backup_epoch, repair_backup, trim_history

    meta, weights, prev_meta, prev_weights, resume_at, warns = BACKUP_CASES[case]
    run = runstore.create_run(tiny_config())
    backup = run / runstore.BACKUP_DIR
    backup.mkdir()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    def weights_bytes(epoch: int) -> bytes:
        model.layers[0].kernel.assign(np.full((3, 2), epoch, "float32"))
        model.save_weights(str(run / "w.weights.h5"))
        return (run / "w.weights.h5").read_bytes()

    def write(name: str, spec, kind: str) -> None:
        if spec is None:
            return
        how, epoch = spec
        data = (
            json.dumps({"epoch": epoch, "batch": 0}).encode()
            if kind == "meta"
            else weights_bytes(epoch)
        )
        (backup / name).write_bytes({"ok": data, "empty": b"", "cut": data[: len(data) // 2]}[how])

    write("training_metadata.json", meta, "meta")
    write("latest.weights.h5", weights, "weights")
    write("training_metadata.json.bkp", prev_meta, "meta")
    write("latest.weights.h5.bkp", prev_weights, "weights")
    header = "epoch,accuracy,loss\r\n"
    rows = "".join(f"{e},0.5,1.0\r\n" for e in range(3))
    (run / runstore.HISTORY_FILE).write_text(header + rows, encoding="utf-8")

    note, warning = repair_backup(run)
    assert bool(warning) == warns, warning
    assert bool(note) == (resume_at is not None and case != "intact"), note
    if resume_at is None:
        assert not backup.exists()  # the run starts again from epoch 0
    else:
        assert read_backup_epoch(run) == resume_at
        # The restored weights are the ones of the restored epoch, and they load.
        model.load_weights(str(backup / "latest.weights.h5"))
        np.testing.assert_array_equal(np.asarray(model.layers[0].kernel), resume_at)
    assert repair_backup(run) == ("", "")  # repaired for good: the next attempt finds it fine
    kept = trim_history(run, read_backup_epoch(run))
    assert [int(r["epoch"]) for r in kept] == list(range(resume_at or 0))


# ---------------------------------------------------------------------------
# A full disk


def _limit_file_size(limit: int):
    def apply():
        # RLIMIT_FSIZE: any write past ``limit`` bytes fails with EFBIG, as on a full disk
        # (and root is not exempt, unlike chmod). SIGXFSZ ignored: an error, not a death.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


@pytest.mark.slow
def test_full_disk_fails_the_run_clearly_and_leaves_no_half_model(workspace):
    """A worker that cannot write its model fails with the OS's reason; no model.keras appears."""
    cfg = tiny_config(epochs=2)
    run = runstore.create_run(cfg)
    env = dict(os.environ, KESTREL_HOME=str(workspace), TF_CPP_MIN_LOG_LEVEL="2")
    # Big enough for status, config, history and progress lines; too small for a model.
    proc = subprocess.run(
        [sys.executable, "-m", "lib", "train", "--run-dir", str(run)],
        cwd=PROJECT_ROOT,
        env=env,
        preexec_fn=_limit_file_size(24 * 1024),
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
    )
    status = runstore.read_status(run)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert status.state == "failed", (status, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "too large" in status.error.lower() or "no space" in status.error.lower(), status.error
    # Nothing half-written is left under a final name: no model.keras, no temporary leftovers.
    assert not (run / runstore.MODEL_FILE).exists()
    assert not list(run.glob(".tmp-*")), list(run.iterdir())
    # The run can be resumed once there is room again, and it then completes.
    jobs.resume(run.name)
    status = wait_for_end(run)
    assert status.state == "completed", status.error
    load_final_model(run)


def test_enospc_during_atomic_write_keeps_the_old_file(workspace, monkeypatch):
    """A full disk mid-write leaves the previous status.json intact and no temporary file."""
    run = runstore.create_run(tiny_config())
    before = (run / runstore.STATUS_FILE).read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        runstore.update_status(run, state="running")
    monkeypatch.undo()
    assert (run / runstore.STATUS_FILE).read_bytes() == before
    assert runstore.read_status(run).state == "queued"
    assert sorted(p.name for p in run.iterdir()) == [runstore.CONFIG_FILE, runstore.STATUS_FILE]


# ---------------------------------------------------------------------------
# An unusable workspace


@pytest.mark.parametrize(
    "blocker",
    [
        pytest.param("", id="workspace-is-a-file"),
        pytest.param("runs", id="runs-is-a-file"),
    ],
)
def test_unusable_workspace_gives_a_clear_error(workspace, monkeypatch, tmp_path, blocker):
    """A file where the workspace (or its runs folder) should be: a WorkspaceError, no traceback."""
    if blocker:
        (workspace / blocker).write_text("not a folder")
    else:
        home = tmp_path / "home-file"
        home.write_text("not a folder")
        monkeypatch.setenv("KESTREL_HOME", str(home))
    with pytest.raises(WorkspaceError) as info:
        runstore.create_run(tiny_config())
    assert "KESTREL_HOME" in str(info.value) or "folder" in str(info.value)
    # The runs table degrades to empty instead of raising.
    assert jobs.list_runs() == []


# ---------------------------------------------------------------------------
# Form values at and past their limits, where they meet the dataset


@pytest.mark.parametrize(
    ("batch_size", "ok"),
    [
        (lambda n: 1, True),  # the smallest batch
        (lambda n: n, True),  # exactly the training split
        (lambda n: n + 1, False),  # one image more than the split
        (lambda n: 8192, False),  # the field's maximum, far past the split
    ],
    ids=["1", "split", "split+1", "8192"],
)
def test_batch_size_at_and_past_the_training_split(workspace, batch_size, ok):
    """Accepted at the limit; refused one past it, before any run directory exists."""
    from lib.data import load_dataset
    from lib.training import RunConfigError, validate_run

    cfg = tiny_config()
    n_train = len(load_dataset(cfg.data).splits["train"])
    cfg = cfg.replace(train=cfg.train.replace(batch_size=batch_size(n_train)))
    if ok:
        validate_run(cfg)
        return
    with pytest.raises(RunConfigError, match=r"TrainConfig\.batch_size"):
        jobs.start_run(cfg)
    assert jobs.list_runs() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 1001),
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("learning_rate", float("inf")),
        ("learning_rate", float("nan")),
        ("label_smoothing", 0.51),
        ("seed", -1),
        ("seed", 2**31),
    ],
)
def test_train_values_past_their_limits_are_refused_with_the_field_named(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**{field: value})


def test_resource_limit_helper_really_limits_writes(tmp_path):
    """The full-disk test's premise: a child under the limit cannot write past it."""
    target = tmp_path / "big.bin"
    code = f"open({str(target)!r}, 'wb').write(b'x' * 100_000)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=_limit_file_size(4096),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "File too large" in proc.stderr
