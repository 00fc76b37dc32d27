"""The Model page: presets show their size, the custom builder updates the summary."""

from pathlib import Path

from drafts_helper import draft_of, open_page
from streamlit.testing.v1 import AppTest

from lib.config import ConvBlock, ModelConfig
from pages import ui

ROOT = Path(__file__).resolve().parents[2]


def _open_model_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/model.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _params(at: AppTest) -> int:
    return int(_metric(at, "Parameters").replace(",", ""))


def test_choosing_a_preset_shows_its_parameter_count():
    at = _open_model_page()
    default = _params(at)  # fast_cnn on the default shapes dataset
    assert default > 0
    at.selectbox(key=ui.MODEL_FIELD + "preset").select("resnet20").run()
    assert not at.exception
    chosen = _params(at)
    assert chosen != default
    assert "ResNet-20" in " ".join(m.value for m in at.markdown)
    assert draft_of(at).model.preset == "resnet20"
    # the count is the real model's, for the active dataset's shape and classes
    from lib.architectures import build_model
    from lib.data import load_dataset

    ds = load_dataset(draft_of(at).data)
    model = build_model(ModelConfig(preset="resnet20"), ds.image_shape, len(ds.class_names))
    assert chosen == model.count_params()


def test_transfer_options_only_for_transfer_presets():
    at = _open_model_page()
    assert not [r for r in at.radio if r.key == ui.MODEL_FIELD + "weights"]
    at.selectbox(key=ui.MODEL_FIELD + "preset").select("mobilenetv2").run()
    assert not at.exception
    assert at.radio(key=ui.MODEL_FIELD + "weights").value == "none"
    assert at.checkbox(key=ui.MODEL_FIELD + "freeze_backbone").value is True
    # frozen backbone: far fewer trainable than total parameters
    assert int(_metric(at, "Trainable").replace(",", "")) < _params(at) // 10


def test_editing_a_block_updates_the_summary_and_the_config():
    at = _open_model_page()
    at.selectbox(key=ui.MODEL_FIELD + "preset").select("custom").run()
    before = _params(at)
    at.number_input(key=ui.MODEL_BLOCK + "1_filters").set_value(128).run()
    assert not at.exception
    assert _params(at) > before
    assert draft_of(at).model.blocks[1].filters == 128
    # add, move and remove blocks
    at.button(key=ui.MODEL_BLOCK + "add").click().run()
    assert len(draft_of(at).model.blocks) == 3
    at.number_input(key=ui.MODEL_BLOCK + "2_filters").set_value(8).run()
    at.button(key=ui.MODEL_BLOCK + "2_up").click().run()
    assert [b.filters for b in draft_of(at).model.blocks] == [32, 8, 128]
    at.button(key=ui.MODEL_BLOCK + "0_remove").click().run()
    assert [b.filters for b in draft_of(at).model.blocks] == [8, 128]
    assert not at.exception and not at.error


def test_an_impossible_block_shows_an_error_not_a_traceback():
    at = _open_model_page()
    at.selectbox(key=ui.MODEL_FIELD + "preset").select("custom").run()
    # the default shapes images are 64 px: stride 4 and pooling twice leave 1 px,
    # so a third pooling block reaches zero
    for i in (0, 1):
        at.number_input(key=f"{ui.MODEL_BLOCK}{i}_stride").set_value(4).run()
    at.button(key=ui.MODEL_BLOCK + "add").click().run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Block 3" in errors and "would shrink to 0×0" in errors
    assert not [m for m in at.metric if m.label == "Parameters"]


def test_the_config_persists_across_pages():
    model = ModelConfig(
        preset="custom",
        blocks=(ConvBlock(filters=24), ConvBlock(filters=48), ConvBlock(filters=96)),
    )
    at = open_page("model", model=model)
    at.switch_page("pages/home.py")
    at.run()
    at.switch_page("pages/model.py")
    at.run()
    assert not at.exception
    assert at.selectbox(key=ui.MODEL_FIELD + "preset").value == "custom"
    assert at.number_input(key=ui.MODEL_BLOCK + "2_filters").value == 96
    assert draft_of(at).model.blocks[2].filters == 96


def test_showing_the_backbones_layers_survives_another_page_and_a_reload():
    from drafts_helper import reload

    at = _open_model_page()
    at.selectbox(key=ui.MODEL_FIELD + "preset").select("mobilenetv2").run()
    rows = len(at.dataframe[0].value)
    at.toggle(key=ui.MODEL_SHOW_BACKBONE).set_value(True).run()
    assert len(at.dataframe[0].value) > rows
    at.switch_page("pages/train.py").run()
    at.switch_page("pages/model.py").run()
    for page in (at, reload(at, "model")):
        assert not page.exception, [e.value for e in page.exception]
        assert page.toggle(key=ui.MODEL_SHOW_BACKBONE).value is True
        assert len(page.dataframe[0].value) > rows
