"""The uploaded-model inspector: a ``.keras`` file is read and vetted before Keras loads it.

An uploaded model is untrusted. :func:`inspect_keras_archive` checks the zip
archive itself (size, completeness, CRCs, member paths, zip bombs) and then walks
its ``config.json``, refusing anything that could run code or touch files: Lambda
layers, Keras classes that load files or wrap foreign callables, custom registered
objects, and any class or function that does not resolve to Keras' own API. Only
then does :mod:`lib.registry` hand the file to Keras, with ``safe_mode=True``.

The Keras internals the resolution needs are in :mod:`lib.compat`.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from lib import compat
from lib.errors import KestrelError

# The same limit as .streamlit/config.toml's maxUploadSize: nothing larger can arrive.
MAX_MODEL_BYTES = 200 * 1024 * 1024
# A .keras archive holds a handful of members; thousands means something else.
MAX_ARCHIVE_MEMBERS = 1000
# Uncompressed total; weights compress poorly, so a larger total is a zip bomb.
MAX_UNCOMPRESSED_BYTES = 1024 * 1024 * 1024
MAX_CONFIG_BYTES = 20 * 1024 * 1024

KESTREL_PACKAGE = "kestrel"  # register_keras_serializable(package=...) of our own layers

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


class UnsafeModelError(KestrelError):
    """An uploaded model file was refused; the message says why and what to do."""


def short_reason(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type), cut to ``limit`` characters."""
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
        raise UnsafeModelError(f"{name}: the archive is damaged ({short_reason(exc)})") from None
    except (NotImplementedError, RuntimeError) as exc:  # unknown compression, encryption
        raise UnsafeModelError(f"{name}: unsupported archive ({short_reason(exc)})") from None
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
    import keras

    obj = keras.saving.get_registered_object(registered)
    return obj is not None and getattr(obj, "__module__", "").startswith("lib.")


def _keras_symbol(api_name: str) -> Any:
    return compat.keras_api_symbol(api_name)


def _resolve_class(module: Any, class_name: str) -> Any:
    """The Keras class a (module, class_name) pair names, or None if it is not Keras' own."""
    if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
        return None
    obj = _keras_symbol(f"{module}.{class_name}")
    if isinstance(obj, type):
        return obj  # Keras' public API (layers, initializers, DTypePolicy...)
    if module.startswith("keras.src."):
        # Internal paths (e.g. keras.src.models.functional.Functional): only
        # modules Keras already imported, never an import triggered by a file,
        # and (as Keras itself requires) only KerasSaveable classes.
        mod = sys.modules.get(module)
        obj = vars(mod).get(class_name) if mod is not None else None
        if (
            isinstance(obj, type)
            and issubclass(obj, compat.saveable_base())
            and obj.__module__ == module
        ):
            return obj
    return None


def _resolve_function(module: Any, fn: str) -> Any:
    """The Keras function a (module, name) pair names, or None if it is not Keras' own."""
    if module == "builtins" or module is None:
        for sub in BUILTIN_FUNCTION_MODULES:
            obj = _keras_symbol(f"keras.{sub}.{fn}")
            if obj is not None:
                return obj
        return None
    if isinstance(module, str) and (module == "keras" or module.startswith("keras.")):
        return _keras_symbol(f"{module}.{fn}")
    return None
