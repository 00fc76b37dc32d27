"""Scenarios 2 and 3, and the server restart: the run directory is the source of truth.

- Reloading the Train page while a run trains brings its live progress back; the run ends.
- Two browser contexts (two people) keep their own selections but share the runs.
- The server is killed while a run trains (the worker lives in its own session) and
  started again on the same port: the open tab reconnects and shows the run still
  training; a worker killed next is shown failed within seconds, never "running"
  forever, and Resume in the browser finishes it.
- A deep link as the very first request of a fresh server runs through app.py.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from helpers import (
    StreamlitServer,
    assert_healthy,
    click,
    main_text,
    navigate,
    open_page,
    select,
    set_number,
    use_digits,
    wait_connected,
    wait_for_text,
    wait_idle,
)

from lib import jobs, runstore
from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 300
PROGRESS = r"Epoch (\d+) of (\d+)"


def _tiny(epochs: int, name: str) -> RunConfig:
    """Digits and a one-block CNN: a second or two per epoch."""
    return RunConfig(
        name=name,
        data=DataConfig(source="digits"),
        model=ModelConfig(
            preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
        ),
        train=TrainConfig(epochs=epochs, batch_size=16, schedule="constant"),
    )


def _status(run_id: str) -> runstore.RunStatus:
    return runstore.read_status(runstore.run_dir(run_id))


def _wait_state(run_id: str, states: tuple[str, ...], timeout: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(run_id)
        if status.state in states:
            return status
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} is {_status(run_id)} after {timeout}s, not in {states}")


def _batch_text(page) -> str:
    return re.search(r"Batch \d+ of \d+|$", main_text(page)).group(0)


def test_reload_while_training_brings_the_live_progress_back(streamlit_server, page, steps):
    # Far more epochs than the test waits for: the progress must move, not the run end.
    run_id = jobs.start_run(_tiny(epochs=500, name="reload me"))
    open_page(page, streamlit_server, "train")
    wait_for_text(page, PROGRESS, timeout_s=RUN_TIMEOUT_S)
    before = _batch_text(page)
    steps(page, "training")

    page.reload()
    wait_idle(page)
    assert_healthy(page)
    steps(page, "reloaded")
    watched = page.get_by_role("combobox", name="Watching run").first.input_value()
    assert "reload me" in watched, watched  # the new session watches the active run again
    # The live panel refreshes on its own after the reload: the batch counter moves on.
    moved = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not moved:
        now = _batch_text(page)
        if now and now != before:
            moved = now
        page.wait_for_timeout(300)
    assert _status(run_id).state == "running"  # 500 epochs: it cannot have ended
    assert moved, "no live progress after the reload"

    jobs.request_stop(run_id)  # the Stop button has its own test (tests/app/test_train_page.py)
    _wait_state(run_id, ("stopped",))
    wait_for_text(page, r"Stopped\. Resume continues", timeout_s=30)
    steps(page, "stopped")


def test_two_contexts_keep_their_own_selections_and_share_runs(streamlit_server, new_page, steps):
    alice, bob = new_page(), new_page()
    for who in (alice, bob):
        open_page(who, streamlit_server, "")
        navigate(who, "Dataset")
    use_digits(alice)
    steps(alice, "alice-digits")
    set_number(bob, "Images", 600)
    wait_for_text(bob, r"In use: shapes \(600 × 64px\)")
    steps(bob, "bob-shapes-600")

    # Each session keeps its own recipe while the other one changes theirs.
    for who, mine, theirs in ((alice, "digits", "600"), (bob, "shapes (600", "digits")):
        navigate(who, "Home")
        sidebar = who.inner_text('[data-testid="stSidebar"]')
        assert mine in sidebar and theirs not in sidebar, sidebar

    # Runs are shared: a run started now (as the CLI would) shows up for both.
    run_id = jobs.start_run(_tiny(epochs=1, name="shared"), validate=False)
    for who in (alice, bob):
        navigate(who, "Train")
        # the newest run is the one each page watches when it has no pick of its own
        watched = who.get_by_role("combobox", name="Watching run").first.input_value()
        assert watched.startswith("shared · digits"), (run_id, watched)
        steps(who, "runs-list")
    _wait_state(run_id, ("completed", "failed"))


def test_server_restart_while_training_keeps_the_status_true(
    workspace, browser, new_page, steps, tmp_path
):
    server = StreamlitServer(workspace, tmp_path / "restart.log")
    base = server.start()
    try:
        page = new_page()
        open_page(page, base, "")  # not a deep link: that bug has its own test below
        navigate(page, "Dataset")
        use_digits(page)
        navigate(page, "Model")
        select(page, "Architecture", "LeNet-5")
        navigate(page, "Train")
        set_number(page, "Epochs", 400)  # it cannot end before the test is done with it
        set_number(page, "Batch size", 16)
        click(page, "Start training")
        run_id = jobs.list_runs()[0].run_id
        wait_for_text(page, PROGRESS, timeout_s=RUN_TIMEOUT_S)
        worker = _status(run_id).pid
        steps(page, "training-before-restart")

        server.stop(signal.SIGKILL)  # a crash: no clean shutdown of anything
        time.sleep(2)
        assert jobs.process_alive(worker, _status(run_id).pid_start), "the worker died too"
        server.start()  # same port: the open tab reconnects by itself
        wait_connected(page)
        wait_for_text(page, PROGRESS, timeout_s=120)
        wait_idle(page)
        assert_healthy(page)
        steps(page, "after-restart")
        assert _status(run_id).state == "running"
        # The live panel moves on (the first run after a restart imports TensorFlow).
        before = _batch_text(page)
        for _ in range(60):
            page.wait_for_timeout(500)
            if _batch_text(page) != before:
                break
        assert _status(run_id).state == "running"
        assert _batch_text(page) != before, "the live panel did not move after the restart"
        # The draft came back with the page: the form still shows what was typed.
        assert page.get_by_role("spinbutton", name="Epochs").first.input_value() == "400"

        # The worker dies now: the page (reaping as it polls) says so within seconds.
        os.kill(worker, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for_text(page, r"Failed: the training process", timeout_s=15)
        assert time.monotonic() - t0 <= 10 + 2  # 10 s bound + the panel's refresh period
        assert _status(run_id).state == "failed"
        steps(page, "failed-shown")

        click(page, "Resume")
        wait_for_text(page, PROGRESS, timeout_s=RUN_TIMEOUT_S)
        jobs.request_stop(run_id)  # 400 epochs are not needed to prove it trains again
        status = _wait_state(run_id, ("stopped",))
        assert status.attempts == 2
        wait_for_text(page, r"Stopped\. Resume continues", timeout_s=30)
        steps(page, "resumed-and-stopped")
    finally:
        server.stop()
        for run in jobs.list_runs():
            if run.state == "running" and (pid := _status(run.run_id).pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("path", ["train", "dataset"])
def test_deep_link_as_the_first_request_runs_through_the_router(
    path, workspace, new_page, tmp_path
):
    """With pages/ beside app.py, Streamlit's legacy mode must not run a page alone."""
    server = StreamlitServer(workspace, tmp_path / "deeplink.log")
    base = server.start()
    try:
        page = new_page()
        open_page(page, base, path, healthy=False)
        try:
            # The shared sidebar that app.py draws ("Dataset · shapes …"); a legacy
            # run of the page alone has none. (A fix may rerun once: wait for it.)
            wait_for_text(page, r"Dataset · ", timeout_s=60, where='[data-testid="stSidebar"]')
            wait_idle(page)
            assert_healthy(page)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nserver log:\n{server.log_tail(2500)}") from None
    finally:
        server.stop()
