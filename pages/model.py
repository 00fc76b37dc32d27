"""Model: pick a preset or build a CNN, and see what it costs for the active dataset.

The form edits the session's ModelConfig (ui.MODEL). The summary (layers,
parameters, FLOPs, activation memory, block diagram) is computed by
lib.model_summary for the active dataset's image shape and class count, and
cached per (config, shape), so only a changed config builds a model.
"""

import streamlit as st

from lib.architectures import (
    PRESET_INFO,
    ModelConfigError,
    check_model_config,
    imagenet_weights_path,
    model_warnings,
    transfer_input_size,
)
from lib.config import ACTIVATIONS, MODEL_PRESETS, ConvBlock, HeadConfig
from lib.data import DatasetError, load_dataset
from lib.model_summary import format_shape, human_bytes, human_count, summarize_config
from lib.plots.model import model_diagram_figure
from pages import ui

BLOCK_FIELDS = (
    "filters",
    "kernel",
    "stride",
    "convs",
    "activation",
    "batch_norm",
    "pool",
    "dropout",
)
MAX_BLOCKS = 16  # ModelConfig's limit


@st.cache_data(max_entries=64, show_spinner="Building the model…")
def _summary(cfg_json: str, input_shape: tuple, num_classes: int):
    from lib.config import ModelConfig

    return summarize_config(ModelConfig.from_json(cfg_json), input_shape, num_classes)


@st.cache_data(max_entries=8, show_spinner="Loading the dataset…")
def _dataset_shape(data_json: str) -> tuple[tuple[int, int, int], int]:
    from lib.config import DataConfig

    ds = load_dataset(DataConfig.from_json(data_json))
    return tuple(ds.image_shape), len(ds.class_names)


# ---------------------------------------------------------------- widget state


def _block_key(i: int, field: str) -> str:
    return f"{ui.MODEL_BLOCK}{i}_{field}"


def _field_key(field: str) -> str:
    return ui.MODEL_FIELD + field


def _head_key(field: str) -> str:
    return ui.MODEL_HEAD + field


def _init_widgets(cfg) -> None:
    """Seed the widgets from the stored config where they lack a value or it changed elsewhere.

    Streamlit forgets widget values when the page is left, and another page may
    replace the config (a cloned run), so ui.MODEL is the lasting copy.
    """
    values = {
        _field_key(f): getattr(cfg, f)
        for f in ("preset", "weights", "freeze_backbone", "unfreeze_last", "width", "dropout")
    }
    values[_head_key("pooling")] = cfg.head.pooling
    values[_head_key("dense")] = ", ".join(str(u) for u in cfg.head.dense)
    values[_head_key("dropout")] = cfg.head.dropout
    for i, block in enumerate(cfg.blocks):
        for f in BLOCK_FIELDS:
            values[_block_key(i, f)] = getattr(block, f)
    changed_elsewhere = st.session_state.get(ui.MODEL_SYNCED) != cfg
    for key, value in values.items():
        if changed_elsewhere or key not in st.session_state:
            st.session_state[key] = value


def _blocks_from_widgets() -> list[ConvBlock]:
    n = len(ui.model_config().blocks)
    return [
        ConvBlock(**{f: st.session_state[_block_key(i, f)] for f in BLOCK_FIELDS}) for i in range(n)
    ]


def _edit_blocks(action: str, i: int = 0) -> None:
    """Button callback: add, remove or move a block; runs before the page reruns."""
    blocks = _blocks_from_widgets()
    if action == "add":
        blocks.append(blocks[-1])
    elif action == "remove" and len(blocks) > 1:
        blocks.pop(i)
    elif action == "up" and i > 0:
        blocks[i - 1], blocks[i] = blocks[i], blocks[i - 1]
    elif action == "down" and i < len(blocks) - 1:
        blocks[i + 1], blocks[i] = blocks[i], blocks[i + 1]
    cfg = ui.model_config().replace(blocks=tuple(blocks))
    st.session_state[ui.MODEL] = cfg
    _init_widgets(cfg)  # the config now differs from the synced one: every widget is re-seeded


def _parse_dense(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"Head dense layers must be whole numbers separated by commas (e.g. 128, 64), got {text!r}"
        ) from None


# ---------------------------------------------------------------- sections


def _preset_section() -> str:
    preset = st.selectbox(
        "Architecture",
        MODEL_PRESETS,
        key=_field_key("preset"),
        format_func=lambda p: PRESET_INFO[p].title,
    )
    st.caption(PRESET_INFO[preset].description)
    return preset


def _options_section(preset: str, input_shape) -> None:
    kind = PRESET_INFO[preset].kind
    cols = st.columns(2)
    if kind == "cnn":
        cols[0].slider(
            "Width (channel multiplier)",
            0.25,
            4.0,
            step=0.25,
            key=_field_key("width"),
            help="Scales every layer's channels; 2 doubles them (about 4× the compute).",
        )
    cols[1 if kind == "cnn" else 0].slider(
        "Dropout before the output layer",
        0.0,
        0.9,
        step=0.05,
        key=_field_key("dropout"),
    )
    if kind == "transfer":
        cols = st.columns(2)
        cols[0].radio(
            "Initial weights",
            ("imagenet", "none"),
            key=_field_key("weights"),
            format_func=lambda w: {"imagenet": "ImageNet", "none": "random"}[w],
            help="ImageNet weights need a download once (about 10–100 MB), or a cached copy.",
        )
        cols[1].checkbox(
            "Freeze backbone",
            key=_field_key("freeze_backbone"),
            help="Train only the new head; the standard first step of transfer learning.",
        )
        cols[1].number_input(
            "Unfreeze the last N backbone layers",
            0,
            1000,
            step=1,
            key=_field_key("unfreeze_last"),
            disabled=not st.session_state[_field_key("freeze_backbone")],
            help="Fine-tune the top of a frozen backbone (BatchNorm layers stay frozen).",
        )
        if st.session_state[_field_key("weights")] == "imagenet" and input_shape:
            path = imagenet_weights_path(preset, transfer_input_size(input_shape))
            if not path.exists():
                st.info(
                    f"ImageNet weights for {preset} are not cached on this server ({path}). "
                    "Training will try to download them, which needs internet access; "
                    "choose random weights to train offline.",
                    icon=":material/cloud_download:",
                )


def _block_editor(i: int, n: int) -> None:
    with st.container(border=True):
        top = st.columns([6, 1, 1, 1], vertical_alignment="center")
        top[0].markdown(f"**Block {i + 1}**")
        top[1].button(
            "",
            icon=":material/arrow_upward:",
            key=f"{ui.MODEL_BLOCK}{i}_up",
            on_click=_edit_blocks,
            args=("up", i),
            disabled=i == 0,
            help="Move up",
        )
        top[2].button(
            "",
            icon=":material/arrow_downward:",
            key=f"{ui.MODEL_BLOCK}{i}_down",
            on_click=_edit_blocks,
            args=("down", i),
            disabled=i == n - 1,
            help="Move down",
        )
        top[3].button(
            "",
            icon=":material/delete:",
            key=f"{ui.MODEL_BLOCK}{i}_remove",
            on_click=_edit_blocks,
            args=("remove", i),
            disabled=n == 1,
            help="Remove this block",
        )
        c = st.columns(4)
        c[0].number_input("Filters", 1, 1024, step=8, key=_block_key(i, "filters"))
        c[1].number_input("Kernel", 1, 11, step=2, key=_block_key(i, "kernel"))
        c[2].number_input("Stride", 1, 4, step=1, key=_block_key(i, "stride"))
        c[3].number_input("Convs", 1, 4, step=1, key=_block_key(i, "convs"))
        c = st.columns([1, 1, 1, 1.2], vertical_alignment="bottom")
        c[0].selectbox("Activation", ACTIVATIONS, key=_block_key(i, "activation"))
        c[1].selectbox("Pooling", ("max", "avg", "none"), key=_block_key(i, "pool"))
        c[2].number_input("Dropout", 0.0, 0.9, step=0.05, key=_block_key(i, "dropout"))
        c[3].checkbox("Batch norm", key=_block_key(i, "batch_norm"))


def _custom_section() -> None:
    st.markdown("##### Conv blocks")
    st.caption(
        "Each block: conv layer(s) with 'same' padding (stride on the first), then pooling and dropout."
    )
    n = len(ui.model_config().blocks)
    for i in range(n):
        _block_editor(i, n)
    st.button(
        "Add block",
        icon=":material/add:",
        key=f"{ui.MODEL_BLOCK}add",
        on_click=_edit_blocks,
        args=("add",),
        disabled=n >= MAX_BLOCKS,
    )
    st.markdown("##### Head")
    c = st.columns(3)
    c[0].selectbox(
        "Pooling",
        HeadConfig.field_help("pooling")["choices"],
        key=_head_key("pooling"),
        format_func=lambda p: {"global_avg": "global average", "global_max": "global max"}.get(
            p, p
        ),
    )
    c[1].text_input(
        "Dense layers", key=_head_key("dense"), help="Hidden widths, e.g. 128, 64; empty for none."
    )
    c[2].number_input("Dropout before each dense", 0.0, 0.9, step=0.05, key=_head_key("dropout"))


def _config_from_widgets(preset: str):
    """The ModelConfig the widgets describe; ValueError names a bad field."""
    current = ui.model_config()
    s = st.session_state
    changes = {"preset": preset, "dropout": float(s[_field_key("dropout")])}
    kind = PRESET_INFO[preset].kind
    if kind == "cnn":
        changes["width"] = float(s[_field_key("width")])
    if kind == "transfer":
        changes |= {
            "weights": s[_field_key("weights")],
            "freeze_backbone": bool(s[_field_key("freeze_backbone")]),
            "unfreeze_last": int(s[_field_key("unfreeze_last")]),
        }
    if kind == "custom":
        head = HeadConfig(
            pooling=s[_head_key("pooling")],
            dense=_parse_dense(s[_head_key("dense")]),
            dropout=float(s[_head_key("dropout")]),
        )
        changes |= {"blocks": tuple(_blocks_from_widgets()), "head": head}
    return current.replace(**changes)


def _summary_section(cfg, input_shape, num_classes: int) -> None:
    try:
        check_model_config(cfg, input_shape, num_classes)
        summary = _summary(cfg.to_json(indent=None), tuple(input_shape), num_classes)
    except ModelConfigError as exc:
        ui.show_error(exc, "This model cannot be built")
        return
    for note in model_warnings(cfg, input_shape, num_classes):
        st.warning(note, icon=":material/warning:")
    batch = ui.train_config().batch_size
    m = [*st.columns(2), *st.columns(2)]
    m[0].metric(
        "Parameters",
        f"{summary.total_params:,}",
        help=f"{summary.trainable_params:,} trainable, {summary.non_trainable_params:,} not "
        "(BatchNorm statistics, frozen layers).",
    )
    m[1].metric("Trainable", f"{summary.trainable_params:,}")
    m[2].metric(
        "FLOPs per image",
        human_count(summary.flops_per_image),
        help="Estimate: 2 × the multiply-adds of conv and dense layers, forward pass.",
    )
    m[3].metric(
        f"Activations (batch {batch})",
        human_bytes(summary.activation_bytes(batch)),
        help="Estimate: every layer's float32 output for one training batch, "
        "roughly what the backward pass keeps in memory.",
    )
    st.plotly_chart(
        model_diagram_figure(summary.stages), key="model_diagram", config={"displayModeBar": False}
    )
    nested = any(r.depth for r in summary.rows)
    show_all = nested and st.toggle("Show the backbone's own layers", key=ui.MODEL_SHOW_BACKBONE)
    table = [
        record
        for row, record in zip(summary.rows, summary.table(), strict=True)
        if show_all or not row.depth
    ]
    st.dataframe(table, hide_index=True, height=min(38 + 35 * len(table), 420))


# ---------------------------------------------------------------- the page

ui.ensure_router()
st.title("Model")
_init_widgets(ui.model_config())

try:
    input_shape, num_classes = _dataset_shape(ui.data_config().to_json(indent=None))
except DatasetError as exc:
    input_shape, num_classes = None, None
    ui.show_error(exc, "The active dataset cannot be loaded, so no summary can be shown")

left, right = st.columns([5, 6], gap="large")
with left:
    preset = _preset_section()
    _options_section(preset, input_shape)
    if PRESET_INFO[preset].kind == "custom":
        _custom_section()
    try:
        cfg = _config_from_widgets(preset)
    except ValueError as exc:
        ui.show_error(exc)
        cfg = None
    else:
        shown = ui.describe_model(ui.model_config())
        st.session_state[ui.MODEL] = cfg
        st.session_state[ui.MODEL_SYNCED] = cfg
        if ui.describe_model(cfg) != shown:
            st.rerun()  # the sidebar, drawn before this page, names the model

with right:
    if input_shape is not None:
        st.markdown(
            f"**{PRESET_INFO[preset].title}** for {ui.describe_data(ui.data_config())}: "
            f"input {format_shape(input_shape)}, {num_classes} classes"
        )
        if cfg is not None:
            _summary_section(cfg, input_shape, num_classes)
