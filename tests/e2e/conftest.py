"""Fixtures for the browser tier: a real ``streamlit run`` and headless Chromium.

- ``workspace`` (module scope here): the KESTREL_HOME shared by the server and the test
  process, so a test can read the runs the browser started through ``lib``.
- ``streamlit_server``: base URL of a server started once per test module.
- ``browser``: one Chromium for the session; ``page``: a fresh context and page per test;
  ``new_page()``: more contexts (a second visitor) within one test.
- ``steps(page, "name")``: remember a screenshot of a scenario step. On failure the steps,
  a final screenshot of every open page and the server log go to
  ``test-artifacts/<test-name>/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal

import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Steps, StreamlitServer, open_page


def _artifact_dir(item) -> os.PathLike:
    return ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)[:100]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _failed(item) -> bool:
    return any(
        getattr(item, f"rep_{when}", None) is not None and getattr(item, f"rep_{when}").failed
        for when in ("setup", "call")
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One workspace per module, seen by the server and by this process alike."""
    home = tmp_path_factory.mktemp("e2e-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KESTREL_HOME", str(home))
        yield home


def _kill_workers(workspace) -> None:
    """End training workers the server left behind (they have their own sessions)."""
    runs = workspace / "runs"
    if not runs.is_dir():
        return
    from lib import runstore

    for run in runs.iterdir():
        status = runstore.read_status(run)
        if status.state in runstore.ACTIVE_STATES and status.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(status.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server_process(workspace, tmp_path_factory):
    """The running :class:`StreamlitServer` of this module (to restart it, read its log)."""
    log = tmp_path_factory.mktemp("e2e-logs") / "streamlit.log"
    server = StreamlitServer(workspace, log)
    server.start()
    yield server
    server.stop()
    _kill_workers(workspace)


@pytest.fixture(scope="module")
def streamlit_server(server_process, browser) -> str:
    """Base URL (``http://127.0.0.1:<port>``) of this module's server.

    The root page is opened once first: with a ``pages/`` folder beside app.py,
    Streamlit runs a deep link (``/dataset``) on a fresh server as a v1 page,
    without app.py, until some session has run app.py's ``st.navigation``.
    test_reload_and_contexts.py checks that bug separately; here it must not
    make every other test depend on which page it happens to open first.
    """
    warm_up(browser, server_process.url)
    return server_process.url


def warm_up(browser, url: str) -> None:
    """Open the root page once (runs app.py, so st.navigation is registered)."""
    context = browser.new_context()
    try:
        open_page(context.new_page(), url, "", healthy=False)
    finally:
        context.close()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (CI does this in .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def steps():
    return Steps()


@pytest.fixture
def new_page(browser, steps, request):
    """Factory: a page in a fresh browser context (its own cookies, its own session)."""
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(30_000)
        contexts.append(context)
        page = context.new_page()
        steps.pages.append(page)
        return page

    yield make
    # KESTREL_E2E_SHOTS=1 keeps the steps' screenshots of passing tests too, to look at.
    if _failed(request.node) or os.environ.get("KESTREL_E2E_SHOTS"):
        folder = _artifact_dir(request.node)
        steps.dump(folder)
        server = request.getfixturevalue("server_process") if _uses_server(request) else None
        if server is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(server.log_path, folder / "streamlit.log")
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()


def _uses_server(request) -> bool:
    return "server_process" in request.fixturenames or "streamlit_server" in request.fixturenames


@pytest.fixture
def page(new_page):
    """A fresh page (own browser context) for one test."""
    return new_page()
