"""Model summary numbers against hand computations, and the block diagram figure."""

import keras
import pytest

from lib.config import ConvBlock, HeadConfig, ModelConfig
from lib.model_summary import format_shape, human_bytes, human_count, summarize, summarize_config
from lib.plots.model import model_diagram_figure


def _tiny_net():
    inputs = keras.Input((10, 10, 3), name="pixels")
    x = keras.layers.Conv2D(4, 3, padding="valid", name="block1_conv")(inputs)  # 8×8×4
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="block1_dw")(x)  # 8×8×4
    x = keras.layers.SeparableConv2D(6, 3, strides=2, padding="same", name="block2_sep")(x)  # 4×4×6
    x = keras.layers.BatchNormalization(name="block2_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)  # 6
    outputs = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny")


def test_flops_of_a_tiny_net_equal_the_hand_computation():
    summary = summarize(_tiny_net())
    conv = 8 * 8 * 4 * (3 * 3 * 3)  # output positions × channels × kernel MACs
    depthwise = 8 * 8 * 4 * (3 * 3)
    separable = 4 * 4 * 4 * (3 * 3) + 4 * 4 * 4 * 6  # depthwise part + pointwise part
    dense = 6 * 5
    by_name = {r.name: r.flops for r in summary.rows}
    assert by_name["block1_conv"] == 2 * conv
    assert by_name["block1_dw"] == 2 * depthwise
    assert by_name["block2_sep"] == 2 * separable
    assert by_name["logits"] == 2 * dense
    assert by_name["block2_bn"] == 0
    assert summary.flops_per_image == 2 * (conv + depthwise + separable + dense)


def test_params_and_activations_match_the_model():
    model = _tiny_net()
    summary = summarize(model)
    assert summary.total_params == model.count_params()
    # BatchNorm's moving mean and variance (6 + 6) are the only non-trainable weights
    assert summary.non_trainable_params == 12
    assert summary.trainable_params == model.count_params() - 12
    values = 10 * 10 * 3 + 8 * 8 * 4 + 8 * 8 * 4 + 4 * 4 * 6 + 4 * 4 * 6 + 6 + 5
    assert summary.activation_values_per_image == values
    assert summary.activation_bytes(batch_size=32) == values * 32 * 4
    assert summary.activation_bytes(batch_size=32, bytes_per_value=2) == values * 32 * 2
    assert summary.input_shape == (10, 10, 3)
    assert summary.num_classes == 5
    assert [s.name for s in summary.stages] == ["pixels", "block1", "block2", "head", "logits"]
    assert summary.stages[1].params == (3 * 3 * 3 * 4 + 4) + (3 * 3 * 4 + 4)
    assert summary.stages[2].output_shape == (4, 4, 6)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(preset="fast_cnn"),
        ModelConfig(preset="resnet20", width=0.5),
        ModelConfig(
            preset="custom",
            blocks=(ConvBlock(filters=8), ConvBlock(filters=16, convs=2)),
            head=HeadConfig(pooling="flatten", dense=(32,)),
        ),
        ModelConfig(preset="mobilenetv2", weights="imagenet", unfreeze_last=10),
    ],
    ids=lambda c: c.preset,
)
def test_summary_of_each_kind_of_model(cfg):
    summary = summarize_config(cfg, (28, 28, 1), 10)  # imagenet is dropped: no download
    from lib.architectures import build_model

    model = build_model(cfg.replace(weights="none"), (28, 28, 1), 10)
    assert summary.total_params == model.count_params()
    assert summary.trainable_params == sum(int(w.numpy().size) for w in model.trainable_weights)
    assert summary.flops_per_image > 0
    assert summary.stages[-1].name == "logits"
    assert summary.stages[-1].output_shape == (10,)
    if cfg.preset == "mobilenetv2":
        assert any(r.depth == 1 for r in summary.rows)
        backbone = next(s for s in summary.stages if s.name == "mobilenetv2")
        # MobileNetV2 at 96 px: about 0.3 G multiply-adds at 224 px, scaled by (96/224)²
        assert 80e6 < backbone.flops < 140e6
        assert 0 < summary.trainable_params < summary.total_params
        row = next(r for r in summary.rows if r.name == "mobilenetv2_backbone")
        assert row.flops == backbone.flops == sum(r.flops for r in summary.rows if r.depth == 1)
        assert summary.flops_per_image == sum(r.flops for r in summary.rows if r.depth == 0)


def test_table_records():
    rows = summarize(_tiny_net()).table()
    assert rows[1] == {
        "layer": "block1_conv",
        "type": "Conv2D",
        "output shape": "8 × 8 × 4",
        "params": 112,
        "trainable": True,
        "MFLOPs": round(2 * 8 * 8 * 4 * 27 / 1e6, 3),
    }


@pytest.mark.parametrize(
    ("value", "text"), [(999, "999"), (12_345, "12.3 k"), (2_270_794, "2.27 M"), (1.5e9, "1.5 G")]
)
def test_human_count(value, text):
    assert human_count(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(100, "100 B"), (3 * 2**20, "3 MiB"), (1.5 * 2**30, "1.5 GiB")]
)
def test_human_bytes(value, text):
    assert human_bytes(value) == text


def test_format_shape():
    assert format_shape((28, 28, 32)) == "28 × 28 × 32"
    assert format_shape((None, 10)) == "? × 10"


def test_diagram_has_one_box_per_stage():
    summary = summarize(_tiny_net())
    fig = model_diagram_figure(summary.stages, title="tiny")
    assert len(fig.layout.shapes) == len(summary.stages)
    texts = [a.text for a in fig.layout.annotations if a.text]
    assert any("block2" in t and "SeparableConv2D" in t for t in texts)
    assert "4 × 4 × 6 · 90 params" in texts
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert len(arrows) == len(summary.stages) - 1
    assert fig.layout.title.text == "tiny"
