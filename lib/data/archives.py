"""Safe zip extraction: uploaded archives are hostile until proven otherwise.

Only zip is accepted. Before a byte is written, every entry in the central
directory is checked: no path traversal (``..``, absolute paths, backslashes,
drive letters), no symbolic links, no encrypted entries, and caps on the number
of entries, the total and per-entry uncompressed size and the compression ratio
(zip bombs). The entry cap holds while the central directory is read: its headers
are walked and counted, without building an object per entry, before the standard
library parses them, so an end record that under-reports the count cannot make
it parse a million entries first. While extracting, the bytes actually inflated are counted too, so a
header that lies about its size cannot get past the caps. Everything is written
into a temporary folder beside the destination and renamed into place only when
the whole archive succeeded: a refused archive leaves nothing behind.

Which entries are written, and under which (generated) names, is the caller's
choice (:func:`extract_zip`'s ``plan``); nothing is named after the archive.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lib.errors import KestrelError
from lib.workspace import new_id, safe_join


class ArchiveError(KestrelError):
    """An archive refused as a whole; the message names it and says why."""


@dataclass(frozen=True)
class ZipLimits:
    """Caps applied to an archive before and during extraction."""

    max_entries: int = 50_000  # files and folders in the central directory
    max_directory_bytes: int = 64 * 1024**2  # the central directory (50k long names fit)
    max_total_bytes: int = 2 * 1024**3  # sum of uncompressed sizes
    max_entry_bytes: int = 64 * 1024**2  # one file, uncompressed (same as the image cap)
    max_ratio: float = 100.0  # uncompressed / compressed, per entry and for the whole archive
    ratio_min_bytes: int = 1024**2  # entries smaller than this may compress better (flat BMPs)


DEFAULT_LIMITS = ZipLimits()
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1024 * 1024


@dataclass
class ExtractResult:
    """What an extraction wrote and what it left out."""

    written: dict[str, str] = field(default_factory=dict)  # target -> member name
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)


def check_member_name(name: str, archive: str = "archive") -> list[str]:
    """The path parts of a zip member name, or ArchiveError if the name is hostile."""
    where = f"{archive}: entry {name!r}"
    if "\x00" in name:
        raise ArchiveError(f"{where} contains a NUL character")
    if "\\" in name:
        raise ArchiveError(f"{where} uses backslashes; zip paths must use '/'")
    if name.startswith("/") or _DRIVE.match(name):
        raise ArchiveError(f"{where} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{where} points outside the archive ('..')")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode) if mode else False


def check_zip(
    zf: zipfile.ZipFile, size: int, archive: str, limits: ZipLimits
) -> list[zipfile.ZipInfo]:
    """Validate every entry of an open zip; the file entries (not folders), or ArchiveError."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise ArchiveError(
            f"{archive} has {len(infos):,} entries; at most {limits.max_entries:,} are allowed"
        )
    total = 0
    files = []
    for info in infos:
        check_member_name(info.filename, archive)
        if _is_symlink(info):
            raise ArchiveError(f"{archive}: entry {info.filename!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise ArchiveError(
                f"{archive}: entry {info.filename!r} is encrypted; upload it without a password"
            )
        if info.is_dir():
            continue
        if info.file_size > limits.max_entry_bytes:
            raise ArchiveError(
                f"{archive}: entry {info.filename!r} is {info.file_size / 2**20:.0f} MB "
                f"uncompressed; at most {limits.max_entry_bytes // 2**20} MB per file"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_min_bytes and ratio > limits.max_ratio:
            raise ArchiveError(
                f"{archive}: entry {info.filename!r} expands {ratio:.0f}× "
                f"(at most {limits.max_ratio:.0f}×): refused as a zip bomb"
            )
        total += info.file_size
        files.append(info)
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"{archive} holds {total / 2**30:.1f} GB uncompressed; "
            f"at most {limits.max_total_bytes / 2**30:.1f} GB are allowed"
        )
    if total > limits.ratio_min_bytes * 64 and total > limits.max_ratio * max(size, 1):
        raise ArchiveError(
            f"{archive} expands more than {limits.max_ratio:.0f}×: refused as a zip bomb"
        )
    return files


def declared_entries(fh) -> int | None:
    """The entry count in the end-of-central-directory record, read without parsing entries.

    Lets a 100k-entry archive be refused in microseconds instead of after building
    100k ZipInfo objects. None when the record is missing or defers to zip64.
    """
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail_len = min(size, 22 + 65_535)  # the record plus the longest comment
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    fh.seek(0)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return None
    (total,) = struct.unpack_from("<H", tail, pos + 10)
    if total != 0xFFFF:
        return total
    # zip64: the locator just before the record points at the zip64 record.
    loc = pos - 20
    if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
        return None
    (offset,) = struct.unpack_from("<Q", tail, loc + 8)
    if offset + 56 > size:
        return None
    fh.seek(offset)
    record = fh.read(56)
    fh.seek(0)
    if record[:4] != b"PK\x06\x06":
        return None
    return struct.unpack_from("<Q", record, 32)[0]


_CD_HEADER = 46  # fixed part of a central-directory header


def scan_central_directory(fh, archive: str, limits: ZipLimits) -> int:
    """Count the central directory's entries the way zipfile will read them, within the caps.

    zipfile reads the whole directory and builds a ZipInfo per header, trusting the
    end record only for where the directory is and how many bytes it spans. This
    walks the same bytes header by header (fixed part, then skips the name, extra
    field and comment) and stops as soon as the entry or byte cap is passed.

    Returns:
        the number of entries.

    Raises:
        ArchiveError: no end record, a directory larger than the caps allow, or a
            header that is not where the directory says.
    """
    try:
        endrec = zipfile._EndRecData(fh)  # the very lookup ZipFile uses
    except OSError:
        endrec = None
    if not endrec:
        raise ArchiveError(f"{archive} is not a readable zip archive (no end record)")
    size_cd = endrec[zipfile._ECD_SIZE]
    start = endrec[zipfile._ECD_LOCATION] - size_cd
    if endrec[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    if size_cd > limits.max_directory_bytes:
        raise ArchiveError(
            f"{archive} has a {size_cd / 2**20:.0f} MB file list; at most "
            f"{limits.max_directory_bytes // 2**20} MB ({limits.max_entries:,} entries) are allowed"
        )
    if start < 0:
        raise ArchiveError(f"{archive} is not a readable zip archive (bad directory offset)")
    fh.seek(start)
    count = total = 0
    try:
        while total < size_cd:
            head = fh.read(_CD_HEADER)
            if len(head) != _CD_HEADER or head[:4] != b"PK\x01\x02":
                raise ArchiveError(f"{archive} is not a readable zip archive (corrupt file list)")
            count += 1
            if count > limits.max_entries:
                raise ArchiveError(
                    f"{archive} has more than {limits.max_entries:,} entries; "
                    f"at most {limits.max_entries:,} are allowed"
                )
            name_len, extra_len, comment_len = struct.unpack_from("<3H", head, 28)
            skip = name_len + extra_len + comment_len
            fh.seek(skip, os.SEEK_CUR)
            total += _CD_HEADER + skip
    finally:
        fh.seek(0)
    return count


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str, budget: int) -> bytes:
    """Inflate one entry, never more than its declared size or the remaining budget."""
    cap = min(info.file_size, budget)
    buf = io.BytesIO()
    with zf.open(info) as src:
        while chunk := src.read(_CHUNK):
            buf.write(chunk)
            if buf.tell() > cap:
                raise ArchiveError(
                    f"{archive}: entry {info.filename!r} inflates beyond its declared size"
                )
    return buf.getvalue()


def extract_zip(
    source: bytes | str | os.PathLike,
    dest: Path,
    *,
    plan: Callable[[list[str]], tuple[dict[str, str], list[tuple[str, str]]]],
    accept: Callable[[str, bytes], str | None] | None = None,
    archive: str = "archive",
    limits: ZipLimits = DEFAULT_LIMITS,
    before_write: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Extract a zip into the new folder ``dest``, all or nothing.

    Args:
        source: the archive's bytes or path.
        dest: the folder to create (must not exist); its parent must exist.
        plan: given the file member names, returns ``({member: relative target},
            [(member, reason skipped)])``; targets are generated, relative, '/'-separated.
        accept: called with (member, bytes) before writing; a returned string is a
            reason to skip that entry instead.
        archive: the name used in messages.
        limits: the caps.
        before_write: called with the declared uncompressed bytes of the planned
            entries before anything is written (a quota check raises there).

    Raises:
        ArchiveError: not a zip, a hostile entry, or a cap exceeded. ``dest`` and
            every temporary file are gone when it is raised.
    """
    if isinstance(source, (bytes, bytearray)):
        fh: io.IOBase = io.BytesIO(source)
        size = len(source)
    else:
        fh = open(source, "rb")  # noqa: SIM115 -- closed in finally
        size = os.fstat(fh.fileno()).st_size
    tmp = dest.parent / f".tmp-{new_id()}"
    try:
        head = fh.read(4)
        fh.seek(0)
        if head[:2] != b"PK" or not zipfile.is_zipfile(fh):
            raise ArchiveError(f"{archive} is not a zip archive; only .zip files are accepted")
        count = declared_entries(fh)
        if count is not None and count > limits.max_entries:
            raise ArchiveError(
                f"{archive} has {count:,} entries; at most {limits.max_entries:,} are allowed"
            )
        scan_central_directory(fh, archive, limits)
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
            raise ArchiveError(f"{archive} is not a readable zip archive ({exc})") from None
        with zf:
            infos = {i.filename: i for i in check_zip(zf, size, archive, limits)}
            targets, skipped = plan(list(infos))
            if before_write is not None:
                before_write(sum(infos[m].file_size for m in targets))
            result = ExtractResult(skipped=list(skipped))
            tmp.mkdir()
            budget = limits.max_total_bytes
            for member, target in targets.items():
                try:
                    data = _read_member(zf, infos[member], archive, budget)
                except (
                    zipfile.BadZipFile,
                    EOFError,
                    OSError,
                    NotImplementedError,
                    RuntimeError,
                ) as exc:
                    raise ArchiveError(f"{archive}: entry {member!r} is corrupt ({exc})") from None
                budget -= len(data)
                reason = accept(member, data) if accept else None
                if reason:
                    result.skipped.append((member, reason))
                    continue
                path = safe_join(tmp, *target.split("/"))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                result.written[target] = member
        if dest.exists():
            raise ArchiveError(f"{dest} already exists")
        os.rename(tmp, dest)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        fh.close()
