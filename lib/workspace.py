"""The workspace: the one folder where user data (uploads, runs, saved models) lives.

Its root is ``KESTREL_HOME`` or, by default, ``workspace/`` in the project (ignored
by git). Nothing a user uploads is written anywhere else, and every path built
from user input goes through :func:`safe_join`, which resolves it and refuses
anything that would land outside the folder it was joined to.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from lib.errors import KestrelError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class WorkspaceError(KestrelError):
    """A path or workspace problem a user can fix (bad name, unwritable folder)."""


def workspace_root() -> Path:
    """The workspace folder, created if missing."""
    root = Path(os.environ.get("KESTREL_HOME") or PROJECT_ROOT / "workspace").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(
            f"cannot create the workspace {root}: {exc.strerror}. "
            "Set KESTREL_HOME to a writable folder."
        ) from None
    return root.resolve()


def area(name: str) -> Path:
    """A top-level area of the workspace (``runs``, ``uploads``, ``models``...), created if missing."""
    path = safe_join(workspace_root(), name)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a file where the folder should be, a full disk
        raise WorkspaceError(
            f"cannot create the workspace folder {path}: {exc.strerror}. "
            "Move the file away or set KESTREL_HOME to a writable folder."
        ) from None
    return path


def safe_join(base: Path | str, *parts: str) -> Path:
    """Join ``parts`` to ``base`` and refuse a result outside ``base``.

    Raises:
        WorkspaceError: if the resolved path escapes ``base`` (``..``, absolute
            parts, symlinks pointing out).
    """
    base_path = Path(base).resolve()
    for part in parts:
        if not part or "\x00" in part:
            raise WorkspaceError(f"invalid path component {part!r}")
    candidate = base_path.joinpath(*parts).resolve()
    if candidate != base_path and base_path not in candidate.parents:
        raise WorkspaceError(f"path {'/'.join(parts)!r} leaves {base_path}")
    return candidate


def new_id(prefix: str = "") -> str:
    """A generated, filesystem-safe name (never taken from user input)."""
    return f"{prefix}{secrets.token_hex(6)}"
