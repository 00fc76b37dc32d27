"""Build a dataset: name it, add classes, add images by upload or camera, then train on it.

Every edit makes a new immutable version (lib.datasets); "Train on this version"
points the draft's dataset at ``name@version``, so a run records exactly the
images it used. Images are checked by the safe decoder and stored under
generated names; class names are shown as plain text.
"""

import streamlit as st

from lib import datasets
from lib.data import clear_cache
from lib.data import uploads as upload_store
from lib.data.images import EXTENSIONS
from lib.errors import KestrelError
from lib.text import escape_markdown
from pages import forms, ui

IMAGE_TYPES = sorted({ext.lstrip(".") for ext in EXTENSIONS})
THUMBS = 12  # thumbnails shown per class


def _say(kind: str, text: str) -> None:
    st.session_state[ui.BUILD_MSG] = (kind, text)


def _edit(action, done: str) -> None:
    """Run one edit; a refusal is shown, a success names the new version."""
    try:
        result = action()
    except KestrelError as exc:
        _say("error", f"Not changed: {exc}")
        return
    version = result[0] if isinstance(result, tuple) else result
    extra = ""
    if isinstance(result, tuple) and result[1]:
        skipped = "; ".join(f"{n}: {r}" for n, r in result[1][:5])
        extra = f" Skipped {len(result[1])} file(s): {skipped}"
    clear_cache()
    _say("success", f"{done} — now version {version}.{extra}")


def _create() -> None:
    name = str(st.session_state.get(ui.BUILD_NEW_NAME, "")).strip()
    try:
        datasets.create_dataset(name)
    except KestrelError as exc:
        _say("error", f"Not created: {exc}")
        return
    st.session_state[ui.BUILD_PICK] = name
    st.session_state[ui.BUILD_NEW_NAME] = ""
    _say("success", f"Created dataset {name}. Add classes next.")


def _add_class(name: str) -> None:
    cls = str(st.session_state.get(ui.BUILD_CLASS_NEW, ""))
    _edit(lambda: datasets.add_class(name, cls), f"Added class {cls.strip()}")
    if st.session_state[ui.BUILD_MSG][0] == "success":
        st.session_state[ui.BUILD_CLASS_NEW] = ""


def _add_files(name: str, cls: str) -> None:
    files = st.session_state.get(ui.BUILD_FILES + cls) or []
    if not files:
        _say("error", f"Choose images for {cls} first.")
        return
    # sizes first: the count and quota checks come before any file is read
    _edit(lambda: datasets.add_images(name, cls, [(f.name, f.size, f.getvalue) for f in files]),
          f"Added images to {cls}")  # fmt: skip


def _add_capture(name: str, cls: str) -> None:
    counts = st.session_state.setdefault(ui.BUILD_CAMERA_N, {})
    shot = st.session_state.get(f"{ui.BUILD_CAMERA}{cls}_{counts.get(cls, 0)}")
    if shot is None:
        _say("error", f"Take a photo for {cls} first.")
        return
    _edit(lambda: datasets.add_images(name, cls, [("capture.jpg", shot.size, shot.getvalue)]),
          f"Added a photo to {cls}")  # fmt: skip
    if st.session_state[ui.BUILD_MSG][0] == "success":
        counts[cls] = counts.get(cls, 0) + 1  # a fresh camera for the next capture


def _rename(name: str, cls: str) -> None:
    new = str(st.session_state.get(ui.BUILD_RENAME + cls, ""))
    _edit(lambda: datasets.rename_class(name, cls, new), f"Renamed {cls} to {new.strip()}")


def _remove(name: str, cls: str) -> None:
    files = st.session_state.get(ui.BUILD_REMOVE + cls) or []
    _edit(lambda: datasets.remove_images(name, cls, files), f"Removed {len(files)} image(s)")


def _merge(name: str) -> None:
    sources = st.session_state.get(ui.BUILD_MERGE_FROM) or []
    target = str(st.session_state.get(ui.BUILD_MERGE_TO, ""))
    _edit(lambda: datasets.merge_classes(name, sources, target), f"Merged into {target.strip()}")


def _import(name: str) -> None:
    upload_id = st.session_state.get(ui.BUILD_IMPORT_PICK)
    if not upload_id:
        _say("error", "Pick an upload first.")
        return
    _edit(lambda: datasets.import_upload(name, upload_id), "Copied the upload's images in")


def _delete_dataset(name: str) -> None:
    st.session_state.pop(ui.BUILD_DELETE_ASK, None)
    try:
        kept = datasets.delete_dataset(name)
    except KestrelError as exc:
        _say("error", f"Not deleted: {exc}")
        return
    clear_cache()
    st.session_state.pop(ui.BUILD_PICK, None)
    note = f" Runs trained on it keep their models: {', '.join(kept)}." if kept else ""
    _say("success", f"Deleted dataset {name} and all its versions.{note}")


def _use(name: str, version: int) -> None:
    ref = datasets.dataset_ref(name, version)
    forms.update_draft(lambda d: d.with_parts(data=d.data.replace(source="dataset", path=ref)))
    _say("success", f"Runs now train on {ref}. Set up the model and train on the Train page.")


def _class_panel(name: str, version: int, cls: str, count: int) -> None:
    with st.expander(f"{cls} · {count} image(s)", expanded=True):
        files = datasets.list_images(name, version, cls)
        if files:
            cols = st.columns(6)
            for i, path in enumerate(files[-THUMBS:]):
                cols[i % 6].image(str(path), caption=path.name, width=80)
        up, cam = st.columns(2)
        with up:
            st.file_uploader(f"Images for {cls}", type=IMAGE_TYPES, accept_multiple_files=True,
                             key=ui.BUILD_FILES + cls)  # fmt: skip
            st.button("Add these images", key=ui.BUILD_FILES_ADD + cls, on_click=_add_files,
                      args=(name, cls), icon=":material/upload:")  # fmt: skip
        with cam:
            n = st.session_state.setdefault(ui.BUILD_CAMERA_N, {}).get(cls, 0)
            st.camera_input(f"Photo for {cls}", key=f"{ui.BUILD_CAMERA}{cls}_{n}")
            st.button("Add this photo", key=ui.BUILD_CAMERA_ADD + cls, on_click=_add_capture,
                      args=(name, cls), icon=":material/photo_camera:")  # fmt: skip
        left, right = st.columns(2)
        with left:
            st.text_input("New name", key=ui.BUILD_RENAME + cls, max_chars=64)
            st.button("Rename class", key=ui.BUILD_RENAME_BTN + cls, on_click=_rename,
                      args=(name, cls))  # fmt: skip
        with right:
            st.multiselect("Images to remove", [p.name for p in files], key=ui.BUILD_REMOVE + cls)
            st.button("Remove images", key=ui.BUILD_REMOVE_BTN + cls, on_click=_remove,
                      args=(name, cls))  # fmt: skip
        st.button("Delete this class", key=ui.BUILD_DELETE + cls, icon=":material/delete:",
                  on_click=lambda: _edit(lambda: datasets.delete_class(name, cls),
                                         f"Deleted class {cls}"))  # fmt: skip


def _delete_section(name: str) -> None:
    """Delete the whole dataset: asks first, says what goes and what stays."""
    st.button("Delete this dataset", key=ui.BUILD_DELETE_DATASET, icon=":material/delete:",
              on_click=lambda: st.session_state.__setitem__(ui.BUILD_DELETE_ASK, name))  # fmt: skip
    if st.session_state.get(ui.BUILD_DELETE_ASK) != name:
        return
    used = datasets.runs_using(name)
    st.warning(
        f"Delete the dataset {escape_markdown(name)} and all {len(datasets.versions(name))} of "
        "its versions? Its images are removed from the workspace for good."
        + (f" {len(used)} run(s) trained on it keep their models, but cannot be resumed or "
           "evaluated on its images again." if used else ""),
        icon=":material/delete_forever:",
    )  # fmt: skip
    yes, no = st.columns(2)
    yes.button("Delete for good", key=ui.BUILD_DELETE_YES, type="primary",
               on_click=_delete_dataset, args=(name,))  # fmt: skip
    no.button("Keep it", key=ui.BUILD_DELETE_NO,
              on_click=lambda: st.session_state.pop(ui.BUILD_DELETE_ASK, None))  # fmt: skip


ui.ensure_router()
st.title("Build a dataset")
st.caption(
    "Make your own classes, the Teachable Machine way: name a dataset, add classes, add "
    "images by upload or camera. Every edit makes a new version; runs keep the version "
    "they trained on."
)
st.session_state.setdefault(ui.BUILD_MSG, None)
known = datasets.list_datasets()
names = [d["name"] for d in known]

new_col, pick_col = st.columns(2)
with new_col:
    st.text_input("New dataset name", key=ui.BUILD_NEW_NAME, max_chars=48,
                  placeholder="my-pets", help="Letters, digits, - and _.")  # fmt: skip
    st.button("Create dataset", key=ui.BUILD_CREATE, on_click=_create, icon=":material/add:")
with pick_col:
    if names:  # kept beside the draft: another page and back, or a reload, show it again
        ui.kept(ui.BUILD_PICK, names, names[0])
        st.selectbox("Dataset", names, key=ui.BUILD_PICK)
        ui.remember(ui.BUILD_PICK)
    else:  # a widget of its own: the browser would keep showing a deleted dataset's name
        st.selectbox("Dataset", [], key=ui.BUILD_PICK_NONE, disabled=True,
                     placeholder="none yet — create one")  # fmt: skip

message = st.session_state[ui.BUILD_MSG]
if message:
    kind, text = message
    (st.success if kind == "success" else st.error)(escape_markdown(text))

picked = st.session_state.get(ui.BUILD_PICK)
if picked in names:
    latest = datasets.latest_version(picked)
    info = datasets.version_info(picked, latest)
    counts = datasets.class_counts(picked, latest)
    st.subheader(f"{picked} · version {latest}", anchor=False)
    st.caption(
        f"{len(counts)} class(es), {sum(counts.values())} image(s). Last edit: "
        + escape_markdown(str(info.get("action", "")))
    )
    use_col, _ = st.columns([1, 2])
    use_col.button("Train on this version", key=ui.BUILD_USE, type="primary",
                   on_click=_use, args=(picked, latest), icon=":material/model_training:",
                   disabled=sum(1 for c in counts.values() if c) < 2,
                   help="Needs images in at least two classes.")  # fmt: skip
    add_col, add_btn = st.columns([3, 1], vertical_alignment="bottom")
    add_col.text_input("New class", key=ui.BUILD_CLASS_NEW, max_chars=64, placeholder="cats")
    add_btn.button("Add class", key=ui.BUILD_CLASS_ADD, on_click=_add_class, args=(picked,))
    for cls, count in counts.items():
        _class_panel(picked, latest, cls, count)
    if len(counts) >= 2:
        with st.expander("Merge classes"):
            st.multiselect("Classes to merge", list(counts), key=ui.BUILD_MERGE_FROM)
            st.text_input("Into the class", key=ui.BUILD_MERGE_TO, max_chars=64)
            st.button("Merge", key=ui.BUILD_MERGE_BTN, on_click=_merge, args=(picked,))
    uploads = upload_store.list_uploads()
    if uploads:
        with st.expander("Add an uploaded set's images"):
            labels = {m["id"]: m.get("display_name") or m["id"] for m in uploads}
            st.selectbox("Upload", list(labels), format_func=labels.get,
                         key=ui.BUILD_IMPORT_PICK)  # fmt: skip
            st.button("Copy its images in", key=ui.BUILD_IMPORT_BTN, on_click=_import,
                      args=(picked,))  # fmt: skip
    _delete_section(picked)
    with st.expander("Versions"):
        rows = []
        for v in reversed(datasets.versions(picked)):
            vi = datasets.version_info(picked, v)
            rows.append({"version": v, "edit": vi.get("action", ""),
                         "images": sum(vi.get("classes", {}).values())})  # fmt: skip
        st.dataframe(rows, hide_index=True, width="stretch")
