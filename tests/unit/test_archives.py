"""Hostile archives and uploads: refused whole, nothing written outside the workspace,
nothing left behind."""

import io
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.data.archives import (
    DEFAULT_LIMITS,
    ArchiveError,
    ZipLimits,
    check_member_name,
    declared_entries,
    extract_zip,
)
from lib.data.uploads import (
    UploadError,
    list_uploads,
    sanitize_class_name,
    save_upload_archive,
    save_upload_files,
    upload_dir,
    upload_manifest,
)
from lib.workspace import area


def png(seed: int, size: int = 12) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def make_zip(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """entries: (name or ZipInfo, bytes) pairs."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


GOOD = [(f"pets/{c}/{i}.png", png(i + 10 * (c == "dog"))) for c in ("cat", "dog") for i in range(3)]


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix
    info.external_attr = 0o120777 << 16  # S_IFLNK
    return info, target.encode()


def many_entries_zip(n: int) -> bytes:
    """A real zip64 archive of ``n`` empty entries, built by hand (zipfile takes seconds)."""
    local, central, offset = [], [], 0
    for i in range(n):
        name = b"c/%d.png" % i
        lh = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
        central.append(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 45, 20, 0, 0, 0, 0, 0, 0, 0,
                                   len(name), 0, 0, 0, 0, 0, offset) + name)  # fmt: skip
        local.append(lh)
        offset += len(lh)
    cd = b"".join(central)
    cd_offset = offset
    z64_offset = cd_offset + len(cd)
    z64 = struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(cd), cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_offset, 1)
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return b"".join(local) + cd + z64 + locator + eocd


def lying_size_zip() -> bytes:
    """An entry whose headers declare 10 bytes but whose data inflates to 1 MB."""
    data = bytearray(make_zip([*GOOD, ("pets/cat/big.png", b"\x00" * 2**20)]))
    name = b"pets/cat/big.png"
    for sig, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = data.find(sig)
        while pos >= 0:
            n_len = struct.unpack_from("<H", data, pos + (26 if sig == b"PK\x03\x04" else 28))[0]
            start = pos + (30 if sig == b"PK\x03\x04" else 46)
            if bytes(data[start : start + n_len]) == name:
                struct.pack_into("<I", data, pos + size_at, 10)
            pos = data.find(sig, pos + 4)
    return bytes(data)


def corrupt_crc_zip() -> bytes:
    data = bytearray(make_zip(GOOD, zipfile.ZIP_STORED))
    # Flip a byte inside the first stored PNG's data: the CRC no longer matches.
    pos = data.find(b"IDAT")
    data[pos + 10] ^= 0xFF
    return bytes(data)


def encrypted_zip() -> bytes:
    data = bytearray(make_zip(GOOD))
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.find(sig)
        struct.pack_into("<H", data, pos + flag_at, 1)
    return bytes(data)


HOSTILE = [
    # id, archive bytes, file name, limits, expected message
    ("dotdot", make_zip([*GOOD, ("../evil.png", png(1))]), "a.zip", None, "outside the archive"),
    ("dotdot-deep", make_zip([*GOOD, ("pets/cat/../../../evil.png", png(1))]), "a.zip", None,
     "outside the archive"),
    ("absolute", make_zip([*GOOD, ("/tmp/evil.png", png(1))]), "a.zip", None, "absolute path"),
    ("backslash", make_zip([*GOOD, ("pets\\..\\..\\evil.png", png(1))]), "a.zip", None,
     "backslashes"),
    ("drive-letter", make_zip([*GOOD, ("C:/evil.png", png(1))]), "a.zip", None, "absolute path"),
    ("drive-relative", make_zip([*GOOD, ("c:evil.png", png(1))]), "a.zip", None, "absolute path"),
    ("symlink", make_zip([*GOOD, symlink_entry("pets/cat/link.png", "/etc/passwd")]), "a.zip",
     None, "symbolic link"),
    ("symlink-dir", make_zip([symlink_entry("pets/cat", "/tmp"), *GOOD]), "a.zip", None,
     "symbolic link"),
    ("ratio-bomb", make_zip([*GOOD, ("pets/cat/bomb.bmp", b"\x00" * 20 * 2**20)]), "a.zip", None,
     "zip bomb"),
    ("total-bomb", make_zip([*GOOD] + [(f"pets/dog/z{i}.bmp", b"\x00" * 2**19) for i in range(40)]),
     "a.zip", ZipLimits(max_total_bytes=8 * 2**20), "GB uncompressed"),
    ("archive-ratio", make_zip([*GOOD] + [(f"pets/dog/z{i}.bmp", b"\x00" * 2**20) for i in range(70)]),
     "a.zip", None, "expands more than"),
    ("entry-too-big", make_zip([*GOOD, ("pets/cat/huge.png", os.urandom(3 * 2**20))]), "a.zip",
     ZipLimits(max_entry_bytes=2 * 2**20), "per file"),
    ("100k-entries", many_entries_zip(100_000), "a.zip", None, "100,000 entries"),
    ("lying-size", lying_size_zip(), "a.zip", None, "corrupt"),
    ("bad-crc", corrupt_crc_zip(), "a.zip", None, "corrupt"),
    ("encrypted", encrypted_zip(), "a.zip", None, "encrypted"),
    ("png-named-zip", png(3), "photos.zip", None, "not a zip archive"),
    ("text-named-zip", b"just text, not an archive", "photos.zip", None, "not a zip archive"),
    ("truncated-zip", make_zip(GOOD)[:-30], "photos.zip", None, "zip"),
    ("tar-name", make_zip(GOOD), "photos.tar", None, "only .zip"),
]  # fmt: skip


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(("data", "filename", "limits", "message"),
                         [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])  # fmt: skip
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, workspace, data, filename,
                                                        limits, message):  # fmt: skip
    before = _tree(tmp_path)
    with pytest.raises(ArchiveError, match=message) as info:
        save_upload_archive(data, filename, **({"limits": limits} if limits else {}))
    assert filename in str(info.value) or "archive" in str(info.value)
    # Nothing under uploads (no upload, no temporary folder), nothing anywhere else.
    assert list(area("uploads").iterdir()) == []
    assert _tree(tmp_path) - before <= {"kestrel-home/uploads"}
    assert not list(Path(os.getcwd()).glob("evil*"))
    assert list_uploads() == []


def test_default_entry_cap_counts_zip64_archives_without_parsing_them():
    data = many_entries_zip(100_000)
    assert declared_entries(io.BytesIO(data)) == 100_000
    assert DEFAULT_LIMITS.max_entries < 100_000
    # zipfile agrees the archive is real and holds that many entries.
    with zipfile.ZipFile(io.BytesIO(many_entries_zip(70_000))) as zf:
        assert len(zf.infolist()) == 70_000
    ok = many_entries_zip(DEFAULT_LIMITS.max_entries)
    assert declared_entries(io.BytesIO(ok)) == DEFAULT_LIMITS.max_entries


def test_entry_cap_applies_when_the_end_record_is_not_trusted(tmp_path):
    data = make_zip([(f"c/{i}.png", b"") for i in range(30)])
    with pytest.raises(ArchiveError, match="30 entries; at most 20"):
        extract_zip(data, tmp_path / "out", plan=lambda n: ({}, []),
                    limits=ZipLimits(max_entries=20))  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name",
    ["../x", "a/../../x", "/abs", "\\\\server\\share", "a\\b", "C:/x", "d:x", "nul\x00.png"],
)
def test_member_name_check_refuses_escapes(name):
    with pytest.raises(ArchiveError):
        check_member_name(name)


def test_member_name_check_keeps_ordinary_paths():
    assert check_member_name("pets/./cat//1.png") == ["pets", "cat", "1.png"]


def test_good_archive_is_stored_under_generated_names_with_skips_reported():
    nested = make_zip([("inner/cat/x.png", png(99)), ("../escape.png", png(98))])
    data = make_zip([
        *GOOD,
        ("pets/cat/inner.zip", nested),  # nested archives are skipped, never opened
        ("pets/dog/broken.png", b"\x89PNG\r\n\x1a\nbroken"),
        ("pets/dog/notes.txt", b"hello"),
        ("pets/readme.md", b"# pets"),
        ("__MACOSX/pets/cat/._0.png", b"junk"),
        ("pets/.DS_Store", b"junk"),
        ("pets/Wild Cats: big!/0.png", png(50)),
    ])  # fmt: skip
    uid = save_upload_archive(data, "../../My Pets.zip")
    root = upload_dir(uid)
    assert root.parent.parent == area("uploads")
    files = sorted(_tree(root))
    assert files == [
        "Wild Cats_ big_", "Wild Cats_ big_/000001.png",
        "cat", "cat/000002.png", "cat/000003.png", "cat/000004.png",
        "dog", "dog/000005.png", "dog/000006.png", "dog/000007.png",
    ]  # fmt: skip
    manifest = upload_manifest(uid)
    assert manifest["classes"] == ["Wild Cats_ big_", "cat", "dog"]
    assert manifest["images"] == 7
    reasons = dict(manifest["skipped"])
    assert reasons["pets/cat/inner.zip"] == "nested archives are not extracted"
    assert "not a readable image" in reasons["pets/dog/broken.png"]
    assert "not an image file type" in reasons["pets/dog/notes.txt"]
    assert "not an image file type" in reasons["pets/readme.md"]
    assert not any("MACOSX" in k or "DS_Store" in k for k in reasons)
    assert manifest["names"]["cat/000002.png"] == "pets/cat/0.png"
    assert (root / "cat" / "000002.png").read_bytes() == png(0)
    assert not list(area("uploads").glob(".tmp-*"))
    assert [m["id"] for m in list_uploads()] == [uid]


def test_archive_with_one_class_is_refused_and_removed():
    with pytest.raises(UploadError, match="at least two class folders"):
        save_upload_archive(make_zip([("cats/1.png", png(1)), ("cats/2.png", png(2))]), "c.zip")
    with pytest.raises(UploadError, match="at least two class folders"):
        save_upload_archive(make_zip([]), "empty.zip")
    assert list(area("uploads").iterdir()) == []


def test_directory_upload_is_stored_like_an_archive():
    files = [
        (f"holiday/{c}/{i}.png", png(i + 5 * (c == "sea")))
        for c in ("sea", "sky")
        for i in range(4)
    ]
    files += [("holiday/sky/../../../escape.png", png(1)), ("holiday/sea/bad.jpg", b"oops")]
    uid = save_upload_files(files)
    assert sorted(upload_manifest(uid)["classes"]) == ["sea", "sky"]
    tree = _tree(upload_dir(uid))
    assert len([t for t in tree if t.endswith(".png")]) == 8
    assert not any("escape" in t for t in tree)
    skipped = dict(upload_manifest(uid)["skipped"])
    assert "holiday/sea/bad.jpg" in skipped


def test_directory_upload_caps():
    with pytest.raises(UploadError, match="at most 3"):
        save_upload_files(
            [(f"d/a/{i}.png", b"x") for i in range(4)], limits=ZipLimits(max_entries=3)
        )
    with pytest.raises(UploadError, match="GB"):
        save_upload_files([("d/a/1.png", b"x" * 2000)], limits=ZipLimits(max_total_bytes=1000))
    assert list(area("uploads").iterdir()) == []


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("cats", "cats"),
        ("../..", "class"),
        ("a/b", "a_b"),
        ("  Dogs  ", "Dogs"),
        ("x" * 100, "x" * 64),
        ("café", "café"),
        ("a\x00b", "a_b"),
        ("...", "class"),
    ],
)
def test_class_names_are_sanitised(raw, clean):
    assert sanitize_class_name(raw) == clean


def lying_count_zip(n: int, declared: int = 10) -> bytes:
    """``n`` tiny central-directory headers behind an end record that claims ``declared``.

    The headers point at no local data (nothing is ever extracted); zipfile still
    parses every one of them when it opens the archive.
    """
    header = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0,
                         1, 0, 0, 0, 0, 0, 0) + b"a"  # fmt: skip
    cd = header * n
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, declared, declared, len(cd), 0, 0)
    return cd + eocd


def test_a_lying_end_record_really_makes_zipfile_parse_every_header():
    """What the scan guards against: the standard library trusts the bytes, not the count."""
    n = DEFAULT_LIMITS.max_entries + 5_000
    data = lying_count_zip(n)
    assert declared_entries(io.BytesIO(data)) == 10
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.infolist()) == n


def test_real_entry_cap_stops_a_lying_end_record_while_reading(tmp_path):
    """200k headers (9 MB) under a record claiming 10: refused at the default cap, early."""
    import tracemalloc

    data = lying_count_zip(200_000)
    calls = []
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match=r"more than 50,000 entries"):
            extract_zip(data, tmp_path / "out", plan=lambda names: calls.append(names) or ({}, []))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert calls == []  # refused before any ZipInfo was handed on
    # zipfile would hold 200k ZipInfo objects (~90 MB); the scan holds one header at a time.
    assert peak < 4 * 2**20
    assert not (tmp_path / "out").exists()


def test_real_directory_byte_cap_refuses_before_reading(tmp_path):
    """An end record claiming a file list larger than the cap is refused unread."""
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, 65 * 2**20, 0, 0)
    data = b"PK\x03\x04" + b"\x00" * 100 + eocd
    with pytest.raises(ArchiveError, match="65 MB file list; at most 64 MB"):
        extract_zip(data, tmp_path / "out", plan=lambda n: ({}, []))


def test_archive_at_the_entry_cap_still_opens(tmp_path):
    data = lying_count_zip(DEFAULT_LIMITS.max_entries, declared=DEFAULT_LIMITS.max_entries)
    from lib.data.archives import scan_central_directory

    assert scan_central_directory(io.BytesIO(data), "a.zip", DEFAULT_LIMITS) == 50_000


def test_truncated_file_list_is_refused(tmp_path):
    data = bytearray(make_zip(GOOD))
    pos = data.rfind(b"PK\x01\x02")
    data[pos : pos + 4] = b"XXXX"
    with pytest.raises(ArchiveError, match="corrupt file list"):
        extract_zip(bytes(data), tmp_path / "out", plan=lambda n: ({}, []))


def test_scan_follows_zip64_archives_like_zipfile():
    from lib.data.archives import scan_central_directory

    data = many_entries_zip(DEFAULT_LIMITS.max_entries)
    assert scan_central_directory(io.BytesIO(data), "a.zip", DEFAULT_LIMITS) == 50_000
    with pytest.raises(ArchiveError, match="more than 50,000 entries"):
        scan_central_directory(io.BytesIO(many_entries_zip(50_001)), "a.zip", DEFAULT_LIMITS)


def test_quota_hook_sees_the_planned_bytes_before_anything_is_written(tmp_path):
    seen = []

    def refuse(planned: int) -> None:
        seen.append(planned)
        raise ArchiveError("no room")

    with pytest.raises(ArchiveError, match="no room"):
        extract_zip(make_zip(GOOD), tmp_path / "out", before_write=refuse,
                    plan=lambda names: ({n: n for n in names if "cat" in n}, []))  # fmt: skip
    assert seen == [sum(len(d) for n, d in GOOD if "cat" in n)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kestrel-home"]
