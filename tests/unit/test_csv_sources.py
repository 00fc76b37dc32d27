"""The labels-file sources: images + a CSV/TSV of file,label[,split], and pixel CSVs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from lib.config import DataConfig
from lib.data import DatasetError, load_dataset


def images(folder, names, size=12):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((size, size, 3), 20 * i, np.uint8)).save(folder / name)


def files_cfg(path, **kw):
    return DataConfig(source="csv_files", path=str(path), **kw)


def test_labels_file_with_header_and_splits(tmp_path):
    images(tmp_path / "train", [f"{i}.png" for i in range(8)])
    rows = ["image,label,split"] + [
        f"{i},{'cat' if i % 2 else 'dog'},{'test' if i >= 6 else 'train'}" for i in range(8)
    ]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(files_cfg(tmp_path / "train.csv", val_fraction=0.25), cache=False)
    assert ds.class_names == ["cat", "dog"]
    assert len(ds.splits["test"]) == 2 and len(ds.splits["val"]) == 2
    assert len(ds.splits["train"]) == 4


def test_tsv_without_header(tmp_path):
    images(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    (tmp_path / "labels.tsv").write_text("a.png\tx\nb.png\ty\nc.png\tx\nd.png\ty\n")
    ds = load_dataset(files_cfg(tmp_path / "labels.tsv", val_fraction=0.0), cache=False)
    assert ds.class_names == ["x", "y"] and sum(len(s) for s in ds.splits.values()) == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,label,colour\na.png,x,red\n", "line 1: unknown column 'colour'"),
        ("file,label\na.png,x\nb.png\n", "line 3: expected 2 values"),
        (
            "file,label\nnope.png,x\nmissing.png,y\n",
            "none of the 2 images l.csv names was found, e.g. 'nope.png'",
        ),
        ("file,label\na.png,x\nb.png,x\n", "at least two classes; found 2 readable image(s) in 1"),
        ("file,label,split\na.png,x,train\nb.png,y,later\n", "line 3: split 'later'"),
        ("file,label\n../a.png,x\n", "line 2: '../a.png' must be a path relative"),
        ("file,label\na.png,\n", "line 2: the file name and label must not be empty"),
        ("", "is empty"),
    ],
)
def test_labels_file_bad_inputs_name_the_line(tmp_path, text, message):
    images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_dataset(files_cfg(tmp_path / "l.csv"), cache=False)


def test_a_semicolon_csv_as_spreadsheets_save_it_reads_like_a_comma_one(tmp_path):
    images(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    (tmp_path / "l.csv").write_text("file;label\na.png;x\nb.png;y\nc.png;x\nd.png;y\n")
    ds = load_dataset(files_cfg(tmp_path / "l.csv", val_fraction=0.0), cache=False)
    assert ds.class_names == ["x", "y"] and sum(len(s) for s in ds.splits.values()) == 4


def test_rows_whose_image_is_missing_are_left_out_and_listed(tmp_path):
    images(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    rows = "file,label\na.png,x\nb.png,y\ngone.png,x\nc.png,x\nd.png,y\nlost.jpg,y\n"
    (tmp_path / "l.csv").write_text(rows)
    ds = load_dataset(files_cfg(tmp_path / "l.csv", val_fraction=0.0), cache=False)
    assert sum(len(s) for s in ds.splits.values()) == 4
    assert ds.skipped == [
        ("gone.png", "l.csv, line 4: no such image"),
        ("lost.jpg", "l.csv, line 7: no such image"),
    ]


def test_labels_file_outside_the_shared_folders_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KESTREL_DATA_ROOTS", str(tmp_path / "shared"))
    (tmp_path / "shared").mkdir()
    (tmp_path / "l.csv").write_text("a.png,x\n")
    with pytest.raises(DatasetError, match="outside the folders this server shares"):
        load_dataset(files_cfg(tmp_path / "l.csv"), cache=False)


def pixel_rows(n, pixels, header=True):
    rng = np.random.default_rng(0)
    lines = ["label," + ",".join(f"pixel{i}" for i in range(pixels))] if header else []
    for i in range(n):
        lines.append(f"{i % 3}," + ",".join(str(v) for v in rng.integers(0, 256, pixels)))
    return "\n".join(lines) + "\n"


def test_pixel_csv_shape_inferred_or_given(tmp_path):
    (tmp_path / "p.csv").write_text(pixel_rows(30, 16))
    ds = load_dataset(DataConfig(source="pixel_csv", path=str(tmp_path / "p.csv")), cache=False)
    assert ds.image_shape == (4, 4, 1) and ds.class_names == ["0", "1", "2"]
    (tmp_path / "q.csv").write_text(pixel_rows(30, 48, header=False))
    ds = load_dataset(DataConfig(source="pixel_csv", path=str(tmp_path / "q.csv")), cache=False)
    assert ds.image_shape == (4, 4, 3)
    cfg = DataConfig(source="pixel_csv", path=str(tmp_path / "q.csv"), pixel_shape="4x12")
    assert load_dataset(cfg, cache=False).image_shape == (4, 12, 1)


@pytest.mark.parametrize(
    "text, shape, message",
    [
        (
            "label,pixel0,pixel1,pixel2,pixel3\n1,0,0,0,0\n2,0,0,0\n",
            "",
            "line 3: expected 5 values",
        ),
        ("label,pixel0,pixel1,pixel2,pixel3\n1,0,0,0,0\n2,0,x,0,0\n", "", "line 3: 'x' is not"),
        ("label,pixel0,pixel1,pixel2,pixel3\n1,0,0,0,0\n2,0,300,0,0\n", "", "line 3: pixel values"),
        ("label,colour,pixel1,pixel2,pixel3\n1,0,0,0,0\n", "", "line 1: unknown column 'colour'"),
        ("label,pixel0,pixel1\n1,0,0\n2,0,0\n", "", "neither a square"),
        ("label,pixel0,pixel1,pixel2,pixel3\n1,0,0,0,0\n2,0,0,0,0\n", "3x3", "holds 9 values"),
        ("label,pixel0,pixel1,pixel2,pixel3\n1,0,0,0,0\n1,0,0,0,0\n", "", "single label"),
    ],
)
def test_pixel_csv_bad_inputs_name_the_line(tmp_path, text, shape, message):
    (tmp_path / "p.csv").write_text(text)
    cfg = DataConfig(source="pixel_csv", path=str(tmp_path / "p.csv"), pixel_shape=shape)
    with pytest.raises(DatasetError, match=message):
        load_dataset(cfg, cache=False)
