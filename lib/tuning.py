"""Hyperparameter studies on Optuna: a search space from the config metadata, trials as runs.

A study is a folder ``<workspace>/studies/<slug>/`` holding ``study.json`` (the
:class:`StudySpec`: the base recipe, the searched fields, the trial budget, the
pruner) and, by default, Optuna's SQLite storage ``optuna.db``. Any SQLAlchemy
URL (``postgresql://…``) can replace it, so one study spreads over several
processes or machines: Optuna's RDB storage is the only coordinator.

A *study worker* (``python -m lib.tuning worker STUDY_DIR``, started by the Tune
page or ``python -m lib tune``) runs ``study.optimize``: for each trial it asks
Optuna for parameters, writes an ordinary run (config.json plus ``trial.json``,
which names the study and the trial), queues it through :mod:`lib.jobs` (so
``KESTREL_MAX_CONCURRENT_RUNS`` holds) and waits for it. The run's own process
reports the validation accuracy of every epoch to the trial and stops early when
the pruner says so (:func:`run_callbacks`); the worker then tells Optuna the
best validation accuracy, or that the trial was pruned.

What a crash loses: a killed run is reaped by lib.jobs and its trial fails; a
killed worker stops sending Optuna heartbeats and its trial is failed by the next
worker (``fail_stale_trials``). Failed trials do not count toward the study's
number of trials, so a resumed study still runs them all.

This module does not import TensorFlow or Keras at the top; pages import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import time
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib import jobs, runstore
from lib.config import AugmentConfig, ModelConfig, RunConfig, TrainConfig
from lib.errors import KestrelError
from lib.workspace import area, safe_join

SPEC_FILE = "study.json"
DB_FILE = "optuna.db"
STOP_FILE = "stop.request"
WORKERS_DIR = "workers"
PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_S = 20  # Optuna heartbeat of a running trial; a worker silent for 2x is stale
POLL_S = 1.0  # how often a worker looks at its trial's run
MONITOR = "val_accuracy"  # the objective: best validation accuracy of the trial's run

# The draft parts a study may search, and the fields of them it never searches.
SEARCH_PARTS: dict[str, type] = {
    "train": TrainConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
}
# A label of where the values came from, and where (not how) a model trains.
NOT_SEARCHED = {"augment.preset", "train.device", "train.mixed_precision"}


class TuningError(KestrelError):
    """A study spec, search space or study action a user can fix; the message says how."""


# ---------------------------------------------------------------------------
# The search space, from the config metadata


def searchable_fields(part: str) -> list[str]:
    """Fields of ``part`` a study can search: numbers with a range, and choices.

    Flags, texts and nested configs (custom blocks) are not searched.
    """
    cls = SEARCH_PARTS[part]
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        if m.get("cli_only") or f"{part}.{f.name}" in NOT_SEARCHED:
            continue
        if "choices" in m or ("range" in m and hints[f.name] in (int, float)):
            names.append(f.name)
    return names


def field_info(path: str) -> tuple[type, str, dict[str, Any], Any]:
    """(config class, field name, metadata, type) of ``"part.field"``; TuningError if unknown."""
    part, _, name = path.partition(".")
    if part not in SEARCH_PARTS or name not in searchable_fields(part):
        raise TuningError(
            f"{path!r} cannot be searched; give 'train.<field>', 'model.<field>' or "
            "'augment.<field>' naming a number or a choice (e.g. train.learning_rate)"
        )
    cls = SEARCH_PARTS[part]
    m = dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)
    return cls, name, m, typing.get_type_hints(cls)[name]


def check_space(space: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The search space, checked against the fields' metadata and normalised.

    ``space`` maps ``"part.field"`` to ``{"low": x, "high": y}`` (``"log": true``
    for a log scale; the field's metadata decides when left out) or
    ``{"choices": [...]}``, a subset of the field's choices.

    Raises:
        TuningError: an unknown field, a range outside the field's limits, an
            empty subset; nothing is searched then.
    """
    if not isinstance(space, dict) or not space:
        raise TuningError(
            "the search space is empty: switch at least one field to a range or subset"
        )
    out: dict[str, dict[str, Any]] = {}
    for path, entry in space.items():
        _, name, m, hint = field_info(path)
        label = m.get("label") or name
        if not isinstance(entry, dict):
            raise TuningError(f"{path}: give {{'low', 'high'}} or {{'choices'}}, got {entry!r}")
        if "choices" in m:
            choices = entry.get("choices")
            if not isinstance(choices, (list, tuple)) or not choices:
                raise TuningError(f"{label}: pick at least one value to try")
            bad = [c for c in choices if c not in m["choices"]]
            if bad:
                raise TuningError(
                    f"{label}: {', '.join(map(str, bad))} is not allowed; choose from "
                    f"{', '.join(m['choices'])}"
                )
            out[path] = {"choices": list(dict.fromkeys(choices))}
            continue
        lo, hi = m["range"]
        try:
            low, high = float(entry["low"]), float(entry["high"])
        except (KeyError, TypeError, ValueError):
            raise TuningError(f"{label}: give a lowest and a highest value") from None
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise TuningError(
                f"{label}: the lowest value ({low:g}) is above the highest ({high:g})"
            )
        if low < lo or high > hi:
            raise TuningError(f"{label}: the range must lie between {lo:g} and {hi:g}")
        log = bool(entry.get("log", m.get("log", False)))
        if log and low <= 0:
            raise TuningError(f"{label}: a log-scale range must start above 0")
        if hint is int:
            if not (low.is_integer() and high.is_integer()):
                raise TuningError(f"{label}: the range takes whole numbers")
            out[path] = {"low": int(low), "high": int(high), "log": log}
        else:
            out[path] = {"low": low, "high": high, "log": log}
    return out


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Optuna distributions of a checked space (what ``suggest`` asks for)."""
    import optuna

    out: dict[str, Any] = {}
    for path, entry in space.items():
        _, _, _, hint = field_info(path)
        if "choices" in entry:
            out[path] = optuna.distributions.CategoricalDistribution(entry["choices"])
        elif hint is int:
            out[path] = optuna.distributions.IntDistribution(
                entry["low"], entry["high"], log=entry["log"]
            )
        else:
            out[path] = optuna.distributions.FloatDistribution(
                entry["low"], entry["high"], log=entry["log"]
            )
    return out


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ask ``trial`` for a value of every searched field."""
    params: dict[str, Any] = {}
    for path, entry in space.items():
        _, _, _, hint = field_info(path)
        if "choices" in entry:
            params[path] = trial.suggest_categorical(path, entry["choices"])
        elif hint is int:
            params[path] = trial.suggest_int(path, entry["low"], entry["high"], log=entry["log"])
        else:
            params[path] = trial.suggest_float(path, entry["low"], entry["high"], log=entry["log"])
    return params


def apply_params(
    base: RunConfig, params: dict[str, Any], *, epochs: int | None = None
) -> RunConfig:
    """``base`` with the trial's ``params`` (``"part.field": value``) and the epoch budget.

    Raises:
        lib.config.ConfigError: the combination is not a valid recipe (warm-up
            longer than the epochs…); the message names the field.
    """
    changes: dict[str, dict[str, Any]] = {}
    for path, value in params.items():
        part, _, name = path.partition(".")
        changes.setdefault(part, {})[name] = value
    if epochs and "train.epochs" not in params:
        changes.setdefault("train", {})["epochs"] = int(epochs)
    parts = {part: getattr(base, part).replace(**values) for part, values in changes.items()}
    return base.replace(**parts)


# ---------------------------------------------------------------------------
# The study spec


@dataclass(frozen=True)
class StudySpec:
    """What ``study.json`` holds: everything a worker needs to run the study."""

    name: str  # the Optuna study name; also names the folder
    base: RunConfig  # the recipe every trial starts from (the draft)
    space: dict[str, dict[str, Any]]  # checked search space ("part.field" -> range or subset)
    n_trials: int = 8  # complete + pruned trials the study runs (failed ones are run again)
    budget_epochs: int = 6  # epochs of each trial (unless epochs is searched)
    budget_seconds: float = 0.0  # a trial stops after this many training seconds; 0: no limit
    pruner: str = "median"  # "median", "hyperband" or "none"
    storage: str = ""  # SQLAlchemy URL; "" is optuna.db in the study folder
    seed: int | None = None  # sampler seed (None: random)
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(
            r"[A-Za-z0-9][\w .-]{0,79}", self.name
        ):
            raise TuningError(
                "a study name takes 1 to 80 letters, digits, spaces, '.', '_' or '-', "
                f"starting with a letter or digit; got {self.name!r}"
            )
        if not 1 <= int(self.n_trials) <= 10_000:
            raise TuningError(
                f"the number of trials must be between 1 and 10000, got {self.n_trials}"
            )
        if not 1 <= int(self.budget_epochs) <= 1000:
            raise TuningError(
                f"the epoch budget must be between 1 and 1000, got {self.budget_epochs}"
            )
        if not 0 <= float(self.budget_seconds) <= 7 * 24 * 3600:
            raise TuningError("the time budget must be between 0 (none) and one week in seconds")
        if self.pruner not in PRUNERS:
            raise TuningError(
                f"the pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}"
            )
        if self.base.data.val_fraction <= 0:
            raise TuningError(
                "a study maximises validation accuracy: set the dataset's validation share above 0"
            )
        object.__setattr__(self, "space", check_space(self.space))

    @property
    def slug(self) -> str:
        """The study's folder name."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-.") or "study"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["base"] = self.base.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "study spec") -> StudySpec:
        if not isinstance(data, dict):
            raise TuningError(f"{where} must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TuningError(
                f"{where} has no field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if "name" not in data or "space" not in data:
            raise TuningError(f"{where} needs a 'name' and a 'space'")
        values = dict(data)
        try:
            values["base"] = RunConfig.from_dict(data.get("base", {}))
        except ValueError as exc:
            raise TuningError(f"{where}: base recipe: {exc}") from None
        try:
            return cls(**values)
        except TypeError as exc:
            raise TuningError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: Path | str) -> StudySpec:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise TuningError(f"cannot read study file {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise TuningError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, where=str(path))


# ---------------------------------------------------------------------------
# Storage, pruner, study


def studies_root() -> Path:
    return area("studies")


def study_dir(slug: str) -> Path:
    return safe_join(studies_root(), slug)


def read_spec(path: Path) -> StudySpec:
    return StudySpec.load(Path(path) / SPEC_FILE)


def storage_url(spec: StudySpec, folder: Path) -> str:
    """The spec's storage URL, or the SQLite file in the study folder."""
    return spec.storage or f"sqlite:///{Path(folder).resolve() / DB_FILE}"


def make_storage(url: str, *, heartbeat: bool = False) -> Any:
    """Optuna's RDB storage at ``url`` (SQLite waits for a lock instead of failing)."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    if heartbeat:
        kwargs["heartbeat_interval"] = HEARTBEAT_S
        kwargs["grace_period"] = 2 * HEARTBEAT_S
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:  # a wrong URL, an unreachable server, a missing driver
        raise TuningError(
            f"cannot open the study storage {_hide_password(url)}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}. Check the URL (e.g. "
            "postgresql://user:password@host/db) and that the server is reachable."
        ) from None


def _hide_password(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def make_pruner(spec: StudySpec) -> Any:
    """The spec's pruner: median of earlier trials at the same epoch, or Hyperband."""
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(spec.budget_epochs, 1), reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def load_study(spec: StudySpec, folder: Path, *, heartbeat: bool = False) -> Any:
    """The Optuna study of ``spec`` (created in its storage when missing).

    With ``heartbeat`` (a study worker) the sampler's seed also takes the process
    id: workers seeded alike would all draw the same parameters.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(storage_url(spec, folder), heartbeat=heartbeat)
    seed = spec.seed
    if seed is not None and heartbeat:
        seed = (seed * 1_000_003 + os.getpid()) % 2**32
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    return optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction="maximize",
        pruner=make_pruner(spec),
        sampler=sampler,
        load_if_exists=True,
    )


def create_study(spec: StudySpec) -> Path:
    """Write the study folder and create the study in its storage; returns the folder.

    A folder of the same name holding the same search space is the same study
    (continued); one with another space is refused.
    """
    folder = study_dir(spec.slug)
    if (folder / SPEC_FILE).is_file():
        old = read_spec(folder)
        if (old.space, old.base, old.budget_epochs, old.budget_seconds) != (
            spec.space, spec.base, spec.budget_epochs, spec.budget_seconds,
        ):  # fmt: skip
            raise TuningError(
                f"a study named {spec.name!r} exists with another recipe, search space or "
                "budget; choose another name, or resume that study"
            )
        spec = dataclasses.replace(spec, created=old.created)
    folder.mkdir(parents=True, exist_ok=True)
    runstore.atomic_write_json(folder / SPEC_FILE, spec.to_dict())
    load_study(spec, folder)
    return folder


def list_studies() -> list[Path]:
    """Study folders of the workspace, newest first."""
    folders = [p for p in studies_root().iterdir() if (p / SPEC_FILE).is_file()]
    return sorted(folders, key=lambda p: (p / SPEC_FILE).stat().st_mtime, reverse=True)


# ---------------------------------------------------------------------------
# Workers


def spawn_workers(folder: Path, n: int = 1) -> list[int]:
    """Start ``n`` study workers for ``folder`` in their own sessions; returns their pids."""
    folder = Path(folder)
    (folder / STOP_FILE).unlink(missing_ok=True)
    (folder / WORKERS_DIR).mkdir(exist_ok=True)
    pids = []
    for _ in range(max(1, int(n))):
        proc = jobs.spawn_worker(
            ["-m", "lib.tuning", "worker", str(folder)], folder / WORKERS_DIR / "log.txt"
        )
        _record_worker(folder, proc.pid)
        pids.append(proc.pid)
    return pids


def _record_worker(folder: Path, pid: int) -> None:
    runstore.atomic_write_json(
        Path(folder) / WORKERS_DIR / f"{pid}.json",
        {"pid": pid, "pid_start": jobs.process_start_ticks(pid), "started": time.time()},
    )


def live_workers(folder: Path) -> list[int]:
    """Pids of the study's workers that are still running (stale records are removed)."""
    alive = []
    for path in sorted((Path(folder) / WORKERS_DIR).glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if jobs.process_alive(rec.get("pid"), rec.get("pid_start")):
            alive.append(int(rec["pid"]))
        else:
            path.unlink(missing_ok=True)
    return alive


def stop_study(folder: Path) -> None:
    """Ask the study's workers to stop: running trials stop, no new trial starts."""
    runstore.atomic_write_bytes(Path(folder) / STOP_FILE, b"stop\n")


def stop_requested(folder: Path) -> bool:
    return (Path(folder) / STOP_FILE).exists()


def resume_study(folder: Path, workers: int = 1) -> list[int]:
    """Start workers again for a stopped study (it needs trials left to run)."""
    spec = read_spec(folder)
    if live_workers(folder):
        raise TuningError(f"study {spec.name} is running already")
    study = load_study(spec, folder)
    if counted_trials(study) >= spec.n_trials:
        raise TuningError(
            f"study {spec.name} has run all its {spec.n_trials} trials; start a new study for more"
        )
    return spawn_workers(folder, workers)


def counted_trials(study: Any) -> int:
    """Trials that count toward the study's total: complete and pruned ones."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class TrialFailed(Exception):
    """A trial whose run failed or was stopped with the study; Optuna records it as failed."""


def _objective(spec: StudySpec, folder: Path):
    import optuna

    def objective(trial: optuna.trial.Trial) -> float:
        params = suggest(trial, spec.space)
        try:
            config = apply_params(spec.base, params, epochs=spec.budget_epochs)
        except ValueError as exc:
            trial.set_user_attr("error", str(exc))
            raise TrialFailed(str(exc)) from None
        config = config.replace(name=f"{spec.name} #{trial.number}"[:120])
        path = runstore.create_run(config)
        runstore.atomic_write_json(
            path / runstore.TRIAL_FILE,
            {
                "study": spec.name,
                "study_dir": str(Path(folder).resolve()),
                "storage": storage_url(spec, folder),
                "trial_number": trial.number,
                "trial_id": trial._trial_id,
                "pruner": spec.pruner,
                "budget_epochs": spec.budget_epochs,
                "budget_seconds": spec.budget_seconds,
            },
        )
        trial.set_user_attr("run_id", path.name)
        return _wait_for_run(trial, path, folder)

    return objective


def _wait_for_run(trial: Any, path: Path, folder: Path) -> float:
    import optuna

    jobs.schedule()
    stop_sent = False
    last_poll = 0.0
    while True:
        status = runstore.read_status(path)
        if status.state not in runstore.ACTIVE_STATES:
            break
        if stop_requested(folder) and not stop_sent:
            with contextlib.suppress(jobs.JobError):
                jobs.request_stop(path.name)
            stop_sent = True
        if time.monotonic() - last_poll > 5:
            jobs.poll()  # reap a dead run, start queued ones
            last_poll = time.monotonic()
        time.sleep(POLL_S)
    info = runstore.read_trial(path)
    if info.get("pruned_epoch"):
        trial.set_user_attr("pruned_epoch", info["pruned_epoch"])
    if status.state == "completed":
        value = runstore.read_metrics(path).get("best_val_accuracy")
        if value is None:
            raise TrialFailed("the run has no validation accuracy")
        if info.get("pruned_epoch"):
            raise optuna.TrialPruned(f"pruned after epoch {info['pruned_epoch']}")
        return float(value)
    if status.state == "stopped" and not stop_sent:
        trial.set_user_attr("stopped", "by hand")
        raise optuna.TrialPruned("stopped by hand")
    if status.state == "stopped":
        trial.set_user_attr("stopped", "with the study")
        raise TrialFailed("stopped with the study")
    trial.set_user_attr("error", status.error[:500])
    raise TrialFailed(status.error or "the run failed")


def run_worker(folder: Path) -> int:
    """A study worker: run trials until the study has its trials or is stopped.

    Each pass asks for one trial (``optimize(n_trials=1)`` keeps Optuna's
    heartbeat and its failing of stale trials) after counting the trials that
    are done or under way in the storage, so several workers on one study stop
    together instead of each running a last extra trial.
    """
    from optuna.trial import TrialState

    folder = Path(folder)
    spec = read_spec(folder)
    _record_worker(folder, os.getpid())
    study = load_study(spec, folder, heartbeat=True)
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    try:
        while not stop_requested(folder):
            fail_stale(study)
            if len(study.get_trials(deepcopy=False, states=states)) >= spec.n_trials:
                break
            study.optimize(_objective(spec, folder), n_trials=1, catch=(TrialFailed,))
    finally:
        (folder / WORKERS_DIR / f"{os.getpid()}.json").unlink(missing_ok=True)
    return 0


# ---------------------------------------------------------------------------
# The trial's run process: report each epoch, stop when pruned


def _trial_callback_class():
    import keras

    class TrialCallback(keras.callbacks.Callback):
        """Reports ``monitor`` to an Optuna trial every epoch; stops training when pruned.

        Training stops (``model.stop_training``) instead of raising ``TrialPruned``,
        so the run ends like an early-stopped one: its best model and metrics are
        kept, and it stays an ordinary, evaluable run. Also stops once
        ``budget_seconds`` of training have passed.
        """

        def __init__(self, trial, *, monitor=MONITOR, budget_seconds=0.0, on_prune=None):
            super().__init__()
            self.trial = trial
            self.monitor = monitor
            self.budget_seconds = float(budget_seconds or 0)
            self.on_prune = on_prune
            self.pruned_epoch: int | None = None
            self.out_of_time = False
            self._t0 = 0.0

        def on_train_begin(self, logs=None):
            self._t0 = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            if self.budget_seconds and time.monotonic() - self._t0 > self.budget_seconds:
                self.out_of_time = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is None or self.trial is None:
                return
            try:
                self.trial.report(float(value), epoch + 1)
                prune = self.trial.should_prune()
            except Exception as exc:  # the study is gone or the trial finished: train on
                print(f"trial reporting stopped: {type(exc).__name__}: {exc}", flush=True)
                self.trial = None
                return
            if prune:
                self.pruned_epoch = epoch + 1
                self.model.stop_training = True
                if self.on_prune:
                    self.on_prune(epoch + 1)

    return TrialCallback


def trial_callback(trial: Any, **kwargs: Any) -> Any:
    """A Keras callback reporting to ``trial`` (see TrialCallback above)."""
    return _trial_callback_class()(trial, **kwargs)


def run_callbacks(run_dir: Path) -> list[Any]:
    """The callbacks a trial's run trains with (lib.jobs adds them); [] for other runs."""
    import optuna

    run_dir = Path(run_dir)
    info = runstore.read_trial(run_dir)
    if not info:
        return []
    try:
        spec = read_spec(Path(info["study_dir"]))
        storage = make_storage(info["storage"])
        study = optuna.load_study(
            study_name=info["study"], storage=storage, pruner=make_pruner(spec)
        )
        trial = optuna.trial.Trial(study, int(info["trial_id"]))
    except Exception as exc:  # train as an ordinary run rather than not at all
        print(f"not reporting to the study: {type(exc).__name__}: {exc}", flush=True)
        return []

    def on_prune(epoch: int) -> None:
        runstore.atomic_write_json(run_dir / runstore.TRIAL_FILE, {**info, "pruned_epoch": epoch})
        print(f"trial {info['trial_number']} pruned after epoch {epoch}", flush=True)

    return [trial_callback(trial, budget_seconds=info.get("budget_seconds", 0), on_prune=on_prune)]


# ---------------------------------------------------------------------------
# Reading a study (the Tune page, the CLI)


@dataclass
class TrialRow:
    number: int
    state: str  # Optuna's state; "starting"/"queued"/"running" come from the run while it lives
    params: dict[str, Any]
    value: float | None
    duration_s: float | None
    pruned_epoch: int | None
    run_id: str
    note: str


def trial_rows(study: Any) -> list[TrialRow]:
    """The study's trials, with what their runs say (queued, running, pruned at…)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("run_id", "")
        state = t.state.name.lower()
        if state == "running" and not run_id:
            # Optuna started the trial but its run is not created yet; the Tune page's
            # "Running trial" box lists a trial only once it has a run to stop.
            state = "starting"
        elif state == "running":
            with contextlib.suppress(Exception):
                run_state = runstore.read_status(runstore.run_dir(run_id)).state
                state = "queued" if run_state == "queued" else "running"
        duration = None
        if t.datetime_start is not None:
            end = t.datetime_complete.timestamp() if t.datetime_complete else time.time()
            duration = max(0.0, end - t.datetime_start.timestamp())
        pruned = t.user_attrs.get("pruned_epoch")
        if state == "pruned" and pruned is None and t.intermediate_values:
            pruned = max(t.intermediate_values)
        value = t.value
        if value is None and t.intermediate_values and state == "running":
            value = max(t.intermediate_values.values())
        note = t.user_attrs.get("error") or (
            f"stopped {t.user_attrs['stopped']}" if t.user_attrs.get("stopped") else ""
        )
        rows.append(
            TrialRow(t.number, state, dict(t.params), value, duration, pruned, run_id, note)
        )
    return rows


def best_trial(study: Any) -> Any | None:
    """The completed trial with the best value, or None."""
    try:
        return study.best_trial
    except ValueError:
        return None


def best_run_id(study: Any) -> str | None:
    trial = best_trial(study)
    return trial.user_attrs.get("run_id") if trial is not None else None


def study_state(folder: Path, study: Any, spec: StudySpec) -> str:
    """ "running", "finished", "stopped" or "interrupted" (no worker, trials left)."""
    if live_workers(folder):
        return "stopping" if stop_requested(folder) else "running"
    if counted_trials(study) >= spec.n_trials:
        return "finished"
    return "stopped" if stop_requested(folder) else "interrupted"


def fail_stale(study: Any) -> None:
    """Fail trials whose worker died (no heartbeat), so the table never shows them running."""
    import optuna

    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# ---------------------------------------------------------------------------
# Foreground study (the CLI)


def run_study(spec: StudySpec, *, workers: int = 1, echo: bool = True) -> Path:
    """Create or continue the study and run ``workers`` worker processes until they end."""
    folder = create_study(spec)
    study = load_study(spec, folder)
    if counted_trials(study) >= spec.n_trials:
        if echo:
            print(f"study {spec.name} has run all its {spec.n_trials} trials")
        return folder
    spawn_workers(folder, workers)
    try:
        while live_workers(folder):
            time.sleep(2)
    except KeyboardInterrupt:
        stop_study(folder)
        if echo:
            print("stopping the study: running trials stop after their batch", flush=True)
        while live_workers(folder):
            time.sleep(1)
    return folder


def format_trials(rows: list[TrialRow]) -> str:
    """The trials as a plain-text table."""
    header = ("#", "STATE", "VALUE", "PRUNED AT", "SECONDS", "RUN", "PARAMS")
    lines = [header]
    for r in rows:
        lines.append(
            (
                str(r.number),
                r.state,
                "-" if r.value is None else f"{r.value:.4f}",
                "-" if r.pruned_epoch is None else f"epoch {r.pruned_epoch}",
                "-" if r.duration_s is None else f"{r.duration_s:.0f}",
                r.run_id or "-",
                ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items()),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    """``python -m lib.tuning worker STUDY_DIR``: one study worker (started by spawn_workers)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "worker":
        print("usage: python -m lib.tuning worker STUDY_DIR", file=sys.stderr)
        return 2
    try:
        return run_worker(Path(args[1]))
    except KestrelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
