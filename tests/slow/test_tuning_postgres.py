"""A study with two worker processes, on a real PostgreSQL server and on the SQLite default.

The fixture starts Debian's PostgreSQL (``make test`` installs the ``postgresql``
package) in a temporary folder with initdb/pg_ctl. initdb refuses to run as
root, so as root the server runs as the unprivileged ``nobody`` user through
``setpriv`` (util-linux); the test is skipped only when no PostgreSQL binaries
are installed or neither way can start it.

Each trial trains a real run in its own process (a cold TensorFlow import each),
hence the long timeouts.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from tiny_runs import wait_for

from lib import jobs, runs, runstore, tuning
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig

pytestmark = pytest.mark.slow

STUDY_TIMEOUT_S = 480
BASE = RunConfig(
    data=DataConfig(source="digits"),
    model=ModelConfig(
        preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
    ),
    train=TrainConfig(batch_size=64, schedule="constant"),
)
SPACE = {
    "train.learning_rate": {"low": 1e-3, "high": 3e-2},
    "train.optimizer": {"choices": ["adam", "rmsprop"]},
}


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server in a temporary folder; yields its SQLAlchemy URL."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip(
            "PostgreSQL is not installed (Debian package 'postgresql'; make test installs it)"
        )
    as_user: list[str] = []
    # Under /tmp itself: pytest's own tmp folders are closed to other users.
    root = Path(tempfile.mkdtemp(prefix="kestrel-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:  # initdb refuses root: run the server as 'nobody'
        setpriv = shutil.which("setpriv")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            nobody = None
        if setpriv is None or nobody is None:
            pytest.skip("running as root without setpriv or a 'nobody' user: initdb cannot run")
        os.chmod(root, 0o755)
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        as_user = [
            setpriv,
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
        ]
    port = _free_port()

    def pg_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)

    init = pg_run(
        str(pg / "initdb"), "-D", str(data), "-U", "kestrel", "--auth=trust", "-E", "UTF8"
    )
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = pg_run(
        str(pg / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"
    )
    assert start.returncode == 0, start.stderr + (data / "log").read_text()
    try:
        created = pg_run(
            str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "kestrel", "kestrel"
        )
        assert created.returncode == 0, created.stderr
        yield f"postgresql+psycopg2://kestrel@127.0.0.1:{port}/kestrel"
    finally:
        pg_run(str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def run_two_worker_study(
    name: str, storage: str, n_trials: int = 4
) -> tuple[tuning.StudySpec, Path]:
    spec = tuning.StudySpec(
        name=name,
        base=BASE,
        space=SPACE,
        n_trials=n_trials,
        budget_epochs=2,
        storage=storage,
        seed=0,
    )
    folder = tuning.create_study(spec)
    pids = tuning.spawn_workers(folder, 2)
    assert len(set(pids)) == 2
    deadline = time.monotonic() + STUDY_TIMEOUT_S
    while tuning.live_workers(folder) and time.monotonic() < deadline:
        jobs.poll()
        time.sleep(1)
    assert not tuning.live_workers(folder), (folder / tuning.WORKERS_DIR / "log.txt").read_text()[
        -3000:
    ]
    return spec, folder


def check_study(spec: tuning.StudySpec, folder: Path) -> None:
    study = tuning.load_study(spec, folder)
    trials = study.get_trials(deepcopy=False)
    log = (folder / tuning.WORKERS_DIR / "log.txt").read_text()[-3000:]
    states = [t.state.name for t in trials]
    assert tuning.counted_trials(study) == spec.n_trials, (states, log)
    assert len(trials) == spec.n_trials, (states, log)  # no worker ran an extra trial
    # Every trial is its own run: no trial ran twice, no run served two trials.
    run_ids = [t.user_attrs["run_id"] for t in trials]
    # Workers seeded from one spec still draw their own parameters.
    assert len({t.params["train.learning_rate"] for t in trials}) == len(trials)
    assert len(set(run_ids)) == len(run_ids)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(spec.n_trials))
    views = {v.run_id: v for v in runs.list_views()}
    for t in trials:
        path = runstore.run_dir(t.user_attrs["run_id"])
        info = runstore.read_trial(path)
        assert (info["study"], info["trial_number"]) == (spec.name, t.number)
        assert runstore.read_status(path).state == "completed"
        assert t.user_attrs["run_id"] in views  # an ordinary run in the runs list
        # Reported by the run's own process: every epoch it trained. The median
        # pruner may stop a trial after epoch 1; then its run ends early, like an
        # early-stopped one, and says so in trial.json.
        trained = info.get("pruned_epoch") or 2
        assert t.state.name == ("PRUNED" if "pruned_epoch" in info else "COMPLETE"), info
        assert sorted(t.intermediate_values) == list(range(1, trained + 1)), info
        cfg = runstore.read_config(path)
        assert cfg.train.learning_rate == t.params["train.learning_rate"]
        assert cfg.train.epochs == 2 and cfg.name == f"{spec.name} #{t.number}"
        if t.state.name == "COMPLETE":
            assert t.value == pytest.approx(runstore.read_metrics(path)["best_val_accuracy"])


@pytest.fixture
def two_runs_at_once(monkeypatch):
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "2")


def test_two_workers_share_a_study_on_postgresql(postgres_url, two_runs_at_once):
    spec, folder = run_two_worker_study("pg study", postgres_url)
    assert not (folder / tuning.DB_FILE).exists()  # the study lives in PostgreSQL
    check_study(spec, folder)


def test_two_workers_share_a_study_on_the_sqlite_default(two_runs_at_once):
    spec, folder = run_two_worker_study("sqlite study", "")
    assert (folder / tuning.DB_FILE).is_file()
    check_study(spec, folder)


# ---------------------------------------------------------------- crashes lose at most one trial


def running_run(study) -> str | None:
    """The run id of a trial whose run is training now."""
    for t in study.get_trials(deepcopy=False):
        run = t.user_attrs.get("run_id")
        if (
            t.state.name == "RUNNING"
            and run
            and runstore.read_status(runstore.run_dir(run)).state == "running"
        ):
            return run
    return None


def test_a_killed_run_fails_only_its_trial():
    spec = tuning.StudySpec(
        name="kill run", base=BASE, space=SPACE, n_trials=2, budget_epochs=30, pruner="none", seed=0
    )
    folder = tuning.create_study(spec)
    tuning.spawn_workers(folder, 1)
    study = tuning.load_study(spec, folder)
    run = wait_for(lambda: running_run(study), STUDY_TIMEOUT_S, "a trial's run to train")
    os.kill(runstore.read_status(runstore.run_dir(run)).pid, 9)
    # The worker goes on with the next trial.
    wait_for(
        lambda: any(t.state.name == "FAIL" for t in study.get_trials(deepcopy=False)),
        120,
        "the killed run's trial to fail",
    )
    failed = next(t for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL")
    assert failed.user_attrs["run_id"] == run
    assert "killed" in failed.user_attrs["error"]
    nxt = wait_for(
        lambda: running_run(study) not in (None, run) and running_run(study), 240, "the next trial"
    )
    assert nxt != run and tuning.live_workers(folder)
    tuning.stop_study(folder)
    wait_for(lambda: not tuning.live_workers(folder), 240, "the worker to stop")
    states = sorted(t.state.name for t in study.get_trials(deepcopy=False))
    assert states == ["FAIL", "FAIL"]  # the killed one, and the one stopped with the study
    assert tuning.counted_trials(study) == 0  # neither counts: a resumed study runs both again
