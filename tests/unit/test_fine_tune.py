"""Phase two of transfer learning: a run that starts from another run's trained weights.

Checked on the weights themselves: the second run starts where the first ended,
its frozen layers stay exactly the first run's, and its unfrozen top moves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lib import cli, fine_tune, runstore
from lib.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from tests.tiny_runs import make_built_dataset, make_finished_run


@pytest.fixture
def small_set():
    return make_built_dataset("ft", ("a", "b", "c"), 6, seed=1)


def phase_one(ref) -> RunConfig:
    return RunConfig(
        name="phase one",
        data=DataConfig(source="dataset", path=ref, val_fraction=0.2, test_fraction=0.2),
        model=ModelConfig(preset="mobilenetv2", weights="none", dropout=0.1),
        train=TrainConfig(epochs=2, batch_size=4, schedule="constant", learning_rate=1e-2),
    )


def _layer_weights(model) -> dict[str, list[np.ndarray]]:
    backbone = next(layer for layer in model.layers if "backbone" in layer.name)
    out = {f"backbone/{layer.name}": layer.get_weights() for layer in backbone.layers}
    out["logits"] = model.get_layer("logits").get_weights()
    return {k: v for k, v in out.items() if v}


def test_start_from_is_checked_in_the_config():
    with pytest.raises(ConfigError, match="run id"):
        ModelConfig(preset="mobilenetv2", start_from="../../etc")
    with pytest.raises(ConfigError, match="transfer preset"):
        ModelConfig(preset="fast_cnn", start_from="20261201-000000-abcd")


def test_a_missing_or_unfinished_source_is_refused_with_what_to_do(small_set):
    cfg = phase_one(small_set)
    missing = cfg.replace(model=cfg.model.replace(start_from="20990101-000000-gone"))
    with pytest.raises(fine_tune.StartFromError, match="does not exist"):
        fine_tune.check_source(missing)
    queued = runstore.create_run(cfg)
    with pytest.raises(fine_tune.StartFromError, match="no trained model"):
        fine_tune.check_source(cfg.replace(model=cfg.model.replace(start_from=queued.name)))
    with pytest.raises(fine_tune.StartFromError, match="no trained model"):
        fine_tune.fine_tune_recipe(queued.name)


def test_phase_two_starts_from_phase_one_and_trains_only_the_top(small_set):
    from lib.registry import load_model_file
    from lib.training import train_run, validate_run
    from lib.training.run import RunConfigError

    first = runstore.create_run(phase_one(small_set))
    outcome = train_run(first)
    assert outcome.state == "completed", outcome.error
    runstore.update_status(first, state="completed")  # what lib.jobs records
    assert json.loads((first / runstore.METRICS_FILE).read_text())["training_path"] == (
        "cached_features"
    )

    cfg = fine_tune.fine_tune_recipe(first.name, layers=10, epochs=2, learning_rate=1e-3)
    assert cfg.model.start_from == first.name and cfg.model.unfreeze_last == 10
    assert (cfg.train.epochs, cfg.train.learning_rate, cfg.train.schedule) == (2, 1e-3, "constant")
    assert cfg.data == phase_one(small_set).data and cfg.name == "phase one fine-tuned"

    # The untrained second model holds exactly the first run's weights.
    from lib import hardware
    from lib.training.run import build_and_compile, prepare_data

    data = prepare_data(cfg)
    start = build_and_compile(cfg, data, hardware.configure("cpu", "off"))
    before = _layer_weights(load_model_file(first / runstore.MODEL_FILE))
    for name, weights in _layer_weights(start).items():
        for a, b in zip(weights, before[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)

    second = runstore.create_run(cfg)
    outcome = train_run(second)
    assert outcome.state == "completed", outcome.error
    assert runstore.read_config(second).model.start_from == first.name
    metrics = json.loads((second / runstore.METRICS_FILE).read_text())
    assert metrics["training_path"] != "cached_features"  # the top trains on images

    after = _layer_weights(load_model_file(second / runstore.MODEL_FILE))
    backbone_names = [k for k in before if k.startswith("backbone/")]
    moved = [k for k in backbone_names if any(
        not np.array_equal(a, b) for a, b in zip(after[k], before[k], strict=True)
    )]  # fmt: skip
    assert moved, "no backbone layer changed: nothing was fine-tuned"
    backbone = next(
        layer for layer in load_model_file(second / runstore.MODEL_FILE).layers
        if "backbone" in layer.name
    )  # fmt: skip
    names = [f"backbone/{layer.name}" for layer in backbone.layers]
    top = set(names[-10:])
    assert set(moved) <= top, sorted(set(moved) - top)  # frozen layers kept phase one's weights
    assert not any(
        np.array_equal(a, b) for a, b in zip(after["logits"], before["logits"], strict=True)
    )

    # Another dataset's classes are refused before training, in words.
    other = cfg.replace(data=cfg.data.replace(source="shapes"))
    with pytest.raises(RunConfigError, match="trained on the classes"):
        validate_run(other)

    # The CLI does the same on files: python -m lib train --fine-tune RUN_ID.
    existing = {p.name for p in runstore.list_run_dirs()}
    code = cli.main(
        ["train", "--fine-tune", first.name, "--layers", "5", "--epochs", "1",
         "--learning-rate", "2e-4"]
    )  # fmt: skip
    assert code == 0
    (made,) = {p.name for p in runstore.list_run_dirs()} - existing
    cli_cfg = runstore.read_config(runstore.run_dir(made))
    assert (cli_cfg.model.start_from, cli_cfg.model.unfreeze_last) == (first.name, 5)
    assert (cli_cfg.train.epochs, cli_cfg.train.learning_rate) == (1, 2e-4)
    assert runstore.read_status(runstore.run_dir(made)).state == "completed"


def test_cli_fine_tune_refuses_a_cnn_run_and_a_missing_run(capsys):
    cnn = make_finished_run(name="cnn run").name
    assert cli.main(["train", "--fine-tune", cnn]) == 2
    assert "transfer learning" in capsys.readouterr().err
    assert cli.main(["train", "--fine-tune", "20990101-000000-none"]) == 2
    assert "cannot be fine-tuned" in capsys.readouterr().err
    assert cli.main(["train", "cfg.json", "--fine-tune", cnn]) == 2
    assert "not both" in capsys.readouterr().err
