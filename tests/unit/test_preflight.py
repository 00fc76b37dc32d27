"""Refuse before spawning: weights that cannot be had, impossible models, missing datasets."""

from __future__ import annotations

import pytest

from lib import preflight
from lib.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lib.data import DatasetError


def test_uncached_imagenet_weights_without_a_network_are_refused_in_the_ui_words(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(preflight, "_probe", lambda url: "no connection: test")
    model = ModelConfig(preset="mobilenetv2", weights="imagenet")
    problem = preflight.weights_problem(model, (32, 32, 3))
    assert problem and "Initial weights to 'random'" in problem and "mobilenet_v2" in problem
    assert preflight.weights_problem(model.replace(weights="none"), (32, 32, 3)) is None
    config = RunConfig(
        data=DataConfig(source="shapes", shapes_count=600, shapes_size=32), model=model
    )
    with pytest.raises(preflight.StartRefused, match="random"):
        preflight.check_startable(config)


def test_reachable_weights_are_not_refused(monkeypatch):
    monkeypatch.setattr(preflight, "_probe", lambda url: None)
    model = ModelConfig(preset="mobilenetv2", weights="imagenet")
    assert preflight.weights_problem(model, (32, 32, 3)) is None


def test_the_real_probe_says_why_it_failed():
    assert preflight._probe("http://127.0.0.1:9/nothing-listens-here") is not None


def test_an_impossible_batch_and_a_missing_folder_are_refused(tmp_path):
    data = DataConfig(source="shapes", shapes_count=60, shapes_size=16)
    with pytest.raises(ValueError, match="batch_size"):
        preflight.check_startable(RunConfig(data=data, train=TrainConfig(batch_size=4096)))
    with pytest.raises(DatasetError):
        preflight.check_startable(
            RunConfig(data=DataConfig(source="folder", path=str(tmp_path / "missing")))
        )
