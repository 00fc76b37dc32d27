"""Progress events of a run: the one schema of ``progress.jsonl``, its writer and its reader.

A training worker appends one JSON object per line (:class:`ProgressLog`); the
Train page, the CLI and the benchmarks read them back (:func:`read_progress` for
the live panel, cheap however long the run; :func:`read_events` for everything).
Every line carries ``time`` (seconds since the epoch) and ``type``:

============  ==================================================================
``phase``     :class:`PhaseEvent`: a preparation step ("loading data", "training")
``start``     :class:`StartEvent`: an attempt starts fitting (epochs, steps, resume epoch)
``batch``     :class:`BatchEvent`: throttled, within an epoch (loss, lr, images/s, ETA)
``epoch``     :class:`EpochEvent`: an epoch ended (its Keras logs)
``metrics``   :class:`MetricsEvent`: the final metrics (metrics.json's content)
``end``       :class:`EndEvent`: the attempt is over (completed, stopped or failed)
============  ==================================================================

Readers skip lines they cannot parse (one being written) and types they do not
know, so the schema can grow. Events also answer ``event["key"]`` and
``event.get("key")`` (``"type"`` included) for code written against the raw JSON.

This module imports neither TensorFlow nor Streamlit.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from lib import runstore

TAIL_BYTES = 64 * 1024  # the live panel reads only this much of the end of the file


@dataclass(frozen=True)
class Event:
    """What every progress event has: when it was written, and its ``type``."""

    type: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one line: ``time`` and ``type`` first."""
        data = asdict(self)
        return {"time": data.pop("time"), "type": self.type, **data}

    # Mapping-style access, for code that indexed the raw JSON objects.
    def __getitem__(self, key: str) -> Any:
        if key == "type":
            return self.type
        if key in _field_names(type(self)):
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class PhaseEvent(Event):
    """A preparation phase began ("hardware: ...", "loading data", "evaluating")."""

    type: ClassVar[str] = "phase"
    phase: str = ""
    # A phase that counts (embedding images n/N for cached transfer features): n and N.
    done: int = 0
    total: int = 0
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class StartEvent(Event):
    """An attempt starts fitting: written at its first epoch (a resume included)."""

    type: ClassVar[str] = "start"
    epochs: int = 0  # planned epochs of the whole run
    steps: int = 0  # optimizer steps (batches) per epoch
    initial_epoch: int = 0  # 0-based epoch this attempt starts at (> 0 on resume)
    batch_size: int = 0
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class BatchEvent(Event):
    """Running figures within an epoch (at most a few per second)."""

    type: ClassVar[str] = "batch"
    epoch: int = 0  # 0-based epoch
    epochs: int = 0
    batch: int = 0  # batches done in this epoch, 1-based
    steps: int = 0  # batches per epoch
    loss: float | None = None  # running mean over the epoch so far
    accuracy: float | None = None
    lr: float | None = None  # learning rate now
    images_per_sec: float = 0.0  # since the previous batch event
    elapsed: float = 0.0  # seconds since this attempt started fitting
    eta: float | None = None  # seconds left for this attempt
    time: float = field(default_factory=_now)

    @property
    def batches_done(self) -> int:
        return self.batch

    @property
    def position(self) -> float:
        """Where training is, in epochs (fractional): 2.5 is half-way through the third."""
        return self.epoch + self.batch / max(1, self.steps)


@dataclass(frozen=True)
class EpochEvent(Event):
    """An epoch ended; ``logs`` are its Keras logs (loss, accuracy, val_*, learning_rate)."""

    type: ClassVar[str] = "epoch"
    epoch: int = 0  # 0-based epoch that ended
    epochs: int = 0
    steps: int = 0
    logs: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    eta: float | None = None
    stopped: bool = False  # a stop request ended this epoch early
    time: float = field(default_factory=_now)

    @property
    def batches_done(self) -> int:
        return self.steps

    @property
    def position(self) -> float:
        return float(self.epoch + 1)


@dataclass(frozen=True)
class MetricsEvent(Event):
    """The run's final metrics (what metrics.json holds)."""

    type: ClassVar[str] = "metrics"
    metrics: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class EndEvent(Event):
    """The attempt is over: ``state`` is "completed", "stopped" or "failed"."""

    type: ClassVar[str] = "end"
    state: str = ""
    error: str = ""
    time: float = field(default_factory=_now)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (PhaseEvent, StartEvent, BatchEvent, EpochEvent, MetricsEvent, EndEvent)
}

_FIELDS: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    if cls not in _FIELDS:
        _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    return _FIELDS[cls]


def parse_event(data: dict[str, Any] | str) -> Event | None:
    """The typed event of one JSON object (or line); None for unknown types or bad lines.

    Keys the event type does not know are ignored; missing keys take their defaults.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if not isinstance(data, dict):
        return None
    cls = EVENT_TYPES.get(data.get("type"))
    if cls is None:
        return None
    known = _field_names(cls)
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


def _json_default(value: Any) -> Any:
    try:
        return float(value)  # numpy scalars
    except (TypeError, ValueError):
        return str(value)


# ---------------------------------------------------------------------------
# Writing


class ProgressLog:
    """The writer of one run's ``progress.jsonl``: one ``write`` call per whole line.

    Used as is, each :meth:`write` opens the file in append mode and closes it; a
    writer that writes often (the training callback) :meth:`open` s it once and
    flushes after every line, so a reader never waits long for an event.
    """

    def __init__(self, run_dir: Path | str):
        self.path = Path(run_dir) / runstore.PROGRESS_FILE
        self._fh = None

    def open(self) -> ProgressLog:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return self

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def write(self, event: Event) -> None:
        line = json.dumps(event.to_json(), default=_json_default) + "\n"
        if self._fh is not None:
            self._fh.write(line)
            self._fh.flush()
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)


def append_event(run_dir: Path | str, event: Event) -> None:
    """Append one event to ``run_dir``'s progress.jsonl."""
    ProgressLog(run_dir).write(event)


# ---------------------------------------------------------------------------
# Reading


@dataclass
class Progress:
    """The latest progress of a run, from the tail of progress.jsonl.

    Attributes:
        phase: the latest preparation phase ("loading data", "training"...).
        start: the latest attempt's start event.
        batch: the latest batch event of that attempt (None at an attempt's start).
        epoch: the latest epoch event.
        live: batch events of the epoch in progress (drawn as the moving curve).
        metrics: the final metrics event, once written.
        end: the latest end event (an attempt that is over).
    """

    phase: str = ""
    start: StartEvent | None = None
    batch: BatchEvent | None = None
    epoch: EpochEvent | None = None
    live: list[BatchEvent] = field(default_factory=list)
    metrics: MetricsEvent | None = None
    end: EndEvent | None = None

    def add(self, event: Event) -> None:
        """Fold one event (in file order) into this view."""
        if isinstance(event, PhaseEvent):
            self.phase = event.phase
        elif isinstance(event, StartEvent):
            self.start, self.batch, self.live, self.end = event, None, [], None
        elif isinstance(event, BatchEvent):
            self.batch = event
            self.live.append(event)
        elif isinstance(event, EpochEvent):
            self.epoch = event
            self.live = []
        elif isinstance(event, MetricsEvent):
            self.metrics = event
        elif isinstance(event, EndEvent):
            self.end = event

    @property
    def latest(self) -> BatchEvent | EpochEvent | None:
        """The newer of the latest batch and epoch events."""
        cands = [e for e in (self.batch, self.epoch) if e is not None]
        return max(cands, key=lambda e: e.time) if cands else None

    @property
    def fraction_epochs(self) -> float:
        """Share of all epochs done, counting the current epoch's batches."""
        ev = self.latest
        if ev is None:
            return 0.0
        return min(1.0, ev.position / max(1, ev.epochs))

    @property
    def epoch_logs(self) -> dict[str, float]:
        """The Keras logs of the latest finished epoch ({} before the first)."""
        return dict(self.epoch.logs) if self.epoch is not None else {}

    @property
    def eta(self) -> float | None:
        """Seconds left for the attempt, from the latest batch or epoch event."""
        ev = self.latest
        return ev.eta if ev is not None else None


def _lines(path: Path, tail_bytes: int | None) -> list[str]:
    try:
        with open(path, "rb") as fh:
            if tail_bytes is None:
                return fh.read().decode("utf-8", "replace").splitlines()
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - tail_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > tail_bytes else lines  # the first line is probably cut


def iter_events(run_dir: Path | str, tail_bytes: int | None = None) -> Iterator[Event]:
    """The typed events of progress.jsonl in file order (only its tail with ``tail_bytes``)."""
    for line in _lines(Path(run_dir) / runstore.PROGRESS_FILE, tail_bytes):
        event = parse_event(line)
        if event is not None:
            yield event


def read_events(run_dir: Path | str) -> list[Event]:
    """Every event of the run's progress.jsonl; [] when there is none yet."""
    return list(iter_events(run_dir))


def read_progress(run_dir: Path | str, tail_bytes: int = TAIL_BYTES) -> Progress:
    """The run's latest progress, from the tail of progress.jsonl (cheap however long the run)."""
    progress = Progress()
    for event in iter_events(run_dir, tail_bytes):
        progress.add(event)
    return progress


def attempt_seconds(events: list[Event]) -> list[float]:
    """Fitting time of each attempt that trained at least one epoch, in order.

    An attempt starts at a ``start`` event; its time is the ``elapsed`` of its
    last epoch event (a batch-only tail is left out: that epoch is trained again).
    """
    out: list[float] = []
    for event in events:
        if isinstance(event, StartEvent):
            out.append(0.0)
        elif isinstance(event, EpochEvent) and out:
            elapsed = float(event.elapsed)
            out[-1] = elapsed if math.isfinite(elapsed) else out[-1]
    return out
