"""Augmentation: pick random training transforms and see them on real images.

The form edits the session's AugmentConfig (ui.AUGMENT). The preview runs the
very layers training will use (lib.augment.preview) with a fixed seed, on a few
images of the active dataset or on an uploaded image, and the Keras code box
prints the same layers as plain Keras.
"""

import dataclasses

import numpy as np
import streamlit as st

from lib import augment
from lib.config import AugmentConfig
from lib.data import DatasetError, ImageDecodeError, decode_image, load_dataset
from lib.errors import KestrelError
from pages import forms, ui

SAMPLES = 8  # preview rows from the dataset
VARIANTS = 4  # augmented copies per row
PREVIEW_SEED = 0  # fixed, so the same settings always draw the same grid
UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"]

FIELDS = tuple(f.name for f in dataclasses.fields(AugmentConfig) if f.name != "preset")


def _with_matching_preset(draft):
    """The draft with the widgets' options, named after the preset they equal (or custom)."""
    cfg = forms.read_widgets(AugmentConfig, draft.augment, ui.AUG_FIELD, FIELDS)
    return draft.with_parts(augment=cfg.replace(preset=augment.matching_preset(cfg)))


def _commit() -> None:
    forms.commit("augment", build=_with_matching_preset)


def _apply_preset() -> None:
    name = st.session_state[ui.AUG_PRESET]
    if name in augment.PRESETS:
        forms.update_draft(lambda d: d.with_parts(augment=augment.PRESETS[name]))


def _apply_json() -> None:
    st.session_state[ui.AUG_JSON_ERROR] = None
    try:
        cfg = AugmentConfig.from_json(st.session_state[ui.AUG_JSON])
    except ValueError as exc:
        st.session_state[ui.AUG_JSON_ERROR] = str(exc)
        return
    cfg = cfg.replace(preset=augment.matching_preset(cfg))
    forms.update_draft(lambda d: d.with_parts(augment=cfg), "Loaded the settings into the form.")


def _new_samples() -> None:
    st.session_state[ui.AUG_SAMPLE_SEED] += 1


@st.cache_data(max_entries=32, show_spinner=False)
def _preview_picture(cfg_json: str, images: np.ndarray, cell: int) -> np.ndarray:
    # Deterministic for (settings, images), so a cached grid is the grid.
    grid = augment.preview(AugmentConfig.from_json(cfg_json), images, VARIANTS, PREVIEW_SEED)
    return augment.montage(grid, cell=cell)


def _dataset_samples(ds, sample_seed: int) -> tuple[np.ndarray, list[str]]:
    split = ds.splits["train"] if len(ds.splits["train"]) else ds.splits["test"]
    rng = np.random.default_rng(sample_seed)
    idx = np.sort(rng.choice(len(split), size=min(SAMPLES, len(split)), replace=False))
    return split.images(idx), [ds.class_names[i] for i in split.labels[idx]]


def _form(disabled: dict[str, str], notes: dict[str, str]) -> None:
    st.session_state[ui.AUG_PRESET] = ui.augment_config().preset
    forms.mark_bound(AugmentConfig, "preset")
    st.selectbox(
        forms.label(AugmentConfig, "preset"),
        (*augment.PRESETS, "custom"),
        key=ui.AUG_PRESET,
        on_change=_apply_preset,
        help="Start from a preset, then adjust; any change makes it 'custom'.",
    )
    group = None
    for field in FIELDS:
        grp = forms.meta(AugmentConfig, field).get("group")
        if grp != group:
            group = grp
            st.markdown(f"**{grp}**")
        reason = disabled.get(field)
        if (
            field == "randaugment_magnitude"
            and not st.session_state[ui.AUG_FIELD + "randaugment_ops"]
        ):
            reason = "set RandAugment ops above 0 first"
        forms.field(AugmentConfig, field, "augment", disabled=bool(reason), on_change=_commit)
        if reason:
            st.caption(f"Not used: {reason}.")
        elif field in notes and st.session_state[ui.AUG_FIELD + field]:
            st.caption(f":orange[{notes[field]}]")
    forms.show_refusal("augment")


def _upload_preview(cfg: AugmentConfig) -> None:
    st.markdown("**Preview on your own image**")
    upload = st.file_uploader(
        "An image file", type=UPLOAD_TYPES, key=ui.AUG_UPLOAD, label_visibility="collapsed"
    )
    if upload is None:
        st.caption("Upload a photo to see the same transforms on it.")
        return
    try:
        image = decode_image(upload.getvalue(), upload.name)
    except ImageDecodeError as exc:
        ui.show_error(exc, "Cannot preview this upload")
        return
    image = augment.fit_for_preview(image)
    picture = _preview_picture(cfg.to_json(), image[None], 160)
    st.image(picture, caption=f"{upload.name}: original, then {VARIANTS} variants")


ui.ensure_router()
st.title("Augmentation")
st.caption(
    "Random changes to training images, so the model learns what matters and not "
    "where or how bright it is. Applied in training only, never when evaluating or predicting."
)

if ui.AUG_SAMPLE_SEED not in st.session_state:
    # The preview's images are a view value: a reload shows the same ones.
    seed = ui.recall(ui.AUG_SAMPLE_SEED, 0)
    st.session_state[ui.AUG_SAMPLE_SEED] = seed if isinstance(seed, int) else 0
    st.session_state[ui.AUG_JSON_ERROR] = None
    augment.warm_up()  # the first preview with a transform on needs Keras: load it now
forms.bind("augment")
forms.show_notice()

data_cfg = ui.data_config()
try:
    dataset = load_dataset(data_cfg)
except DatasetError as exc:
    dataset = None
    ui.show_error(exc, "Cannot load the active dataset")
image_shape = dataset.image_shape if dataset is not None else (64, 64, 3)
disabled = augment.disabled_options(image_shape)

left, right = st.columns([2, 3], gap="large")
with left:
    _form(disabled, augment.option_notes(data_cfg.source))

config = ui.augment_config()  # the draft: what the form shows and what trains

with right:
    st.subheader("Preview")
    if dataset is not None:
        st.caption(
            f"{ui.describe_data(data_cfg)}: each row is a training image, then {VARIANTS} "
            "random variants from the very layers training uses. The seed is fixed, "
            "so the same settings show the same grid."
        )
        st.button(
            "New samples",
            key=ui.AUG_NEW_SAMPLES,
            on_click=_new_samples,
            icon=":material/shuffle:",
            help="Show other images of the dataset.",
        )
        ui.remember(ui.AUG_SAMPLE_SEED)
        images, labels = _dataset_samples(dataset, st.session_state[ui.AUG_SAMPLE_SEED])
        with st.spinner("Augmenting…"):
            picture = _preview_picture(config.to_json(), images, 96)
        st.image(picture, caption="Rows: " + ", ".join(labels))
        if config.mixup or config.cutmix:
            st.caption(
                "MixUp/CutMix mix each copy with another image of the preview, as in a batch."
            )
    _upload_preview(config)

st.subheader("Keras code")
st.caption("The same layers and seeds as plain Keras 3: copy it into your own script.")
st.code(augment.keras_code(config, image_shape), language="python", height=420)

with st.expander("Settings as JSON"):
    stale = st.session_state.get(ui.AUG_JSON_REVISION) != ui.draft().revision
    if stale or ui.AUG_JSON not in st.session_state:
        st.session_state[ui.AUG_JSON] = config.to_json()  # the box follows the draft
        st.session_state[ui.AUG_JSON_REVISION] = ui.draft().revision
    st.text_area(
        "AugmentConfig",
        key=ui.AUG_JSON,
        height=200,
        help="Edit or paste settings, then load them into the form.",
    )
    st.button("Load into the form", key=ui.AUG_JSON_APPLY, on_click=_apply_json)
    if st.session_state[ui.AUG_JSON_ERROR]:
        ui.show_error(KestrelError(st.session_state[ui.AUG_JSON_ERROR]), "Settings refused")
