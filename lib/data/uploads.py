"""Uploaded datasets: a .zip of class folders, or a folder picked in the browser.

Each upload becomes ``<workspace>/uploads/<upload_id>/`` holding ``images/<class>/``
and a ``manifest.json`` (original names, skipped files, a display name). File names
are generated (``000001.png``); only class folder names are kept, sanitised, because
they are the labels. Every file's header is checked before it is stored; unreadable
files are skipped and listed. The upload id is what ``DataConfig.path`` holds for
``source="upload"``; the display name (the archive's or folder's name, editable with
:func:`rename_upload`) is only ever shown, as plain text.

Uploads count against the workspace quota (:func:`lib.workspace.check_quota`),
checked from declared sizes before anything is written, and can be deleted unless
a queued or running run trains on them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from lib.data.archives import DEFAULT_LIMITS, ArchiveError, ExtractResult, ZipLimits, extract_zip
from lib.data.dataset import DatasetError
from lib.data.images import EXTENSIONS, ImageDecodeError, probe_image
from lib.errors import KestrelError
from lib.workspace import WorkspaceError, area, check_quota, new_id, safe_join

MANIFEST = "manifest.json"
IMAGES = "images"
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
_JUNK = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
_ID = re.compile(r"^up-[0-9a-f]{12}$")
DISPLAY_NAME_MAX = 80  # characters of an upload's display name
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class UploadError(KestrelError):
    """An upload that cannot become a dataset; the message says what to change."""


def sanitize_class_name(name: str) -> str:
    """A class folder name safe on any filesystem: letters, digits and ``-_ .+()``, ≤ 64 chars."""
    name = unicodedata.normalize("NFC", name)
    name = "".join(c if c.isalnum() or c in " -_.+()" else "_" for c in name)
    name = re.sub(r"\s+", " ", name).strip(" .")[:64].strip(" .")
    return name if any(c.isalnum() for c in name) else "class"


def plan_files(names: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Map uploaded relative names to generated targets ``<class>/<NNNNNN><ext>``.

    A single wrapping folder (``dataset/cats/1.jpg``) is looked through; the first
    remaining folder is the class. Hidden and system files (``__MACOSX``,
    ``.DS_Store``) are ignored silently; other non-images, nested archives and
    files outside a class folder are skipped with a reason.

    Returns:
        ``({name: target}, [(name, reason)])``.
    """
    kept: list[tuple[str, list[str]]] = []
    skipped: list[tuple[str, str]] = []
    for name in names:
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or any(p.startswith(".") or p in _JUNK for p in parts):
            continue
        kept.append((name, parts))
    # One shared top folder that itself holds folders is a wrapper, not a class.
    while (
        kept
        and len({p[0] for _, p in kept}) == 1
        and any(len(p) >= 3 for _, p in kept)
        and all(len(p) >= 2 for _, p in kept)
    ):
        kept = [(n, p[1:]) for n, p in kept]
    targets: dict[str, str] = {}
    folders: dict[str, str] = {}  # original class folder -> sanitised, unique
    taken: set[str] = set()
    counter = 0
    for name, parts in sorted(kept, key=lambda item: item[1]):
        ext = os.path.splitext(parts[-1])[1].lower()
        if ext in ARCHIVE_EXTENSIONS:
            skipped.append((name, "nested archives are not extracted"))
            continue
        if ext not in EXTENSIONS:
            skipped.append((name, "not an image file type (JPEG, PNG, BMP, GIF, WEBP, TIFF)"))
            continue
        if len(parts) < 2:
            skipped.append((name, "not inside a class folder"))
            continue
        if parts[0] not in folders:
            base = candidate = sanitize_class_name(parts[0])
            i = 2
            while candidate.lower() in taken:
                candidate = f"{base}_{i}"
                i += 1
            taken.add(candidate.lower())
            folders[parts[0]] = candidate
        counter += 1
        targets[name] = f"{folders[parts[0]]}/{counter:06d}{ext}"
    return targets, skipped


def _accept(name: str, data: bytes) -> str | None:
    try:
        probe_image(data, name)
    except ImageDecodeError as exc:
        return exc.reason
    return None


def default_display_name(name: str) -> str:
    """A display name from an archive or folder name: plain text, at most 80 characters."""
    name = unicodedata.normalize("NFC", name)
    name = re.sub(r"\s+", " ", _CONTROL.sub(" ", name)).strip()
    return name[:DISPLAY_NAME_MAX].strip() or "upload"


def _finish(upload_id: str, dest: Path, kind: str, result: ExtractResult, display_name: str) -> str:
    """Check the upload makes a dataset and write its manifest (else remove it)."""
    classes = sorted({t.split("/")[0] for t in result.written})
    if len(classes) < 2:
        shutil.rmtree(dest.parent, ignore_errors=True)
        found = f"{len(result.written)} readable image(s) in {len(classes)} class folder(s)"
        detail = f"; {len(result.skipped)} file(s) skipped" if result.skipped else ""
        raise UploadError(
            f"the upload needs images in at least two class folders (e.g. cats/ and dogs/); "
            f"found {found}{detail}"
        )
    manifest = {
        "id": upload_id,
        "display_name": default_display_name(display_name),
        "kind": kind,
        "created": time.time(),
        "classes": classes,
        "images": len(result.written),
        "skipped": result.skipped,
        "names": result.written,  # stored name -> original name, for display
    }
    from lib.runstore import atomic_write_bytes

    atomic_write_bytes(dest.parent / MANIFEST, json.dumps(manifest).encode())
    return upload_id


def save_upload_archive(data: bytes, filename: str, limits: ZipLimits = DEFAULT_LIMITS) -> str:
    """Extract an uploaded .zip of class folders into the workspace.

    Args:
        data: the archive's bytes.
        filename: the uploaded name (messages only; it must end in .zip).
        limits: archive caps.

    Returns:
        the new upload id.

    Raises:
        ArchiveError: not a zip, a hostile entry or a cap exceeded (nothing is kept).
        UploadError: fewer than two class folders with readable images.
    """
    label = os.path.basename(filename.replace("\\", "/")) or "upload"
    if not label.lower().endswith(".zip"):
        raise ArchiveError(f"{label}: only .zip archives are accepted")
    upload_id = new_id("up-")
    home = safe_join(area("uploads"), upload_id)

    def plan(names: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
        targets, skipped = plan_files(names)
        return {name: f"{IMAGES}/{t}" for name, t in targets.items()}, skipped

    def quota(planned: int) -> None:
        check_quota(planned, f"the upload {label}")

    # extract_zip builds the upload in a temporary folder and renames it into place.
    result = extract_zip(data, home, plan=plan, accept=_accept, archive=label, limits=limits,
                         before_write=quota)  # fmt: skip
    result.written = {t.split("/", 1)[1]: name for t, name in result.written.items()}
    (home / IMAGES).mkdir(exist_ok=True)
    return _finish(upload_id, home / IMAGES, "zip", result, label[: -len(".zip")])


Reader = Callable[[], bytes]


def _sized_entries(files: Iterable, limits: ZipLimits) -> list[tuple[str, int, Reader]]:
    """``(name, size, read)`` for each uploaded file, stopping at the file-count cap."""
    out: list[tuple[str, int, Reader]] = []
    for item in files:
        if len(out) >= limits.max_entries:
            raise UploadError(
                f"more than {limits.max_entries:,} files uploaded; at most "
                f"{limits.max_entries:,} are allowed; upload a .zip or fewer files"
            )
        if len(item) == 2:  # the older (name, bytes) form
            name, data = item
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"{name!r}: expected bytes, got {type(data).__name__}")
            out.append((name, len(data), lambda data=data: bytes(data)))
        else:
            name, size, read = item
            if (
                isinstance(size, bool)
                or not isinstance(size, int)
                or size < 0
                or not callable(read)
            ):
                raise TypeError(f"{name!r}: expected (name, size in bytes, read callable)")
            out.append((name, size, read))
    return out


def _folder_name(names: list[str]) -> str:
    """The folder the browser picked: the first path part all names share."""
    tops = {n.replace("\\", "/").lstrip("/").split("/", 1)[0] for n in names}
    tops.discard("")
    return tops.pop() if len(tops) == 1 and all("/" in n for n in names) else "folder upload"


def save_upload_files(
    files: Iterable[tuple[str, int, Reader]] | Iterable[tuple[str, bytes]],
    limits: ZipLimits = DEFAULT_LIMITS,
) -> str:
    """Store files picked as a folder in the browser (relative names like ``pets/cats/1.jpg``).

    Args:
        files: ``(name, size, read)`` triples, where ``read()`` returns the file's
            bytes and is called only once the count, size and quota checks have
            passed, one file at a time (e.g. ``(f.name, f.size, f.getvalue)`` for
            Streamlit's UploadedFile); ``(name, bytes)`` pairs are accepted too.
        limits: the caps on the number of files and their total size.

    Returns:
        the new upload id.

    Raises:
        UploadError: too many files or bytes, or fewer than two class folders.
        QuotaError: the workspace has no room for the files.
    """
    entries = _sized_entries(files, limits)
    total = sum(size for _, size, _ in entries)
    if total > limits.max_total_bytes:
        raise UploadError(f"the upload holds {total / 2**30:.1f} GB; at most "
                          f"{limits.max_total_bytes / 2**30:.1f} GB are allowed")  # fmt: skip
    by_name = {name: (size, read) for name, size, read in entries}
    targets, skipped = plan_files(list(by_name))
    check_quota(sum(by_name[n][0] for n in targets), "the uploaded folder")
    upload_id = new_id("up-")
    home = safe_join(area("uploads"), upload_id)
    tmp = area("uploads") / f".tmp-{new_id()}"
    result = ExtractResult(skipped=skipped)
    budget = limits.max_total_bytes
    try:
        for name, target in targets.items():
            size, read = by_name[name]
            if size > limits.max_entry_bytes:
                result.skipped.append(
                    (name, f"larger than {limits.max_entry_bytes // 2**20} MB per file")
                )
                continue
            data = read()
            if len(data) > size or len(data) > budget:
                raise UploadError(f"{name}: holds more bytes than its declared size ({size:,})")
            budget -= len(data)
            reason = _accept(name, data)
            if reason:
                result.skipped.append((name, reason))
                continue
            path = safe_join(tmp, IMAGES, *target.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            result.written[target] = name
        tmp.mkdir(exist_ok=True)
        os.rename(tmp, home)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (home / IMAGES).mkdir(exist_ok=True)
    return _finish(upload_id, home / IMAGES, "folder", result, _folder_name(list(by_name)))


def _home(upload_id: str) -> Path:
    if not isinstance(upload_id, str) or not _ID.match(upload_id):
        raise DatasetError(
            f"{upload_id!r} is not an upload id; upload a dataset on the Dataset page"
        )
    try:
        home = safe_join(area("uploads"), upload_id)
    except WorkspaceError as exc:
        raise DatasetError(str(exc)) from None
    if not (home / MANIFEST).is_file():
        raise DatasetError(
            f"upload {upload_id} does not exist (any more); upload the dataset again"
        )
    return home


def upload_dir(upload_id: str) -> Path:
    """The class-folder directory of an upload; DatasetError if the id is unknown."""
    return _home(upload_id) / IMAGES


def upload_manifest(upload_id: str) -> dict:
    """The manifest of an upload (classes, image count, skipped files, original names)."""
    return json.loads((_home(upload_id) / MANIFEST).read_text(encoding="utf-8"))


def list_uploads() -> list[dict]:
    """Manifests of all uploads, newest first; each has a ``display_name``."""
    out = []
    for entry in area("uploads").iterdir():
        if _ID.match(entry.name) and (entry / MANIFEST).is_file():
            try:
                manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(manifest, dict):
                continue
            if not isinstance(manifest.get("display_name"), str):
                manifest["display_name"] = entry.name  # uploads from before display names
            out.append(manifest)
    return sorted(out, key=lambda m: m.get("created", 0), reverse=True)


def rename_upload(upload_id: str, name: str) -> str:
    """Set an upload's display name; returns the name stored.

    Raises:
        UploadError: the name is empty, longer than 80 characters, or holds
            control characters.
        DatasetError: no such upload.
    """
    home = _home(upload_id)
    if not isinstance(name, str):
        raise UploadError("the upload's name must be text")
    cleaned = unicodedata.normalize("NFC", name).strip()
    if _CONTROL.search(cleaned):
        raise UploadError("the upload's name may not contain control characters or line breaks")
    if not 1 <= len(cleaned) <= DISPLAY_NAME_MAX:
        raise UploadError(
            f"the upload's name must be 1 to {DISPLAY_NAME_MAX} characters, got {len(cleaned)}"
        )
    from lib.runstore import atomic_write_bytes

    manifest = upload_manifest(upload_id)
    manifest["display_name"] = cleaned
    atomic_write_bytes(home / MANIFEST, json.dumps(manifest).encode())
    return cleaned


def runs_using_upload(upload_id: str) -> list[tuple[str, str]]:
    """``(run id, state)`` of the queued or running runs that train on ``upload_id``."""
    from lib import runstore

    users = []
    root = runstore.runs_root()
    for path in sorted(root.iterdir()):
        if not (path / runstore.CONFIG_FILE).is_file():
            continue
        status = runstore.read_status(path)
        if status.state not in runstore.ACTIVE_STATES:
            continue
        try:
            data = runstore.read_config(path).data
        except (ValueError, OSError):
            continue  # an unreadable recipe cannot be training on anything
        if data.source == "upload" and data.path == upload_id:
            users.append((path.name, status.state))
    return users


def delete_upload(upload_id: str) -> None:
    """Remove an upload from the workspace, unless a queued or running run uses it.

    Raises:
        UploadError: a queued or running run trains on it; the message names the run.
        DatasetError: no such upload.
    """
    home = _home(upload_id)
    users = runs_using_upload(upload_id)
    if users:
        named = ", ".join(f"{run} ({state})" for run, state in users)
        raise UploadError(
            f"upload {upload_id} is in use by run {named}; stop the run on the Train page "
            "or wait until it ends, then delete the upload"
        )
    # Rename first so a half-deleted upload is never listed or loaded.
    doomed = area("uploads") / f".tmp-{new_id()}"
    os.rename(home, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
