"""Resume bookkeeping: the BackupAndRestore checkpoint in ``backup/`` and history.csv.

A run killed at any moment resumes at its last finished epoch. Before a resume,
:func:`repair_backup` replaces a checkpoint a kill left half-written by the
previous epoch's copy, and :func:`trim_history` drops history rows of epochs
that will be trained again, so each epoch appears once. lib.jobs deletes
``backup/`` only once the run is recorded as completed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

from lib import runstore
from lib.progress import attempt_seconds, read_events

# keras.callbacks.BackupAndRestore's files in backup/; with double_checkpoint=True it
# copies both to ``<name>.bkp`` (the previous epoch) before writing the new ones.
BACKUP_METADATA = runstore.BACKUP_METADATA
BACKUP_WEIGHTS = runstore.BACKUP_WEIGHTS
BACKUP_PREVIOUS = runstore.BACKUP_PREVIOUS


def read_backup_epoch(run_dir: Path) -> int:
    """The epoch a resume starts at: what BackupAndRestore recorded, else 0."""
    path = Path(run_dir) / runstore.BACKUP_DIR / BACKUP_METADATA
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _metadata_epoch(path: Path) -> int | None:
    """The epoch in a BackupAndRestore metadata file; None if missing or unreadable."""
    try:
        epoch = json.loads(path.read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return None
    return epoch


def _weights_readable(path: Path) -> bool:
    """Whether an .h5 weights file opens and every dataset in it reads to the end."""
    import h5py

    def read(name, obj):
        if isinstance(obj, h5py.Dataset):
            obj[()]  # a file cut short fails here, not only at open

    try:
        with h5py.File(path, "r") as fh:
            fh.visititems(read)
    except Exception:  # h5py raises OSError, KeyError, ValueError... for damaged files
        return False
    return True


def repair_backup(run_dir: Path) -> tuple[str, str]:
    """Make ``backup/`` something BackupAndRestore can resume from, before it is read.

    A SIGKILL while BackupAndRestore writes its checkpoint can leave
    ``training_metadata.json`` empty or ``latest.weights.h5`` cut short; Keras
    would then fail every resume (JSONDecodeError) and the run could never finish.
    The previous epoch's pair (``*.bkp``, from ``double_checkpoint=True``) is copied
    back over the damaged one; when that pair is missing or damaged too, backup/
    is deleted and the run starts again from epoch 0.

    Returns:
        (note, warning): ``note`` says which checkpoint was restored (for the
        log), ``warning`` that the run restarts from scratch (for status.json);
        both empty when the backup was fine or absent.
    """
    backup = Path(run_dir) / runstore.BACKUP_DIR
    if not backup.is_dir():
        return "", ""
    meta, weights = backup / BACKUP_METADATA, backup / BACKUP_WEIGHTS
    prev_meta = backup / (BACKUP_METADATA + BACKUP_PREVIOUS)
    prev_weights = backup / (BACKUP_WEIGHTS + BACKUP_PREVIOUS)
    if _metadata_epoch(meta) is not None and _weights_readable(weights):
        return "", ""
    if not any(p.exists() for p in (meta, weights, prev_meta, prev_weights)):
        _remove_tree(backup)  # created, but killed before the first file: nothing to lose
        return "", ""
    epoch = _metadata_epoch(prev_meta)
    if epoch is not None and _weights_readable(prev_weights):
        # Each copy is atomic, weights first: a kill in between leaves the metadata
        # still damaged, so the next attempt repairs again from the same .bkp pair.
        runstore.atomic_write_bytes(weights, prev_weights.read_bytes())
        runstore.atomic_write_bytes(meta, prev_meta.read_bytes())
        return (
            f"the last checkpoint in backup/ was incomplete (the worker was killed while "
            f"writing it); resuming from the one before it, after epoch {epoch}",
            "",
        )
    _remove_tree(backup)
    return "", (
        "the resume checkpoint in backup/ was damaged (the worker was killed while writing "
        "it) and no earlier copy was usable, so training restarted from epoch 1"
    )


def trim_history(run_dir: Path, keep_epochs: int) -> list[dict[str, str]]:
    """Drop history rows of epochs ≥ ``keep_epochs`` (they will be trained again).

    A worker killed between writing an epoch's CSV row and its backup would
    otherwise leave that epoch in the history twice. Returns the kept rows.
    """
    path = Path(run_dir) / runstore.HISTORY_FILE
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        rows = [r for r in reader if r.get("epoch", "").isdigit() and int(r["epoch"]) < keep_epochs]
    buf = io.StringIO()
    if fields and rows:
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    runstore.atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return rows


def best_from_rows(rows: list[dict[str, str]], key: str) -> float | None:
    """The largest finite value of column ``key``; None when there is none."""
    values = []
    for r in rows:
        try:
            v = float(r.get(key, "nan"))
        except ValueError:
            continue
        if math.isfinite(v):
            values.append(v)
    return max(values) if values else None


def mark_fit_finished(run_dir: Path, epochs: int) -> None:
    """Record in backup/ that every epoch is done, so a resume starts none."""
    meta = Path(run_dir) / runstore.BACKUP_DIR / BACKUP_METADATA
    if _metadata_epoch(meta) is not None:  # replaced atomically: never left half-written
        runstore.atomic_write_json(meta, {"epoch": epochs, "batch": 0})


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of history.csv as strings; [] when there is none."""
    path = Path(run_dir) / runstore.HISTORY_FILE
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def best_epoch(rows: list[dict[str, str]], key: str) -> int | None:
    """The 1-based epoch of the largest finite value of column ``key``."""
    best, best_epoch = -math.inf, None
    for r in rows:
        try:
            v = float(r.get(key, "nan"))
        except ValueError:
            continue
        if math.isfinite(v) and v > best:
            best, best_epoch = v, int(r["epoch"]) + 1
    return best_epoch


def previous_train_seconds(run_dir: Path, *, include_last: bool = False) -> float:
    """Training time of earlier attempts (from their progress events), for resumed runs.

    The last attempt's time is left out (it is the current one) unless
    ``include_last``: an attempt that trained no epoch wrote no ``start`` event.
    """
    seconds = attempt_seconds(read_events(run_dir))
    return sum(seconds if include_last else seconds[:-1])


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
