"""Dataset sources: where the images of each ``DataConfig.source`` come from.

In-memory sources return uint8 arrays (``shapes``, ``digits``, ``fashion_mnist``,
``mnist``, ``cifar10``, ``cifar100``); file sources (``folder``, ``upload``) scan a
directory with one sub-folder per class and keep file paths, which the pipeline
decodes on demand. Downloads go through ``keras.datasets`` and are cached under
``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``); when a set is neither
cached nor downloadable, :class:`DatasetError` says how to get it, quickly
rather than after a long network hang.
"""

from __future__ import annotations

import gzip
import os
import pickle
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lib.data.dataset import (
    SPLITS,
    Dataset,
    DatasetError,
    Split,
    cap_per_class,
    in_memory_dataset,
    stratified_split,
)
from lib.data.images import EXTENSIONS, MAX_FILE_BYTES, ImageDecodeError, probe_image
from lib.data.shapes import CLASS_NAMES as SHAPES_CLASSES
from lib.data.shapes import generate_shapes

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]  # fmt: skip
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]  # fmt: skip

DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
DOWNLOAD_HOST = "storage.googleapis.com"  # where keras.datasets fetch MNIST and Fashion-MNIST
CIFAR_HOST = "www.cs.toronto.edu"
PROBE_TIMEOUT_S = 3.0
DEFAULT_FILE_IMAGE_SIZE = 128  # folder/upload images of mixed sizes are resized to this
SCAN_WORKERS = 8
JUNK_NAMES = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")


# --------------------------------------------------------------------------- in memory


def load_shapes(cfg) -> Dataset:
    """The procedural shapes set, generated from ``cfg.seed``."""
    x, y = generate_shapes(cfg.shapes_count, cfg.shapes_size, cfg.seed)
    return in_memory_dataset(SHAPES_CLASSES, x, y, None, None, cfg)


def load_digits(cfg) -> Dataset:
    """scikit-learn's bundled 8×8 digits (values 0..16), scaled to uint8 0..255."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    names = [str(n) for n in bunch.target_names]
    return in_memory_dataset(names, x, bunch.target, None, None, cfg)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): uint8 labels (N,) or images (N, H, W)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: expected {int(np.prod(dims))} values")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _idx_set(folder: Path) -> dict[str, np.ndarray] | None:
    """The four Fashion-MNIST arrays from ``folder`` (``.gz`` or plain), or None if absent."""
    found = {}
    for key, stem in FASHION_FILES.items():
        path = next(
            (folder / (stem + s) for s in (".gz", "") if (folder / (stem + s)).is_file()), None
        )
        if path is None:
            return None
        found[key] = _read_idx(path)
    return found


def keras_home() -> Path:
    """Where keras.datasets caches downloads (``$KERAS_HOME`` or ``~/.keras``)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def fashion_mnist_dirs() -> list[Path]:
    """Folders searched for Fashion-MNIST IDX files, in order."""
    dirs = []
    if os.environ.get("KESTREL_FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["KESTREL_FASHION_MNIST_DIR"]).expanduser())
    dirs.append(Path(DEBIAN_FASHION_DIR))
    dirs.append(keras_home() / "datasets" / "fashion-mnist")
    return dirs


def load_fashion_mnist(cfg) -> Dataset:
    """Fashion-MNIST from local IDX files, else through keras.datasets."""
    for folder in fashion_mnist_dirs():
        arrays = _idx_set(folder)
        if arrays is not None:
            return in_memory_dataset(
                FASHION_CLASSES, arrays["x_train"], arrays["y_train"],
                arrays["x_test"], arrays["y_test"], cfg,
            )  # fmt: skip
    (xt, yt), (xs, ys) = _keras_download("fashion_mnist")
    return in_memory_dataset(FASHION_CLASSES, xt, yt, xs, ys, cfg)


def load_mnist(cfg) -> Dataset:
    """MNIST from the keras cache, else downloaded by keras.datasets."""
    path = keras_home() / "datasets" / "mnist.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                xt, yt, xs, ys = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
        except Exception as exc:
            raise DatasetError(f"cannot read {path} ({exc}); delete it to download again") from None
    else:
        (xt, yt), (xs, ys) = _keras_download("mnist")
    return in_memory_dataset([str(i) for i in range(10)], xt, yt, xs, ys, cfg)


def load_batch(path: str, label_key: str = "labels") -> tuple[np.ndarray, list[int]]:
    """One CIFAR batch file as keras caches it: (uint8 (N, 3, 32, 32), labels).

    Same reading as keras.src.datasets.cifar.load_batch (the files are pickles that
    keras itself downloaded and checked against a hash), without importing TensorFlow.
    """
    with open(path, "rb") as fh:
        d = pickle.load(fh, encoding="bytes")
    d = {(k.decode("utf8") if isinstance(k, bytes) else k): v for k, v in d.items()}
    data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, d[label_key]


def _cifar_cached(name: str) -> tuple[tuple, tuple] | None:
    """CIFAR arrays from keras' extracted cache, or None if not cached."""
    base = keras_home() / "datasets"
    if name == "cifar10":
        folder = base / "cifar-10-batches-py-target" / "cifar-10-batches-py"
        if not (folder / "test_batch").is_file():
            return None
        parts = [load_batch(str(folder / f"data_batch_{i}")) for i in range(1, 6)]
        xt = np.concatenate([p[0] for p in parts])
        yt = np.concatenate([np.asarray(p[1]) for p in parts])
        xs, ys = load_batch(str(folder / "test_batch"))
    else:
        folder = base / "cifar-100-python-target" / "cifar-100-python"
        if not (folder / "test").is_file():
            return None
        xt, yt = load_batch(str(folder / "train"), label_key="fine_labels")
        xs, ys = load_batch(str(folder / "test"), label_key="fine_labels")
    to_nhwc = lambda x: np.asarray(x).transpose(0, 2, 3, 1)  # noqa: E731
    return (to_nhwc(xt), np.asarray(yt)), (to_nhwc(xs), np.asarray(ys))


def load_cifar(cfg) -> Dataset:
    """CIFAR-10 or CIFAR-100 from the keras cache, else downloaded by keras.datasets."""
    name = cfg.source
    names = CIFAR10_CLASSES if name == "cifar10" else CIFAR100_CLASSES
    cached = None
    if (keras_home() / "datasets").is_dir():
        try:
            cached = _cifar_cached(name)
        except Exception as exc:
            raise DatasetError(
                f"the cached {name} files are unreadable ({exc}); delete them "
                f"under {keras_home() / 'datasets'} to download again"
            ) from None
    (xt, yt), (xs, ys) = cached or _keras_download(name)
    return in_memory_dataset(names, xt, yt, xs, ys, cfg)


def _reachable(host: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``host:443`` accepts a connection within ``timeout`` (DNS included).

    The probe runs in a daemon thread because name resolution has no timeout of
    its own; keras' downloader has none either, so without this an offline
    machine could hang the page.
    """
    result = {"ok": False}

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result["ok"]


def _keras_download(name: str):
    """``keras.datasets.<name>.load_data()``, but only when its server is reachable."""
    host = CIFAR_HOST if name.startswith("cifar") else DOWNLOAD_HOST
    cache = keras_home() / "datasets"
    hint = (
        f"The {name} dataset is not in the Keras cache ({cache}) and {host} cannot be reached "
        "from this machine. Download it once on a machine with internet access "
        f'(python -c "import keras; keras.datasets.{name}.load_data()") and copy '
        f"~/.keras/datasets to {cache}, or set KERAS_HOME to a folder that has it."
    )
    if name == "fashion_mnist":
        hint += (
            " Fashion-MNIST is also read from IDX files in KESTREL_FASHION_MNIST_DIR or "
            f"{DEBIAN_FASHION_DIR} (Debian: apt-get install dataset-fashion-mnist)."
        )
    if not _reachable(host):
        raise DatasetError(hint)
    import keras

    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as exc:
        raise DatasetError(f"downloading {name} failed ({exc}). {hint}") from None


# --------------------------------------------------------------------------- files


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name in JUNK_NAMES


LINKED_FOLDER = (
    "a symbolic link to a folder is not followed; copy the images here, or point the "
    "dataset at the folder the link leads to"
)


def _real_dir(entry: Path) -> bool:
    """A directory that is not a symbolic link: links could lead out of the shared roots."""
    return entry.is_dir() and not entry.is_symlink()


def class_root(folder: Path) -> Path:
    """Descend through lone wrapper folders (``data/`` around the class folders)."""
    for _ in range(4):
        entries = [e for e in folder.iterdir() if not _is_junk(e.name)]
        dirs = [e for e in entries if _real_dir(e)]
        if len(dirs) == 1 and len(entries) == 1:
            inner = [e for e in dirs[0].iterdir() if not _is_junk(e.name)]
            if any(_real_dir(e) for e in inner):
                folder = dirs[0]
                continue
        break
    return folder


# A scan stops here: far above real datasets, low enough that pointing at a
# disk's root fails quickly instead of walking it all.
MAX_FOLDER_FILES = 2_000_000


def scan_folder(folder: Path) -> tuple[list[str], list[str], np.ndarray, list[tuple[str, str]]]:
    """List the images of a class-per-sub-folder directory (recursively per class).

    Symbolic links to folders (a class folder or one inside it) are not followed
    but listed as skipped: one could lead outside the folders the server shares.

    Returns:
        ``(class_names, paths, labels, skipped)``: paths in sorted order, labels
        int32, and ``(file, reason)`` for files that are not images by name.
    """
    entries = sorted(e for e in folder.iterdir() if not _is_junk(e.name))
    classes = [e.name for e in entries if _real_dir(e)]
    paths: list[str] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    seen = 0
    for entry in entries:
        if entry.is_symlink() and entry.is_dir():
            skipped.append((str(entry), LINKED_FOLDER))
        elif entry.is_file():
            skipped.append((str(entry), "not inside a class folder"))
    for k, name in enumerate(classes):
        for root, dirnames, filenames in os.walk(folder / name, followlinks=False):
            for d in dirnames:
                if os.path.islink(os.path.join(root, d)):
                    skipped.append((os.path.join(root, d), LINKED_FOLDER))
            dirnames[:] = sorted(
                d for d in dirnames if not _is_junk(d) and not os.path.islink(os.path.join(root, d))
            )
            for fname in sorted(filenames):
                if _is_junk(fname):
                    continue
                path = os.path.join(root, fname)
                seen += 1
                if seen > MAX_FOLDER_FILES:
                    raise DatasetError(
                        f"folder {folder} holds more than {MAX_FOLDER_FILES:,} files; "
                        "point the dataset at a smaller folder"
                    )
                if os.path.splitext(fname)[1].lower() not in EXTENSIONS:
                    skipped.append(
                        (path, "not an image file type (JPEG, PNG, BMP, GIF, WEBP, TIFF)")
                    )
                    continue
                paths.append(path)
                labels.append(k)
    return classes, paths, np.asarray(labels, np.int32), skipped


def _probe_file(path: str) -> tuple[int, int, bool] | str:
    """Header check of one file: ``(h, w, gray)`` or the reason it is unreadable."""
    try:
        if os.path.islink(path):
            return "symbolic links are not followed"
        with open(path, "rb") as fh:
            # The header is near the start; EXIF (orientation) can sit a bit further in.
            head = fh.read(256 * 1024)
            size = os.fstat(fh.fileno()).st_size
        if size > MAX_FILE_BYTES:
            return f"the file is larger than {MAX_FILE_BYTES // 2**20} MB"
        if size > len(head) and head[:4] in (b"II*\x00", b"MM\x00*"):
            # TIFF keeps its directory anywhere in the file: Pillow needs all of it.
            head = Path(path).read_bytes()
        return probe_image(head, path)
    except ImageDecodeError as exc:
        return exc.reason
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc})"


def load_files(folder: Path, cfg, skipped_before: list[tuple[str, str]] | None = None) -> Dataset:
    """A streamed Dataset over a class-per-sub-folder directory.

    Every file's header is checked once (in parallel threads, a few thousand files a
    second) so unreadable files are reported up front and the image shape is known;
    pixels are decoded only when a pipeline or ``Split.images`` asks for them.
    """
    if not folder.is_dir():
        raise DatasetError(
            f"{folder} is not a directory; give a folder with one sub-folder per class"
        )
    root = class_root(folder)
    classes, paths, labels, skipped = scan_folder(root)
    if not classes:
        raise DatasetError(
            f"{folder} has no class sub-folders; put each class's images in its own folder "
            "(e.g. cats/ and dogs/)"
        )
    skipped = list(skipped_before or []) + skipped
    return files_dataset(str(folder), classes, paths, labels, cfg, skipped)


def files_dataset(
    where: str,
    classes: list[str],
    paths: list[str],
    labels: np.ndarray,
    cfg,
    skipped: list[tuple[str, str]],
    given_splits: list[str] | None = None,
    groups: str = "class folders",
) -> Dataset:
    """A streamed Dataset over image files with known labels.

    Every file's header is checked once (in parallel threads) so unreadable files
    are reported up front and the image shape is known. ``given_splits`` (one of
    ``train``/``val``/``test`` per file, from a labels file) replaces the
    config's random split; a set without validation images gets them cut from
    its training images with ``cfg.val_fraction``. ``groups`` is what the messages
    call the classes (a labels file has labels, not folders).
    """
    with ThreadPoolExecutor(SCAN_WORKERS) as pool:
        probes = list(pool.map(_probe_file, paths, chunksize=64))
    good = np.array([not isinstance(p, str) for p in probes], dtype=bool)
    skipped += [(paths[i], probes[i]) for i in np.flatnonzero(~good)]
    paths = [p for p, g in zip(paths, good, strict=True) if g]
    labels = np.asarray(labels, np.int32)[good]
    if given_splits is not None:
        given_splits = [s for s, g in zip(given_splits, good, strict=True) if g]
    shapes = [p for p in probes if not isinstance(p, str)]
    present = np.unique(labels)
    if len(present) < 2:
        raise DatasetError(
            f"{where} needs readable images in at least two {groups}; found "
            f"{len(paths)} readable image(s) in {len(present)} class(es) and "
            f"{len(skipped)} skipped file(s)"
        )
    notes = []
    empty = [classes[k] for k in range(len(classes)) if k not in set(present.tolist())]
    if empty:
        notes.append(f"{groups} without readable images: {', '.join(empty)}")

    if cfg.color_mode == "grayscale" or (cfg.color_mode == "auto" and all(s[2] for s in shapes)):
        channels = 1
    else:
        channels = 3
    if cfg.image_size:
        side = (cfg.image_size, cfg.image_size)
    else:
        sizes = {(s[0], s[1]) for s in shapes}
        side = next(iter(sizes)) if len(sizes) == 1 else None
        if side is None or max(side) > 512:
            side = (DEFAULT_FILE_IMAGE_SIZE, DEFAULT_FILE_IMAGE_SIZE)
            notes.append(
                f"images have different sizes (or are larger than 512 px); they are resized "
                f"to {DEFAULT_FILE_IMAGE_SIZE}×{DEFAULT_FILE_IMAGE_SIZE}. Set an image size "
                "to choose another."
            )
    image_shape = (side[0], side[1], channels)

    rng = np.random.default_rng(cfg.seed)
    keep = cap_per_class(labels, cfg.max_per_class, rng)
    if given_splits is None:
        parts = stratified_split(labels[keep], [cfg.val_fraction, cfg.test_fraction], cfg.seed)
        index = [keep[part] for part in parts]
    else:
        index = _given_split_index(given_splits, labels, keep, cfg)
        notes.append("splits come from the labels file's split column")
    ds = Dataset(class_names=classes, image_shape=image_shape, splits={},
                 test_is_own=given_splits is not None and len(index[2]) > 0,
                 skipped=skipped, notes=notes)  # fmt: skip
    for name, idx in zip(SPLITS, index, strict=True):
        ds.splits[name] = Split(
            labels[idx], refs=[paths[i] for i in idx], image_shape=image_shape,
            on_skip=ds.record_skip,
        )  # fmt: skip
    return ds


def _given_split_index(
    given: list[str], labels: np.ndarray, keep: np.ndarray, cfg
) -> list[np.ndarray]:
    """train/val/test indices from a split column; validation cut from train if none is given."""
    tags = np.asarray(given, dtype=object)[keep]
    out = [keep[tags == name] for name in SPLITS]
    if len(out[1]) == 0 and cfg.val_fraction > 0 and len(out[0]):
        train = out[0]
        parts = stratified_split(labels[train], [cfg.val_fraction], cfg.seed)
        out[0], out[1] = train[parts[0]], train[parts[1]]
    return [np.sort(i).astype(np.int64) for i in out]


def data_roots() -> list[Path]:
    """The server folders the ``folder`` source may read.

    ``KESTREL_DATA_ROOTS`` (folders separated by ``os.pathsep``) or, by default,
    the workspace's ``datasets/`` folder. Anyone who can reach the app can pick
    a folder, so only what the operator shares is readable.
    """
    from lib.workspace import area

    raw = os.environ.get("KESTREL_DATA_ROOTS", "")
    roots = [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    return roots or [area("datasets")]


def check_data_folder(path: str) -> Path:
    """Resolve ``path`` and refuse it unless it lies inside one of :func:`data_roots`."""
    folder = Path(path).expanduser().resolve()
    roots = data_roots()
    if not any(folder == root or root in folder.parents for root in roots):
        shared = ", ".join(str(r) for r in roots)
        raise DatasetError(
            f"folder {path!r} is outside the folders this server shares ({shared}). "
            "Copy the images into one of them, or start Kestrel with "
            "KESTREL_DATA_ROOTS set to a folder that contains it."
        )
    if not folder.is_dir():
        raise DatasetError(f"folder {path!r} does not exist on the server")
    return folder


def load_folder(cfg) -> Dataset:
    """A server directory named by ``cfg.path`` (one sub-folder per class), streamed."""
    return load_files(check_data_folder(cfg.path), cfg)


def load_upload(cfg) -> Dataset:
    """An upload (``cfg.path`` is its id) extracted into the workspace, streamed."""
    from lib.data.uploads import upload_dir, upload_manifest

    folder = upload_dir(cfg.path)
    manifest = upload_manifest(cfg.path)
    before = [(str(f), str(r)) for f, r in manifest.get("skipped", [])]
    return load_files(folder, cfg, skipped_before=before)


# --------------------------------------------------------------------------- built datasets


def load_built_dataset(cfg) -> Dataset:
    """One version of a dataset built in the app (``cfg.path`` is ``name@version``)."""
    from lib import datasets

    name, version = datasets.parse_ref(cfg.path)
    return load_files(datasets.images_dir(name, version), cfg)


# --------------------------------------------------------------------------- labels files

FILE_COLUMNS = ("file", "filename", "file_name", "image", "image_id", "id", "path", "name")
LABEL_COLUMNS = ("label", "class", "category", "target")
SPLIT_COLUMNS = ("split", "subset", "set")
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test"}  # fmt: skip
MAX_CSV_ROWS = 2_000_000


def _check_data_file(path: str, what: str) -> Path:
    """Resolve a file the CSV sources read and refuse it outside the shared folders."""
    file = Path(path).expanduser().resolve()
    check_data_folder(str(file.parent))
    if not file.is_file():
        raise DatasetError(f"{what} {path!r} does not exist on the server")
    return file


def _csv_rows(file: Path):
    """``(line number, cells)`` of a CSV or TSV file (comma, tab or semicolon separated)."""
    import csv

    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{file} is not UTF-8 text; save it as UTF-8 CSV") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {file}: {exc.strerror}") from None
    first = text.split("\n", 1)[0]
    # Tab for .tsv or a tabbed first line; semicolon when the first line has semicolons and
    # no commas (spreadsheets in many locales save CSV that way); else comma.
    if file.suffix.lower() == ".tsv" or "\t" in first:
        delimiter = "\t"
    elif ";" in first and "," not in first:
        delimiter = ";"
    else:
        delimiter = ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    for number, row in enumerate(reader, start=1):
        if number > MAX_CSV_ROWS:
            raise DatasetError(f"{file} has more than {MAX_CSV_ROWS:,} rows")
        if not row or all(not c.strip() for c in row):
            continue
        yield number, [c.strip() for c in row]


def _header_columns(cells: list[str], file: Path) -> dict[str, int] | None:
    """Column positions from a header line (``file,label[,split]``), or None if line 1 is data."""
    lowered = [c.lower() for c in cells]
    if lowered[0] not in FILE_COLUMNS:
        return None
    cols: dict[str, int] = {}
    for i, name in enumerate(lowered):
        role = ("file" if name in FILE_COLUMNS else "label" if name in LABEL_COLUMNS
                else "split" if name in SPLIT_COLUMNS else None)  # fmt: skip
        if role is None or role in cols:
            raise DatasetError(
                f"{file.name}, line 1: unknown column {cells[i]!r}; the columns are "
                "file,label and optionally split (e.g. 'file,label,split')"
            )
        cols[role] = i
    if "label" not in cols:
        raise DatasetError(
            f"{file.name}, line 1: no label column; the columns are file,label[,split]"
        )
    return cols


def _find_image(base: Path, value: str, file: Path, number: int) -> str | None:
    """The image a labels-file row names, relative to the CSV's folder (or a folder named like it).

    None when no such file exists; DatasetError for a path that leaves the folder.
    """
    rel = value.replace("\\", "/")
    if rel.startswith("/") or ".." in rel.split("/"):
        raise DatasetError(
            f"{file.name}, line {number}: {value!r} must be a path relative to the labels "
            "file's folder, without '..'"
        )
    for folder in (base, base / file.stem, base / "images"):
        for candidate in (rel, *(rel + ext for ext in (".jpg", ".png", ".jpeg"))):
            path = folder / candidate
            if path.is_file():
                return str(path)
    return None


def load_csv_files(cfg) -> Dataset:
    """Images listed in a CSV/TSV (``cfg.path``) of ``file,label[,split]`` rows."""
    file = _check_data_file(cfg.path, "labels file")
    base = file.parent
    rows = list(_csv_rows(file))
    if not rows:
        raise DatasetError(f"{file.name} is empty; give one 'file,label' row per image")
    cols = _header_columns(rows[0][1], file)
    if cols is not None:
        rows = rows[1:]
    else:
        width = len(rows[0][1])
        cols = {"file": 0, "label": 1, **({"split": 2} if width == 3 else {})}
    width = max(cols.values()) + 1
    paths, names, splits = [], [], []
    missing: list[tuple[str, str]] = []  # (file, why): rows whose image is not there
    for number, cells in rows:
        if len(cells) != width:
            raise DatasetError(
                f"{file.name}, line {number}: expected {width} values (file,label"
                f"{',split' if 'split' in cols else ''}), got {len(cells)}"
            )
        value, label = cells[cols["file"]], cells[cols["label"]]
        if not value or not label:
            raise DatasetError(
                f"{file.name}, line {number}: the file name and label must not be empty"
            )
        if "split" in cols:
            word = SPLIT_WORDS.get(cells[cols["split"]].lower() or "train")
            if word is None:
                raise DatasetError(
                    f"{file.name}, line {number}: split {cells[cols['split']]!r} is not "
                    "train, val or test"
                )
        found = _find_image(base, value, file, number)
        if found is None:
            missing.append((value, f"{file.name}, line {number}: no such image"))
            continue
        if "split" in cols:
            splits.append(word)
        paths.append(found)
        names.append(label)
    if not paths and missing:
        value, _ = missing[0]
        raise DatasetError(
            f"none of the {len(missing):,} images {file.name} names was found, e.g. {value!r}: "
            f"looked in {base} (and in {base / file.stem} and {base / 'images'}); put the "
            "images beside the labels file"
        )
    if not paths:
        raise DatasetError(f"{file.name} has a header but no rows")
    classes = _sorted_labels(names)
    index = {c: k for k, c in enumerate(classes)}
    labels = np.asarray([index[n] for n in names], np.int32)
    # Rows whose image is missing are left out and listed with the skipped files.
    return files_dataset(file.name, classes, paths, labels, cfg, missing,
                         given_splits=splits if "split" in cols else None,
                         groups="classes")  # fmt: skip


def _sorted_labels(names: list[str]) -> list[str]:
    unique = set(names)
    if all(n.lstrip("-").isdigit() for n in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def parse_pixel_shape(text: str, n_pixels: int, where: str) -> tuple[int, int, int]:
    """``"28x28"``/``"32x32x3"`` or empty (square gray, else square RGB) for ``n_pixels`` values."""
    text = (text or "").strip().lower().replace("×", "x")
    if text:
        try:
            dims = [int(d) for d in text.split("x")]
        except ValueError:
            dims = []
        if len(dims) == 2:
            dims.append(1)
        if len(dims) != 3 or dims[2] not in (1, 3) or min(dims) < 1:
            raise DatasetError(
                f"pixel shape {text!r} is not HxW or HxWxC with C 1 or 3 (e.g. 28x28 or 32x32x3)"
            )
        if int(np.prod(dims)) != n_pixels:
            raise DatasetError(
                f"{where}: pixel shape {text} holds {int(np.prod(dims))} values but the rows have "
                f"{n_pixels} pixel columns; give the right shape"
            )
        return dims[0], dims[1], dims[2]
    for channels in (1, 3):
        side = round((n_pixels / channels) ** 0.5)
        if n_pixels % channels == 0 and side * side * channels == n_pixels:
            return side, side, channels
    raise DatasetError(
        f"{where}: {n_pixels} pixel columns are neither a square grayscale nor a square RGB "
        "image; give the pixel shape (e.g. 28x56 or 32x32x3)"
    )


def load_pixel_csv(cfg) -> Dataset:
    """A pixel CSV (``label,pixel0..pixelN`` per row, MNIST-style) read into memory.

    Pixels are row-major (height, width, channels) values 0–255; the shape is
    ``cfg.pixel_shape`` or inferred (square grayscale, else square RGB).
    """
    file = _check_data_file(cfg.path, "pixel CSV")
    rows = _csv_rows(file)
    label_col = 0
    first = next(rows, None)
    if first is None:
        raise DatasetError(f"{file.name} is empty; give one 'label,pixel0,...' row per image")
    number, cells = first
    width = len(cells)
    header = not _is_number(cells[0])
    pending = [] if header else [(number, cells)]
    if header:
        lowered = [c.lower() for c in cells]
        found = [i for i, c in enumerate(lowered) if c in LABEL_COLUMNS]
        if len(found) != 1:
            raise DatasetError(
                f"{file.name}, line 1: the header needs exactly one label column (label, class, "
                f"category or target); found {len(found)}"
            )
        label_col = found[0]
        for i, c in enumerate(lowered):
            if i != label_col and not (c.startswith("pixel") or _is_number(c.replace("x", ""))):
                raise DatasetError(
                    f"{file.name}, line 1: unknown column {cells[i]!r}; a pixel CSV has a label "
                    "column and pixel columns (pixel0, pixel1, ... or 1x1, 1x2, ...)"
                )
    if width < 2:
        raise DatasetError(f"{file.name}, line {number}: a row needs a label and pixel values")
    shape = parse_pixel_shape(cfg.pixel_shape, width - 1, file.name)
    names: list[str] = []
    pixels: list[np.ndarray] = []
    for number, cells in (*pending, *rows):
        if len(cells) != width:
            raise DatasetError(
                f"{file.name}, line {number}: expected {width} values (a label and {width - 1} "
                f"pixels), got {len(cells)}"
            )
        label = cells[label_col]
        values = cells[:label_col] + cells[label_col + 1 :]
        try:
            row = np.asarray(values, dtype=np.float64)
        except ValueError:
            bad = next(v for v in values if not _is_number(v))
            raise DatasetError(
                f"{file.name}, line {number}: {bad!r} is not a pixel value"
            ) from None
        if not label:
            raise DatasetError(f"{file.name}, line {number}: the label is empty")
        if row.min() < 0 or row.max() > 255 or np.any(row != np.round(row)):
            raise DatasetError(
                f"{file.name}, line {number}: pixel values must be whole numbers 0–255"
            )
        names.append(label)
        pixels.append(row.astype(np.uint8))
    if not names:
        raise DatasetError(f"{file.name} has a header but no rows")
    classes = _sorted_labels(names)
    if len(classes) < 2:
        raise DatasetError(f"{file.name} has a single label ({classes[0]}); a classifier needs two")
    index = {c: k for k, c in enumerate(classes)}
    x = np.stack(pixels).reshape(-1, *shape)
    y = np.asarray([index[n] for n in names], np.int32)
    return in_memory_dataset(classes, x, y, None, None, cfg)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


LOADERS = {
    "shapes": load_shapes,
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar,
    "cifar100": load_cifar,
    "folder": load_folder,
    "upload": load_upload,
    "dataset": load_built_dataset,
    "csv_files": load_csv_files,
    "pixel_csv": load_pixel_csv,
}
