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
touch files (Lambda layers, classes outside Keras' own registry, custom
registered objects, layers that load files), and Keras then loads it with
``safe_mode=True``. TensorFlow is imported lazily, so listing models is cheap.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lib import runs, runstore
from lib.errors import KestrelError
from lib.workspace import PROJECT_ROOT, WorkspaceError, area, new_id, safe_join

log = logging.getLogger(__name__)

SHIPPED_DIR = PROJECT_ROOT / "models"
MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
CARD_FORMAT = 1

# The same limit as .streamlit/config.toml's maxUploadSize: nothing larger can arrive.
MAX_MODEL_BYTES = 200 * 1024 * 1024
# A .keras archive holds a handful of members; thousands means something else.
MAX_ARCHIVE_MEMBERS = 1000
# Uncompressed total; weights compress poorly, so a larger total is a zip bomb.
MAX_UNCOMPRESSED_BYTES = 1024 * 1024 * 1024
MAX_CONFIG_BYTES = 20 * 1024 * 1024

UPLOAD_AREA = "model_uploads"  # workspace area for uploaded model files
KESTREL_PACKAGE = "kestrel"  # register_keras_serializable(package=...) of our own layers
NAME_PATTERN = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 64

# Keras' own classes that read files or wrap foreign callables: an image
# classifier never needs them, and each can reach outside the model.
DENIED_CLASSES = frozenset(
    {
        "Lambda",  # arbitrary Python (bytecode) in the config
        "__lambda__",
        "TFSMLayer",  # loads a SavedModel from a path on the server
        "JaxLayer",  # wraps a Python callable
        "FlaxLayer",
        "TorchModuleWrapper",  # pickled torch module
        "StringLookup",  # vocabulary may be a file path
        "IntegerLookup",
        "TextVectorization",
        "Hashing",
    }
)
# Data markers Keras writes for constants; they hold values, not code.
DATA_MARKERS = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)
# Modules whose built-in functions Keras resolves by plain name ("relu", "mse").
BUILTIN_FUNCTION_MODULES = (
    "activations",
    "constraints",
    "initializers",
    "losses",
    "metrics",
    "optimizers",
    "regularizers",
)


class RegistryError(KestrelError):
    """A registry problem a user can fix (bad name, duplicate, missing file, bad card)."""


class UnsafeModelError(KestrelError):
    """An uploaded model file was refused; the message says why and what to do."""


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
            or not all(isinstance(s, int) and s > 0 for s in shape)
            or shape[2] not in (1, 3)
        ):
            raise RegistryError(f"{where}: input_shape must be [height, width, 1 or 3]")
        kwargs["class_names"] = tuple(names)
        kwargs["input_shape"] = tuple(shape)
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
    )


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
    card = card_for_run(run_dir, name=clean)
    target = safe_join(root, clean)
    tmp = safe_join(root, f".tmp-{new_id()}")
    try:
        tmp.mkdir()
        shutil.copyfile(run_dir / runstore.MODEL_FILE, tmp / MODEL_FILE)
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
    return keras.saving.load_model(path, compile=False, safe_mode=True)


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
    if len(data) > MAX_MODEL_BYTES:
        raise UnsafeModelError(
            f"{name} is {len(data) / 2**20:.0f} MB; the limit is {MAX_MODEL_BYTES // 2**20} MB"
        )
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
                f"{name}: Keras could not load this model: {_short(exc)}"
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


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit]


def inspect_keras_archive(path: Path, display_name: str = "") -> dict[str, Any]:
    """Check a ``.keras`` file without loading it; return its parsed config.json.

    Refuses: files over :data:`MAX_MODEL_BYTES`; HDF5 files; anything that is
    not a complete zip (truncated, corrupt, CRC errors); archives with path
    tricks, too many members or a suspicious uncompressed size; a config with
    a Lambda layer, a denied Keras class, a custom registered object, or any
    class or function that does not resolve to Keras' own API.

    Raises:
        UnsafeModelError: naming the file and the reason.
    """
    path = Path(path)
    name = display_name or path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnsafeModelError(f"{name}: cannot read the file ({exc.strerror})") from None
    if size > MAX_MODEL_BYTES:
        raise UnsafeModelError(
            f"{name} is {size / 2**20:.0f} MB; the limit is {MAX_MODEL_BYTES // 2**20} MB"
        )
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89HDF"):
        raise UnsafeModelError(
            f"{name} is a legacy HDF5 model, which cannot be loaded safely. "
            "Re-save it with model.save('model.keras')."
        )
    if not zipfile.is_zipfile(path):
        raise UnsafeModelError(
            f"{name} is not a Keras v3 model: a .keras file is a zip archive, and this "
            "one is not a complete zip (truncated or a different format)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_members(infos, name)
            bad = zf.testzip()  # reads every member: catches truncation and corruption
            if bad is not None:
                raise UnsafeModelError(f"{name}: archive member {bad!r} is corrupt (CRC mismatch)")
            info = zf.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise UnsafeModelError(f"{name}: config.json is implausibly large")
            raw = zf.read(info)
    except UnsafeModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError) as exc:
        raise UnsafeModelError(f"{name}: the archive is damaged ({_short(exc)})") from None
    except (NotImplementedError, RuntimeError) as exc:  # unknown compression, encryption
        raise UnsafeModelError(f"{name}: unsupported archive ({_short(exc)})") from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UnsafeModelError(f"{name}: config.json is not valid JSON") from None
    if not isinstance(config, dict):
        raise UnsafeModelError(f"{name}: config.json must hold a JSON object")
    check_model_config_safe(config, name)
    return config


def _check_members(infos: list[zipfile.ZipInfo], name: str) -> None:
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise UnsafeModelError(f"{name}: the archive has {len(infos)} members; not a Keras model")
    names = {i.filename for i in infos}
    missing = {"config.json", "metadata.json"} - names
    if missing:
        raise UnsafeModelError(
            f"{name} is not a Keras v3 model: the archive has no {', '.join(sorted(missing))}"
        )
    total = 0
    for info in infos:
        member = info.filename
        if member.startswith(("/", "\\")) or ".." in member.replace("\\", "/").split("/"):
            raise UnsafeModelError(f"{name}: archive member {member!r} has an unsafe path")
        if info.flag_bits & 0x1:
            raise UnsafeModelError(f"{name}: archive member {member!r} is encrypted")
        total += info.file_size
        if info.file_size > 1024 * 1024 and info.file_size > 100 * max(info.compress_size, 1):
            raise UnsafeModelError(f"{name}: archive member {member!r} looks like a zip bomb")
    if total > MAX_UNCOMPRESSED_BYTES:
        raise UnsafeModelError(
            f"{name}: the archive unpacks to {total / 2**20:.0f} MB; "
            f"the limit is {MAX_UNCOMPRESSED_BYTES // 2**20} MB"
        )


def check_model_config_safe(config: Any, name: str = "config.json") -> None:
    """Walk a model config and refuse anything outside Keras' own built-ins.

    Raises:
        UnsafeModelError: naming the offending class and where it is.
    """
    if not isinstance(config, dict):
        raise UnsafeModelError(f"{name}: config.json must hold a JSON object")
    # The top-level compile_config is never deserialised: models load with
    # compile=False (Keras drops it), so a run's custom LR schedule is harmless.
    top = {k: v for k, v in config.items() if k != "compile_config"}
    _walk(top, name, "config", depth=0)


def _walk(node: Any, name: str, where: str, depth: int) -> None:
    if depth > 200:
        raise UnsafeModelError(f"{name}: config.json is nested implausibly deep")
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, name, f"{where}[{i}]", depth + 1)
        return
    if not isinstance(node, dict):
        return
    if "class_name" in node:
        _check_object(node, name, where)
    for key, value in node.items():
        _walk(value, name, f"{where}.{key}", depth + 1)


def _check_object(node: dict[str, Any], name: str, where: str) -> None:
    class_name = node.get("class_name")
    if not isinstance(class_name, str):
        raise UnsafeModelError(f"{name}: {where} has a non-text class_name")
    label = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
    at = f"{where} ({label})" if label else where
    if class_name in DENIED_CLASSES:
        what = "a Lambda layer (arbitrary Python code)" if "ambda" in class_name else class_name
        raise UnsafeModelError(
            f"{name} contains {what} at {at}. Uploaded models may only use Keras' "
            "built-in layers; rebuild the model without it."
        )
    if class_name in DATA_MARKERS:
        return
    if class_name == "__typespec__":
        raise UnsafeModelError(f"{name}: type specs ({at}) are not allowed in uploaded models")
    if class_name.startswith("__"):
        raise UnsafeModelError(f"{name}: unknown marker {class_name!r} at {at}")
    module = node.get("module")
    registered = node.get("registered_name")
    if isinstance(registered, str) and ">" in registered and not _is_kestrel_class(registered):
        raise UnsafeModelError(
            f"{name} uses the custom object {registered!r} at {at}. Uploaded models may "
            "only use Keras' built-in layers; custom classes are refused because "
            "loading them would run their code."
        )
    if class_name == "function":
        fn = node.get("config")
        if not isinstance(fn, str) or _resolve_function(module, fn) is None:
            raise UnsafeModelError(
                f"{name} refers to the function {module}.{fn} at {at}, which is not a "
                "Keras built-in; custom functions are refused."
            )
        return
    if isinstance(registered, str) and _is_kestrel_class(registered):
        return
    if _resolve_class(module, class_name) is None:
        raise UnsafeModelError(
            f"{name} uses the class {module}.{class_name} at {at}, which is not one of "
            "Keras' own classes; custom or foreign classes are refused because loading "
            "them would run their code."
        )


def _is_kestrel_class(registered: str) -> bool:
    """Kestrel's own registered classes (``kestrel>...``), already imported in this process.

    They are our code, not the upload's: Keras finds them in its registry only
    because a Kestrel module defined them.
    """
    if not registered.startswith(KESTREL_PACKAGE + ">"):
        return False
    from keras.src.saving import object_registration

    obj = object_registration.get_registered_object(registered)
    return obj is not None and getattr(obj, "__module__", "").startswith("lib.")


def _keras_symbol(api_name: str) -> Any:
    from keras.src.api_export import get_symbol_from_name
    from keras.src.saving.serialization_lib import NON_MODELING_APIS

    if api_name in NON_MODELING_APIS:
        return None
    return get_symbol_from_name(api_name)


def _resolve_class(module: Any, class_name: str) -> Any:
    """The Keras class a (module, class_name) pair names, or None if it is not Keras' own."""
    if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
        return None
    import keras  # noqa: F401  (fills the public API registry)
    from keras.src.saving.keras_saveable import KerasSaveable

    obj = _keras_symbol(f"{module}.{class_name}")
    if isinstance(obj, type):
        return obj  # Keras' public API (layers, initializers, DTypePolicy...)
    if module.startswith("keras.src."):
        # Internal paths (e.g. keras.src.models.functional.Functional): only
        # modules Keras already imported, never an import triggered by a file,
        # and (as Keras itself requires) only KerasSaveable classes.
        mod = sys.modules.get(module)
        obj = vars(mod).get(class_name) if mod is not None else None
        if isinstance(obj, type) and issubclass(obj, KerasSaveable) and obj.__module__ == module:
            return obj
    return None


def _resolve_function(module: Any, fn: str) -> Any:
    import keras  # noqa: F401

    if module == "builtins" or module is None:
        for sub in BUILTIN_FUNCTION_MODULES:
            obj = _keras_symbol(f"keras.{sub}.{fn}")
            if obj is not None:
                return obj
        return None
    if isinstance(module, str) and (module == "keras" or module.startswith("keras.")):
        return _keras_symbol(f"{module}.{fn}")
    return None


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
