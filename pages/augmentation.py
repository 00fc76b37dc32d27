"""Augmentation: pick random training transforms and see them on real images.

The form edits the session's AugmentConfig (ui.AUGMENT). The preview runs the
very layers training will use (lib.augment.preview) with a fixed seed, on a few
images of the active dataset or on an uploaded image, and the Keras code box
prints the same layers as plain Keras.
"""

import contextlib

import numpy as np
import streamlit as st

from lib import augment
from lib.config import AugmentConfig
from lib.data import DatasetError, ImageDecodeError, decode_image, load_dataset
from pages import ui

SAMPLES = 8  # preview rows from the dataset
VARIANTS = 4  # augmented copies per row
PREVIEW_SEED = 0  # fixed, so the same settings always draw the same grid
UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"]

# (group, field, label, help): the UI's words for each AugmentConfig field.
OPTIONS = (
    ("Geometry", "horizontal_flip", "Horizontal flip", "Mirror left–right, for half the images."),
    (
        "Geometry",
        "vertical_flip",
        "Vertical flip",
        "Mirror top–bottom, for half the images. Only for data with no 'up' (cells, satellite images).",
    ),
    (
        "Geometry",
        "rotation",
        "Rotation",
        "Largest rotation, as a share of a full turn: 0.05 is ±18°.",
    ),
    ("Geometry", "zoom", "Zoom", "Largest zoom in or out, as a share of the size: 0.1 is 90–110%."),
    (
        "Geometry",
        "translate",
        "Shift",
        "Largest move sideways and up/down, as a share of the size.",
    ),
    (
        "Geometry",
        "crop",
        "Random crop",
        "Cut away up to this share of each side at a random place, then stretch back to full size.",
    ),
    ("Colour", "contrast", "Contrast", "Largest contrast change: 0.2 scales contrast by 0.8–1.2."),
    (
        "Colour",
        "brightness",
        "Brightness",
        "Largest brightness change, as a share of the pixel range.",
    ),
    ("Colour", "saturation", "Saturation", "How far colours may fade to grey or grow more vivid."),
    ("Colour", "hue", "Hue", "Largest shift of the colour wheel, as a share of a turn."),
    (
        "Noise and erasing",
        "noise",
        "Gaussian noise",
        "Noise strength (standard deviation) as a share of 255.",
    ),
    (
        "Noise and erasing",
        "erasing",
        "Random erasing",
        "Half the images get a noise patch covering up to this share of the image (cutout).",
    ),
    (
        "Mixing (whole batch)",
        "mixup",
        "MixUp",
        "Blend each image and its label with another image of the batch; the value is Beta(α, α)'s α, 0 is off.",
    ),
    (
        "Mixing (whole batch)",
        "cutmix",
        "CutMix",
        "Paste a patch of another image of the batch, labels mixed by area; α as for MixUp, 0 is off.",
    ),
    (
        "RandAugment",
        "randaugment_ops",
        "RandAugment ops",
        "Apply this many transforms picked at random from 11 (shear, solarize, equalize…); 0 is off.",
    ),
    (
        "RandAugment",
        "randaugment_magnitude",
        "RandAugment strength",
        "How strong each RandAugment transform is.",
    ),
)
FIELDS = tuple(f for _, f, _, _ in OPTIONS)


def _key(field: str) -> str:
    return ui.AUG_FIELD + field


def _set_widgets(cfg: AugmentConfig) -> None:
    for field in FIELDS:
        st.session_state[_key(field)] = getattr(cfg, field)


def _config_from_widgets() -> AugmentConfig:
    """The config the form's widget values describe; raises ValueError naming a bad field."""
    values = {f: st.session_state[_key(f)] for f in FIELDS}
    if isinstance(values["randaugment_ops"], float) and values["randaugment_ops"].is_integer():
        values["randaugment_ops"] = int(values["randaugment_ops"])
    cfg = AugmentConfig(**values)
    return cfg.replace(preset=augment.matching_preset(cfg))


def _sync_config() -> None:
    """Store the form's settings before the script runs, so app.py's sidebar shows them."""
    with contextlib.suppress(ValueError):  # the page itself reports it, naming field and range
        st.session_state[ui.AUGMENT] = _config_from_widgets()


def _apply_preset() -> None:
    name = st.session_state[ui.AUG_PRESET]
    if name in augment.PRESETS:
        _set_widgets(augment.PRESETS[name])
    _sync_config()


def _apply_json() -> None:
    st.session_state[ui.AUG_JSON_ERROR] = None
    try:
        cfg = AugmentConfig.from_json(st.session_state[ui.AUG_JSON])
    except ValueError as exc:
        st.session_state[ui.AUG_JSON_ERROR] = str(exc)
        return
    _set_widgets(cfg)
    _sync_config()


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
    st.selectbox(
        "Preset",
        (*augment.PRESETS, "custom"),
        key=ui.AUG_PRESET,
        on_change=_apply_preset,
        help="Start from a preset, then adjust; any change makes it 'custom'.",
    )
    group = None
    for grp, field, label, text in OPTIONS:
        if grp != group:
            group = grp
            st.markdown(f"**{grp}**")
        reason = disabled.get(field)
        if field == "randaugment_magnitude" and not st.session_state[_key("randaugment_ops")]:
            reason = "set RandAugment ops above 0 first"
        meta = AugmentConfig.field_help(field)
        if "range" not in meta:
            st.toggle(
                label, key=_key(field), help=text, disabled=bool(reason), on_change=_sync_config
            )
        elif field == "randaugment_ops":
            lo, hi = meta["range"]
            st.slider(
                label,
                lo,
                hi,
                step=1,
                key=_key(field),
                help=text,
                disabled=bool(reason),
                on_change=_sync_config,
            )
        else:
            lo, hi = meta["range"]
            st.slider(
                label,
                float(lo),
                float(hi),
                step=0.01,
                key=_key(field),
                help=text,
                disabled=bool(reason),
                on_change=_sync_config,
            )
        if reason:
            st.caption(f"Not used: {reason}.")
        elif field in notes and st.session_state[_key(field)]:
            st.caption(f":orange[{notes[field]}]")


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
    st.session_state[ui.AUG_SAMPLE_SEED] = 0
    st.session_state[ui.AUG_JSON_ERROR] = None
    augment.warm_up()  # the first preview with a transform on needs Keras: load it now
for _field in FIELDS:  # widget state is dropped while the page is away: refill it
    if _key(_field) not in st.session_state:
        st.session_state[_key(_field)] = getattr(ui.augment_config(), _field)

# Values can reach the widgets from outside the form (session state, a script);
# check them before drawing, so a bad one is a message, not a widget exception.
try:
    config = _config_from_widgets()
except ValueError as exc:
    ui.show_error(exc, "Setting refused")
    _set_widgets(ui.augment_config())
    config = ui.augment_config()
st.session_state[ui.AUGMENT] = config
st.session_state[ui.AUG_PRESET] = config.preset

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

# The form's widgets have run: read the final values once more (they are valid by
# construction now) and keep them as the session's recipe part.
config = _config_from_widgets()
st.session_state[ui.AUGMENT] = config

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
    st.text_area(
        "AugmentConfig",
        value=config.to_json(),
        key=ui.AUG_JSON,
        height=200,
        help="Edit or paste settings, then load them into the form.",
    )
    st.button("Load into the form", key=ui.AUG_JSON_APPLY, on_click=_apply_json)
    if st.session_state[ui.AUG_JSON_ERROR]:
        ui.show_error(ValueError(st.session_state[ui.AUG_JSON_ERROR]), "Settings refused")
