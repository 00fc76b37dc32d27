"""Driving a real ``streamlit run`` in headless Chromium: the server and the widgets.

The server is :class:`StreamlitServer` (a subprocess in its own session, so killing it
does not touch the training workers it started, just like a real server restart). The
functions below wrap Streamlit's DOM: every widget is found by its visible label inside
its ``data-testid`` container, and :func:`wait_idle` waits for the script run to end
(``stApp[data-test-script-state="notRunning"]``), which is what a person waits for too.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]
SERVER_START_TIMEOUT = 90.0  # seconds; 2 shared cores and a cold import of streamlit
SCRIPT_TIMEOUT_MS = 120_000  # a page's script run, including a cold TensorFlow import
PAGE_PATHS = ("dataset", "augmentation", "model", "train", "evaluate", "predict")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """``python -m streamlit run app.py`` on a free port with its own workspace.

    Args:
        workspace: the KESTREL_HOME the server uses.
        log_path: where the server's stdout/stderr go (read on a failed start).
    """

    def __init__(self, workspace: Path, log_path: Path, port: int | None = None) -> None:
        self.workspace = Path(workspace)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = SERVER_START_TIMEOUT) -> str:
        """Start the server and wait for ``/_stcore/health``; returns the base URL.

        Raises:
            RuntimeError: the server exited or did not answer within ``timeout``,
                with the tail of its log.
        """
        env = dict(os.environ)
        env.update(
            KESTREL_HOME=str(self.workspace),
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
            STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        cmd = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(self.port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {self.proc.returncode} before it was healthy:\n"
                    + self.log_tail()
                )
            health = f"{self.url}/_stcore/health"
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=2) as resp:
                if resp.status == 200:
                    return self.url
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"streamlit did not answer /_stcore/health within {timeout:.0f}s:\n" + self.log_tail()
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop the server's process group (not the workers: they have their own sessions)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


# ---------------------------------------------------------------- page helpers


# Counts the script runs a page has started, even ones too short for wait_idle's
# polling to see: a MutationObserver on the app's data-test-script-state.
_RUNS_JS = """() => {
  if (window.__kestrelRuns === undefined) {
    window.__kestrelRuns = 0;
    new MutationObserver((changes) => {
      for (const c of changes) {
        const state = c.target.getAttribute('data-test-script-state');
        if (state === 'running' || state === 'rerunRequested') window.__kestrelRuns += 1;
      }
    }).observe(document.documentElement,
               {attributes: true, subtree: true, attributeFilter: ['data-test-script-state']});
  }
  return window.__kestrelRuns;
}"""
ACTION_RERUN_TIMEOUT_MS = 10_000


def runs_started(page) -> int:
    """How many script runs ``page`` has started since the counter was installed."""
    return int(page.evaluate(_RUNS_JS))


def after_action(page, before: int, timeout_ms: int = ACTION_RERUN_TIMEOUT_MS) -> None:
    """Wait for the rerun an action caused, then for the page to be idle.

    On a loaded machine the server may take seconds to start the rerun a click asked
    for; wait_idle alone would see the old, finished run and return before it. An
    action that causes no rerun (choosing what is already chosen) costs the timeout.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if runs_started(page) > before:
                break
        page.wait_for_timeout(50)
    wait_idle(page)


def act(page, action) -> None:
    """Do ``action()`` (a click, a key) and wait for the rerun it causes."""
    before = runs_started(page)
    action()
    after_action(page, before)


_SCREEN_STATE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    const main = document.querySelector('[data-testid="stMain"]');
    if (!app || !main) return [null, 0, ''];
    const widgets = main.querySelectorAll('input, textarea, button, [role="combobox"]').length;
    const loading = main.querySelectorAll('[data-testid="stSkeleton"]').length;
    return [app.getAttribute('data-test-script-state'), loading, String(widgets)];
}"""


def wait_idle(page, timeout_ms: int = SCRIPT_TIMEOUT_MS, settle_ms: int = 400) -> None:
    """Wait until the script run has finished and the screen has settled for ``settle_ms``.

    A page with a live fragment (``run_every``) reruns on its own; the settle time is
    short enough that such a page still counts as idle between fragment runs.

    Settled means: the run is over, no widget shows its loading skeleton, and the number
    of inputs and buttons has not changed for ``settle_ms``. Widgets are code-split, and
    after a reload the run can end some 300 ms before a number box appears; the box then
    shows its minimum for a few frames before the value the script sent (Streamlit sets
    it in an effect). Reading it then read "1" where the form held 20.
    """
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    idle_since = None
    seen = None
    while time.monotonic() < deadline:
        state, loading, widgets = page.evaluate(_SCREEN_STATE_JS)
        if state == "notRunning" and not loading and widgets == seen:
            idle_since = idle_since or time.monotonic()
            if (time.monotonic() - idle_since) * 1000 >= settle_ms:
                return
        else:
            idle_since = None
        seen = widgets
        page.wait_for_timeout(100)
    raise TimeoutError(f"the script of {page.url} was still running after {timeout_ms} ms")


def open_page(page, base_url: str, path: str = "", *, healthy: bool = True) -> None:
    """Go to ``/path``, wait for its script to finish and (by default) check it is healthy."""
    page.goto(f"{base_url}/{path}", wait_until="domcontentloaded")
    wait_idle(page)
    if healthy:
        assert_healthy(page)


def exceptions(page) -> list[str]:
    """Texts of any uncaught exception boxes on the page (Streamlit's red tracebacks)."""
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


def errors(page) -> list[str]:
    """Texts of the error alerts on the page (``st.error``: what ui.show_error draws)."""
    return [
        e.inner_text()
        for e in page.query_selector_all('[data-testid="stAlertContentError"]')
        if e.is_visible()
    ]


def wait_connected(page, timeout_s: float = 90) -> None:
    """Wait until the tab's websocket is connected (after a server restart it retries)."""
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout_s * 1000
    )


def assert_healthy(page) -> None:
    """No traceback on the page and the connection to the server is up."""
    found = exceptions(page)
    assert not found, f"uncaught exception on {page.url}: {found}"
    state = page.get_attribute('[data-testid="stApp"]', "data-test-connection-state")
    assert state in (None, "CONNECTED"), f"connection state {state!r} on {page.url}"


def main_text(page) -> str:
    return page.inner_text('[data-testid="stMain"]')


def widget(page, testid: str, label: str):
    """The widget container ``testid`` whose label matches ``label`` (regex or text)."""
    pattern = label if isinstance(label, re.Pattern) else re.compile(re.escape(label), re.I)
    return (
        page.locator(f'[data-testid="{testid}"]')
        .filter(has=page.locator('[data-testid="stWidgetLabel"]', has_text=pattern))
        .first
    )


def select(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` (a react-aria combobox)."""
    box = page.get_by_role("combobox", name=label).first
    # Scrolled first: a box at the foot of a long page, clicked as the page scrolls
    # to it, opened its list and closed it again.
    box.scroll_into_view_if_needed()
    box.click()
    exact = re.compile(rf"^\s*{re.escape(option)}\s*$", re.I)
    act(page, page.get_by_role("option").filter(has_text=exact).first.click)


def options(page, label: str) -> list[str]:
    """The options the selectbox labelled ``label`` offers (opened, read, closed)."""
    box = page.get_by_role("combobox", name=label).first
    box.scroll_into_view_if_needed()
    box.click()
    found = page.get_by_role("option")
    found.first.wait_for()
    texts = [found.nth(i).inner_text() for i in range(found.count())]
    page.keyboard.press("Escape")
    return texts


def use_digits(page) -> None:
    """On the Dataset page, pick the scikit-learn digits and wait until they are in use."""
    select(page, "Source", "Digits — scikit-learn 8×8")
    wait_for_text(page, r"In use: digits")


def navigate(page, title: str) -> None:
    """Go to another page the way a person does: the sidebar link (same session).

    ``page.goto`` would load the app again, which starts a new Streamlit session
    with fresh session state; clicking the navigation keeps the session.
    """
    link = page.locator('[data-testid="stSidebarNav"] a').filter(
        has_text=re.compile(rf"{re.escape(title)}\s*$")  # after the icon's ligature text
    )
    target = link.first.get_attribute("href") or ""
    act(page, link.first.click)
    # The address changes with the page (history.pushState): Back then returns here.
    page.wait_for_function(
        "href => location.pathname === new URL(href, location.href).pathname",
        arg=target,
        timeout=SCRIPT_TIMEOUT_MS,
    )
    wait_idle(page)
    assert_healthy(page)


def choose_radio(page, label: str, option: str) -> None:
    """Pick ``option`` in the radio group labelled ``label``."""
    group = widget(page, "stRadio", label)
    act(page, group.locator("label").filter(has_text=option).first.click)


def segment(page, option: str) -> None:
    """Pick ``option`` in a segmented control (``st.segmented_control``)."""
    act(
        page,
        page.locator('[data-testid="stButtonGroup"] button').filter(has_text=option).first.click,
    )


def set_number(page, label: str, value) -> None:
    """Type ``value`` into the number input labelled ``label`` and leave the field.

    Tab, not Enter: inside an ``st.form`` Enter would submit the form.
    """
    box = page.get_by_role("spinbutton", name=label).first
    box.fill(str(value))
    act(page, lambda: box.press("Tab"))


def click(page, name, *, exact: bool = False) -> None:
    """Click the (first visible) button named ``name`` and wait for the rerun."""
    act(page, page.get_by_role("button", name=name, exact=exact).first.click)


def upload(page, label: str, files) -> None:
    """Give ``files`` (a path or a list) to the file uploader labelled ``label``."""
    uploader = widget(page, "stFileUploader", label)
    uploader.locator('input[type="file"]').set_input_files(files)
    # The upload is an HTTP PUT, then a rerun; wait for the file's chip, then the rerun.
    names = [Path(f).name for f in (files if isinstance(files, list) else [files])]
    for name in names:
        uploader.get_by_text(name, exact=False).first.wait_for(timeout=60_000)
    wait_idle(page)


def wait_for_text(page, pattern, timeout_s: float = 60.0, where: str = '[data-testid="stMain"]'):
    """Wait until ``where`` shows text matching ``pattern``; returns the match."""
    rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            text = page.inner_text(where, timeout=5_000)
            found = rx.search(text)
            if found:
                return found
        page.wait_for_timeout(250)
    raise AssertionError(f"{rx.pattern!r} did not appear on {page.url} in {timeout_s}s:\n{text}")


def wait_without_text(page, text: str, timeout_s: float = 60.0) -> None:
    """Wait until the main area no longer shows ``text``."""
    deadline = time.monotonic() + timeout_s
    shown = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            shown = page.inner_text('[data-testid="stMain"]', timeout=5_000)
            if text not in shown:
                return
        page.wait_for_timeout(250)
    raise AssertionError(f"{text!r} was still on {page.url} after {timeout_s}s:\n{shown}")


class Steps:
    """Screenshots of a scenario's steps, kept in memory and written only on failure."""

    def __init__(self) -> None:
        self.shots: list[tuple[str, bytes]] = []
        self.pages: list = []

    def __call__(self, page, name: str) -> None:
        """Record the state after step ``name`` (the page as a person sees it)."""
        with contextlib.suppress(Exception):
            self.shots.append((name, page.screenshot(full_page=True, timeout=10_000)))

    def dump(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, (name, png) in enumerate(self.shots, 1):
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:60]
            (folder / f"{i:02d}-{safe}.png").write_bytes(png)
        for i, page in enumerate(self.pages):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(folder / f"failure-page{i}.png"), full_page=True)


class TimerEcho:
    """Makes a fragment's timer fire at the worst moment, on purpose.

    A page with a live fragment (``run_every``) sends a rerun request on each tick with
    every widget's value as the browser holds it. A tick that fires after a click and
    before the page's answer arrives carries the values from before the click. This
    proxy of the page's websocket keeps the last such tick and, once armed, sends it
    again as soon as the server starts answering the next request: what the browser
    itself sends when its timer fires in that window (a matter of luck otherwise).

    Install it before the page opens: ``echo = TimerEcho(page)``; then ``echo.arm()``
    before the action, and ``echo.sent`` says whether it fired.
    """

    def __init__(self, page) -> None:
        self.last_tick: bytes | None = None
        self.armed = False
        self.sent = 0
        page.route_web_socket(re.compile(r".*/_stcore/stream"), self._route)

    def _route(self, ws) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        server = ws.connect_to_server()

        def from_page(message) -> None:
            if isinstance(message, bytes):
                back = BackMsg()
                back.ParseFromString(message)
                if back.WhichOneof("type") == "rerun_script" and back.rerun_script.fragment_id:
                    self.last_tick = message
            server.send(message)

        def from_server(message) -> None:
            ws.send(message)
            if not (self.armed and isinstance(message, bytes)):
                return
            forward = ForwardMsg()
            forward.ParseFromString(message)
            if forward.WhichOneof("type") == "delta":  # the answer has begun: the script runs
                self.armed = False
                server.send(self.last_tick)
                self.sent += 1

        ws.on_message(from_page)
        server.on_message(from_server)

    def arm(self, page, timeout_s: float = 30.0) -> None:
        """Wait for a first tick (the fragment's timer), then arm the echo."""
        deadline = time.monotonic() + timeout_s
        while self.last_tick is None:
            assert time.monotonic() < deadline, f"no fragment tick within {timeout_s}s"
            page.wait_for_timeout(100)
        self.armed = True


def export_with_parity(page, run_name: str, steps) -> None:
    """On Predict, with a training run chosen: open Export and convert to every format
    this server offers (TFLite, and ONNX where installed), as a person does, requiring
    100 % top-1 agreement and the download button of each file."""
    from lib import export

    expander = page.locator('[data-testid="stExpander"]').filter(has_text="Export").first
    if not expander.get_by_text("Format").first.is_visible():
        expander.locator("summary").first.click()
        wait_idle(page)
    expander.get_by_text("Format").first.wait_for()
    kinds = ["tflite"] + (["onnx"] if export.onnx_available() else [])
    for kind in kinds:
        select(page, "Format", export.FORMATS[kind][0])
        click(page, "Convert and check")
        wait_for_text(page, r"Top-1 agreement", timeout_s=180)
        text = main_text(page)
        assert "conversion failed" not in text, text
        agreement = re.search(r"Top-1 agreement\s+([\d.]+)%", text)
        assert agreement and float(agreement.group(1)) == 100.0, text
        assert f"Download {run_name}{export.FORMATS[kind][1]}" in text
        steps(page, f"exported-{kind}")
