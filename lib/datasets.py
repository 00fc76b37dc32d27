"""Datasets built in the app: named, versioned folders of class sub-folders in the workspace.

    <workspace>/datasets/<name>/dataset.json            name and creation time
    <workspace>/datasets/<name>/versions/<N>/version.json  what made version N
    <workspace>/datasets/<name>/versions/<N>/images/<class>/<generated name>

Every edit (a class added, renamed, merged or deleted; images added or removed;
an upload imported) makes a new version: the previous version's files are hard
linked (copied where links are not possible) into a new folder, the edit is
applied there, and the folder is renamed into place. A version folder is never
changed after that, so a run that trained on ``name@N`` (``DataConfig.source =
"dataset"``, ``path = "name@N"``) can always be traced back to its images.

Image files get generated names (``000001.jpg``); every image is checked with
lib.data.images' safe decoder before it is stored, and the workspace quota is
checked from declared sizes before anything is read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from lib.data.dataset import DatasetError
from lib.data.images import EXTENSIONS, ImageDecodeError, probe_image
from lib.errors import KestrelError
from lib.workspace import WorkspaceError, area, check_quota, new_id, safe_join

DATASET_FILE = "dataset.json"
VERSION_FILE = "version.json"
VERSIONS = "versions"
IMAGES = "images"
MAX_FILE_BYTES = 50 * 2**20  # per added image
MAX_ADD_FILES = 5000  # images added in one edit
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,47})@(?P<version>[0-9]{1,6})$")
_CLASS_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")

Reader = Callable[[], bytes]


class DatasetEditError(KestrelError):
    """An edit of a built dataset that cannot be made; the message says what to change."""


# --------------------------------------------------------------------------- names


def check_name(name: str) -> str:
    """A dataset name: 1–48 letters, digits, ``-`` or ``_``, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        raise DatasetEditError(
            f"{name!r} is not a dataset name: use 1 to 48 letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'my-pets')"
        )
    return name.strip()


def check_class_name(name: str) -> str:
    """A class name: 1–64 characters, no slashes or control characters, not hidden."""
    cleaned = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(cleaned) <= 64 or _CLASS_BAD.search(cleaned) or cleaned.startswith("."):
        raise DatasetEditError(
            f"{name!r} is not a class name: use 1 to 64 characters without slashes or control "
            "characters, not starting with a dot"
        )
    return cleaned


def dataset_ref(name: str, version: int) -> str:
    """What ``DataConfig.path`` holds for ``source="dataset"``: ``name@version``."""
    return f"{name}@{version}"


def parse_ref(ref: str) -> tuple[str, int]:
    """``"pets@3"`` → ``("pets", 3)``; DatasetError for anything else."""
    m = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if not m:
        raise DatasetError(
            f"{ref!r} does not name a dataset version; use <name>@<version>, e.g. pets@3 "
            "(python -m lib dataset list shows them)"
        )
    return m["name"], int(m["version"])


# --------------------------------------------------------------------------- reading


def _root(name: str) -> Path:
    try:
        return safe_join(area("datasets"), check_name(name))
    except WorkspaceError as exc:
        raise DatasetError(str(exc)) from None


def exists(name: str) -> bool:
    """Whether a built dataset called ``name`` exists."""
    return (_root(name) / DATASET_FILE).is_file()


def _home(name: str) -> Path:
    root = _root(name)
    if not (root / DATASET_FILE).is_file():
        raise DatasetError(
            f"there is no dataset called {name!r}; create it on the Build a dataset page "
            "or with python -m lib dataset create"
        )
    return root


def versions(name: str) -> list[int]:
    """The versions of dataset ``name``, oldest first."""
    folder = _home(name) / VERSIONS
    out = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name.isdigit() and (entry / VERSION_FILE).is_file():
            out.append(int(entry.name))
    return sorted(out)


def latest_version(name: str) -> int:
    """The newest version of dataset ``name``."""
    found = versions(name)
    if not found:
        raise DatasetError(f"dataset {name!r} has no versions; create it again")
    return found[-1]


def version_dir(name: str, version: int) -> Path:
    """The folder of one version (holding ``images/`` and ``version.json``)."""
    path = _home(name) / VERSIONS / str(int(version))
    if not (path / VERSION_FILE).is_file():
        have = ", ".join(str(v) for v in versions(name)) or "none"
        raise DatasetError(
            f"dataset {name!r} has no version {version} (versions: {have}); pick one of them"
        )
    return path


def images_dir(name: str, version: int) -> Path:
    """The class-folder directory of one version: what the ``dataset`` source loads."""
    return version_dir(name, version) / IMAGES


def version_info(name: str, version: int) -> dict:
    """``version.json`` of one version: action, parent, created, classes {name: count}."""
    return json.loads((version_dir(name, version) / VERSION_FILE).read_text(encoding="utf-8"))


def _class_dirs(images: Path) -> list[Path]:
    if not images.is_dir():
        return []
    return sorted(
        (e for e in images.iterdir() if e.is_dir() and not e.is_symlink()),
        key=lambda p: p.name.lower(),
    )


def _files(folder: Path) -> list[str]:
    return sorted(
        e.name
        for e in folder.iterdir()
        if e.is_file() and not e.is_symlink() and not e.name.startswith(".")
    )


def class_counts(name: str, version: int) -> dict[str, int]:
    """Images per class of one version (empty classes included)."""
    return {d.name: len(_files(d)) for d in _class_dirs(images_dir(name, version))}


def list_images(name: str, version: int, class_name: str) -> list[Path]:
    """The image files of one class in one version, by name."""
    folder = _class_folder(images_dir(name, version), class_name)
    return [folder / f for f in _files(folder)]


def list_datasets() -> list[dict]:
    """Every built dataset: ``{name, latest, versions, classes, images, created}``, newest first."""
    out = []
    for entry in area("datasets").iterdir():
        if not (_NAME.match(entry.name) and (entry / DATASET_FILE).is_file()):
            continue
        try:
            found = versions(entry.name)
            if not found:
                continue
            counts = class_counts(entry.name, found[-1])
            meta = json.loads((entry / DATASET_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, KestrelError):
            continue
        out.append({
            "name": entry.name,
            "latest": found[-1],
            "versions": found,
            "classes": counts,
            "images": sum(counts.values()),
            "created": meta.get("created", 0),
        })  # fmt: skip
    return sorted(out, key=lambda d: d["created"], reverse=True)


def _class_folder(images: Path, class_name: str) -> Path:
    want = check_class_name(class_name)
    for d in _class_dirs(images):
        if d.name == want:
            return d
    have = ", ".join(d.name for d in _class_dirs(images)) or "none yet"
    raise DatasetEditError(f"there is no class {class_name!r} (classes: {have})")


# --------------------------------------------------------------------------- versions


def _write_json(path: Path, data: dict) -> None:
    from lib.runstore import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, indent=1).encode())


def _link_tree(src: Path, dst: Path) -> None:
    """Hard link every file of ``src`` into ``dst`` (copy where links fail)."""
    for d in _class_dirs(src):
        target = dst / d.name
        target.mkdir(parents=True, exist_ok=True)
        for f in _files(d):
            try:
                os.link(d / f, target / f)
            except OSError:
                shutil.copy2(d / f, target / f)


def create_dataset(name: str, classes: Iterable[str] = ()) -> int:
    """Create dataset ``name`` with version 1 holding the (empty) ``classes``; returns 1.

    Raises:
        DatasetEditError: a bad name, or a dataset with that name exists.
    """
    name = check_name(name)
    root = _root(name)
    if root.exists():
        raise DatasetEditError(f"a dataset called {name!r} exists already; pick another name")
    wanted = [check_class_name(c) for c in classes]
    tmp = area("datasets") / f".tmp-{new_id()}"
    try:
        (tmp / VERSIONS).mkdir(parents=True)
        _write_json(tmp / DATASET_FILE, {"name": name, "created": time.time()})
        os.rename(tmp, root)
    except FileExistsError:
        raise DatasetEditError(
            f"a dataset called {name!r} exists already; pick another name"
        ) from None
    except OSError as exc:
        if root.exists():
            raise DatasetEditError(
                f"a dataset called {name!r} exists already; pick another name"
            ) from None
        raise DatasetEditError(f"cannot create dataset {name!r}: {exc.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def mutate(images: Path) -> str:
        for c in wanted:
            (images / c).mkdir(exist_ok=True)
        return "created" + (f" with classes {', '.join(wanted)}" if wanted else "")

    return _new_version(name, mutate, first=True)


def _new_version(name: str, mutate: Callable[[Path], str], *, first: bool = False) -> int:
    """Copy the latest version (by hard links), apply ``mutate`` to its images, publish it.

    ``mutate(images_folder)`` edits the new version's ``images/`` and returns the
    description stored in version.json. Returns the new version number.
    """
    home = _home(name)
    parent = None if first else latest_version(name)
    number = 1 if parent is None else parent + 1
    tmp = home / VERSIONS / f".tmp-{new_id()}"
    images = tmp / IMAGES
    try:
        images.mkdir(parents=True)
        if parent is not None:
            _link_tree(images_dir(name, parent), images)
        action = mutate(images)
        counts = {d.name: len(_files(d)) for d in _class_dirs(images)}
        _write_json(tmp / VERSION_FILE, {
            "version": number, "parent": parent, "created": time.time(),
            "action": action, "classes": counts,
        })  # fmt: skip
        try:
            os.rename(tmp, home / VERSIONS / str(number))
        except OSError:
            raise DatasetEditError(
                f"dataset {name!r} was changed by someone else at the same time (version "
                f"{number} exists now); reload and make the edit again"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return number


def add_class(name: str, class_name: str) -> int:
    """Add an empty class; returns the new version."""
    cls = check_class_name(class_name)

    def mutate(images: Path) -> str:
        if any(d.name.lower() == cls.lower() for d in _class_dirs(images)):
            raise DatasetEditError(f"class {cls!r} exists already")
        (images / cls).mkdir()
        return f"added class {cls}"

    return _new_version(name, mutate)


def rename_class(name: str, old: str, new: str) -> int:
    """Rename a class; returns the new version."""
    new = check_class_name(new)

    def mutate(images: Path) -> str:
        folder = _class_folder(images, old)
        if any(d.name.lower() == new.lower() and d != folder for d in _class_dirs(images)):
            raise DatasetEditError(
                f"class {new!r} exists already; merge the classes instead of renaming"
            )
        os.rename(folder, images / new)
        return f"renamed class {folder.name} to {new}"

    return _new_version(name, mutate)


def _next_number(folder: Path) -> int:
    nums = [int(f.split(".")[0]) for f in _files(folder) if f.split(".")[0].isdigit()]
    return max(nums, default=0) + 1


def merge_classes(name: str, sources: Iterable[str], target: str) -> int:
    """Move every image of ``sources`` into ``target`` (created if new); returns the new version."""
    target = check_class_name(target)
    sources = [check_class_name(s) for s in sources]
    if not sources:
        raise DatasetEditError("pick the classes to merge")

    def mutate(images: Path) -> str:
        folders = [_class_folder(images, s) for s in sources]
        dest = next((d for d in _class_dirs(images) if d.name == target), None)
        if dest is None:
            dest = images / target
            dest.mkdir()
        n = _next_number(dest)
        for folder in folders:
            if folder == dest:
                continue
            for f in _files(folder):
                os.rename(folder / f, dest / f"{n:06d}{Path(f).suffix}")
                n += 1
            shutil.rmtree(folder)
        return f"merged {', '.join(sources)} into {target}"

    return _new_version(name, mutate)


def delete_class(name: str, class_name: str) -> int:
    """Delete a class and its images (older versions keep them); returns the new version."""

    def mutate(images: Path) -> str:
        folder = _class_folder(images, class_name)
        shutil.rmtree(folder)
        return f"deleted class {folder.name}"

    return _new_version(name, mutate)


def remove_images(name: str, class_name: str, files: Iterable[str]) -> int:
    """Remove images (by their stored names) from a class; returns the new version."""
    wanted = sorted(set(files))
    if not wanted:
        raise DatasetEditError("pick the images to remove")

    def mutate(images: Path) -> str:
        folder = _class_folder(images, class_name)
        have = set(_files(folder))
        missing = [f for f in wanted if f not in have]
        if missing:
            raise DatasetEditError(
                f"class {folder.name!r} has no image(s) {', '.join(missing[:5])}"
            )
        for f in wanted:
            (folder / f).unlink()
        return f"removed {len(wanted)} image(s) from {folder.name}"

    return _new_version(name, mutate)


def _sized(files: Iterable) -> list[tuple[str, int, Reader]]:
    out: list[tuple[str, int, Reader]] = []
    for item in files:
        if len(out) >= MAX_ADD_FILES:
            raise DatasetEditError(
                f"more than {MAX_ADD_FILES:,} images at once; add them in smaller groups"
            )
        if len(item) == 2:
            fname, data = item
            out.append((fname, len(data), lambda data=data: bytes(data)))
        else:
            out.append(tuple(item))  # type: ignore[arg-type]
    return out


def add_images(name: str, class_name: str, files: Iterable) -> tuple[int, list[tuple[str, str]]]:
    """Add images to a class (created if new): a new version with generated file names.

    Args:
        name: the dataset.
        class_name: the class the images belong to.
        files: ``(name, size, read)`` triples (``read()`` is called only after the
            count and quota checks, one file at a time) or ``(name, bytes)`` pairs.

    Returns:
        ``(new version, skipped)``: skipped lists ``(file name, reason)`` of files
        that are not readable images.

    Raises:
        DatasetEditError: no readable image among the files, or too many files.
        QuotaError: the workspace has no room for them.
    """
    cls = check_class_name(class_name)
    entries = _sized(files)
    if not entries:
        raise DatasetEditError("choose one or more images to add")
    check_quota(sum(size for _, size, _ in entries), "the added images")
    skipped: list[tuple[str, str]] = []

    def mutate(images: Path) -> str:
        dest = next((d for d in _class_dirs(images) if d.name == cls), None)
        if dest is None:
            dest = images / cls
            dest.mkdir()
        n = _next_number(dest)
        added = 0
        for fname, size, read in entries:
            ext = os.path.splitext(str(fname))[1].lower()
            if ext not in EXTENSIONS:
                skipped.append((fname, "not an image file type (JPEG, PNG, BMP, GIF, WEBP, TIFF)"))
                continue
            if size > MAX_FILE_BYTES:
                skipped.append((fname, f"larger than {MAX_FILE_BYTES // 2**20} MB"))
                continue
            data = read()
            if len(data) > size:
                raise DatasetEditError(f"{fname}: holds more bytes than its declared size")
            try:
                probe_image(data, str(fname))
            except ImageDecodeError as exc:
                skipped.append((fname, exc.reason))
                continue
            (dest / f"{n:06d}{ext}").write_bytes(data)
            n += 1
            added += 1
        if not added:
            reasons = "; ".join(f"{f}: {r}" for f, r in skipped[:3])
            raise DatasetEditError(f"none of the files is a readable image ({reasons})")
        return f"added {added} image(s) to {cls}"

    return _new_version(name, mutate), skipped


def import_folder(name: str, folder: Path | str, what: str = "the folder") -> int:
    """Add every image of a class-per-sub-folder directory (an upload, a server folder).

    Classes that exist get the images added; new ones are created. Returns the new version.
    """
    from lib.data.sources import class_root, scan_folder

    root = class_root(Path(folder))
    classes, paths, labels, _ = scan_folder(root)
    if not paths:
        raise DatasetEditError(f"{what} has no images in class folders")
    check_quota(sum(os.path.getsize(p) for p in paths), what)

    def mutate(images: Path) -> str:
        by_class: dict[str, list[str]] = {}
        for p, k in zip(paths, labels, strict=True):
            by_class.setdefault(classes[int(k)], []).append(p)
        added = 0
        for cls, files in by_class.items():
            dest = images / check_class_name(cls)
            dest.mkdir(exist_ok=True)
            n = _next_number(dest)
            for p in files:
                try:
                    with open(p, "rb") as fh:
                        probe_image(fh.read(256 * 1024), p)
                except (ImageDecodeError, OSError):
                    continue
                shutil.copyfile(p, dest / f"{n:06d}{Path(p).suffix.lower()}")
                n += 1
                added += 1
        return f"imported {added} image(s) from {what}"

    return _new_version(name, mutate)


def import_upload(name: str, upload_id: str) -> int:
    """Copy an uploaded set's images into dataset ``name`` (a new version)."""
    from lib.data.uploads import upload_dir, upload_manifest

    label = upload_manifest(upload_id).get("display_name", upload_id)
    return import_folder(name, upload_dir(upload_id), f"upload {label}")


def runs_using(name: str) -> list[tuple[str, str]]:
    """``(run id, version)`` of every run whose recipe names a version of ``name``."""
    from lib import runstore

    out = []
    for path in sorted(runstore.runs_root().iterdir()):
        if not (path / runstore.CONFIG_FILE).is_file():
            continue
        try:
            data = runstore.read_config(path).data
        except (ValueError, OSError):
            continue
        if data.source == "dataset" and data.path.split("@")[0] == name:
            out.append((path.name, data.path.split("@")[-1]))
    return out


def delete_dataset(name: str) -> list[str]:
    """Remove a built dataset, every version of it, unless a queued or running run uses it.

    Returns:
        the ids of finished runs that trained on it: they keep their models and
        metrics, but can no longer be evaluated on its images or resumed.

    Raises:
        DatasetEditError: a queued or running run trains on it; the message names the run.
        DatasetError: no such dataset.
    """
    from lib import runstore

    home = _home(name)
    users = runs_using(name)
    active = [
        (run, version)
        for run, version in users
        if runstore.read_status(runstore.run_dir(run)).state in runstore.ACTIVE_STATES
    ]
    if active:
        named = ", ".join(f"{run} (version {version})" for run, version in active)
        raise DatasetEditError(
            f"dataset {name} is in use by the queued or running run {named}; stop it on the "
            "Train page or wait until it ends, then delete the dataset"
        )
    # Rename first, so a half-deleted dataset is never listed or loaded.
    doomed = home.parent / f".deleting-{new_id()}"
    os.rename(home, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return [run for run, _ in users]
