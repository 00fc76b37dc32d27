"""Drafts: the recipe a user is editing, kept in the workspace rather than in a browser session.

A draft is the four configs of a run plus the run name, stored as
``drafts/<id>.json`` in the workspace. Its short id rides in the page URL
(``?draft=<id>``), so a reload, a new tab, Back/Forward or a server restart
bring the same draft back, and two browsers that opened the app separately keep
their own. Session state only caches a draft; this file is the truth.

Every saved change raises the draft's ``revision``. Starting a run records the
revision it was started from (``started``), so a second Start of an unchanged
draft (a double click, a resent request) finds the run already made instead of
making another.

    draft = new_draft()
    draft = save(draft.with_parts(train=draft.train.replace(epochs=3)))
    run_id, fresh = start_once(draft.id, lambda d: jobs.start_run(d.run_config()))

Beside the recipe, a draft keeps what its user looks at (``drafts/<id>.view.json``):
the runs picked on Compare, the curve shown, a segmented control's choice. These are
no part of the recipe and do not raise its revision; they are kept for the same
reasons (a reload, another page and back, a server restart show the same view).

    save_view(draft.id, {"compare_runs_pick": ["20261202-…", "20261201-…"]})
    load_view(draft.id)   # {} when nothing was kept or the file is damaged
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib import runstore
from lib.config import AugmentConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from lib.errors import KestrelError
from lib.workspace import area, safe_join

AREA = "drafts"
ID_PATTERN = re.compile(r"^[a-z0-9]{8}$")
MAX_STARTED = 200  # revisions remembered per draft (oldest dropped first)


class DraftError(KestrelError):
    """A draft id that does not exist or a draft file that cannot be read."""


@dataclass(frozen=True)
class Draft:
    """The recipe one user is editing: data, augmentation, model, training and a run name."""

    id: str
    revision: int = 0  # raised by every saved change
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_name: str = ""
    updated: float = 0.0
    started: dict[str, str] = field(default_factory=dict)  # revision -> run id

    def run_config(self) -> RunConfig:
        """The RunConfig this draft describes, exactly as shown (validated)."""
        return RunConfig(
            name=self.run_name.strip(),
            data=self.data,
            augment=self.augment,
            model=self.model,
            train=self.train,
        )

    def with_parts(self, **changes: Any) -> Draft:
        """A copy with some parts replaced (data=…, train=…, run_name=…); the revision is kept."""
        return dataclasses.replace(self, **changes)

    def with_recipe(self, config: RunConfig, *, data: bool = True) -> Draft:
        """A copy holding ``config``'s parts (its dataset too unless ``data`` is False)."""
        changes: dict[str, Any] = {
            "augment": config.augment,
            "model": config.model,
            "train": config.train,
        }
        if data:
            changes["data"] = config.data
        return self.with_parts(**changes)

    def run_started_from(self, revision: int | None = None) -> str | None:
        """The run started from ``revision`` (default: the current one), if any."""
        rev = self.revision if revision is None else revision
        return self.started.get(str(rev))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "revision": self.revision,
            "updated": self.updated,
            "run_name": self.run_name,
            "data": self.data.to_dict(),
            "augment": self.augment.to_dict(),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "started": dict(self.started),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "draft") -> Draft:
        if not isinstance(raw, dict):
            raise DraftError(f"{where} is not a JSON object")
        revision = raw.get("revision", 0)
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise DraftError(f"{where}: revision must be a whole number, got {revision!r}")
        try:
            return cls(
                id=str(raw["id"]),
                revision=revision,
                updated=float(raw.get("updated", 0.0)),
                run_name=str(raw.get("run_name", "")),
                data=DataConfig.from_dict(raw.get("data", {})),
                augment=AugmentConfig.from_dict(raw.get("augment", {})),
                model=ModelConfig.from_dict(raw.get("model", {})),
                train=TrainConfig.from_dict(raw.get("train", {})),
                started={str(k): str(v) for k, v in dict(raw.get("started", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DraftError(f"{where} cannot be read: {exc}") from None


def valid_id(draft_id: Any) -> bool:
    """Whether ``draft_id`` has the form of a draft id (8 lowercase letters or digits)."""
    return isinstance(draft_id, str) and bool(ID_PATTERN.match(draft_id))


def draft_path(draft_id: str) -> Path:
    """The file of draft ``draft_id``; DraftError for a malformed id."""
    if not valid_id(draft_id):
        raise DraftError(f"{draft_id!r} is not a draft id")
    return safe_join(area(AREA), f"{draft_id}.json")


@contextlib.contextmanager
def _locked(draft_id: str) -> Iterator[None]:
    """Hold the draft's lock: one read-modify-write at a time, across processes."""
    lock = safe_join(area(AREA), f".{draft_id}.lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def new_draft(base: Draft | None = None) -> Draft:
    """Create and store a new draft: the defaults, or a copy of ``base``'s recipe."""
    while True:
        draft_id = secrets.token_hex(4)
        if not draft_path(draft_id).exists():
            break
    draft = Draft(id=draft_id)
    if base is not None:
        draft = draft.with_parts(
            data=base.data,
            augment=base.augment,
            model=base.model,
            train=base.train,
            run_name=base.run_name,
        )
    with _locked(draft_id):
        return _write(draft.with_parts(revision=1))


def exists(draft_id: str) -> bool:
    return valid_id(draft_id) and draft_path(draft_id).exists()


def load(draft_id: str) -> Draft:
    """Read a draft; DraftError when the id is malformed, unknown or the file is damaged."""
    path = draft_path(draft_id)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DraftError(
            f"draft {draft_id} does not exist (it was deleted or never made)"
        ) from None
    except OSError as exc:
        raise DraftError(f"draft {draft_id} cannot be read: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DraftError(f"draft {draft_id} is damaged: {exc}") from None
    return Draft.from_dict(raw, f"draft {draft_id}")


def _write(draft: Draft) -> Draft:
    runstore.atomic_write_json(draft_path(draft.id), draft.to_dict())
    return draft


def save(draft: Draft) -> Draft:
    """Store ``draft``'s parts as the next revision; returns the stored draft.

    Nothing is written when the parts equal the stored ones, so a rerun that
    changes nothing does not raise the revision (and a double Start still
    finds its run).
    """
    with _locked(draft.id):
        try:
            stored = load(draft.id)
        except DraftError:
            stored = None
        if stored is not None and _same_parts(stored, draft):
            return stored
        revision = max(draft.revision, stored.revision if stored else 0) + 1
        started = stored.started if stored else draft.started
        return _write(
            dataclasses.replace(draft, revision=revision, updated=time.time(), started=started)
        )


def view_path(draft_id: str) -> Path:
    """The file of what draft ``draft_id``'s user looks at; DraftError for a malformed id."""
    if not valid_id(draft_id):
        raise DraftError(f"{draft_id!r} is not a draft id")
    return safe_join(area(AREA), f"{draft_id}.view.json")


def load_view(draft_id: str) -> dict[str, Any]:
    """The view values kept for a draft: {} when none were kept or the file is damaged.

    A view is a convenience, not a recipe: a damaged file is not worth a message, and
    each page checks every value against what it can show before using it.
    """
    try:
        raw = json.loads(view_path(draft_id).read_text(encoding="utf-8"))
    except (OSError, ValueError, DraftError):
        return {}
    return raw if isinstance(raw, dict) else {}


def save_view(draft_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` (JSON values) into the draft's view; returns the whole view.

    Nothing is written when nothing changes, so a rerun costs a read only.
    """
    with _locked(draft_id):
        view = load_view(draft_id)
        merged = {**view, **changes}
        if merged != view:
            runstore.atomic_write_json(view_path(draft_id), merged)
        return merged


def _same_parts(a: Draft, b: Draft) -> bool:
    return (a.data, a.augment, a.model, a.train, a.run_name) == (
        b.data,
        b.augment,
        b.model,
        b.train,
        b.run_name,
    )


def start_once(
    draft_id: str, start: Callable[[Draft], str], key: str | None = None
) -> tuple[str, bool]:
    """Start a run from the stored draft unless its current revision already started one.

    Args:
        draft_id: the draft.
        start: makes the run from the draft and returns its id (e.g. lib.jobs.start_run).
        key: what counts as "the same start" (default: the draft's revision); a
            clone uses the revision and the cloned run's id.

    Returns:
        (run id, True) for a new run, or (the earlier run's id, False) when this
        revision was started already.
    """
    with _locked(draft_id):
        draft = load(draft_id)
        token = key or str(draft.revision)
        earlier = draft.started.get(token)
        if earlier and runstore.run_dir(earlier).exists():
            return earlier, False
        run_id = start(draft)
        started = dict(draft.started)
        started[token] = run_id
        while len(started) > MAX_STARTED:  # dicts keep insertion order: drop the oldest
            del started[next(iter(started))]
        _write(dataclasses.replace(draft, started=started))
        return run_id, True
