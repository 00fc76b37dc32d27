"""Under load: several browsers click through every page while two runs train and a worker dies.

    python -m bench --only load            # 3 browser contexts, 3 rounds of every page
    python -m bench --only load --size tiny

A real ``streamlit run`` on a fresh workspace, two tiny digits runs training in the
background (KESTREL_MAX_CONCURRENT_RUNS=2), and N Chromium contexts (N people) that
each visit every page of the sidebar R times. Half-way, one training worker is
SIGKILLed. Measured: each page visit from the click to the end of its script run
(median, p95, max); and checked: no exception box on any page, no run lost (both
run folders still there), none stuck (the killed one is marked failed, never
"running" forever; the other keeps training or completes).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_app import CHROMIUM, CHROMIUM_ARGS, ROOT, _free_port, _healthy

SIZES = {"full": {"contexts": 3, "rounds": 3}, "tiny": {"contexts": 2, "rounds": 1}}
PAGES = ("Home", "Dataset", "Augmentation", "Model", "Train", "Evaluate", "Compare runs", "Predict")
SCRIPT_TIMEOUT_S = 180.0
REAP_LIMIT_S = 30.0  # a killed worker must be marked failed within this (pages reap as they poll)


def _tiny_run(name: str, epochs: int):
    from lib.config import ConvBlock, DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        name=name,
        data=DataConfig(source="digits"),
        model=ModelConfig(
            preset="custom", blocks=(ConvBlock(filters=8),), head=HeadConfig(dense=(16,))
        ),
        train=TrainConfig(epochs=epochs, batch_size=32, schedule="constant"),
    )


def _wait_idle(page, timeout_s: float = SCRIPT_TIMEOUT_S, settle_ms: int = 300) -> None:
    deadline = time.monotonic() + timeout_s
    idle_since = None
    while time.monotonic() < deadline:
        state = page.get_attribute('[data-testid="stApp"]', "data-test-script-state")
        if state == "notRunning":
            idle_since = idle_since or time.monotonic()
            if (time.monotonic() - idle_since) * 1000 >= settle_ms:
                return
        else:
            idle_since = None
        page.wait_for_timeout(50)
    raise TimeoutError(f"{page.url} still running after {timeout_s}s")


def _visit(page, title: str) -> float:
    """Click the sidebar link ``title``; seconds until the page's script run has ended."""
    link = page.locator('[data-testid="stSidebarNav"] a').filter(
        has_text=re.compile(rf"{re.escape(title)}\s*$")
    )
    t0 = time.monotonic()
    link.first.click()
    page.wait_for_timeout(100)  # let the rerun start before waiting for its end
    _wait_idle(page)
    return time.monotonic() - t0 - 0.3  # the settle time is not the page's


def _exceptions(page) -> list[str]:
    return [e.inner_text()[:300] for e in page.query_selector_all('[data-testid="stException"]')]


def run(size: str = "full", browser=None) -> dict:
    """Measure; ``browser`` is a Chromium already launched by the caller (a test's session),
    since one thread can hold only one Playwright session."""
    plan = SIZES[size]
    workspace = Path(tempfile.mkdtemp(prefix="kestrel-load-"))
    env = dict(os.environ, KESTREL_HOME=str(workspace), KESTREL_MAX_CONCURRENT_RUNS="2")
    env.update(TF_CPP_MIN_LOG_LEVEL="2", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    os.environ["KESTREL_HOME"] = str(workspace)
    os.environ["KESTREL_MAX_CONCURRENT_RUNS"] = "2"
    from lib import jobs, runstore

    port = _free_port()
    log = open(workspace / "server.log", "ab")  # noqa: SIM115 - the server writes to it
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port)],
        cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    runs = [jobs.start_run(_tiny_run(f"load {i}", 400), validate=False) for i in range(2)]
    times: dict[str, list[float]] = {p: [] for p in PAGES}
    found: list[str] = []
    killed = None
    killed_at = None
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.3)
        with contextlib.ExitStack() as stack:
            if browser is None:
                from playwright.sync_api import sync_playwright

                pw = stack.enter_context(sync_playwright())
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                stack.callback(browser.close)
            contexts = []
            stack.callback(lambda: [c.close() for c in contexts])
            pages = []
            for _ in range(plan["contexts"]):
                contexts.append(browser.new_context(viewport={"width": 1300, "height": 900}))
                page = contexts[-1].new_page()
                page.goto(url, wait_until="domcontentloaded")
                _wait_idle(page)
                pages.append(page)
            total = plan["rounds"] * len(PAGES)
            for step in range(total):
                title = PAGES[step % len(PAGES)]
                if killed is None and step >= total // 2:
                    status = runstore.read_status(runstore.run_dir(runs[0]))
                    if status.pid:
                        os.kill(status.pid, signal.SIGKILL)
                        killed, killed_at = runs[0], time.monotonic()
                for page in pages:  # every person moves on, one after the other
                    times[title].append(_visit(page, title))
                    found += _exceptions(page)
            if killed is not None:  # the Train page reaps as it polls
                while time.monotonic() - killed_at < REAP_LIMIT_S:
                    if runstore.read_status(runstore.run_dir(killed)).state != "running":
                        break
                    _visit(pages[0], "Train")
        states = {r: runstore.read_status(runstore.run_dir(r)).state for r in runs}
    finally:
        for r in runs:
            status = runstore.read_status(runstore.run_dir(r))
            if status.state in runstore.ACTIVE_STATES and status.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(status.pid, signal.SIGKILL)
        server.terminate()
        server.wait(timeout=30)
    flat = sorted(t for ts in times.values() for t in ts)
    p95 = flat[min(len(flat) - 1, round(0.95 * (len(flat) - 1)))]
    lost = [r for r in runs if not runstore.run_dir(r).exists()]
    stuck = [r for r, s in states.items() if r == killed and s == "running"]
    return {
        "contexts": plan["contexts"],
        "rounds": plan["rounds"],
        "page_visits": len(flat),
        "page_run_s": {
            "median": round(statistics.median(flat), 3),
            "p95": round(p95, 3),
            "max": round(flat[-1], 3),
        },
        "per_page_median_s": {p: round(statistics.median(ts), 3) for p, ts in times.items()},
        "exceptions": found,
        "worker_killed": killed is not None,
        "run_states_after": states,
        "runs_lost": len(lost),
        "runs_stuck_running": len(stuck),
        "load_average": os.getloadavg(),
    }


def markdown(result: dict) -> str:
    pr = result["page_run_s"]
    lines = [
        f"{result['contexts']} browser contexts × {result['rounds']} rounds of every page "
        f"({result['page_visits']} page visits) while two runs trained; one worker SIGKILLed "
        "half-way.",
        "",
        "| page-run median | p95 | max | exceptions | runs lost | runs stuck | load avg (1/5/15 min) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {pr['median']:.2f} s | {pr['p95']:.2f} s | {pr['max']:.2f} s | "
        f"{len(result['exceptions'])} | {result['runs_lost']} | {result['runs_stuck_running']} | "
        + " / ".join(f"{x:.1f}" for x in result["load_average"])
        + " |",
    ]
    return "\n".join(lines)
