"""The robustness report: corruptions, the stored report, the CLI, the job and hardened clones."""

import json
import os

import numpy as np
import pytest

from lib import cli, robustness, runstore
from tests.tiny_runs import make_finished_run


@pytest.mark.parametrize("name", list(robustness.CORRUPTIONS))
def test_every_corruption_changes_images_more_at_higher_severity(name):
    rng = np.random.default_rng(0)
    images = rng.integers(40, 200, (12, 28, 28, 1), dtype=np.uint8)
    images[:, 8:20, 8:20] = 230  # some structure for blur, rotation and JPEG to act on
    diffs = []
    for s in robustness.SEVERITIES:
        out = robustness.corrupt(images, name, s)
        assert out.shape == images.shape and out.dtype == np.uint8
        diffs.append(np.abs(out.astype(int) - images).mean())
    assert 0 < diffs[0] <= diffs[1] <= diffs[2] + 1e-9, diffs
    np.testing.assert_array_equal(
        robustness.corrupt(images, name, 2), robustness.corrupt(images, name, 2)
    )


def test_corrupt_refuses_unknown_names_and_severities():
    images = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(robustness.RobustnessError, match="unknown corruption"):
        robustness.corrupt(images, "fog", 1)
    with pytest.raises(robustness.RobustnessError, match="severity"):
        robustness.corrupt(images, "blur", 4)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("KESTREL_HOME")
    os.environ["KESTREL_HOME"] = str(home)
    try:
        yield make_finished_run(epochs=4, hidden=32)
    finally:
        if old is None:
            os.environ.pop("KESTREL_HOME", None)
        else:
            os.environ["KESTREL_HOME"] = old


def test_cli_computes_and_stores_the_report(finished_run, monkeypatch, capsys):
    monkeypatch.setenv("KESTREL_HOME", str(finished_run.parents[1]))
    assert cli.main(["robustness", finished_run.name]) == 0
    report = robustness.read_report(finished_run)
    assert report is not None and report["images"] > 0
    assert set(report["corruptions"]) == set(robustness.CORRUPTIONS)
    assert report["attacks"]["fgsm"]["epsilons"] == [1, 2, 4, 8]
    assert report["attacks"]["pgd"]["accuracy"][-1] < report["clean"]
    rows = robustness.table_rows(report)
    assert len(rows) == 1 + 7 * 3 + 2 * 4
    status = runstore.read_status(robustness.job_dir(finished_run))
    assert status.state == "completed"
    assert "PGD" in capsys.readouterr().out
    json.dumps(report)


def test_compare_says_what_hardening_bought():
    base = {"clean": 0.9, "corruptions": {"blur": {"accuracy": [0.8, 0.7, 0.6]}},
            "attacks": {"fgsm": {"epsilons": [1, 2], "accuracy": [0.5, 0.3]},
                        "pgd": {"epsilons": [1, 2], "accuracy": [0.4, 0.2]}}}  # fmt: skip
    hard = {"clean": 0.88, "corruptions": {"blur": {"accuracy": [0.85, 0.8, 0.75]}},
            "attacks": {"fgsm": {"epsilons": [1, 2], "accuracy": [0.7, 0.6]},
                        "pgd": {"epsilons": [1, 2], "accuracy": [0.6, 0.5]}}}  # fmt: skip
    diff = robustness.compare(base, hard)
    assert diff["clean_lost"] == pytest.approx(0.02)
    assert diff["pgd_eps2_gained"] == pytest.approx(0.3)
    assert diff["fgsm_eps2_gained"] == pytest.approx(0.3)
    assert diff["corruption_gained"] == pytest.approx(0.1)


def test_a_hardened_clone_carries_the_settings_and_its_source(finished_run, monkeypatch):
    monkeypatch.setenv("KESTREL_HOME", str(finished_run.parents[1]))
    method = next(iter(robustness.HARDENING_METHODS))
    new_id = robustness.hardened_clone(finished_run.name, method, start=False)
    clone = runstore.run_dir(new_id)
    assert robustness.hardened_from(clone) == finished_run.name
    cfg = runstore.read_config(clone)
    assert cfg.augment.adversarial_epsilon == 2.0
    assert cfg.data == runstore.read_config(finished_run).data
    with pytest.raises(robustness.RobustnessError, match="unknown hardening"):
        robustness.hardened_clone(finished_run.name, "magic", start=False)


def test_the_report_of_an_unfinished_run_is_refused(finished_run, monkeypatch):
    monkeypatch.setenv("KESTREL_HOME", str(finished_run.parents[1]))
    from lib.config import RunConfig

    queued = runstore.create_run(RunConfig())
    with pytest.raises(robustness.RobustnessError, match="not completed"):
        robustness.start_report(queued.name)
    assert cli.main(["robustness", queued.name]) == 1


def test_the_background_report_runs_in_its_own_process_and_refuses_a_second_start(
    finished_run, monkeypatch
):
    from lib.progress import EndEvent, PhaseEvent, read_events
    from tests.tiny_runs import wait_for

    monkeypatch.setenv("KESTREL_HOME", str(finished_run.parents[1]))
    (finished_run / runstore.ROBUSTNESS_FILE).unlink(missing_ok=True)
    folder = robustness.job_dir(finished_run)
    (folder / runstore.LOG_FILE).unlink(missing_ok=True)
    robustness.start_report(finished_run.name)
    status = robustness.job_status(finished_run)
    assert status.state == "running" and status.pid and status.pid != os.getpid()
    with pytest.raises(robustness.RobustnessError, match="being computed already"):
        robustness.start_report(finished_run.name)
    done = wait_for(
        lambda: (
            robustness.job_status(finished_run).state != "running"
            and robustness.job_status(finished_run)
        ),
        120,
        "the background report",
        poll=False,
    )
    assert done.state == "completed", (done.error, (folder / runstore.LOG_FILE).read_text())
    report = robustness.read_report(finished_run)
    assert report is not None and report["images"] > 0
    assert set(report["corruptions"]) == set(robustness.CORRUPTIONS)
    events = read_events(folder)
    assert any(isinstance(e, PhaseEvent) for e in events)
    assert isinstance(events[-1], EndEvent) and events[-1].state == "completed"
    assert robustness.latest_phase(finished_run)
