"""MultiWorkerMirroredStrategy: two CLI workers on 127.0.0.1 (CPU) end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lib import runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
from lib.workspace import PROJECT_ROOT

pytestmark = pytest.mark.slow

TIMEOUT_S = 300  # two cold TensorFlow imports plus the collective set-up on 2 shared cores


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weights(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as fh:
        fh.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


@pytest.mark.slow
def test_two_workers_finish_with_identical_weights(tmp_path):
    # No batch norm: its moving statistics are per worker by design; the trained
    # weights are what the all-reduce keeps in sync.
    cfg = RunConfig(
        name="mw",
        data=DataConfig(source="digits"),
        model=ModelConfig(
            preset="custom",
            head=HeadConfig(dense=(8,)),
            blocks=(ConvBlock(filters=4, batch_norm=False),),
        ),
        train=TrainConfig(
            epochs=2, batch_size=128, schedule="constant", learning_rate=0.01, device="cpu"
        ),
    )
    recipe = tmp_path / "run.json"
    cfg.save(str(recipe))
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, dirs = [], []
    for index in range(2):
        run_dir = tmp_path / f"worker{index}"
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        log = open(tmp_path / f"worker{index}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "lib", "train", str(recipe), "--run-dir", str(run_dir)],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        dirs.append(run_dir)
    try:
        codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text(errors="replace")[-3000:] for i in range(2)]
    assert codes == [0, 0], logs
    for run_dir in dirs:
        assert runstore.read_status(run_dir).state == "completed"
        assert "multi-worker mirrored" in (run_dir / runstore.PROGRESS_FILE).read_text()
    w0, w1 = (weights(d / runstore.LAST_WEIGHTS_FILE) for d in dirs)
    assert w0.keys() == w1.keys() and w0
    for name in w0:
        np.testing.assert_allclose(w0[name], w1[name], rtol=0, atol=1e-6, err_msg=name)
    assert (dirs[0] / runstore.PREDICTIONS_FILE).exists()  # the chief evaluates
