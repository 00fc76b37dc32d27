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


# ---------------------------------------------------------------- quota


def test_quota_defaults_to_20_gb_and_zero_turns_it_off(monkeypatch):
    from lib.workspace import check_quota, workspace_quota_bytes

    monkeypatch.delenv("KESTREL_WORKSPACE_QUOTA_MB", raising=False)
    assert workspace_quota_bytes() == 20 * 2**30
    monkeypatch.setenv("KESTREL_WORKSPACE_QUOTA_MB", "0")
    assert workspace_quota_bytes() == 0
    check_quota(10**15)  # no quota: anything goes
    for bad in ("-1", "lots", "inf", "nan"):
        monkeypatch.setenv("KESTREL_WORKSPACE_QUOTA_MB", bad)
        with pytest.raises(WorkspaceError, match="KESTREL_WORKSPACE_QUOTA_MB must be"):
            workspace_quota_bytes()


def test_quota_counts_every_file_and_says_how_to_free_space(monkeypatch, workspace, tmp_path):
    from lib.workspace import QuotaError, check_quota, workspace_usage_bytes

    monkeypatch.setenv("KESTREL_WORKSPACE_QUOTA_MB", "1")
    (area("uploads") / "a").mkdir()
    (area("uploads") / "a" / "x.bin").write_bytes(b"\0" * 600_000)
    (area("runs") / "r.bin").write_bytes(b"\0" * 300_000)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 5_000_000)
    (area("runs") / "link").symlink_to(outside)  # a link's target is not the workspace's
    assert 900_000 <= workspace_usage_bytes() < 1_000_000
    check_quota(100_000)
    with pytest.raises(QuotaError) as info:
        check_quota(300_000, "the upload")
    message = str(info.value)
    assert isinstance(info.value, WorkspaceError)
    assert "the upload needs 0.3 MB" in message
    assert "uses 0.9 MB of its 1.0 MB quota" in message
    assert "deleting uploads" in message and "KESTREL_WORKSPACE_QUOTA_MB (now 1 MB)" in message
