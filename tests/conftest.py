"""Shared test set-up: every test gets its own empty workspace."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """Point KESTREL_HOME at a fresh folder so nothing touches the real workspace."""
    home = tmp_path / "kestrel-home"
    home.mkdir()
    monkeypatch.setenv("KESTREL_HOME", str(home))
    # The folder source reads only shared folders; tests share their own tmp folder.
    monkeypatch.setenv("KESTREL_DATA_ROOTS", str(tmp_path))
    return home
