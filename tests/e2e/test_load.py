"""Under load (the tiny size of bench/bench_load.py): browsers on every page, runs training, a worker killed."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_every_page_stays_healthy_while_runs_train_and_a_worker_dies(
    monkeypatch, tmp_path, browser
):
    from bench import __main__ as bench_main
    from bench import bench_load

    # bench_load points these at its own workspace and limit: restore them afterwards
    monkeypatch.setenv("KESTREL_HOME", str(tmp_path))
    monkeypatch.setenv("KESTREL_MAX_CONCURRENT_RUNS", "2")
    result = bench_load.run("tiny", browser=browser)  # the session's Chromium: one per thread
    # The benchmark smoke test leaves load's tiny run to this test: the report renders it.
    report = bench_main.section_markdown("load", {"result": json.loads(json.dumps(result))})
    assert report.startswith("### load:") and "| 0 | 0 | 0 |" in report, report
    assert result["worker_killed"], "no worker was killed: the test proved nothing"
    assert result["exceptions"] == []
    assert result["runs_lost"] == 0
    assert result["runs_stuck_running"] == 0, result["run_states_after"]
    states = sorted(result["run_states_after"].values())
    assert "failed" in states, states  # the killed one says so
    assert result["page_visits"] == 2 * len(bench_load.PAGES)
