"""App responsiveness: each page's script run time, and how fast a fresh server is usable.

    python -m bench --only app

1. Server-side script run time of every page in app.py's navigation, with
   Streamlit's AppTest: cold (the page's first run in a fresh process, so it pays
   its imports) and warm (the median of the next runs). Target: warm ≤ 300 ms.
2. ``streamlit run app.py`` from process start to ``/_stcore/health`` answering,
   and to the Home page rendered and idle in headless Chromium (the browser is
   started beforehand, so its own start-up is not counted). Target: ≤ 5 s.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WARM_RUNS = {"tiny": 1, "full": 5}
PAGE_TIMEOUT_S = 180  # a cold page run on a loaded 2-core machine, TensorFlow import included
SERVER_TIMEOUT_S = 90.0
HOME_TITLE = "Kestrel"
WARM_TARGET_S = 0.3
HOME_TARGET_S = 5.0


def app_pages(app_file: Path = ROOT / "app.py") -> list[str]:
    """The page files in app.py's ``st.Page(...)`` calls, in navigation order."""
    tree = ast.parse(app_file.read_text(encoding="utf-8"))
    pages = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "Page"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            pages.append(node.args[0].value)
    return sorted(set(pages), key=pages.index)


# --------------------------------------------------------------------------- AppTest


def page_times(page: str, warm_runs: int) -> dict:
    """Time ``page``'s script runs in this process: the first (cold) and ``warm_runs`` more.

    The app's default page runs first (as when a person arrives), then the switch
    to ``page`` and its reruns; each time is one ``AppTest.run`` of the whole app
    script (router, sidebar and page).
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=PAGE_TIMEOUT_S)
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    if page != "pages/home.py":
        at.switch_page(page)
        start = time.perf_counter()
        at.run()
        first = time.perf_counter() - start
    warm = []
    for _ in range(warm_runs):
        start = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - start)
    return {
        "cold_s": round(first, 3),
        "warm_s": round(statistics.median(warm), 3) if warm else None,
        "warm_runs_s": [round(w, 3) for w in warm],
        "exceptions": [str(e.value)[:300] for e in at.exception],
    }


def page_times_fresh(page: str, warm_runs: int, workspace: Path) -> dict:
    """:func:`page_times` in a fresh Python process, so "cold" really is cold."""
    env = {**os.environ, "KESTREL_HOME": str(workspace), "TF_CPP_MIN_LOG_LEVEL": "2"}
    code = (
        "import json, sys; from bench.bench_app import page_times; "
        "print('RESULT' + json.dumps(page_times(sys.argv[1], int(sys.argv[2]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, page, str(warm_runs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S * 2,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT") :])
    raise RuntimeError(f"timing {page} failed ({proc.returncode}): {proc.stderr[-2000:]}")


# --------------------------------------------------------------------------- server + browser


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as resp,
    ):
        return resp.status == 200
    return False


def _wait_home(page, deadline: float) -> None:
    """Until Home's title shows and the script run has ended (an app exception fails fast)."""
    title = page.locator(f'[data-testid="stMain"] h1:has-text("{HOME_TITLE}")')
    while time.monotonic() < deadline:
        failure = page.query_selector('[data-testid="stException"]')
        if failure is not None:
            raise RuntimeError(f"the app raised on Home: {failure.inner_text()[:500]}")
        state = page.get_attribute(
            '[data-testid="stApp"]',
            "data-test-script-state",
            timeout=max(1.0, deadline - time.monotonic()) * 1000,
        )
        if state == "notRunning" and title.count() > 0:
            return
        page.wait_for_timeout(20)
    raise TimeoutError(f"Home did not render within {SERVER_TIMEOUT_S:.0f} s")


def server_start_times(workspace: Path) -> dict:
    """Seconds from ``streamlit run`` to health, and to Home rendered and idle in Chromium."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KESTREL_HOME": str(workspace),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        proc = None
        try:
            page = browser.new_page()
            start = time.monotonic()
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = start + SERVER_TIMEOUT_S
            while not _healthy(url):
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited with {proc.returncode} before health")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no /_stcore/health within {SERVER_TIMEOUT_S:.0f} s")
                time.sleep(0.02)
            health = time.monotonic() - start
            page.goto(url, wait_until="commit")
            _wait_home(page, start + SERVER_TIMEOUT_S)
            home = time.monotonic() - start
            # A second visit: what a person sees on a reload once the server is warm.
            again = time.monotonic()
            page.reload(wait_until="commit")
            _wait_home(page, again + SERVER_TIMEOUT_S)
            reload_s = time.monotonic() - again
            exceptions = page.query_selector_all('[data-testid="stException"]')
        finally:
            browser.close()
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
    return {
        "health_s": round(health, 3),
        "home_rendered_s": round(home, 3),
        "home_reload_s": round(reload_s, 3),
        "home_exceptions": len(exceptions),
    }


# --------------------------------------------------------------------------- entry points


def run(size: str = "full") -> dict:
    """Time every page (full: each cold in a fresh process; tiny: Home only) and a server start.

    Returns:
        {"pages": {page: {"cold_s", "warm_s", ...}}, "server": {"health_s",
        "home_rendered_s", ...}, "max_warm_s", "targets"}.
    """
    pages = app_pages()
    warm_runs = WARM_RUNS[size]
    with tempfile.TemporaryDirectory(prefix="kestrel-bench-app-") as tmp:
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        times = {}
        if size == "tiny":
            # One in-process page keeps the smoke test quick; the full run does them all.
            old = os.environ.get("KESTREL_HOME")
            os.environ["KESTREL_HOME"] = str(workspace)
            try:
                times["pages/home.py"] = page_times("pages/home.py", warm_runs)
            finally:
                if old is None:
                    os.environ.pop("KESTREL_HOME", None)
                else:
                    os.environ["KESTREL_HOME"] = old
        else:
            for page in pages:
                times[page] = page_times_fresh(page, warm_runs, workspace)
        server = server_start_times(workspace)
    warm = [t["warm_s"] for t in times.values() if t["warm_s"] is not None]
    return {
        "pages": times,
        "pages_in_navigation": pages,
        "max_warm_s": max(warm) if warm else None,
        "server": server,
        "targets": {
            "warm_page_s": WARM_TARGET_S,
            "home_usable_s": HOME_TARGET_S,
            "warm_met": bool(warm) and max(warm) <= WARM_TARGET_S,
            "home_met": server["home_rendered_s"] <= HOME_TARGET_S,
        },
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def markdown(result: dict) -> str:
    """Per-page cold/warm table, then the server start figures."""
    lines = ["| page | cold run | warm run (median) | exceptions |", "|---|---|---|---|"]
    for page, t in result["pages"].items():
        warm = "n/a" if t["warm_s"] is None else f"{t['warm_s'] * 1000:.0f} ms"
        flag = " ⚠" if t["warm_s"] is not None and t["warm_s"] > WARM_TARGET_S else ""
        lines.append(
            f"| {page} | {t['cold_s'] * 1000:.0f} ms | {warm}{flag} | {len(t['exceptions'])} |"
        )
    s = result["server"]
    lines += [
        "",
        f"- `streamlit run` → /_stcore/health: {s['health_s']:.2f} s; → Home rendered and idle "
        f"in Chromium: {s['home_rendered_s']:.2f} s (target ≤ {HOME_TARGET_S:g} s); "
        f"a reload of Home: {s['home_reload_s']:.2f} s.",
        f"- slowest warm page: {result['max_warm_s'] * 1000:.0f} ms "
        f"(target ≤ {WARM_TARGET_S * 1000:.0f} ms). Load average at the end: "
        f"{'/'.join(str(v) for v in result['load_average'])}.",
    ]
    return "\n".join(lines) + "\n"
