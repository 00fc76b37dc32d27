"""Reading and seeding the draft an AppTest session edits."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib import drafts
from pages import ui

ROOT = Path(__file__).resolve().parents[2]


def draft_of(at: AppTest) -> drafts.Draft:
    """The draft the session edits, read from its file (the truth)."""
    return drafts.load(at.session_state[ui.DRAFT_ID])


def open_page(page: str | None = None, timeout: float = 120, **parts) -> AppTest:
    """Open the app on a new draft holding ``parts`` (data=…, model=…), then ``page``."""
    draft = drafts.new_draft()
    if parts:
        draft = drafts.save(draft.with_parts(**parts))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.query_params[ui.DRAFT_PARAM] = draft.id
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def reload(at: AppTest, page: str, timeout: float = 60) -> AppTest:
    """What a browser reload does: a new session with ``at``'s address, opened on ``page``."""
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for key, value in at.query_params.items():
        again.query_params[key] = value
    again.run()
    again.switch_page(f"pages/{page}.py")
    again.run()
    assert not again.exception, [e.value for e in again.exception]
    return again
