"""Uploads beyond extraction: display names, streamed folder uploads, quota and deletion."""

import io
import itertools
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from lib import runstore
from lib.config import DataConfig, RunConfig
from lib.data.archives import ZipLimits
from lib.data.dataset import DatasetError
from lib.data.uploads import (
    UploadError,
    delete_upload,
    list_uploads,
    rename_upload,
    runs_using_upload,
    save_upload_archive,
    save_upload_files,
    upload_manifest,
)
from lib.workspace import QuotaError, area


def png(seed: int, size: int = 12) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


FILES = [(f"Holiday pics/{c}/{i}.png", png(i + 7 * (c == "sky"))) for c in ("sea", "sky") for i in range(3)]  # fmt: skip


def zip_of(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


class Readers:
    """(name, size, read) triples that record which files were read."""

    def __init__(self, files):
        self.files = files
        self.read: list[str] = []

    def __iter__(self):
        for name, data in self.files:
            yield name, len(data), self._reader(name, data)

    def _reader(self, name, data):
        def read():
            self.read.append(name)
            return data

        return read


def _leftovers() -> list[str]:
    return [p.name for p in area("uploads").iterdir()]


# ---------------------------------------------------------------- display names


def test_display_name_is_the_archive_or_folder_name():
    uid = save_upload_archive(zip_of(FILES), "C:\\Users\\me\\Summer 2024.ZIP")
    assert upload_manifest(uid)["display_name"] == "Summer 2024"
    fid = save_upload_files(FILES)
    assert upload_manifest(fid)["display_name"] == "Holiday pics"
    by_id = {m["id"]: m["display_name"] for m in list_uploads()}
    assert by_id == {uid: "Summer 2024", fid: "Holiday pics"}


def test_long_or_odd_archive_names_become_plain_display_names():
    uid = save_upload_archive(zip_of(FILES), "a\tb\n<b>c" + "x" * 200 + ".zip")
    assert upload_manifest(uid)["display_name"] == "a b <b>c" + "x" * 72


@pytest.mark.parametrize(
    ("name", "stored"),
    [("  Beach trip ", "Beach trip"), ("<script>alert(1)</script>", "<script>alert(1)</script>"),
     ("é" * 80, "é" * 80), ("a", "a")],
)  # fmt: skip
def test_rename_stores_plain_text(name, stored):
    uid = save_upload_files(FILES)
    assert rename_upload(uid, name) == stored
    assert upload_manifest(uid)["display_name"] == stored
    assert [m["display_name"] for m in list_uploads()] == [stored]


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "1 to 80"), ("   ", "1 to 80"), ("x" * 81, "1 to 80"), ("a\nb", "control"),
     ("a\x00b", "control"), ("a\u202eb", "control"), (None, "text")],
)  # fmt: skip
def test_rename_refuses_bad_names(name, message):
    uid = save_upload_files(FILES)
    with pytest.raises(UploadError, match=message):
        rename_upload(uid, name)
    assert upload_manifest(uid)["display_name"] == "Holiday pics"


def test_rename_of_unknown_upload_is_a_dataset_error():
    with pytest.raises(DatasetError):
        rename_upload("up-000000000000", "x")
    with pytest.raises(DatasetError):
        rename_upload("../../etc", "x")


def test_uploads_from_before_display_names_are_listed_by_id():
    uid = save_upload_files(FILES)
    path = area("uploads") / uid / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["display_name"]
    path.write_text(json.dumps(manifest))
    assert list_uploads()[0]["display_name"] == uid


# ---------------------------------------------------------------- streamed folder uploads


def test_sized_readers_are_stored_like_bytes():
    readers = Readers(FILES)
    uid = save_upload_files(readers)
    assert upload_manifest(uid)["images"] == 6
    assert sorted(readers.read) == sorted(n for n, _ in FILES)


def test_file_count_cap_applies_before_any_file_is_read_even_for_endless_input():
    readers = Readers(FILES)
    with pytest.raises(UploadError, match="more than 5 files"):
        save_upload_files(readers, limits=ZipLimits(max_entries=5))
    assert readers.read == []

    def endless():
        for i in itertools.count():
            yield f"d/a/{i}.png", 1, pytest.fail  # reading any file fails the test

    with pytest.raises(UploadError, match="more than 50,000 files"):
        save_upload_files(endless())
    assert _leftovers() == []


def test_total_size_cap_applies_before_any_file_is_read():
    readers = Readers(FILES)
    with pytest.raises(UploadError, match="GB"):
        save_upload_files(readers, limits=ZipLimits(max_total_bytes=1000))
    assert readers.read == []


def test_a_file_larger_than_declared_is_refused_and_nothing_is_kept():
    files = [(name, 10, lambda data=data: data) for name, data in FILES]
    with pytest.raises(UploadError, match="more bytes than its declared size"):
        save_upload_files(files)
    assert _leftovers() == []


def test_oversized_files_are_skipped_unread():
    big = ("Holiday pics/sea/huge.png", 65 * 2**20, pytest.fail)
    uid = save_upload_files([*((n, len(d), lambda d=d: d) for n, d in FILES), big])
    assert dict(upload_manifest(uid)["skipped"])["Holiday pics/sea/huge.png"].startswith(
        "larger than 64 MB"
    )


# ---------------------------------------------------------------- quota


def test_quota_refuses_archive_before_writing(monkeypatch):
    big = [(f"s/{c}/{i}.png", png(i, 200)) for c in ("a", "b") for i in range(5)]
    data = zip_of(big)  # about 1.1 MB uncompressed
    monkeypatch.setenv("KESTREL_WORKSPACE_QUOTA_MB", "1")
    with pytest.raises(
        QuotaError, match=r"the upload set.zip needs 1.1 MB.*KESTREL_WORKSPACE_QUOTA_MB"
    ):
        save_upload_archive(data, "set.zip")
    assert _leftovers() == []
    monkeypatch.setenv("KESTREL_WORKSPACE_QUOTA_MB", "3")
    assert save_upload_archive(data, "set.zip")


def test_quota_refuses_folder_upload_before_reading(monkeypatch):
    monkeypatch.setenv("KESTREL_WORKSPACE_QUOTA_MB", "0.001")
    readers = Readers(FILES)
    with pytest.raises(QuotaError, match="the uploaded folder needs"):
        save_upload_files(readers)
    assert readers.read == [] and _leftovers() == []


# ---------------------------------------------------------------- deletion


def _run_on(upload_id: str, state: str) -> str:
    cfg = RunConfig(data=DataConfig(source="upload", path=upload_id))
    path = runstore.create_run(cfg)
    runstore.update_status(path, state=state)
    return path.name


def test_delete_is_refused_while_a_queued_or_running_run_uses_the_upload():
    uid = save_upload_files(FILES)
    other = save_upload_files(FILES)
    queued = _run_on(uid, "queued")
    running = _run_on(uid, "running")
    _run_on(other, "running")
    _run_on(uid, "completed")
    assert sorted(runs_using_upload(uid)) == sorted([(queued, "queued"), (running, "running")])
    with pytest.raises(UploadError) as info:
        delete_upload(uid)
    assert queued in str(info.value) and running in str(info.value)
    assert "Train page" in str(info.value)
    assert uid in {m["id"] for m in list_uploads()}

    for run in (queued, running):
        runstore.update_status(runstore.run_dir(run), state="stopped")
    delete_upload(uid)
    assert {m["id"] for m in list_uploads()} == {other}
    assert sorted(_leftovers()) == [other]
    with pytest.raises(DatasetError, match="does not exist"):
        delete_upload(uid)


def test_delete_ignores_runs_with_unreadable_recipes():
    uid = save_upload_files(FILES)
    run = _run_on(uid, "running")
    (runstore.run_dir(run) / runstore.CONFIG_FILE).write_text("{not json")
    delete_upload(uid)
    assert list_uploads() == []
