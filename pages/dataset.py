"""Dataset: choose where the images come from, then check what you got.

The options edit the draft's DataConfig (pages.forms binds each widget to its
field; a change is in use the moment it is made). Below them: image size and
channels, images per class per split, warnings (imbalance, tiny classes,
skipped files) and a sample grid per class. Uploads (a .zip or a folder of class
folders) are stored in the workspace by lib.data.uploads under a generated id and
shown by their own name.
"""

import time

import streamlit as st

from lib import datasets as built_store
from lib.config import DataConfig
from lib.data import DatasetError, load_dataset
from lib.data import uploads as upload_store
from lib.data.archives import DEFAULT_LIMITS
from lib.data.dataset import dataset_warnings
from lib.data.images import EXTENSIONS
from lib.data.sources import data_roots
from lib.errors import KestrelError
from lib.plots.data import SPLIT_LABELS, class_counts_figure, sample_mosaic
from lib.text import escape_markdown
from pages import forms, ui

OWN_TEST = ("fashion_mnist", "mnist", "cifar10", "cifar100")  # sources with their own test split
COMMON = ("image_size", "color_mode", "val_fraction", "test_fraction", "seed", "max_per_class")
PER_CLASS = 8  # sample images per class
MAX_SAMPLE_CLASSES = 12  # classes shown at once in the sample grid
IMAGE_TYPES = sorted({ext.lstrip(".") for ext in EXTENSIONS})
PENDING = "dataset_pending_source"  # why the picked source is not in use yet, or None
PATH_KEY = ui.DATA_FIELD + "path"
TYPED_PATH = ("folder", "csv_files", "pixel_csv")  # sources whose path is typed in the box
PATH_HINTS = {  # source: (placeholder, help)
    "folder": ("/data/flowers", "One sub-folder per class, images inside (any depth). Read in "
               "place, never loaded whole."),
    "csv_files": ("/data/flowers/labels.csv", "A CSV or TSV of file,label[,split] rows (a "
                  "header line is optional). Files are relative to the labels file's folder, "
                  "or to a folder named like it (train.csv → train/)."),
    "pixel_csv": ("/data/mnist_train.csv", "One image per row: a label column, then the "
                  "pixel values 0–255 row by row (MNIST-style label,pixel0,…,pixelN)."),
}  # fmt: skip


def _seed_path(draft, force: bool) -> None:
    """The folder box and the upload picker both edit DataConfig.path; seed the right one."""
    data = draft.data
    if force or PATH_KEY not in st.session_state:
        st.session_state[PATH_KEY] = data.path if data.source in TYPED_PATH else ""
    if force or ui.DATA_UPLOAD_PICK not in st.session_state:
        st.session_state[ui.DATA_UPLOAD_PICK] = data.path if data.source == "upload" else None
    if force or ui.DATA_BUILT_PICK not in st.session_state:
        st.session_state[ui.DATA_BUILT_PICK] = data.path if data.source == "dataset" else None


def _build(draft):
    """The draft with the DataConfig the widgets describe; ValueError names a bad field."""
    s = st.session_state
    source = s[ui.DATA_FIELD + "source"]
    base = draft.data.replace(source="shapes")  # a neutral base: the path check comes below
    names = [*COMMON, "shapes_count", "shapes_size", "pixel_shape"]
    cfg = forms.read_widgets(DataConfig, base, ui.DATA_FIELD, names)
    path = ""
    if source in TYPED_PATH:
        path = str(s.get(PATH_KEY, "")).strip()
        if not path:
            what = "folder" if source == "folder" else "CSV file"
            raise LookupError(f"type the {what}'s path on the server")
    elif source == "dataset":
        path = s.get(ui.DATA_BUILT_PICK) or ""
        if not path:
            refs = built_refs()
            path = refs[0] if refs else ""
            s[ui.DATA_BUILT_PICK] = path or None
        if not path:
            raise LookupError("build a dataset on the Build a dataset page first")
    elif source == "upload":
        path = s.get(ui.DATA_UPLOAD_PICK) or ""
        if not path:  # the picker shows the newest upload first: use what it will show
            stored = upload_store.list_uploads()
            path = stored[0]["id"] if stored else ""
            s[ui.DATA_UPLOAD_PICK] = path or None
        if not path:
            raise LookupError("upload a .zip or a folder below first")
    return draft.with_parts(data=cfg.replace(source=source, path=path))


def _commit() -> None:
    """Widget callback: use the options at once; a source still missing its folder waits."""
    st.session_state[PENDING] = None
    try:
        new = _build(ui.draft())
    except LookupError as exc:  # the source needs one more answer: keep the widgets as they are
        st.session_state[PENDING] = str(exc)
        return
    forms.commit("data", build=lambda _draft: new)


def _use_upload(upload_id: str) -> None:
    """Make a fresh upload the active dataset, keeping the other options."""
    forms.update_draft(lambda d: d.with_parts(data=d.data.replace(source="upload", path=upload_id)))
    st.session_state[PENDING] = None


def _save_zip() -> None:
    file = st.session_state.get(ui.DATA_ZIP)
    if file is None:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", "Choose a .zip file first.")
        return
    try:
        upload_id = upload_store.save_upload_archive(file.getvalue(), file.name)
    except KestrelError as exc:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", f"Upload refused: {exc}")
        return
    _use_upload(upload_id)
    st.session_state[ui.DATA_UPLOAD_MSG] = ("success", f"Stored {file.name} and selected it.")


def _save_dir() -> None:
    files = st.session_state.get(ui.DATA_DIR) or []
    if not files:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", "Choose a folder first.")
        return
    try:
        # sizes first: the caps and the quota apply before any file is read
        upload_id = upload_store.save_upload_files([(f.name, f.size, f.getvalue) for f in files])
    except KestrelError as exc:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", f"Upload refused: {exc}")
        return
    _use_upload(upload_id)
    st.session_state[ui.DATA_UPLOAD_MSG] = (
        "success",
        f"Stored {len(files)} files and selected them.",
    )


def _rename_upload() -> None:
    upload_id = st.session_state.get(ui.DATA_UPLOAD_PICK)
    name = st.session_state.get(ui.DATA_UPLOAD_NAME, "")
    if not upload_id:
        return
    try:
        upload_store.rename_upload(upload_id, name)
    except KestrelError as exc:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", f"Not renamed: {exc}")


def _delete_upload(upload_id: str) -> None:
    st.session_state.pop(ui.DATA_UPLOAD_DELETE_ASK, None)
    try:
        upload_store.delete_upload(upload_id)
    except KestrelError as exc:
        st.session_state[ui.DATA_UPLOAD_MSG] = ("error", f"Not deleted: {exc}")
        return
    draft = ui.draft()
    if draft.data.source == "upload" and draft.data.path == upload_id:
        forms.update_draft(lambda d: d.with_parts(data=DataConfig()))
        text = "Deleted the upload; the dataset is back to the generated shapes."
    else:
        text = "Deleted the upload."
    st.session_state[ui.DATA_UPLOAD_PICK] = None
    st.session_state[ui.DATA_UPLOAD_MSG] = ("success", text)


def _reshuffle() -> None:
    st.session_state[ui.DATA_SAMPLE_SEED] += 1


def upload_label(manifest: dict) -> str:
    """An upload as people know it: its name, classes, images, date."""
    name = manifest.get("display_name") or manifest["id"]
    classes = manifest.get("classes", [])
    when = manifest.get("created")
    date = time.strftime(" · %Y-%m-%d %H:%M", time.localtime(when)) if when else ""
    return f"{name} · {len(classes)} classes · {manifest.get('images', 0)} images{date}"


def _upload_picker(uploads: list[dict]) -> None:
    ids = [m["id"] for m in uploads]
    labels = {m["id"]: upload_label(m) for m in uploads}
    picked = st.session_state.get(ui.DATA_UPLOAD_PICK)
    # The picker holds an id; putting it back on every run makes the browser show the
    # current label (a rename changes it) instead of keeping the old text.
    st.session_state[ui.DATA_UPLOAD_PICK] = picked if picked in ids else (ids[0] if ids else None)
    forms.mark_bound(DataConfig, "path")
    st.selectbox("Upload", ids, format_func=lambda i: labels.get(i, i), key=ui.DATA_UPLOAD_PICK,
                 on_change=_commit,
                 placeholder="nothing uploaded yet — use 'Upload images' below")  # fmt: skip
    picked = st.session_state.get(ui.DATA_UPLOAD_PICK)
    if not picked:
        return
    manifest = next(m for m in uploads if m["id"] == picked)
    if (
        st.session_state.get(ui.DATA_UPLOAD_NAME_OF) != picked
        or ui.DATA_UPLOAD_NAME not in st.session_state
    ):
        st.session_state[ui.DATA_UPLOAD_NAME] = manifest.get("display_name") or picked
        st.session_state[ui.DATA_UPLOAD_NAME_OF] = picked
    st.text_input("Name of this upload", key=ui.DATA_UPLOAD_NAME, on_change=_rename_upload,
                  max_chars=80)  # fmt: skip
    st.button("Delete this upload", key=ui.DATA_UPLOAD_DELETE, icon=":material/delete:",
              on_click=lambda: st.session_state.__setitem__(ui.DATA_UPLOAD_DELETE_ASK, picked))  # fmt: skip
    if st.session_state.get(ui.DATA_UPLOAD_DELETE_ASK) == picked:
        st.warning(f"Delete the upload {escape_markdown(manifest.get('display_name') or picked)}? Its images are "
                   "removed from the workspace for good; runs trained on it keep their models.")  # fmt: skip
        yes, no = st.columns(2)
        yes.button("Delete for good", key=ui.DATA_UPLOAD_DELETE_YES, type="primary",
                   on_click=_delete_upload, args=(picked,))  # fmt: skip
        no.button("Keep it", key=ui.DATA_UPLOAD_DELETE_NO,
                  on_click=lambda: st.session_state.pop(ui.DATA_UPLOAD_DELETE_ASK, None))  # fmt: skip


def built_refs() -> list[str]:
    """Every version of every built dataset, newest first (``name@N``)."""
    return [
        built_store.dataset_ref(d["name"], v)
        for d in built_store.list_datasets()
        for v in reversed(d["versions"])
    ]


def _built_picker() -> None:
    refs = built_refs()
    if refs and st.session_state.get(ui.DATA_BUILT_PICK) not in refs:
        st.session_state[ui.DATA_BUILT_PICK] = refs[0]
    forms.mark_bound(DataConfig, "path")
    st.selectbox("Dataset version", refs, key=ui.DATA_BUILT_PICK, on_change=_commit,
                 placeholder="none yet — use the Build a dataset page",
                 help="A run records the version it trains on; every edit makes a new one.")  # fmt: skip


def _field(name: str, container=None, **kwargs) -> None:
    forms.field(DataConfig, name, "data", container=container, on_change=_commit, **kwargs)


def _form(uploads: list[dict]) -> None:
    _field("source")
    source = st.session_state[ui.DATA_FIELD + "source"]
    if source == "shapes":
        c1, c2 = st.columns(2)
        _field("shapes_count", c1)
        _field("shapes_size", c2)
    elif source in TYPED_PATH:
        forms.mark_bound(DataConfig, "path")
        placeholder, hint = PATH_HINTS[source]
        label = forms.label(DataConfig, "path") if source == "folder" else "CSV file on the server"
        st.text_input(label, key=PATH_KEY, placeholder=placeholder, on_change=_commit,
                      help=hint + " Readable folders: "
                           + ", ".join(str(r) for r in data_roots())
                           + " (set KESTREL_DATA_ROOTS to share others).")  # fmt: skip
        if source == "pixel_csv":
            _field("pixel_shape")
    elif source == "dataset":
        _built_picker()
    elif source == "upload":
        _upload_picker(uploads)
    elif source in OWN_TEST:
        st.caption("Uses its own test split. Downloaded once by Keras into ~/.keras/datasets.")
    c1, c2 = st.columns(2)
    _field("image_size", c1)
    _field("color_mode", c2)
    c1, c2 = st.columns(2)
    _field("val_fraction", c1)
    _field("test_fraction", c2, disabled=source in OWN_TEST,
           help_text="Ignored for sources with their own test split.")  # fmt: skip
    c1, c2 = st.columns(2)
    _field("seed", c1, help_text="Splits (and shapes).")
    _field("max_per_class", c2)
    forms.show_refusal("data")
    pending = st.session_state.get(PENDING)
    if pending:
        st.warning(f"Not in use yet: {escape_markdown(pending)}. Runs still use "
                   f"{escape_markdown(ui.describe_data(ui.data_config()))}.",
                   icon=":material/pending:")  # fmt: skip


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
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    split = ui.segmented(left, "Split", splits, key=ui.DATA_SAMPLE_SPLIT, first=splits[0],
                         format_func=SPLIT_LABELS.get)  # fmt: skip
    right.button("Other samples", key=ui.DATA_RESHUFFLE, on_click=_reshuffle)
    classes = list(range(ds.num_classes))
    if ds.num_classes > MAX_SAMPLE_CLASSES:
        ui.kept(ui.DATA_SAMPLE_CLASSES, ds.class_names, list(ds.class_names[:MAX_SAMPLE_CLASSES]),
                many=True)  # fmt: skip
        names = st.multiselect("Classes shown", ds.class_names,
                               max_selections=MAX_SAMPLE_CLASSES, key=ui.DATA_SAMPLE_CLASSES)  # fmt: skip
        ui.remember(ui.DATA_SAMPLE_CLASSES)
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
_draft = forms.bind("data")
_seed_path(
    _draft, force=st.session_state.get(ui.FORM_SEEDED, {}).get("data_path") != _draft.revision
)
st.session_state[ui.FORM_SEEDED]["data_path"] = _draft.revision
st.session_state.setdefault(ui.DATA_UPLOAD_MSG, None)
st.session_state.setdefault(ui.DATA_SAMPLE_SEED, 0)
st.session_state.setdefault(PENDING, None)
uploads = upload_store.list_uploads()

form_col, info_col = st.columns([2, 3], gap="large")
with form_col:
    _form(uploads)
    with st.expander(
        "Upload images", expanded=st.session_state[ui.DATA_FIELD + "source"] == "upload"
    ):
        _upload_section()
    message = st.session_state[ui.DATA_UPLOAD_MSG]
    if message:
        kind, text = message
        (st.success if kind == "success" else st.error)(escape_markdown(text))

with info_col:
    cfg = ui.data_config()
    st.markdown("**In use:** " + ui.describe_data(cfg).replace("*", "\\*"))
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
