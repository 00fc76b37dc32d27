"""lib.datasets: built datasets, one immutable version per edit, loadable as a source."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lib import datasets
from lib.config import DataConfig
from lib.data import DatasetError, load_dataset
from lib.datasets import DatasetEditError


def png(value: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def snapshot(name: str, version: int) -> dict[str, list[tuple[str, bytes]]]:
    out = {}
    for cls in datasets.class_counts(name, version):
        out[cls] = [(p.name, p.read_bytes()) for p in datasets.list_images(name, version, cls)]
    return out


def test_every_edit_makes_a_new_version_and_older_versions_never_change():
    v1 = datasets.create_dataset("pets", ["cats", "dogs"])
    assert v1 == 1 and datasets.class_counts("pets", 1) == {"cats": 0, "dogs": 0}
    v2, _skipped = datasets.add_images("pets", "cats", [("a.png", png(10)), ("b.png", png(20))])
    v3, _ = datasets.add_images("pets", "dogs", [("c.png", png(200)), ("notes.txt", b"hi")])
    assert (v2, v3) == (2, 3)
    before = snapshot("pets", 3)
    v4 = datasets.rename_class("pets", "dogs", "puppies")
    v5 = datasets.add_class("pets", "birds")
    v6, _ = datasets.add_images("pets", "birds", [("d.png", png(90))])
    v7 = datasets.merge_classes("pets", ["birds"], "cats")
    v8 = datasets.remove_images("pets", "cats", ["000001.png"])
    v9 = datasets.delete_class("pets", "puppies")
    assert [v4, v5, v6, v7, v8, v9] == [4, 5, 6, 7, 8, 9]
    assert datasets.versions("pets") == list(range(1, 10))
    assert snapshot("pets", 3) == before  # hard links, never edited in place
    assert datasets.class_counts("pets", 3) == {"cats": 2, "dogs": 1}
    assert datasets.class_counts("pets", 4) == {"cats": 2, "puppies": 1}
    assert datasets.class_counts("pets", 7) == {"cats": 3, "puppies": 1}
    assert datasets.class_counts("pets", 9) == {"cats": 2}
    names = [p.name for p in datasets.list_images("pets", 7, "cats")]
    assert names == ["000001.png", "000002.png", "000003.png"]  # generated, never the uploaded
    info = datasets.version_info("pets", 8)
    assert info["parent"] == 7 and "removed 1" in info["action"]
    assert datasets.list_datasets()[0]["latest"] == 9


def test_bad_inputs_are_refused_with_a_message_and_write_nothing():
    datasets.create_dataset("set1", ["a"])
    for bad in ("", "../x", "a b", "x" * 60, ".hidden"):
        with pytest.raises(DatasetEditError, match="not a dataset name"):
            datasets.create_dataset(bad)
    with pytest.raises(DatasetEditError, match="exists already"):
        datasets.create_dataset("set1")
    with pytest.raises(DatasetEditError, match="not a class name"):
        datasets.add_class("set1", "a/b")
    with pytest.raises(DatasetEditError, match="exists already"):
        datasets.add_class("set1", "A")
    with pytest.raises(DatasetEditError, match="none of the files is a readable image"):
        datasets.add_images("set1", "a", [("x.png", b"not a png")])
    with pytest.raises(DatasetEditError, match="no class 'zz'"):
        datasets.rename_class("set1", "zz", "b")
    with pytest.raises(DatasetError, match="no dataset called"):
        datasets.add_class("nope", "a")
    assert datasets.versions("set1") == [1]  # no refused edit made a version
    with pytest.raises(DatasetError, match="name>@<version"):
        datasets.parse_ref("set1")


def test_a_version_loads_as_the_dataset_source_and_names_its_version():
    datasets.create_dataset("shapes2")
    datasets.add_images("shapes2", "dark", [(f"{i}.png", png(i)) for i in range(6)])
    v, _ = datasets.add_images("shapes2", "light", [(f"{i}.png", png(250 - i)) for i in range(6)])
    cfg = DataConfig(source="dataset", path=datasets.dataset_ref("shapes2", v))
    ds = load_dataset(cfg, cache=False)
    assert ds.class_names == ["dark", "light"]
    assert sum(len(s) for s in ds.splits.values()) == 12
    datasets.remove_images("shapes2", "light", ["000001.png"])  # a newer version...
    again = load_dataset(cfg, cache=False)  # ...leaves this one as it was
    assert sum(len(s) for s in again.splits.values()) == 12
    with pytest.raises(DatasetError, match="no version 99"):
        load_dataset(DataConfig(source="dataset", path="shapes2@99"), cache=False)


def test_an_upload_is_copied_into_a_dataset(tmp_path):
    from lib.data.uploads import save_upload_files

    upload = save_upload_files([("set/x/1.png", png(5)), ("set/y/2.png", png(99))])
    datasets.create_dataset("fromup", ["x"])
    v = datasets.import_upload("fromup", upload)
    assert datasets.class_counts("fromup", v) == {"x": 1, "y": 1}


def test_quota_is_checked_before_anything_is_read(monkeypatch):
    datasets.create_dataset("big", ["a"])
    monkeypatch.setenv("KESTREL_WORKSPACE_QUOTA_MB", "0.001")
    read = []
    from lib.workspace import QuotaError

    with pytest.raises(QuotaError):
        datasets.add_images("big", "a", [("x.png", 10_000, lambda: read.append(1) or b"")])
    assert not read and datasets.versions("big") == [1]


def test_delete_refuses_while_a_run_trains_on_it_and_keeps_finished_runs(capsys):
    from lib import cli, runstore
    from lib.config import RunConfig

    datasets.create_dataset("gone", ["a", "b"])
    v, _ = datasets.add_images("gone", "a", [("x.png", png(10))])
    run = runstore.create_run(
        RunConfig(data=DataConfig(source="dataset", path=datasets.dataset_ref("gone", v)))
    )  # queued: it would train on the dataset
    with pytest.raises(DatasetEditError, match=f"in use by the queued or running run {run.name}"):
        datasets.delete_dataset("gone")
    assert datasets.exists("gone") and datasets.versions("gone") == [1, 2]

    runstore.update_status(run, state="completed")
    assert cli.main(["dataset", "delete", "gone"]) == 0
    out = capsys.readouterr().out
    assert "deleted dataset gone" in out and run.name in out  # it keeps its model
    assert not datasets.exists("gone")
    assert "gone" not in [d["name"] for d in datasets.list_datasets()]
    assert run.is_dir()
    with pytest.raises(DatasetError, match="no dataset called 'gone'"):
        datasets.delete_dataset("gone")
    assert cli.main(["dataset", "delete", "gone"]) == 2
