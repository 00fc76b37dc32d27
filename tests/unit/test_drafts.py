"""Drafts: stored in the workspace, revisions, one run per revision, damaged files."""

from __future__ import annotations

import json
import threading

import pytest

from lib import drafts, runstore
from lib.config import DataConfig, RunConfig, TrainConfig


def test_a_draft_round_trips_and_each_change_raises_the_revision():
    d = drafts.new_draft()
    assert drafts.valid_id(d.id) and d.revision == 1
    changed = drafts.save(d.with_parts(train=TrainConfig(epochs=3), run_name="mine"))
    assert changed.revision == 2
    again = drafts.save(changed)  # nothing changed: nothing written
    assert again.revision == 2
    loaded = drafts.load(d.id)
    assert loaded.train.epochs == 3 and loaded.run_name == "mine"
    assert loaded.run_config() == RunConfig(name="mine", train=TrainConfig(epochs=3))


def test_start_once_makes_one_run_per_revision_even_when_clicked_twice_at_once():
    d = drafts.save(drafts.new_draft().with_parts(data=DataConfig(source="digits")))
    made = []

    def start(draft):
        path = runstore.create_run(draft.run_config())
        made.append(path.name)
        return path.name

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(drafts.start_once(d.id, start)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
    assert sorted(fresh for _, fresh in results) == [False, False, False, True]
    assert {run_id for run_id, _ in results} == set(made)
    # a change makes a new revision, which may start again
    drafts.save(drafts.load(d.id).with_parts(train=TrainConfig(epochs=2)))
    run_id, fresh = drafts.start_once(d.id, start)
    assert fresh and run_id != made[0] and len(made) == 2


def test_a_deleted_run_can_be_started_again():
    d = drafts.new_draft()
    run_id, _ = drafts.start_once(d.id, lambda x: runstore.create_run(x.run_config()).name)
    import shutil

    shutil.rmtree(runstore.run_dir(run_id))
    again, fresh = drafts.start_once(d.id, lambda x: runstore.create_run(x.run_config()).name)
    assert fresh and again != run_id


@pytest.mark.parametrize("bad", ["../../etc", "ABCDEFGH", "short", "", "a" * 9])
def test_malformed_ids_are_refused(bad):
    assert not drafts.exists(bad)
    with pytest.raises(drafts.DraftError):
        drafts.load(bad)


def test_a_damaged_or_missing_draft_is_a_clear_error():
    d = drafts.new_draft()
    drafts.draft_path(d.id).write_text("{not json")
    with pytest.raises(drafts.DraftError, match="damaged"):
        drafts.load(d.id)
    drafts.draft_path(d.id).write_text(json.dumps({"id": d.id, "train": {"epochs": -1}}))
    with pytest.raises(drafts.DraftError, match="epochs"):
        drafts.load(d.id)
    with pytest.raises(drafts.DraftError, match="does not exist"):
        drafts.load("0123abcd")


@pytest.mark.parametrize("revision", [True, "7", 2.9, -1])
def test_a_revision_that_is_not_a_whole_number_is_refused(revision):
    d = drafts.new_draft()
    raw = json.loads(drafts.draft_path(d.id).read_text())
    raw["revision"] = revision
    drafts.draft_path(d.id).write_text(json.dumps(raw))
    with pytest.raises(drafts.DraftError, match="revision"):
        drafts.load(d.id)


def test_a_drafts_view_is_kept_beside_it_without_touching_the_recipe():
    d = drafts.new_draft()
    assert drafts.load_view(d.id) == {}
    view = drafts.save_view(d.id, {"compare_runs_pick": ["a", "b"], "curve": "val_loss"})
    assert view == {"compare_runs_pick": ["a", "b"], "curve": "val_loss"}
    assert drafts.save_view(d.id, {"curve": "loss"}) == {
        "compare_runs_pick": ["a", "b"],
        "curve": "loss",
    }
    assert drafts.load_view(d.id)["curve"] == "loss"
    assert drafts.load(d.id).revision == d.revision  # a view is no change of the recipe
    # Nothing is written when nothing changes.
    path = drafts.view_path(d.id)
    stamp = path.stat().st_mtime_ns
    drafts.save_view(d.id, {"curve": "loss"})
    assert path.stat().st_mtime_ns == stamp
    # A damaged view is an empty one, not an error, and the next save mends it.
    path.write_text("{not json", encoding="utf-8")
    assert drafts.load_view(d.id) == {}
    path.write_text("[1, 2]", encoding="utf-8")
    assert drafts.load_view(d.id) == {}
    assert drafts.save_view(d.id, {"curve": "loss"}) == {"curve": "loss"}
    assert json.loads(path.read_text(encoding="utf-8")) == {"curve": "loss"}
    with pytest.raises(drafts.DraftError):
        drafts.save_view("../../etc", {"x": 1})
    assert drafts.load_view("../../etc") == {}
