"""Model: pick a preset or build a CNN, and see what it costs for the active dataset.

The widgets edit the draft's ModelConfig (pages.forms binds them). The summary (layers,
parameters, FLOPs, activation memory, block diagram) is computed by
lib.model_summary for the active dataset's image shape and class count, and
cached per (config, shape), so only a changed config builds a model.
"""

import dataclasses

import streamlit as st

from lib import preflight, runs
from lib.architectures import (
    PRESET_INFO,
    ModelConfigError,
    check_model_config,
    model_warnings,
)
from lib.config import MAX_BLOCKS, TRANSFER_PRESETS, ConvBlock, HeadConfig, ModelConfig
from lib.data import DatasetError, load_dataset
from lib.model_summary import format_shape, human_bytes, human_count, summarize_config
from lib.plots.model import model_diagram_figure
from pages import forms, ui


@st.cache_data(max_entries=64, show_spinner="Building the model…")
def _summary(cfg_json: str, input_shape: tuple, num_classes: int):
    return summarize_config(ModelConfig.from_json(cfg_json), input_shape, num_classes)


@st.cache_resource(max_entries=64, show_spinner=False)
def _diagram(cfg_json: str, input_shape: tuple, num_classes: int):
    # Shared, never changed: st.plotly_chart only reads a figure (to_dict, then JSON), and
    # building one validates every box and label (most of a warm rerun of this page).
    return model_diagram_figure(_summary(cfg_json, input_shape, num_classes).stages)


@st.cache_data(max_entries=8, show_spinner="Loading the dataset…")
def _dataset_shape(data_json: str) -> tuple[tuple[int, int, int], int]:
    from lib.config import DataConfig

    ds = load_dataset(DataConfig.from_json(data_json))
    return tuple(ds.image_shape), len(ds.class_names)


# ---------------------------------------------------------------- the draft


def _block_prefix(i: int) -> str:
    return f"{ui.MODEL_BLOCK}{i}_"


BLOCK_FIELDS = tuple(f.name for f in dataclasses.fields(ConvBlock))
HEAD_FIELDS = tuple(f.name for f in dataclasses.fields(HeadConfig))
SCALARS = (
    "preset", "weights", "freeze_backbone", "unfreeze_last", "start_from", "width", "dropout",
)  # fmt: skip


def _seed_custom(draft, force: bool) -> None:
    """The block editor and the head edit ModelConfig.blocks and .head; seed them from the draft."""
    cfg = draft.model
    for i, block in enumerate(cfg.blocks):
        forms.seed_widgets(ConvBlock, block, _block_prefix(i), BLOCK_FIELDS, force=force)
    forms.seed_widgets(HeadConfig, cfg.head, ui.MODEL_HEAD, HEAD_FIELDS, force=force)


def _from_widgets(draft):
    """The draft with the ModelConfig the widgets describe; ValueError names a bad field."""
    cfg = draft.model
    cfg = forms.read_widgets(ModelConfig, cfg, ui.MODEL_FIELD, SCALARS)
    blocks = tuple(
        forms.read_widgets(ConvBlock, block, _block_prefix(i), BLOCK_FIELDS)
        for i, block in enumerate(draft.model.blocks)
    )
    head = forms.read_widgets(HeadConfig, cfg.head, ui.MODEL_HEAD, HEAD_FIELDS)
    if cfg.preset not in TRANSFER_PRESETS:
        cfg = cfg.replace(start_from="")  # a CNN from scratch: nothing to start from
    return draft.with_parts(model=cfg.replace(blocks=blocks, head=head))


def _start_runs(preset: str) -> dict[str, str]:
    """Completed runs of ``preset`` a fine-tuning run can start from: {run id: label}."""
    return {
        v.run_id: runs.run_label(v)
        for v in runs.completed_views()
        if v.config.model.preset == preset
    }


def _commit() -> None:
    forms.commit("model", build=_from_widgets)


def _edit_blocks(action: str, i: int = 0) -> None:
    """Button callback: add, remove or move a block (the widgets' values first)."""
    try:
        draft = _from_widgets(ui.draft())
    except ValueError:
        draft = ui.draft()
    blocks = list(draft.model.blocks)
    if action == "add":
        blocks.append(blocks[-1])
    elif action == "remove" and len(blocks) > 1:
        blocks.pop(i)
    elif action == "up" and i > 0:
        blocks[i - 1], blocks[i] = blocks[i], blocks[i - 1]
    elif action == "down" and i < len(blocks) - 1:
        blocks[i + 1], blocks[i] = blocks[i], blocks[i + 1]
    new = draft.with_parts(model=draft.model.replace(blocks=tuple(blocks)))
    forms.update_draft(lambda _d: new)


# ---------------------------------------------------------------- sections


def _field(name: str, container=None, **kwargs):
    return forms.field(ModelConfig, name, "model", container=container, on_change=_commit, **kwargs)


def _preset_section() -> str:
    preset = _field("preset", format_func=lambda p: PRESET_INFO[p].title)
    st.caption(PRESET_INFO[preset].description)
    return preset


def _options_section(preset: str, input_shape) -> None:
    kind = PRESET_INFO[preset].kind
    cols = st.columns(2)
    if kind == "cnn":
        _field("width", cols[0])
    _field("dropout", cols[1 if kind == "cnn" else 0])
    if kind == "transfer":
        cols = st.columns(2)
        _field(
            "weights",
            cols[0],
            options=("imagenet", "none"),
            disabled=bool(st.session_state.get(ui.MODEL_FIELD + "start_from")),
        )
        _field("freeze_backbone", cols[1])
        _field(
            "unfreeze_last",
            cols[1],
            disabled=not st.session_state[ui.MODEL_FIELD + "freeze_backbone"],
        )
        _start_from_field(preset)
        if input_shape:
            problem = preflight.weights_problem(ui.model_config(), tuple(input_shape))
            if problem:
                st.warning(problem, icon=":material/cloud_off:")


def _start_from_field(preset: str) -> None:
    """Fine-tuning: start from a completed run of this architecture, or from new weights."""
    choices = _start_runs(preset)
    current = st.session_state.get(ui.MODEL_FIELD + "start_from", "")
    if current and current not in choices:
        choices[current] = f"{current} (not a completed {preset} run: pick another)"
    _field(
        "start_from",
        options=["", *choices],
        format_func=lambda rid: choices.get(rid, rid) if rid else "none: new weights",
    )
    if current:
        st.caption(
            "This run starts from that run's trained backbone and head. Unfreeze the last N "
            "layers and use a low learning rate (about 1e-5) to fine-tune them on the images."
        )


def _block_editor(i: int, n: int) -> None:
    prefix = _block_prefix(i)

    def block_field(name: str, container) -> None:
        forms.field(ConvBlock, name, "model", prefix=prefix, container=container, on_change=_commit)

    with st.container(border=True):
        top = st.columns([6, 1, 1, 1], vertical_alignment="center")
        top[0].markdown(f"**Block {i + 1}**")
        top[1].button("", icon=":material/arrow_upward:", key=f"{prefix}up",
                      on_click=_edit_blocks, args=("up", i), disabled=i == 0, help="Move up")  # fmt: skip
        top[2].button("", icon=":material/arrow_downward:", key=f"{prefix}down",
                      on_click=_edit_blocks, args=("down", i), disabled=i == n - 1,
                      help="Move down")  # fmt: skip
        top[3].button("", icon=":material/delete:", key=f"{prefix}remove",
                      on_click=_edit_blocks, args=("remove", i), disabled=n == 1,
                      help="Remove this block")  # fmt: skip
        c = st.columns(4)
        for col, name in zip(c, ("filters", "kernel", "stride", "convs"), strict=True):
            block_field(name, col)
        c = st.columns([1, 1, 1, 1.2], vertical_alignment="bottom")
        for col, name in zip(c, ("activation", "pool", "dropout", "batch_norm"), strict=True):
            block_field(name, col)


def _custom_section() -> None:
    forms.mark_bound(ModelConfig, "blocks")
    forms.mark_bound(ModelConfig, "head")
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
    for col, name in zip(c, ("pooling", "dense", "dropout"), strict=True):
        forms.field(HeadConfig, name, "model", prefix=ui.MODEL_HEAD, container=col,
                    on_change=_commit)  # fmt: skip


def _summary_section(cfg, input_shape, num_classes: int) -> None:
    try:
        check_model_config(cfg, input_shape, num_classes)
        key = (cfg.to_json(indent=None), tuple(input_shape), num_classes)
        summary = _summary(*key)
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
    st.plotly_chart(_diagram(*key), key="model_diagram", config={"displayModeBar": False})
    nested = any(r.depth for r in summary.rows)
    show_all = False
    if nested:
        ui.kept(ui.MODEL_SHOW_BACKBONE, (False, True), False)
        show_all = st.toggle("Show the backbone's own layers", key=ui.MODEL_SHOW_BACKBONE)
        ui.remember(ui.MODEL_SHOW_BACKBONE)
    table = [
        record
        for row, record in zip(summary.rows, summary.table(), strict=True)
        if show_all or not row.depth
    ]
    st.dataframe(table, hide_index=True, height=min(38 + 35 * len(table), 420))


# ---------------------------------------------------------------- the page

ui.ensure_router()
st.title("Model")
_draft = forms.bind("model")
_seeded = st.session_state[ui.FORM_SEEDED]
_seed_custom(_draft, force=_seeded.get("model_custom") != _draft.revision)
_seeded["model_custom"] = _draft.revision

try:
    input_shape, num_classes = _dataset_shape(_draft.data.to_json(indent=None))
except DatasetError as exc:
    input_shape, num_classes = None, None
    ui.show_error(exc, "The dataset in use cannot be loaded, so no summary can be shown")

left, right = st.columns([5, 6], gap="large")
with left:
    forms.show_notice()
    preset = _preset_section()
    _options_section(preset, input_shape)
    if PRESET_INFO[preset].kind == "custom":
        _custom_section()
    forms.show_refusal("model")
    cfg = ui.model_config()

with right:
    if input_shape is not None:
        st.markdown(
            f"**{PRESET_INFO[preset].title}** for {ui.describe_data(_draft.data)}: "
            f"input {format_shape(input_shape)}, {num_classes} classes"
        )
        _summary_section(cfg, input_shape, num_classes)
