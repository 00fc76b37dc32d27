"""Every dataset source, the splits, and the per-config cache."""

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.config import DataConfig
from lib.data import Dataset, DatasetError, clear_cache, load_dataset
from lib.data import sources as src
from lib.data.dataset import stratified_split
from lib.data.uploads import save_upload_files


def _fingerprints(split) -> set[bytes]:
    return {img.tobytes() for img in split.images()}


# ---------------------------------------------------------------- shapes


def test_shapes_are_deterministic_for_a_seed_and_differ_across_seeds():
    cfg = DataConfig(source="shapes", shapes_count=120, shapes_size=32, seed=5)
    a = load_dataset(cfg, cache=False)
    b = load_dataset(cfg, cache=False)
    c = load_dataset(cfg.replace(seed=6), cache=False)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a.splits[name].images(), b.splits[name].images())
        np.testing.assert_array_equal(a.splits[name].labels, b.splits[name].labels)
    assert not np.array_equal(a.splits["train"].images()[:10], c.splits["train"].images()[:10])
    assert a.class_names == ["circle", "square", "triangle", "star", "cross", "hexagon"]
    assert a.image_shape == (32, 32, 3) and a.test_is_own is False
    assert a.splits["train"].refs is None
    counts = a.counts()
    assert counts["train"].tolist() == [16] * 6 and counts["val"].tolist() == [2] * 6
    # The images have content: shape and background differ, noise varies.
    x = a.splits["train"].images()
    assert x.dtype == np.uint8 and x.std() > 30


def test_the_default_shapes_set_has_3000_images():
    # Its speed is a benchmark's business (timed unit tests fail on a loaded machine).
    ds = load_dataset(DataConfig(), cache=False)
    assert sum(len(s) for s in ds.splits.values()) == 3000


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize(
    ("cfg", "own_test"),
    [
        (DataConfig(source="shapes", shapes_count=600, shapes_size=16, val_fraction=0.2,
                    test_fraction=0.15, seed=1), False),
        (DataConfig(source="shapes", shapes_count=300, shapes_size=16, val_fraction=0.0,
                    test_fraction=0.5, seed=2), False),
        (DataConfig(source="digits", val_fraction=0.25, test_fraction=0.1, seed=3), False),
        (DataConfig(source="digits", max_per_class=40, seed=4), False),
    ],
)  # fmt: skip
def test_splits_are_stratified_disjoint_and_complete(cfg, own_test):
    ds = load_dataset(cfg, cache=False)
    counts = ds.counts()
    total = counts["train"] + counts["val"] + counts["test"]
    if cfg.max_per_class:
        assert total.max() == cfg.max_per_class
    for name, frac in (("val", cfg.val_fraction), ("test", cfg.test_fraction)):
        # Stratified: every class gets its share, rounded.
        assert np.all(np.abs(counts[name] - total * frac) <= 1), (name, counts[name], total)
    if cfg.source == "shapes":  # noisy images are all distinct, so pixels identify them
        prints = [_fingerprints(ds.splits[n]) for n in ("train", "val", "test")]
        assert sum(len(p) for p in prints) == total.sum()
        assert len(set.union(*prints)) == total.sum()


def test_stratified_split_parts_are_disjoint_and_cover_everything():
    labels = np.repeat(np.arange(5), [50, 30, 7, 2, 1])
    parts = stratified_split(labels, [0.2, 0.1], seed=9)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    for k in range(5):  # train keeps at least one image of every class
        assert (labels[parts[0]] == k).sum() >= 1
    assert [len(p) for p in stratified_split(labels, [0.2, 0.1], seed=9)] == [len(p) for p in parts]
    assert not np.array_equal(parts[1], stratified_split(labels, [0.2, 0.1], seed=10)[1])


# ---------------------------------------------------------------- digits & resizing


def test_digits_are_8x8_gray_scaled_to_0_255():
    ds = load_dataset(DataConfig(source="digits"), cache=False)
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.image_shape == (8, 8, 1)
    assert sum(int(c.sum()) for c in ds.counts().values()) == 1797
    x = ds.splits["train"].images()
    assert x.dtype == np.uint8 and x.max() == 255 and x.min() == 0


def test_image_size_and_color_mode_apply_to_every_split():
    ds = load_dataset(DataConfig(source="digits", image_size=16, color_mode="rgb"), cache=False)
    assert ds.image_shape == (16, 16, 3)
    for split in ds.splits.values():
        x = split.images([0, 1])
        assert x.shape == (2, 16, 16, 3)
        np.testing.assert_array_equal(x[..., 0], x[..., 2])
    gray = load_dataset(DataConfig(source="shapes", shapes_count=60, shapes_size=16,
                                   color_mode="grayscale"), cache=False)  # fmt: skip
    assert gray.image_shape == (16, 16, 1)


# ---------------------------------------------------------------- fashion-mnist & keras sources


def test_fashion_mnist_from_the_debian_idx_files(monkeypatch):
    folder = Path(src.DEBIAN_FASHION_DIR)
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must install dataset-fashion-mnist: {folder} is missing")
        pytest.skip(
            f"Fashion-MNIST IDX files absent ({folder}); apt-get install dataset-fashion-mnist"
        )
    monkeypatch.delenv("KESTREL_FASHION_MNIST_DIR", raising=False)
    ds = load_dataset(DataConfig(source="fashion_mnist", max_per_class=50), cache=False)
    assert ds.test_is_own and ds.class_names[0] == "T-shirt/top" and len(ds.class_names) == 10
    assert ds.image_shape == (28, 28, 1)
    counts = ds.counts()
    assert counts["test"].tolist() == [50] * 10  # the source's own test split, capped
    assert (counts["train"] + counts["val"]).tolist() == [50] * 10
    assert ds.splits["train"].images().mean() > 40  # real clothes, not blank


def test_fashion_mnist_dir_env_wins_and_bad_files_are_a_dataset_error(tmp_path, monkeypatch):
    (tmp_path / "fm").mkdir()
    for stem in src.FASHION_FILES.values():
        (tmp_path / "fm" / stem).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # truncated
    monkeypatch.setenv("KESTREL_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset(DataConfig(source="fashion_mnist"), cache=False)


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    """An empty Keras cache and no local Fashion-MNIST: the offline path."""
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("KESTREL_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(src, "DEBIAN_FASHION_DIR", str(tmp_path / "no-debian-files"))
    # This machine has no route to the download hosts, which is the real test. On a
    # machine with internet the download would succeed, so point at a closed port.
    if src._reachable(src.DOWNLOAD_HOST, 2.0):
        monkeypatch.setattr(src, "DOWNLOAD_HOST", "127.0.0.1")
        monkeypatch.setattr(src, "CIFAR_HOST", "127.0.0.1")
    return home


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_keras_sources_offline_say_how_to_get_them_and_fail_fast(empty_keras_home, source):
    start = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        load_dataset(DataConfig(source=source), cache=False)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert f"keras.datasets.{source}.load_data()" in message
    assert str(empty_keras_home / "datasets") in message
    assert "KERAS_HOME" in message
    if source == "fashion_mnist":
        assert "dataset-fashion-mnist" in message
    assert not any((empty_keras_home / "datasets").rglob("*.npz"))


def test_mnist_and_cifar_are_read_from_the_keras_cache(empty_keras_home):
    cache = empty_keras_home / "datasets"
    cache.mkdir()
    rng = np.random.default_rng(0)
    np.savez(cache / "mnist.npz", x_train=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
             y_train=np.arange(40) % 10, x_test=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
             y_test=np.arange(20) % 10)  # fmt: skip
    ds = load_dataset(DataConfig(source="mnist", val_fraction=0.25), cache=False)
    assert ds.test_is_own and ds.image_shape == (28, 28, 1)
    assert ds.counts()["test"].sum() == 20 and ds.counts()["val"].sum() == 10

    folder = cache / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8),
                 b"labels": list(range(10))}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch))
    ds = load_dataset(DataConfig(source="cifar10"), cache=False)
    assert ds.image_shape == (32, 32, 3) and ds.class_names[0] == "airplane"
    assert ds.counts()["test"].tolist() == [1] * 10


# ---------------------------------------------------------------- folder & upload


def _write(path: Path, arr: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("apple", "banana", "cherry")):
        for i in range(8):
            size = (20 + k, 24) if cls == "cherry" else (20, 24)
            _write(root / cls / f"{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    _write(root / "banana" / "nested" / "deep.jpg", rng.integers(0, 255, (30, 30, 3), dtype=np.uint8),
           "JPEG")  # fmt: skip
    (root / "apple" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (root / "apple" / "empty.jpg").write_bytes(b"")
    (root / "cherry" / "notes.txt").write_text("not an image")
    (root / "cherry" / ".hidden.png").write_bytes(b"junk")
    (root / "stray.png").write_bytes(b"x")
    return root


def test_folder_is_streamed_and_reports_skipped_files(image_folder):
    ds = load_dataset(DataConfig(source="folder", path=str(image_folder), seed=1), cache=False)
    assert isinstance(ds, Dataset) and ds.streamed
    assert ds.class_names == ["apple", "banana", "cherry"]
    total = sum(ds.counts().values())
    assert total.tolist() == [8, 9, 8]
    skipped = {Path(f).name: reason for f, reason in ds.skipped}
    assert set(skipped) == {"corrupt.png", "empty.jpg", "notes.txt", "stray.png"}
    assert "empty" in skipped["empty.jpg"]
    # Mixed sizes: resized to the default square, with a note saying so.
    assert ds.image_shape == (128, 128, 3)
    assert any("different sizes" in n for n in ds.notes)
    train = ds.splits["train"]
    assert all(r.startswith(str(image_folder)) for r in train.refs)
    x = train.images([0, len(train) - 1])
    assert x.shape == (2, 128, 128, 3) and x.dtype == np.uint8 and x.std() > 10


def test_folder_options_size_gray_and_cap(image_folder):
    cfg = DataConfig(source="folder", path=str(image_folder), image_size=16,
                     color_mode="grayscale", max_per_class=5)  # fmt: skip
    ds = load_dataset(cfg, cache=False)
    assert ds.image_shape == (16, 16, 1)
    assert sum(ds.counts().values()).tolist() == [5, 5, 5]
    assert ds.splits["train"].images([0]).shape == (1, 16, 16, 1)


def test_folder_problems_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DataConfig(source="folder", path=str(tmp_path / "nope")), cache=False)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(DataConfig(source="folder", path=str(tmp_path / "flat")), cache=False)
    _write(tmp_path / "one" / "only" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="at least two class folders"):
        load_dataset(DataConfig(source="folder", path=str(tmp_path / "one")), cache=False)


@pytest.mark.parametrize("outside", ["/", "/etc", "{tmp}/../", "{tmp}/link/inner"])
def test_folder_outside_the_shared_roots_is_refused(tmp_path, monkeypatch, outside):
    shared = tmp_path / "shared"
    _write(shared / "a" / "x.png", np.zeros((4, 4, 3), np.uint8))
    _write(shared / "b" / "x.png", np.zeros((4, 4, 3), np.uint8))
    (shared / "link").symlink_to("/etc")
    monkeypatch.setenv("KESTREL_DATA_ROOTS", str(shared))
    path = outside.format(tmp=shared)
    with pytest.raises(DatasetError, match="outside the folders this server shares"):
        load_dataset(DataConfig(source="folder", path=path), cache=False)
    assert load_dataset(DataConfig(source="folder", path=str(shared)), cache=False).class_names


def test_folder_roots_default_to_the_workspace_datasets_folder(monkeypatch, workspace):
    from lib.data.sources import data_roots

    monkeypatch.delenv("KESTREL_DATA_ROOTS")
    assert data_roots() == [workspace.resolve() / "datasets"]


def test_folder_scan_stops_at_the_file_cap(tmp_path, monkeypatch):
    from lib.data import sources

    for k in range(2):
        for i in range(3):
            (tmp_path / "big" / f"c{k}").mkdir(parents=True, exist_ok=True)
            (tmp_path / "big" / f"c{k}" / f"{i}.png").write_bytes(b"")
    monkeypatch.setattr(sources, "MAX_FOLDER_FILES", 5)
    with pytest.raises(DatasetError, match="more than 5 files"):
        sources.scan_folder(tmp_path / "big")


def test_upload_source_reads_an_upload_by_id(image_folder):
    files = [(f"set/{p.relative_to(image_folder)}", p.read_bytes())
             for p in sorted(image_folder.rglob("*")) if p.is_file()]  # fmt: skip
    uid = save_upload_files(files)
    ds = load_dataset(DataConfig(source="upload", path=uid, image_size=24), cache=False)
    assert ds.class_names == ["apple", "banana", "cherry"]
    assert sum(ds.counts().values()).tolist() == [8, 9, 8]
    # Files refused at upload time are reported with their original names.
    assert {"set/apple/corrupt.png", "set/apple/empty.jpg", "set/cherry/notes.txt",
            "set/stray.png"} <= {f for f, _ in ds.skipped}  # fmt: skip
    with pytest.raises(DatasetError, match="not an upload id"):
        load_dataset(DataConfig(source="upload", path="../../etc"), cache=False)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DataConfig(source="upload", path="up-000000000000"), cache=False)


def test_load_dataset_caches_per_config():
    clear_cache()
    cfg = DataConfig(source="shapes", shapes_count=60, shapes_size=16)
    assert load_dataset(cfg) is load_dataset(DataConfig.from_json(cfg.to_json()))
    assert load_dataset(cfg.replace(seed=1)) is not load_dataset(cfg)
    clear_cache()


def test_symlinked_folders_never_lead_out_of_the_shared_roots(tmp_path, monkeypatch):
    """Class folders, folders inside them and wrapper folders that are links are not followed."""
    outside = tmp_path / "private"
    for cls in ("secret", "other"):
        for i in range(3):
            _write(outside / cls / f"{i}.png", np.full((6, 6, 3), 200, np.uint8))
    shared = tmp_path / "shared"
    for cls in ("a", "b"):
        for i in range(3):
            _write(shared / "set" / cls / f"{i}.png", np.zeros((6, 6, 3), np.uint8))
    (shared / "set" / "secret").symlink_to(outside / "secret", target_is_directory=True)
    (shared / "set" / "a" / "more").symlink_to(outside / "other", target_is_directory=True)
    (shared / "wrapped").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("KESTREL_DATA_ROOTS", str(shared))

    ds = load_dataset(DataConfig(source="folder", path=str(shared / "set")), cache=False)
    assert ds.class_names == ["a", "b"]
    assert sum(ds.counts().values()).tolist() == [3, 3]
    refs = [r for split in ds.splits.values() for r in split.refs]
    assert not any("private" in r or "secret" in r or "more" in r for r in refs)
    skipped = {Path(f).name: reason for f, reason in ds.skipped}
    assert "symbolic link to a folder" in skipped["secret"]
    assert "symbolic link to a folder" in skipped["more"]

    # A root whose only entry is a link: the link is neither descended into nor a class.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "data").symlink_to(outside, target_is_directory=True)
    assert src.class_root(lone) == lone
    classes, paths, _, skipped = src.scan_folder(lone)
    assert classes == [] and paths == []
    assert [Path(f).name for f, _ in skipped] == ["data"]
