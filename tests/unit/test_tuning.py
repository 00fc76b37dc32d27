"""lib.tuning: the search space from the config metadata, the study spec, the pruning callback."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from lib import runstore, tuning
from lib.config import ConfigError, DataConfig, RunConfig, TrainConfig

SPACE = {
    "train.learning_rate": {"low": 1e-4, "high": 1e-1},
    "train.optimizer": {"choices": ["adam", "sgd"]},
}


def spec(**changes) -> tuning.StudySpec:
    values = {
        "name": "lr study",
        "base": RunConfig(data=DataConfig(source="digits")),
        "space": SPACE,
    }
    values.update(changes)
    return tuning.StudySpec(**values)


# ---------------------------------------------------------------- the search space


def test_searchable_fields_are_numbers_and_choices():
    train = tuning.searchable_fields("train")
    assert {"learning_rate", "batch_size", "optimizer", "schedule", "weight_decay"} <= set(train)
    assert "nesterov" not in train and "tta_flip" not in train  # flags are not searched
    assert "preset" not in tuning.searchable_fields("augment")
    assert {"rotation", "mixup", "randaugment_ops"} <= set(tuning.searchable_fields("augment"))
    assert {"width", "dropout", "preset"} <= set(tuning.searchable_fields("model"))
    assert "blocks" not in tuning.searchable_fields("model")


def test_log_scale_comes_from_the_metadata():
    space = tuning.check_space({"train.learning_rate": {"low": 1e-4, "high": 1e-1}})
    assert space["train.learning_rate"]["log"] is True
    space = tuning.check_space({"model.dropout": {"low": 0.0, "high": 0.5}})
    assert space["model.dropout"]["log"] is False
    space = tuning.check_space({"train.batch_size": {"low": 32, "high": 256.0}})
    assert space["train.batch_size"] == {"low": 32, "high": 256, "log": False}


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({}, "search space is empty"),
        ({"train.nesterov": {"choices": [True]}}, "cannot be searched"),
        ({"data.seed": {"low": 0, "high": 3}}, "cannot be searched"),
        ({"train.learning_rate": {"low": 1e-3, "high": 20.0}}, "between 1e-06 and 10"),
        ({"train.learning_rate": {"low": 1e-1, "high": 1e-3}}, "above the highest"),
        ({"train.learning_rate": {"low": "x", "high": 1}}, "lowest and a highest"),
        ({"model.dropout": {"low": 0.0, "high": 0.5, "log": True}}, "start above 0"),
        ({"train.batch_size": {"low": 16.5, "high": 64}}, "whole numbers"),
        ({"train.optimizer": {"choices": []}}, "at least one value"),
        ({"train.optimizer": {"choices": ["adam", "lion"]}}, "lion is not allowed"),
    ],
)
def test_bad_spaces_are_refused_with_a_message(space, words):
    with pytest.raises(tuning.TuningError, match=words):
        tuning.check_space(space)


def test_suggestions_stay_inside_the_space_and_apply_to_the_recipe():
    space = tuning.check_space(
        {
            **SPACE,
            "model.width": {"low": 0.5, "high": 2.0},
            "augment.randaugment_ops": {"low": 0, "high": 2},
        }
    )
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        params = tuning.suggest(trial, space)
        assert 1e-4 <= params["train.learning_rate"] <= 1e-1
        assert params["train.optimizer"] in ("adam", "sgd")
        assert isinstance(params["augment.randaugment_ops"], int)
        cfg = tuning.apply_params(RunConfig(), params, epochs=3)
        assert cfg.train.learning_rate == params["train.learning_rate"]
        assert cfg.model.width == params["model.width"]
        assert cfg.train.epochs == 3
        study.tell(trial, 0.5)
    dists = tuning.distributions(space)
    assert dists["train.learning_rate"].log and not dists["model.width"].log


def test_an_invalid_combination_names_the_field():
    base = RunConfig(train=TrainConfig(schedule="warmup_cosine", warmup_epochs=3.0, epochs=6))
    with pytest.raises(ConfigError, match="warmup_epochs"):
        tuning.apply_params(base, {"train.learning_rate": 0.01}, epochs=2)


# ---------------------------------------------------------------- the spec


def test_spec_round_trips_through_json(tmp_path):
    s = spec(n_trials=5, budget_seconds=30.0, pruner="hyperband")
    path = tmp_path / "study.json"
    path.write_text(json.dumps(s.to_dict()))
    assert tuning.StudySpec.load(path) == s
    assert s.slug == "lr-study"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"name": "../x"}, "study name"),
        ({"name": ""}, "study name"),
        ({"n_trials": 0}, "number of trials"),
        ({"pruner": "asha"}, "pruner must be"),
        ({"budget_epochs": 0}, "epoch budget"),
        (
            {"base": RunConfig(data=DataConfig(source="digits", val_fraction=0.0))},
            "validation share",
        ),
    ],
)
def test_bad_specs_are_refused(changes, words):
    with pytest.raises(tuning.TuningError, match=words):
        spec(**changes)


def test_spec_file_errors_say_what_is_wrong(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{nope")
    with pytest.raises(tuning.TuningError, match="not valid JSON"):
        tuning.StudySpec.load(path)
    path.write_text(json.dumps({"name": "a", "space": SPACE, "trials": 3}))
    with pytest.raises(tuning.TuningError, match="no field"):
        tuning.StudySpec.load(path)


def test_a_second_study_of_the_same_name_with_another_space_is_refused():
    tuning.create_study(spec())
    tuning.create_study(spec(n_trials=12))  # the same study, continued with more trials
    with pytest.raises(tuning.TuningError, match="exists with another"):
        tuning.create_study(spec(space={"model.dropout": {"low": 0.0, "high": 0.5}}))


def test_an_unreachable_storage_is_a_message_without_the_password():
    with pytest.raises(
        tuning.TuningError, match=r"cannot open the study storage postgresql://u:\*\*\*@"
    ) as info:
        tuning.make_storage("postgresql://u:secret@127.0.0.1:1/db")
    assert "secret" not in str(info.value)


# ---------------------------------------------------------------- the pruning callback


class FakeTrial:
    def __init__(self, prune_at: int | None = None):
        self.reports: list[tuple[float, int]] = []
        self.prune_at = prune_at

    def report(self, value, step):
        self.reports.append((value, step))

    def should_prune(self):
        return self.prune_at is not None and len(self.reports) >= self.prune_at


def tiny_fit(callback, epochs=5):
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.rand(64, 4).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model.fit(
        x, y, validation_split=0.25, epochs=epochs, batch_size=16, verbose=0, callbacks=[callback]
    )


def test_callback_reports_every_epoch_and_stops_when_pruned():
    trial, pruned = FakeTrial(prune_at=2), []
    cb = tuning.trial_callback(trial, on_prune=pruned.append)
    history = tiny_fit(cb)
    assert [step for _, step in trial.reports] == [1, 2]
    assert [v for v, _ in trial.reports] == pytest.approx(history.history["val_accuracy"])
    assert len(history.history["loss"]) == 2 and cb.pruned_epoch == 2 and pruned == [2]


def test_callback_trains_on_when_not_pruned():
    trial = FakeTrial()
    history = tiny_fit(tuning.trial_callback(trial), epochs=3)
    assert len(history.history["loss"]) == 3 and len(trial.reports) == 3


def test_callback_stops_at_the_time_budget():
    cb = tuning.trial_callback(FakeTrial(), budget_seconds=1e-9)
    history = tiny_fit(cb)
    assert cb.out_of_time and len(history.history["loss"]) == 1


def test_a_run_of_a_trial_reports_to_the_study_in_its_storage():
    s = spec(pruner="none")
    folder = tuning.create_study(s)
    study = tuning.load_study(s, folder)
    trial = study.ask()
    run = runstore.create_run(s.base)
    info = {
        "study": s.name,
        "study_dir": str(folder),
        "storage": tuning.storage_url(s, folder),
        "trial_number": trial.number,
        "trial_id": trial._trial_id,
        "budget_seconds": 0,
    }
    runstore.atomic_write_json(run / runstore.TRIAL_FILE, info)
    (callback,) = tuning.run_callbacks(run)
    tiny_fit(callback, epochs=2)
    stored = tuning.load_study(s, folder).trials[0]
    assert sorted(stored.intermediate_values) == [1, 2]
    # An ordinary run has no trial callbacks; a run whose study is gone trains on.
    assert tuning.run_callbacks(runstore.create_run(s.base)) == []
    runstore.atomic_write_json(run / runstore.TRIAL_FILE, {**info, "study": "gone"})
    assert tuning.run_callbacks(run) == []


def test_trial_rows_show_state_value_and_pruned_epoch():
    s = spec(pruner="none")
    folder = tuning.create_study(s)
    study = tuning.load_study(s, folder)
    t0 = study.ask()
    t0.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)
    study.tell(t0, 0.8)
    t1 = study.ask()
    t1.report(0.3, 1)
    t1.report(0.35, 2)
    t1.set_user_attr("pruned_epoch", 2)
    study.tell(t1, state=optuna.trial.TrialState.PRUNED)
    rows = tuning.trial_rows(study)
    assert [(r.number, r.state) for r in rows] == [(0, "complete"), (1, "pruned")]
    # A trial Optuna started reads "starting" until its run exists, then as its run does.
    t2 = study.ask()
    assert [r.state for r in tuning.trial_rows(study)][2] == "starting"
    run = runstore.create_run(s.base)
    t2.set_user_attr("run_id", run.name)
    assert [(r.state, r.run_id) for r in tuning.trial_rows(study)][2] == ("queued", run.name)
    study.tell(t2, state=optuna.trial.TrialState.FAIL)
    assert rows[0].value == 0.8 and rows[1].pruned_epoch == 2
    assert tuning.best_trial(study).number == 0
    assert "pruned" in tuning.format_trials(rows) and "epoch 2" in tuning.format_trials(rows)
    assert tuning.study_state(folder, study, s) == "interrupted"
    tuning.stop_study(folder)
    assert tuning.study_state(folder, study, s) == "stopped"
