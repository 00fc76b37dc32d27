"""Dataset: choose where the images come from, then check what you got.

The form edits the session's DataConfig (ui.DATA), which every other page uses.
Below it: image size and channels, images per class per split, warnings
(imbalance, tiny classes, skipped files) and a sample grid per class. Uploads
(a .zip or a folder of class folders) are stored in the workspace by lib.data.uploads.
"""

import streamlit as st

from lib.config import DataConfig
from lib.data import DatasetError, load_dataset
from lib.data.archives import DEFAULT_LIMITS
from lib.data.dataset import dataset_warnings
from lib.data.images import EXTENSIONS
from lib.data.sources import data_roots
from lib.data.uploads import list_uploads, save_upload_archive, save_upload_files
from lib.plots.data import SPLIT_LABELS, class_counts_figure, sample_mosaic
from pages import ui

SOURCES = {
    "shapes": "Shapes — generated, needs nothing",
    "digits": "Digits — scikit-learn 8×8",
    "fashion_mnist": "Fashion-MNIST",
    "mnist": "MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "folder": "Folder on the server",
    "upload": "Uploaded images",
}
OWN_TEST = ("fashion_mnist", "mnist", "cifar10", "cifar100")  # sources with their own test split
COMMON = ("image_size", "color_mode", "val_fraction", "test_fraction", "seed", "max_per_class")
PER_SOURCE = {"shapes": ("shapes_count", "shapes_size"), "folder": ("path",), "upload": ("path",)}
PER_CLASS = 8  # sample images per class
MAX_SAMPLE_CLASSES = 12  # classes shown at once in the sample grid
IMAGE_TYPES = sorted({ext.lstrip(".") for ext in EXTENSIONS})


def _key(field: str) -> str:
    return ui.DATA_FIELD + field


def _init_widgets(cfg: DataConfig) -> None:
    """Widgets start from the active config (and again after visiting another page)."""
    st.session_state.setdefault(ui.DATA_SOURCE, cfg.source)
    for field in (*COMMON, "shapes_count", "shapes_size"):
        st.session_state.setdefault(_key(field), getattr(cfg, field))
    st.session_state.setdefault(_key("path"), cfg.path if cfg.source == "folder" else "")
    st.session_state.setdefault(ui.DATA_UPLOAD_PICK, cfg.path if cfg.source == "upload" else None)
    st.session_state.setdefault(ui.DATA_UPLOAD_MSG, None)
    st.session_state.setdefault(ui.DATA_SAMPLE_SEED, 0)


def _config_from_widgets() -> DataConfig:
    """The DataConfig the form describes; ValueError names a bad field."""
    source = st.session_state[ui.DATA_SOURCE]
    values = {f: st.session_state[_key(f)] for f in COMMON}
    values["source"] = source
    if source == "shapes":
        values["shapes_count"] = int(st.session_state[_key("shapes_count")])
        values["shapes_size"] = int(st.session_state[_key("shapes_size")])
    elif source == "folder":
        values["path"] = st.session_state[_key("path")].strip()
    elif source == "upload":
        values["path"] = st.session_state[ui.DATA_UPLOAD_PICK] or ""
    for f in ("image_size", "seed", "max_per_class"):
        values[f] = int(values[f])
    if source == "upload" and not values["path"]:
        raise ValueError("no upload chosen: upload a .zip or a folder below first")
    if source == "folder" and not values["path"]:
        raise ValueError("DataConfig.path: type the folder's path on the server")
    return DataConfig(**values)


def _apply() -> None:
    try:
        st.session_state[ui.DATA] = _config_from_widgets()
        st.session_state[ui.DATA_UPLOAD_MSG] = None
    except ValueError as exc:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", f"Settings refused: {exc}")


def _use_upload(upload_id: str) -> None:
    """Make a fresh upload the active dataset, keeping the other options."""
    st.session_state[ui.DATA_SOURCE] = "upload"
    st.session_state[ui.DATA_UPLOAD_PICK] = upload_id
    _apply()


def _save_zip() -> None:
    file = st.session_state.get(ui.DATA_ZIP)
    if file is None:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", "Choose a .zip file first.")
        return
    try:
        upload_id = save_upload_archive(file.getvalue(), file.name)
    except ValueError as exc:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", f"Upload refused: {exc}")
        return
    _use_upload(upload_id)
    st.session_state[ui.DATA_UPLOAD_MSG] = ("success", f"Stored {file.name} as {upload_id}.")


def _save_dir() -> None:
    files = st.session_state.get(ui.DATA_DIR) or []
    if not files:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", "Choose a folder first.")
        return
    try:
        upload_id = save_upload_files([(f.name, f.getvalue()) for f in files])
    except ValueError as exc:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", f"Upload refused: {exc}")
        return
    _use_upload(upload_id)
    st.session_state[ui.DATA_UPLOAD_MSG] = ("success", f"Stored {len(files)} files as {upload_id}.")


def _reshuffle() -> None:
    st.session_state[ui.DATA_SAMPLE_SEED] += 1


def _upload_label(manifest: dict) -> str:
    classes = manifest.get("classes", [])
    return f"{manifest['id']} · {len(classes)} classes · {manifest.get('images', 0)} images"


def _form(uploads: list[dict]) -> None:
    source = st.selectbox("Source", list(SOURCES), format_func=SOURCES.get, key=ui.DATA_SOURCE)
    with st.form(ui.DATA_FORM, border=False):
        if source == "shapes":
            c1, c2 = st.columns(2)
            c1.number_input("Images", 60, 200_000, step=600, key=_key("shapes_count"),
                            help="Generated images in all, spread evenly over 6 shapes.")  # fmt: skip
            c2.number_input("Side (px)", 16, 256, step=16, key=_key("shapes_size"))
        elif source == "folder":
            st.text_input("Folder on the server", key=_key("path"), placeholder="/data/flowers",
                          help="One sub-folder per class, images inside (any depth). Read in "
                               "place, never loaded whole. Readable folders: "
                               + ", ".join(str(r) for r in data_roots())
                               + " (set KESTREL_DATA_ROOTS to share others).")  # fmt: skip
        elif source == "upload":
            ids = [m["id"] for m in uploads]
            labels = {m["id"]: _upload_label(m) for m in uploads}
            if st.session_state.get(ui.DATA_UPLOAD_PICK) not in ids:
                st.session_state[ui.DATA_UPLOAD_PICK] = ids[0] if ids else None
            st.selectbox("Upload", ids, format_func=labels.get, key=ui.DATA_UPLOAD_PICK,
                         placeholder="nothing uploaded yet — use 'Upload images' below")  # fmt: skip
        elif source in OWN_TEST:
            st.caption("Uses its own test split. Downloaded once by Keras into ~/.keras/datasets.")
        c1, c2 = st.columns(2)
        c1.number_input("Resize to (px, 0 keeps)", 0, 512, step=8, key=_key("image_size"),
                        help="Square side every image is resized to. 0 keeps the source size.")  # fmt: skip
        c2.selectbox("Channels", ("auto", "rgb", "grayscale"), key=_key("color_mode"),
                     format_func={"auto": "as the source", "rgb": "RGB (3)",
                                  "grayscale": "grayscale (1)"}.get)  # fmt: skip
        c1, c2 = st.columns(2)
        c1.slider("Validation share", 0.0, 0.5, step=0.05, key=_key("val_fraction"))
        c2.slider("Test share", 0.0, 0.5, step=0.05, key=_key("test_fraction"),
                  disabled=source in OWN_TEST,
                  help="Ignored for sources with their own test split.")  # fmt: skip
        c1, c2 = st.columns(2)
        c1.number_input("Seed", 0, 2**31 - 1, key=_key("seed"), help="Splits (and shapes).")
        c2.number_input("Max per class (0 = all)", 0, 10_000_000, step=100,
                        key=_key("max_per_class"))  # fmt: skip
        st.form_submit_button("Use this dataset", type="primary", key=ui.DATA_APPLY,
                              on_click=_apply)  # fmt: skip


def _upload_section() -> None:
    limit_mb = st.get_option("server.maxUploadSize")
    st.caption(
        f"A .zip or a folder with one sub-folder per class (cats/, dogs/ …). Up to {limit_mb} MB "
        f"per upload, {DEFAULT_LIMITS.max_entries:,} files. Files are checked and stored under new "
        "names in the workspace; unreadable ones are listed, not used."
    )
    zip_col, dir_col = st.columns(2)
    with zip_col:
        st.file_uploader("Zip archive", type=["zip"], key=ui.DATA_ZIP)
        st.button("Store zip", key=ui.DATA_ZIP_SAVE, on_click=_save_zip)
    with dir_col:
        st.file_uploader("Folder", type=IMAGE_TYPES, accept_multiple_files="directory",
                         key=ui.DATA_DIR)  # fmt: skip
        st.button("Store folder", key=ui.DATA_DIR_SAVE, on_click=_save_dir)


def _summary(ds, cfg: DataConfig) -> None:
    counts = ds.counts()
    h, w, c = ds.image_shape
    top = st.columns(3)
    top[0].metric("Classes", ds.num_classes)
    top[1].metric("Image size", f"{h}×{w}")
    top[2].metric("Channels", f"{c} ({'RGB' if c == 3 else 'gray'})")
    bottom = st.columns(3)
    for col, split in zip(bottom, ("train", "val", "test"), strict=True):
        col.metric(SPLIT_LABELS[split].capitalize(), f"{int(counts[split].sum()):,}")
    if ds.test_is_own:
        st.caption("The test split is the source's own; validation is cut from its training set.")
    for note in ds.notes:
        st.info(note, icon=":material/info:")
    for warning in dataset_warnings(ds):
        st.warning(warning, icon=":material/warning:")
    if ds.skipped:
        with st.expander(f"Skipped files ({len(ds.skipped)})"):
            rows = [{"file": f, "reason": r} for f, r in ds.skipped[:2000]]
            st.dataframe(rows, hide_index=True, width="stretch")
            if len(ds.skipped) > 2000:
                st.caption(f"… and {len(ds.skipped) - 2000} more.")


def _samples(ds) -> None:
    splits = [s for s in ("train", "val", "test") if len(ds.splits[s])]
    if st.session_state.get(ui.DATA_SAMPLE_SPLIT) not in splits:
        st.session_state[ui.DATA_SAMPLE_SPLIT] = splits[0]
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    split = left.segmented_control("Split", splits, format_func=SPLIT_LABELS.get,
                                   key=ui.DATA_SAMPLE_SPLIT)  # fmt: skip
    right.button("Other samples", key=ui.DATA_RESHUFFLE, on_click=_reshuffle)
    split = split or splits[0]
    classes = list(range(ds.num_classes))
    if ds.num_classes > MAX_SAMPLE_CLASSES:
        names = st.multiselect("Classes shown", ds.class_names,
                               default=ds.class_names[:MAX_SAMPLE_CLASSES],
                               max_selections=MAX_SAMPLE_CLASSES, key=ui.DATA_SAMPLE_CLASSES)  # fmt: skip
        classes = [ds.class_names.index(n) for n in names]
    picks = ds.sample_indices(split, PER_CLASS, st.session_state[ui.DATA_SAMPLE_SEED])
    counts = ds.counts()[split]
    images = ds.splits[split].images
    grid = st.columns(2)
    for i, k in enumerate(classes):
        with grid[i % 2]:
            if len(picks[k]):
                st.image(sample_mosaic(images(picks[k])),
                         caption=f"{ds.class_names[k]} · {int(counts[k])} images")  # fmt: skip
            else:
                st.caption(f"{ds.class_names[k]}: no images in this split")


ui.ensure_router()
st.title("Dataset")
active = ui.data_config()
_init_widgets(active)
uploads = list_uploads()

form_col, info_col = st.columns([2, 3], gap="large")
with form_col:
    _form(uploads)
    with st.expander("Upload images", expanded=st.session_state[ui.DATA_SOURCE] == "upload"):
        _upload_section()
    message = st.session_state[ui.DATA_UPLOAD_MSG]
    if message:
        kind, text = message
        (st.success if kind == "success" else st.error)(text)

with info_col:
    cfg = ui.data_config()
    st.markdown(f"**Active:** {ui.describe_data(cfg)}")
    try:
        with st.spinner("Loading the dataset…"):
            dataset = load_dataset(cfg)
    except DatasetError as exc:
        ui.show_error(exc, "Cannot load the dataset")
        dataset = None
    if dataset is not None:
        _summary(dataset, cfg)
        st.plotly_chart(class_counts_figure(dataset.class_names, dataset.counts()),
                        key=ui.DATA_CHART, config={"displayModeBar": False})  # fmt: skip

if dataset is not None:
    st.subheader("Samples")
    _samples(dataset)
