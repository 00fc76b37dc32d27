"""The base of every error a user can fix, and the log for those they cannot.

``KestrelError`` marks an error whose message says what to change (a field out of
range, a file that cannot be read, weights that cannot be had offline). Pages catch
``KestrelError`` and show its message; anything else is a bug: it is logged with
its traceback by :func:`log_internal_error` and shown as an internal error that
names the log file. ``KestrelError`` subclasses ``ValueError`` so callers written
against the older ``ValueError`` contract keep working.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

INTERNAL_LOG = "internal-errors.log"  # in the workspace root


class KestrelError(ValueError):
    """An error the user can fix; its message names the field or file and says what to do."""


def internal_log_path() -> Path:
    """Where internal errors of the app are logged: the workspace's internal-errors.log."""
    from lib.workspace import workspace_root

    return workspace_root() / INTERNAL_LOG


def log_internal_error(exc: BaseException, where: str = "") -> Path:
    """Append ``exc`` with its traceback to the internal log (and the server log); returns the log's path."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    logging.getLogger("kestrel").error(
        "internal error%s\n%s", f" in {where}" if where else "", text
    )
    try:
        path = internal_log_path()
        with open(path, "a", encoding="utf-8") as fh:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            fh.write(f"--- {stamp} {where}\n{text}\n")
    except Exception:  # the log must never hide the original error
        return Path(INTERNAL_LOG)
    return path
