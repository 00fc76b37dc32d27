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


# --------------------------------------------------------------------------- quota

QUOTA_SETTING = "KESTREL_WORKSPACE_QUOTA_MB"
DEFAULT_QUOTA_MB = 20 * 1024  # 20 GB: a few large uploads and many runs; 0 turns it off


class QuotaError(WorkspaceError):
    """Storing something would take the workspace past its quota."""


def workspace_quota_bytes() -> int:
    """The workspace quota in bytes (``KESTREL_WORKSPACE_QUOTA_MB``); 0 means none."""
    raw = os.environ.get(QUOTA_SETTING, "").strip()
    if not raw:
        return DEFAULT_QUOTA_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0 or mb == float("inf"):
        raise WorkspaceError(
            f"{QUOTA_SETTING} must be a number of megabytes (0 for no quota), got {raw!r}"
        )
    return int(mb * 2**20)


def workspace_usage_bytes() -> int:
    """Bytes the workspace's files take (apparent sizes; links are not followed)."""
    total = 0
    stack = [workspace_root()]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed while walking
        except OSError:
            continue
    return total


def _size(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.0f} MB" if n >= 10 * 2**20 else f"{n / 2**20:.1f} MB"


def check_quota(incoming_bytes: int, what: str = "this upload") -> None:
    """Refuse to store ``incoming_bytes`` more if the workspace would pass its quota.

    Call it before writing an upload, a saved model or an imported file.

    Raises:
        QuotaError: the message says how much is used, the quota, what needs
            the space, and how to free space or raise the quota.
    """
    quota = workspace_quota_bytes()
    if not quota:
        return
    used = workspace_usage_bytes()
    if used + max(0, incoming_bytes) <= quota:
        return
    raise QuotaError(
        f"not enough workspace space: {what} needs {_size(incoming_bytes)}, and the workspace "
        f"({workspace_root()}) already uses {_size(used)} of its {_size(quota)} quota. "
        "Free space by deleting uploads you no longer need (Dataset page), saved models or "
        f"old runs, or raise the quota with {QUOTA_SETTING} (now {quota // 2**20} MB)."
    )
