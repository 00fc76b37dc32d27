"""What Kestrel changes in how Streamlit runs its scripts, and why it stays changed."""

import sys
import tomllib
import types
from pathlib import Path

import keras
from streamlit.runtime.scriptrunner import script_runner
from streamlit.testing.v1 import AppTest

from pages import ui

ROOT = Path(__file__).resolve().parents[2]


def test_streamlit_no_longer_resets_keras_after_each_run_but_still_closes_figures(monkeypatch):
    cleared, closed = [], []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: cleared.append(1))
    monkeypatch.setattr(
        script_runner, "_clean_problem_modules", script_runner._clean_problem_modules
    )
    monkeypatch.setitem(
        sys.modules, "matplotlib.pyplot", types.SimpleNamespace(close=closed.append)
    )
    current = script_runner._clean_problem_modules
    streamlit_own = getattr(current, "streamlit_original", current)
    streamlit_own()  # what the pinned Streamlit does after every run: reset Keras
    assert cleared == [1] and closed == ["all"]
    ui.keep_keras_state()
    ui.keep_keras_state()  # once is enough, twice changes nothing
    patched = script_runner._clean_problem_modules
    assert patched.streamlit_original is streamlit_own
    patched()
    assert cleared == [1], "Streamlit still resets Keras after a run"
    assert closed == ["all", "all"], "matplotlib's figures are no longer closed"


def test_a_run_of_the_app_leaves_keras_alone(monkeypatch):
    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: cleared.append(1))
    current = script_runner._clean_problem_modules
    # Streamlit's own clean-up, as in a fresh server process: app.py must replace it.
    monkeypatch.setattr(
        script_runner, "_clean_problem_modules", getattr(current, "streamlit_original", current)
    )
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/model.py")
    at.run()
    at.run()
    assert not at.exception
    assert "keras" in sys.modules and cleared == []


def test_no_full_garbage_collection_after_every_run():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False


def test_the_run_context_still_says_which_fragments_a_run_reruns():
    """ui.in_fragment_run reads it; without it, echoes of older screens would be edits again.

    The browser test tests/e2e/test_screen_is_truth.py (a live panel tick in flight)
    shows what it guards against.
    """
    import dataclasses

    from streamlit.runtime.scriptrunner_utils.script_run_context import ScriptRunContext

    assert "fragment_ids_this_run" in {f.name for f in dataclasses.fields(ScriptRunContext)}
    assert ui.in_fragment_run() is False  # outside any script run
