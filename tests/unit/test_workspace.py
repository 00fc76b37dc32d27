"""Workspace paths: generated names, and no path that leaves its folder."""

import os

import pytest

from lib import runstore
from lib.config import RunConfig
from lib.workspace import WorkspaceError, area, new_id, safe_join, workspace_root


def test_workspace_follows_kestrel_home(workspace):
    assert workspace_root() == workspace.resolve()
    assert area("runs") == workspace.resolve() / "runs"


@pytest.mark.parametrize(
    "parts",
    [("..", "etc"), ("/etc/passwd",), ("a", "..", "..", "b"), ("",), ("a\x00b",)],
)
def test_safe_join_refuses_escapes(tmp_path, parts):
    with pytest.raises(WorkspaceError):
        safe_join(tmp_path, *parts)


def test_safe_join_refuses_symlink_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    os.symlink(outside, base / "link")
    with pytest.raises(WorkspaceError):
        safe_join(base, "link", "file")


def test_safe_join_allows_inside(tmp_path):
    assert safe_join(tmp_path, "a", "b.txt") == tmp_path.resolve() / "a" / "b.txt"


def test_new_ids_are_unique_and_plain():
    ids = {new_id("u-") for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith("u-") and i[2:].isalnum() for i in ids)


def test_unwritable_workspace_says_what_to_do(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KESTREL_HOME", str(blocker / "home"))
    with pytest.raises(WorkspaceError, match="Set KESTREL_HOME to a writable folder"):
        workspace_root()


def test_run_store_round_trip():
    cfg = RunConfig(name="t")
    path = runstore.create_run(cfg)
    assert runstore.read_config(path) == cfg
    assert runstore.read_status(path).state == "queued"
    runstore.update_status(path, state="running", pid=123)
    status = runstore.read_status(path)
    assert (status.state, status.pid) == ("running", 123)
    assert runstore.list_run_dirs() == [path]
    assert not list(path.glob("*.tmp"))


def test_run_ids_cannot_leave_the_runs_folder():
    with pytest.raises(WorkspaceError):
        runstore.run_dir("../../etc")


def test_unreadable_status_reads_as_failed():
    path = runstore.create_run(RunConfig())
    (path / runstore.STATUS_FILE).write_text("{half")
    status = runstore.read_status(path)
    assert status.state == "failed" and "unreadable" in status.error
