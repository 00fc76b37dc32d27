"""The model registry: saved models with their cards, and the safe loader for uploaded models.

A registry model is a folder holding ``model.keras`` and ``card.json``. The card
says everything prediction needs without guessing: class names, the input shape,
the preprocessing (raw pixels 0..255, channels, size, resize method), that the
model outputs logits, plus where it came from (dataset, metrics, the run's
RunConfig, creation time, Keras and TensorFlow versions).

Models come from four places, all returned as :class:`ModelEntry`:

- ``shipped``: the repo's ``models/`` folder (demo models, made by ``make demo-models``);
- ``saved``: the workspace's ``models`` area (``save_run_to_registry``);
- ``run``: a completed training run (``run_entry``);
- ``upload``: a ``.keras`` file a user uploaded (``upload_entry``).

Uploaded models are untrusted. :func:`inspect_keras_archive` reads the archive's
``config.json`` before Keras sees it and refuses anything that could run code or
touch files (see :mod:`lib.model_inspect`), and Keras then loads it with
``safe_mode=True``. TensorFlow is imported lazily, so listing models is cheap.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lib import model_inspect, runs, runstore
from lib.errors import KestrelError
from lib.model_inspect import (
    MAX_MODEL_BYTES,
    UnsafeModelError,
    check_model_config_safe,
    inspect_keras_archive,
    short_reason,
)
from lib.workspace import PROJECT_ROOT, WorkspaceError, area, check_quota, new_id, safe_join

log = logging.getLogger(__name__)

SHIPPED_DIR = PROJECT_ROOT / "models"
MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
CARD_FORMAT = 1

UPLOAD_AREA = "model_uploads"  # workspace area for uploaded model files
NAME_PATTERN = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 64


class RegistryError(KestrelError):
    """A registry problem a user can fix (bad name, duplicate, missing file, bad card)."""


@dataclass(frozen=True)
class ModelCard:
    """What ``card.json`` holds: everything prediction needs, and provenance."""

    name: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (H, W, C) the model takes
    preprocessing: dict[str, Any]  # input, channels, size, resize: how to feed it
    output: str = "logits"  # the model's last layer; probabilities are softmax(logits)
    dataset: dict[str, Any] = field(default_factory=dict)  # source, description, sizes
    metrics: dict[str, Any] = field(default_factory=dict)  # the run's metrics.json
    training_config: dict[str, Any] = field(default_factory=dict)  # RunConfig as JSON
    created: str = ""  # ISO 8601 UTC
    keras_version: str = ""
    tensorflow_version: str = ""
    description: str = ""
    source_run: str = ""  # run id the model came from, if any
    format: int = CARD_FORMAT
    # Unknown detection (lib.ood.Detector.summary): score, definition, threshold and
    # the statistics file beside the model; empty when none was fitted.
    unknown: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def accuracy(self) -> float | None:
        """The held-out accuracy in the card (test if the run had a test split)."""
        for key in ("test_accuracy", "val_accuracy"):
            value = self.metrics.get(key)
            if isinstance(value, (int, float)):
                return float(value)
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "card.json") -> ModelCard:
        """Build and check a card; a RegistryError names ``where`` and the field."""
        if not isinstance(data, dict):
            raise RegistryError(f"{where} must hold a JSON object")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        for required in ("name", "class_names", "input_shape", "preprocessing"):
            if required not in kwargs:
                raise RegistryError(f"{where} has no {required!r} field")
        names = kwargs["class_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise RegistryError(f"{where}: class_names must be a non-empty list of strings")
        shape = kwargs["input_shape"]
        if (
            not isinstance(shape, list)
            or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
            or shape[2] not in (1, 3)
        ):
            raise RegistryError(f"{where}: input_shape must be [height, width, 1 or 3]")
        kwargs["class_names"] = tuple(names)
        kwargs["input_shape"] = tuple(shape)
        if not isinstance(kwargs.get("unknown", {}), dict):
            raise RegistryError(f"{where}: unknown must be a JSON object")
        if kwargs.get("output", "logits") not in ("logits", "probabilities"):
            raise RegistryError(f"{where}: output must be 'logits' or 'probabilities'")
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelEntry:
    """One model you can predict with: where its file is and its card."""

    name: str
    source: str  # "shipped", "saved", "run" or "upload"
    model_path: Path
    card: ModelCard

    @property
    def label(self) -> str:
        """How pickers show it."""
        acc = self.card.accuracy
        acc_text = f" · {acc:.1%}" if acc is not None else ""
        return f"{self.name} ({self.source}{acc_text})"


def preprocessing_for(input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The card's preprocessing block for a Kestrel model of ``input_shape``."""
    h, w, c = input_shape
    return {"input": "raw pixels 0-255", "channels": c, "size": [h, w], "resize": "bilinear"}


def sanitize_name(name: str) -> str:
    """A registry folder name from what a user typed.

    Raises:
        RegistryError: if nothing usable is left.
    """
    cleaned = NAME_PATTERN.sub("-", name.strip()).strip(".-")[:MAX_NAME_LENGTH].strip(".-")
    if not cleaned:
        raise RegistryError(
            f"model name {name!r} has no usable characters; use letters, digits, '.', '_' or '-'"
        )
    return cleaned


def read_card(folder: Path) -> ModelCard:
    path = Path(folder) / CARD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise RegistryError(f"{path} is not valid JSON: {exc}") from None
    return ModelCard.from_dict(data, where=str(path))


def _folder_entries(root: Path, source: str) -> list[ModelEntry]:
    entries = []
    if not root.is_dir():
        return entries
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue  # temporary folders of a save in progress
        if not (folder / MODEL_FILE).is_file():
            continue
        try:
            card = read_card(folder)
        except RegistryError as exc:
            log.warning("skipping registry model %s: %s", folder, exc)
            continue
        entries.append(ModelEntry(folder.name, source, folder / MODEL_FILE, card))
    return entries


def list_models() -> list[ModelEntry]:
    """Registry models: the shipped demo models first, then the workspace's saved ones."""
    return _folder_entries(SHIPPED_DIR, "shipped") + _folder_entries(area("models"), "saved")


def default_entry() -> ModelEntry | None:
    """The model Predict opens with: the shipped Fashion-MNIST demo if present."""
    entries = list_models()
    for entry in entries:
        if entry.source == "shipped" and "fashion" in entry.name:
            return entry
    return entries[0] if entries else None


# ---------------------------------------------------------------- runs


def run_class_names(run_dir: Path, config: Any, num_classes: int | None = None) -> list[str]:
    """The class names of a run: from its metrics, else from its dataset, else numbered."""
    metrics = runstore.read_metrics(run_dir)
    names = metrics.get("class_names")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return names
    try:
        from lib.data import load_dataset

        return list(load_dataset(config.data).class_names)
    except Exception as exc:  # the dataset may be gone; numbered classes still predict
        log.warning("class names of %s unavailable: %s", run_dir, exc)
    return [f"class {i}" for i in range(num_classes or 0)]


def card_for_run(run_dir: Path, name: str = "") -> ModelCard:
    """A card for a completed run's model, from its config, metrics and model file.

    Raises:
        RegistryError: if the run has no model or no readable config.
    """
    run_dir = Path(run_dir)
    if not (run_dir / runstore.MODEL_FILE).is_file():
        raise RegistryError(f"run {run_dir.name} has no {runstore.MODEL_FILE}; is it completed?")
    try:
        config = runstore.read_config(run_dir)
    except ValueError as exc:
        raise RegistryError(f"run {run_dir.name}: {exc}") from None
    model = load_model_file(run_dir / runstore.MODEL_FILE)
    input_shape = _model_input_shape(model, str(run_dir / runstore.MODEL_FILE))
    num_classes = int(model.output_shape[-1])
    class_names = run_class_names(run_dir, config, num_classes)
    if len(class_names) != num_classes:
        class_names = [f"class {i}" for i in range(num_classes)]
    metrics = runstore.read_metrics(run_dir)
    metrics.pop("class_names", None)
    return ModelCard(
        name=name or run_dir.name,
        class_names=tuple(class_names),
        input_shape=input_shape,
        preprocessing=preprocessing_for(input_shape),
        dataset={"source": config.data.source, "config": config.data.to_dict()},
        metrics=metrics,
        training_config=config.to_dict(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        keras_version=_version("keras"),
        tensorflow_version=_version("tensorflow"),
        source_run=run_dir.name,
        unknown=_unknown_summary(run_dir),
    )


def _unknown_summary(folder: Path) -> dict[str, Any]:
    """The ``unknown`` card block from the ood.npz in ``folder``, or {} if none (or unreadable)."""
    from lib import ood

    if not (Path(folder) / ood.STATS_FILE).is_file():
        return {}
    try:
        return ood.Detector.load(Path(folder) / ood.STATS_FILE).summary()
    except ood.OODError as exc:
        log.warning("%s", exc)
        return {}


def run_entry(run_dir: Path) -> ModelEntry:
    """A completed run's model as an entry (its card built on the fly)."""
    run_dir = Path(run_dir)
    return ModelEntry(run_dir.name, "run", run_dir / runstore.MODEL_FILE, card_for_run(run_dir))


def completed_runs() -> list[Path]:
    """Runs that finished and left a model, newest first."""
    return [view.path for view in runs.completed_views()]


def save_run_to_registry(run_dir: Path, name: str) -> Path:
    """Copy a completed run's model and a new card into the workspace registry.

    The folder is assembled under a temporary name and renamed into place, so
    the registry never lists a half-written model.

    Args:
        run_dir: the run directory (must be completed and hold model.keras).
        name: the registry name; sanitised to letters, digits, '.', '_', '-'.

    Returns:
        The new registry folder.

    Raises:
        RegistryError: bad or duplicate name, run not completed, no model.
    """
    run_dir = Path(run_dir)
    clean = sanitize_name(name)
    status = runstore.read_status(run_dir)
    if status.state != "completed":
        raise RegistryError(
            f"run {run_dir.name} is {status.state}; only completed runs can be saved"
        )
    root = area("models")
    taken = {e.name for e in list_models()}
    if clean in taken or (root / clean).exists():
        raise RegistryError(
            f"a model named {clean!r} already exists in the registry; choose another name"
        )
    model_file = run_dir / runstore.MODEL_FILE
    if not model_file.is_file():
        raise RegistryError(
            f"run {run_dir.name} has no trained model ({runstore.MODEL_FILE}); "
            "train it to the end, then save it"
        )
    check_quota(model_file.stat().st_size, f"saving model {clean!r}")
    card = card_for_run(run_dir, name=clean)
    target = safe_join(root, clean)
    tmp = safe_join(root, f".tmp-{new_id()}")
    try:
        tmp.mkdir()
        shutil.copyfile(run_dir / runstore.MODEL_FILE, tmp / MODEL_FILE)
        if card.unknown:  # the unknown-detection statistics travel with the model
            shutil.copyfile(run_dir / runstore.OOD_FILE, tmp / runstore.OOD_FILE)
        runstore.atomic_write_json(tmp / CARD_FILE, card.to_dict())
        if target.exists():  # a save of the same name finished meanwhile
            raise RegistryError(f"a model named {clean!r} already exists in the registry")
        os.rename(tmp, target)
    except OSError as exc:
        raise RegistryError(f"cannot save model {clean!r}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def delete_saved_model(entry: ModelEntry) -> None:
    """Remove a model saved to the workspace registry (its folder: model, card, statistics).

    Shipped models belong to the project, not the workspace, and cannot be deleted here.

    Raises:
        RegistryError: the entry is not a saved model, or its folder cannot be removed.
    """
    if entry.source != "saved":
        raise RegistryError(
            f"{entry.name} is a {entry.source} model; only models saved to the registry "
            "can be deleted here"
        )
    folder = safe_join(area("models"), entry.model_path.parent.name)
    if not (folder / MODEL_FILE).is_file():
        raise RegistryError(f"model {entry.name} is not in the registry any more")
    trash = safe_join(area("models"), f".tmp-{new_id()}")
    try:
        os.rename(folder, trash)  # gone from the list at once, even if removal is slow
    except OSError as exc:
        raise RegistryError(f"cannot delete model {entry.name}: {exc.strerror or exc}") from None
    shutil.rmtree(trash, ignore_errors=True)
    _load_cached.cache_clear()


def write_entry_folder(folder: Path, model: Any, card: ModelCard) -> Path:
    """Write ``model`` and ``card`` as a registry folder (used by the demo-model script)."""
    folder = Path(folder)
    tmp = folder.parent / f".tmp-{new_id()}"
    tmp.mkdir(parents=True)
    try:
        model.save(tmp / MODEL_FILE)
        runstore.atomic_write_json(tmp / CARD_FILE, card.to_dict())
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---------------------------------------------------------------- loading


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return ""


def _model_input_shape(model: Any, where: str) -> tuple[int, int, int]:
    shape = model.input_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise UnsafeModelError(
                f"{where}: the model has {len(shape)} inputs; Kestrel needs one image input"
            )
        shape = shape[0]
    if len(shape) != 4 or any(not isinstance(s, int) for s in shape[1:]) or shape[3] not in (1, 3):
        raise UnsafeModelError(
            f"{where}: the model's input is {tuple(shape)}; Kestrel needs a fixed "
            "(batch, height, width, 1 or 3) image input"
        )
    out = model.output_shape
    if isinstance(out, list) or len(out) != 2 or not isinstance(out[-1], int) or out[-1] < 2:
        raise UnsafeModelError(
            f"{where}: the model's output is {out}; Kestrel needs (batch, classes) logits"
        )
    return int(shape[1]), int(shape[2]), int(shape[3])


def load_model_file(path: Path) -> Any:
    """Load a ``.keras`` file with ``safe_mode=True`` (cached per path and modification time)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise RegistryError(f"cannot read model {path}: {exc.strerror}") from None
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> Any:
    import keras

    # compile=False: prediction needs no optimizer, and less is deserialised.
    return float32_model(keras.saving.load_model(path, compile=False, safe_mode=True))


def _float32_policies(obj: Any) -> tuple[Any, bool]:
    """``obj`` (a serialised model) with every mixed dtype policy replaced by float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy" and isinstance(obj.get("config"), dict):
            name = obj["config"].get("name", "")
            if isinstance(name, str) and name.startswith("mixed_"):
                return {**obj, "config": {**obj["config"], "name": "float32"}}, True
        changed = False
        out = {}
        for key, value in obj.items():
            out[key], hit = _float32_policies(value)
            changed = changed or hit
        return out, changed
    if isinstance(obj, list):
        pairs = [_float32_policies(v) for v in obj]
        return [v for v, _ in pairs], any(hit for _, hit in pairs)
    return obj, False


def float32_model(model: Any) -> Any:
    """``model`` computing in float32: a copy when it was trained under mixed precision.

    A model trained with ``mixed_bfloat16`` (mixed precision on a CPU) or
    ``mixed_float16`` keeps float32 weights but computes in half precision. TFLite
    and ONNX cannot convert bfloat16 arithmetic, and a half-precision Grad-CAM or
    prediction differs from the exported model's, so every model Kestrel loads for
    prediction, export or compression computes in float32; the weights are the same.
    """
    import keras

    serialised, changed = _float32_policies(keras.saving.serialize_keras_object(model))
    if not changed:
        return model
    copy = keras.saving.deserialize_keras_object(serialised, safe_mode=True)
    copy.set_weights(model.get_weights())
    return copy


def load_model(entry: ModelEntry) -> Any:
    """The Keras model of ``entry`` (uploaded models were inspected when they arrived)."""
    return load_model_file(entry.model_path)


# ---------------------------------------------------------------- uploads


def upload_entry(data: bytes, filename: str) -> ModelEntry:
    """Check an uploaded model file, store it under a generated name, load it safely.

    The upload is written to ``model_uploads/<generated>.keras`` in the
    workspace (its own area, apart from dataset uploads), inspected (:func:`inspect_keras_archive`), then loaded with
    ``safe_mode=True``. Uploaded models carry no card: classes are numbered.

    Raises:
        UnsafeModelError: the file is refused; the message says why.
    """
    name = Path(filename or "model").name
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in ("h5", "hdf5"):
        raise UnsafeModelError(
            f"{name}: legacy HDF5 (.{suffix}) models cannot be loaded safely. "
            "Re-save the model with model.save('model.keras') and upload that."
        )
    if suffix != "keras":
        raise UnsafeModelError(f"{name}: only Keras v3 '.keras' model files can be uploaded")
    limit = model_inspect.MAX_MODEL_BYTES
    if len(data) > limit:
        raise UnsafeModelError(
            f"{name} is {len(data) / 2**20:.0f} MB; the limit is {limit // 2**20} MB"
        )
    check_quota(len(data), f"the model upload {name}")
    path = safe_join(area(UPLOAD_AREA), f"{new_id()}.keras")
    runstore.atomic_write_bytes(path, data)
    try:
        inspect_keras_archive(path, display_name=name)
        try:
            model = load_model_file(path)
        except UnsafeModelError:
            raise
        except Exception as exc:
            raise UnsafeModelError(
                f"{name}: Keras could not load this model: {short_reason(exc)}"
            ) from None
        input_shape = _model_input_shape(model, name)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    num_classes = int(model.output_shape[-1])
    card = ModelCard(
        name=name,
        class_names=tuple(f"class {i}" for i in range(num_classes)),
        input_shape=input_shape,
        preprocessing=preprocessing_for(input_shape),
        description="uploaded model: no card, so classes are numbered and raw 0..255 input is assumed",
        keras_version=_version("keras"),
        tensorflow_version=_version("tensorflow"),
    )
    return ModelEntry(name, "upload", path, card)


__all__ = [
    "CARD_FILE",
    "MAX_MODEL_BYTES",
    "MODEL_FILE",
    "ModelCard",
    "ModelEntry",
    "RegistryError",
    "UnsafeModelError",
    "WorkspaceError",
    "card_for_run",
    "check_model_config_safe",
    "completed_runs",
    "default_entry",
    "float32_model",
    "inspect_keras_archive",
    "list_models",
    "load_model",
    "load_model_file",
    "read_card",
    "run_entry",
    "sanitize_name",
    "save_run_to_registry",
    "upload_entry",
]
