"""RunConfig and its parts: validation messages and exact JSON round trips."""

import json

import pytest

from lib.config import (
    AugmentConfig,
    ConvBlock,
    DataConfig,
    HeadConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

ROUND_TRIP_CASES = [
    RunConfig(),
    RunConfig(
        name="custom net on digits",
        data=DataConfig(source="digits", val_fraction=0.2, seed=7, image_size=16),
        augment=AugmentConfig(preset="custom", horizontal_flip=True, rotation=0.05, mixup=0.2),
        model=ModelConfig(
            preset="custom",
            blocks=(ConvBlock(filters=8, kernel=5, pool="avg"), ConvBlock(filters=16, stride=2)),
            head=HeadConfig(pooling="flatten", dense=(64, 32), dropout=0.25),
        ),
        train=TrainConfig(epochs=3, batch_size=32, optimizer="sgd", schedule="step"),
    ),
    RunConfig(data=DataConfig(source="folder", path="/srv/images", color_mode="grayscale")),
]


@pytest.mark.parametrize("config", ROUND_TRIP_CASES)
def test_json_round_trip_is_exact(config):
    text = config.to_json()
    again = RunConfig.from_json(text)
    assert again == config
    assert again.to_json() == text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainConfig(epochs=0), "TrainConfig.epochs must be between 1 and 1000"),
        (
            lambda: TrainConfig(batch_size=10_000),
            "TrainConfig.batch_size must be between 1 and 8192",
        ),
        (
            lambda: TrainConfig(learning_rate=float("inf")),
            "TrainConfig.learning_rate must be a finite",
        ),
        (lambda: TrainConfig(optimizer="lbfgs"), "TrainConfig.optimizer must be one of: adam"),
        (lambda: TrainConfig(epochs=2.5), "TrainConfig.epochs must be a whole number"),
        (lambda: TrainConfig(epochs=5, warmup_epochs=5), "warmup_epochs (5) must be shorter"),
        (lambda: DataConfig(source="imagenet"), "DataConfig.source must be one of"),
        (
            lambda: DataConfig(val_fraction=0.9),
            "DataConfig.val_fraction must be between 0.0 and 0.5",
        ),
        (lambda: DataConfig(source="folder"), "DataConfig.path is required"),
        (lambda: DataConfig(image_size=4), "image_size must be 0 (keep) or between 8 and 512"),
        (lambda: AugmentConfig(rotation=0.9), "AugmentConfig.rotation must be between 0.0 and 0.5"),
        (
            lambda: AugmentConfig(horizontal_flip="yes"),
            "AugmentConfig.horizontal_flip must be true",
        ),
        (lambda: ConvBlock(filters=0), "ConvBlock.filters must be between 1 and 1024"),
        (lambda: ConvBlock(pool="median"), "ConvBlock.pool must be one of"),
        (lambda: HeadConfig(dense=(0,)), "HeadConfig.dense[0] must be between 1 and 8192"),
        (lambda: ModelConfig(blocks=()), "ModelConfig.blocks must hold between 1 and 16"),
        (lambda: RunConfig(name="x" * 200), "RunConfig.name must be at most 120"),
    ],
)
def test_invalid_values_name_the_field_and_range(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"train": {"epochs": -1}}, "TrainConfig.epochs"),
        ({"train": {"momentum_typo": 0.9}}, "TrainConfig has no field(s) momentum_typo"),
        ({"model": {"blocks": [{"filters": 0}]}}, "ConvBlock.filters"),
        ({"model": {"blocks": "conv"}}, "ModelConfig.blocks must be a list"),
        ({"data": []}, "DataConfig must be a JSON object"),
        ({"version": 99}, "RunConfig.version must be between 1 and 1"),
    ],
)
def test_bad_json_is_refused_with_the_field(patch, message):
    data = RunConfig().to_dict()
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    with pytest.raises(ValueError) as info:
        RunConfig.from_json(json.dumps(data))
    assert message in str(info.value)


def test_not_json_is_refused():
    with pytest.raises(ValueError, match="not valid JSON"):
        RunConfig.from_json("{nope")


def test_integer_json_for_float_field_reads_back_equal():
    data = RunConfig().to_dict()
    data["train"]["learning_rate"] = 1
    cfg = RunConfig.from_dict(data)
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)


def test_save_and_load_file(tmp_path):
    cfg = ROUND_TRIP_CASES[1]
    path = tmp_path / "run.json"
    cfg.save(str(path))
    assert RunConfig.load(str(path)) == cfg


def test_load_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"train": {"epochs": 0}}')
    with pytest.raises(ValueError, match=r"broken\.json: TrainConfig\.epochs"):
        RunConfig.load(str(path))
    with pytest.raises(ValueError, match="cannot read run config"):
        RunConfig.load(str(tmp_path / "missing.json"))


def test_configs_are_frozen():
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # type: ignore[misc]
    assert cfg.replace(epochs=3).epochs == 3
