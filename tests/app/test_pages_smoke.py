"""Every page in the navigation opens without an exception (AppTest)."""

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
PAGES = re.findall(r'st\.Page\("(pages/[a-z_]+\.py)"', (ROOT / "app.py").read_text())


def test_navigation_lists_only_pages_that_exist():
    assert "pages/home.py" in PAGES
    for page in PAGES:
        assert (ROOT / page).is_file(), page


@pytest.mark.parametrize("page", PAGES)
def test_page_opens_without_exception(page):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_home_shows_the_active_state():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    main = " ".join(md.value for md in at.main.markdown)
    texts = [t.value for t in at.main.text]
    assert "shapes (3000 × 64px)" in texts
    assert "fast_cnn" in texts
    assert "**none yet**" in main
    sidebar = " ".join(md.value for md in at.sidebar.markdown)
    assert "shapes" in sidebar and "fast_cnn" in sidebar


def test_home_shows_the_latest_run_from_the_shared_run_store():
    from lib import runstore
    from lib.config import RunConfig

    runstore.create_run(RunConfig(name="older"))
    path = runstore.create_run(RunConfig(name="newest run"))
    runstore.update_status(path, state="running")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert "newest run · running" in [t.value for t in at.main.text]
