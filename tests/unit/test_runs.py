"""The run read model: views of run folders, their cache, the completed runs and labels."""

from __future__ import annotations

import json
import time

import pytest

from lib import evaluation, jobs, registry, runs, runstore
from lib.config import DataConfig, RunConfig, TrainConfig


def make_run(
    name: str,
    *,
    source: str = "digits",
    state: str = "completed",
    val_acc: tuple[float, ...] = (),
    test_acc: float | None = None,
    model: bool = True,
    created: float | None = None,
):
    """A run folder as the trainer leaves it, written by hand (no training)."""
    config = RunConfig(name=name, data=DataConfig(source=source), train=TrainConfig(epochs=5))
    path = runstore.create_run(config)
    now = time.time()
    runstore.update_status(
        path, state=state, created=created or now, started=now - 75, ended=now - 5
    )
    if val_acc:
        rows = "".join(f"{i},{1 - a:.3f},{a}\n" for i, a in enumerate(val_acc))
        (path / runstore.HISTORY_FILE).write_text("epoch,val_loss,val_accuracy\n" + rows)
    if test_acc is not None:
        runstore.atomic_write_json(
            path / runstore.METRICS_FILE, {"test_accuracy": test_acc, "train_seconds": 42.0}
        )
    if model:
        (path / runstore.MODEL_FILE).write_bytes(b"stands in for a model")
    return path


def test_a_view_holds_what_the_run_folder_says():
    path = make_run("cnn", val_acc=(0.5, 0.875, float("nan"), 0.75), test_acc=0.8)
    view = runs.get_view(path.name)
    assert view.run_id == path.name and view.path == path
    assert view.name == "cnn" and view.config.train.epochs == 5
    assert view.state == "completed" and view.has_model
    assert view.history["epoch"] == [1, 2, 3, 4]  # 1-based: the end of that epoch
    assert view.best_val_accuracy == 0.875  # NaN epochs are skipped
    assert view.test_accuracy == 0.8 and view.accuracy == 0.8
    assert (view.epochs_done, view.epochs) == (4, 5)
    assert view.duration_s == 42.0  # the trainer's own count once completed
    assert view.dataset == "digits" and view.model == view.config.model.preset


def test_a_trial_run_names_its_study_in_the_view_and_the_cli_table():
    from lib.cli import format_runs_table

    plain = make_run("plain")
    trial = make_run("lr sweep #3")
    runstore.atomic_write_json(
        trial / runstore.TRIAL_FILE, {"study": "lr sweep", "trial_number": 3, "pruned_epoch": None}
    )
    assert runs.view_of(plain).study == "" and runs.view_of(plain).study_label == ""
    view = runs.view_of(trial)
    assert (view.study, view.study_label) == ("lr sweep", "lr sweep · trial 3")
    table = format_runs_table([runs.view_of(plain), view]).splitlines()
    assert table[0].split()[-1] == "STUDY"
    assert table[2].endswith("lr sweep · trial 3") and not table[1].endswith("trial 3")
    # The pruner's verdict, written into trial.json later, shows at the next read.
    runstore.atomic_write_json(
        trial / runstore.TRIAL_FILE, {"study": "lr sweep", "trial_number": 3, "pruned_epoch": 2}
    )
    assert runs.view_of(trial).study_label == "lr sweep · trial 3 (pruned at epoch 2)"
    # Without trials among the runs, the table has no STUDY column.
    assert "STUDY" not in format_runs_table([runs.view_of(plain)])


def test_a_view_of_an_unfinished_run():
    path = make_run("fresh", state="running", model=False)
    view = runs.view_of(path)
    assert view.history == {} and view.metrics == {}
    assert view.best_val_accuracy is None and view.accuracy is None
    assert view.epochs_done == 0 and not view.has_model
    assert view.duration_s == pytest.approx(75, abs=5)  # since the attempt began


def test_a_broken_config_still_gives_a_view():
    path = make_run("broken")
    (path / runstore.CONFIG_FILE).write_text("{not json")
    view = runs.view_of(path)
    assert view.config_error and view.config == RunConfig()
    assert runs.run_label(view).startswith(path.name + " · ")


def test_views_are_cached_until_a_file_changes(monkeypatch):
    path = make_run("cached", val_acc=(0.5,))
    first = runs.view_of(path)
    assert runs.view_of(path) is first  # nothing changed: nothing read again

    loads = []
    real_load = runs._load
    monkeypatch.setattr(runs, "_load", lambda p: loads.append(p) or real_load(p))
    for _ in range(5):
        runs.list_views()
    assert loads == []

    with open(path / runstore.HISTORY_FILE, "a") as fh:
        fh.write("1,0.4,0.625\n")  # CSVLogger appends an epoch
    second = runs.view_of(path)
    assert second is not first and second.best_val_accuracy == 0.625
    runstore.update_status(path, state="failed")  # an atomic replace of status.json
    assert runs.view_of(path).state == "failed"
    assert len(loads) == 2


def test_list_views_newest_first_and_forgets_deleted_runs():
    old = make_run("old", created=1_000_000)
    new = make_run("new", created=2_000_000)
    assert [v.run_id for v in runs.list_views()] == [new.name, old.name]
    jobs.delete(old.name)
    assert [v.run_id for v in runs.list_views()] == [new.name]
    with pytest.raises(runs.RunNotFoundError, match="no run"):
        runs.get_view(old.name)


def test_completed_views_and_the_best_of_them():
    assert runs.completed_views() == [] and runs.best_completed() is None
    make_run("failed", state="failed", test_acc=0.99)
    make_run("no model", model=False, test_acc=0.98)
    val_only = make_run("val only", val_acc=(0.7, 0.95))
    tested = make_run("tested", val_acc=(0.99,), test_acc=0.9)
    completed = {v.run_id for v in runs.completed_views()}
    assert completed == {val_only.name, tested.name}
    # The test accuracy ranks a run when it has one, else its best validation accuracy.
    assert runs.best_completed().run_id == val_only.name


def test_run_label():
    path = make_run("lenet", source="shapes", test_acc=0.9234, created=1_796_000_000)
    date = time.strftime("%Y-%m-%d %H:%M", time.localtime(1_796_000_000))
    assert runs.run_label(runs.view_of(path)) == f"lenet · shapes 64px · 92.3% · {date}"
    unnamed = make_run("", model=False)
    label = runs.run_label(runs.view_of(unnamed))
    assert label.startswith(f"{unnamed.name} · digits · – · ")


def test_the_old_names_read_the_same_views():
    path = make_run("alias", val_acc=(0.5,))
    assert jobs.summarize(path) is runs.view_of(path)
    assert jobs.list_runs() == runs.list_views()
    assert jobs.read_history(path) == runs.view_of(path).history
    history = evaluation.load_history(path)  # a DataFrame, epochs as CSVLogger counts them
    assert history["epoch"].tolist() == [0] and history["val_accuracy"].tolist() == [0.5]
    assert evaluation.completed_runs() == registry.completed_runs() == [path]
    assert evaluation.run_label(path) == f"alias · {path.name}"
    assert json.loads((path / runstore.STATUS_FILE).read_text())["state"] == "completed"


def test_dataset_labels_name_the_data_not_its_kind():
    label = runs.describe_dataset
    assert label(DataConfig(source="dataset", path="pets@3")) == "pets@3"
    assert label(DataConfig(source="digits")) == "digits"
    assert label(DataConfig(source="shapes", shapes_size=64)) == "shapes 64px"
    assert label(DataConfig(source="folder", path="/data/flowers", image_size=32)) == (
        "folder:flowers →32px"
    )
    assert label(DataConfig(source="csv_files", path="/data/labels.csv")) == "csv_files:labels.csv"
