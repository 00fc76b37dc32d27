"""Predict: classify your own images with a saved model, see why, and export the model.

Pick a model (the registry, a completed run, or an uploaded ``.keras`` file),
give images (upload, camera, or a sample of the active dataset), and read the
top-k probabilities, a Grad-CAM overlay and, for many images, a results table.
Preprocessing follows the model card (lib.predict); uploaded models are
inspected and loaded in safe mode (lib.registry). Opens on the shipped demo.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from lib import export, predict, registry, runs, runstore
from lib.config import DataConfig
from lib.data.images import MAX_FILE_BYTES, ImageDecodeError
from lib.errors import KestrelError
from lib.plots.predict import top_k_figure
from lib.text import error_text, escape_markdown
from pages import ui

SOURCES = ("Registry", "Training run", "Upload .keras")
INPUTS = ("Upload", "Camera", "Dataset sample")
UPLOAD_MAX_FILES = 200  # images classified at once; more is a job for the CLI
UPLOAD_MAX_BYTES = 200 * 2**20  # all uploaded images together, read into memory at once
IMAGE_WIDTH = 320  # px; a portrait photo at full column width would push the chart off screen


def model_label(entry: registry.ModelEntry) -> str:
    """``name · dataset · accuracy · date`` of a registry model, from its card."""
    card = entry.card
    config = card.dataset.get("config") if isinstance(card.dataset, dict) else None
    try:
        dataset = runs.describe_dataset(DataConfig.from_dict(config))
    except (TypeError, ValueError, KeyError, AttributeError):
        dataset = str(card.dataset.get("source") or "dataset unknown")
    accuracy = runs.NO_ACCURACY if card.accuracy is None else f"{card.accuracy:.1%}"
    return " · ".join((entry.name, dataset, accuracy, card.created[:10] or runs.NO_ACCURACY))


def _show(exc: BaseException, where: str) -> None:
    """A user-fixable error as its message; anything else logged as an internal error."""
    st.error(error_text(exc, where), icon=":material/error:")


# ---------------------------------------------------------------- model


def _registry_model() -> registry.ModelEntry | None:
    entries = registry.list_models()
    if not entries:
        st.info(
            "The registry is empty. Run `make demo-models` to build the demo models, "
            "or train a run and save it.",
            icon=":material/info:",
        )
        return None
    # Options are ids (the model file), so a pick survives a changed card or label; the
    # id is put back on every run so the browser shows the current label.
    by_id = {str(e.model_path): e for e in entries}
    # Kept beside the draft: another page and back, or a reload, show the same model.
    ui.kept(ui.PRED_REGISTRY_PICK, by_id, str((registry.default_entry() or entries[0]).model_path))
    pick = st.selectbox(
        "Registry model",
        list(by_id),
        format_func=lambda i: model_label(by_id[i]),
        key=ui.PRED_REGISTRY_PICK,
    )
    ui.remember(ui.PRED_REGISTRY_PICK)
    entry = by_id[pick]
    if entry.source == "saved":
        _delete_saved_model(entry)
    return entry


def _delete_model(entry: registry.ModelEntry) -> None:
    st.session_state.pop(ui.PRED_DELETE_ASK, None)
    try:
        registry.delete_saved_model(entry)
    except KestrelError as exc:
        st.session_state[ui.PRED_DELETE_MSG] = ("error", f"Not deleted: {exc}")
        return
    st.session_state.pop(ui.PRED_REGISTRY_PICK, None)
    st.session_state[ui.PRED_DELETE_MSG] = ("success", f"Deleted the saved model {entry.name}.")


def _delete_saved_model(entry: registry.ModelEntry) -> None:
    """Delete, after a confirmation that says what goes (shipped models cannot be deleted)."""
    key = str(entry.model_path)
    st.button("Delete this saved model", key=ui.PRED_DELETE, icon=":material/delete:",
              on_click=lambda: st.session_state.__setitem__(ui.PRED_DELETE_ASK, key))  # fmt: skip
    if st.session_state.get(ui.PRED_DELETE_ASK) == key:
        st.warning(
            f"Delete the saved model {escape_markdown(entry.name)}? Its folder in the registry "
            "goes for good: the model file, its card and its unknown-detection statistics. The "
            "run it came from, if any, keeps its own copy.",
            icon=":material/delete_forever:",
        )
        yes, no = st.columns(2)
        yes.button("Delete for good", key=ui.PRED_DELETE_YES, type="primary",
                   on_click=_delete_model, args=(entry,))  # fmt: skip
        no.button("Keep it", key=ui.PRED_DELETE_NO,
                  on_click=lambda: st.session_state.pop(ui.PRED_DELETE_ASK, None))  # fmt: skip


def _run_model() -> registry.ModelEntry | None:
    views = {v.run_id: v for v in runs.completed_views()}
    if not views:
        st.info("No completed runs yet: train one on the Train page.", icon=":material/info:")
        return None
    # Options are run ids; the label (name, accuracy) may change without losing the pick.
    # The pick: this page's, else the run this session looks at (Train, Evaluate, or the
    # address after a reload), else the best completed run.
    picked = st.session_state.get(ui.PRED_RUN_PICK)
    if picked not in views:
        picked = st.session_state.get(ui.SELECTED_RUN)
    if picked not in views:
        best = runs.best_completed()
        picked = best.run_id if best and best.run_id in views else next(iter(views))
    st.session_state[ui.PRED_RUN_PICK] = picked  # put back each run: the label is current
    pick = st.selectbox(
        "Completed run",
        list(views),
        format_func=lambda i: runs.run_label(views[i]),
        key=ui.PRED_RUN_PICK,
        help="Opens on the run you last looked at (Train, Evaluate); else on the best "
        "completed run (highest test accuracy).",
        on_change=ui.refuse_echo,
        args=(ui.PRED_RUN_PICK,),
    )
    ui.hold(ui.PRED_RUN_PICK)
    ui.select_run(pick)
    run_dir = views[pick].path
    entry = registry.run_entry(run_dir)
    with st.popover("Save to registry", icon=":material/bookmark_add:"):
        name = st.text_input("Model name", value=run_dir.name, key=ui.PRED_SAVE_NAME, max_chars=64)
        if st.button("Save", key=ui.PRED_SAVE):
            try:
                folder = registry.save_run_to_registry(run_dir, name)
                st.success(f"Saved as {escape_markdown(folder.name)}", icon=":material/check:")
            except Exception as exc:
                _show(exc, "Save to registry")
    return entry


def _uploaded_model() -> registry.ModelEntry | None:
    st.caption(
        f"Keras v3 `.keras` files up to {registry.MAX_MODEL_BYTES // 2**20} MB. The file is "
        "inspected before loading and loaded in safe mode: Lambda layers, custom classes "
        "and legacy `.h5` files are refused, and an uploaded model never runs code."
    )
    file = st.file_uploader("Model file", type=["keras", "h5", "hdf5"], key=ui.PRED_MODEL_UPLOAD)
    if file is None:
        st.session_state.pop(ui.PRED_UPLOADED_MODEL, None)
        return None
    held = st.session_state.get(ui.PRED_UPLOADED_MODEL)
    if held and held[0] == file.file_id:
        return held[1]
    with st.spinner("Checking the model…"):
        entry = registry.upload_entry(file.getvalue(), file.name)
    st.session_state[ui.PRED_UPLOADED_MODEL] = (file.file_id, entry)
    return entry


def _card_summary(entry: registry.ModelEntry) -> None:
    card = entry.card
    h, w, c = card.input_shape
    acc = card.accuracy
    bits = [
        f"{card.num_classes} classes",
        f"input {h}×{w}×{c} ({'grayscale' if c == 1 else 'RGB'})",
    ]
    if card.dataset.get("source"):
        bits.append(f"trained on {card.dataset['source']}")
    bits = [escape_markdown(b) for b in bits]
    if acc is not None:
        bits.append(f"test accuracy {acc:.1%}")
    if card.keras_version:
        bits.append(f"Keras {card.keras_version}")
    st.caption(" · ".join(bits))
    if card.description:
        st.caption(escape_markdown(card.description))
    with st.expander("Model card"):
        st.json(card.to_dict(), expanded=1)


# ---------------------------------------------------------------- images


def _images_from_input(mode: str) -> tuple[list[str], list[np.ndarray], list[str]]:
    """(names, decoded images, true labels or '') from the chosen input."""
    names: list[str] = []
    images: list[np.ndarray] = []
    truths: list[str] = []
    if mode == "Upload":
        files = st.file_uploader(
            "Images (JPEG, PNG, WEBP, BMP, GIF, TIFF): one or many",
            type=list(predict.UPLOAD_TYPES),
            accept_multiple_files=True,
            key=ui.PRED_IMAGES,
        )
        files = _within_upload_caps(files or [])
        problems = []
        for f in files:
            if f.size > MAX_FILE_BYTES:  # checked before the bytes are read
                problems.append(f"{f.name}: {f.size / 2**20:.0f} MB, over the per-image limit")
                continue
            try:
                images.append(predict.decode_upload(f.getvalue(), f.name))
                names.append(f.name)
                truths.append("")
            except ImageDecodeError as exc:
                problems.append(str(exc))
        if problems:
            st.warning(
                escape_markdown("Skipped: " + "; ".join(problems)), icon=":material/warning:"
            )
    elif mode == "Camera":
        shot = st.camera_input("Take a picture", key=ui.PRED_CAMERA)
        if shot is not None:
            try:
                images.append(predict.decode_upload(shot.getvalue(), "camera.jpg"))
                names.append("camera photo")
                truths.append("")
            except ImageDecodeError as exc:
                _show(exc, "Camera")
    else:
        cfg = ui.data_config()
        st.caption(f"A random test image of the active dataset: {ui.describe_data(cfg)}.")
        if st.button("Another sample", key=ui.PRED_SAMPLE_BUTTON, icon=":material/shuffle:") or (
            st.session_state.get(ui.PRED_SAMPLE) is None
            or st.session_state[ui.PRED_SAMPLE][0] != cfg.to_json(indent=None)
        ):
            st.session_state[ui.PRED_SAMPLE] = _draw_sample(cfg)
        sample = st.session_state.get(ui.PRED_SAMPLE)
        if sample is not None and sample[1] is not None:
            _, index, truth, image = sample
            names.append(f"test image #{index}")
            images.append(image)
            truths.append(truth)
    return names, images, truths


def _within_upload_caps(files: list) -> list:
    """The first uploads within the file count and total size caps, with a message if cut.

    Sizes come from the upload records, so nothing is read before the check.
    """
    kept, total = [], 0
    for f in files[:UPLOAD_MAX_FILES]:
        if total + f.size > UPLOAD_MAX_BYTES:
            break
        kept.append(f)
        total += f.size
    if len(kept) < len(files):
        why = (
            f"at most {UPLOAD_MAX_FILES} images"
            if len(kept) == UPLOAD_MAX_FILES
            else f"at most {UPLOAD_MAX_BYTES // 2**20} MB of images"
        )
        st.warning(
            f"Only the first {len(kept)} of {len(files)} images are classified: one go takes "
            f"{why}. Classify the rest in further batches.",
            icon=":material/warning:",
        )
    return kept


def _draw_sample(cfg):
    """(config key, index, true class, image) of a random test image, or an error tuple."""
    from lib.data import load_dataset

    key = cfg.to_json(indent=None)
    try:
        with st.spinner("Loading the dataset…"):
            ds = load_dataset(cfg)
    except Exception as exc:
        _show(exc, "Cannot load the active dataset")
        return (key, None, None, None)
    split = ds.splits["test"] if len(ds.splits.get("test", ())) else ds.splits["val"]
    index = int(np.random.default_rng().integers(len(split)))
    image = split.images([index])[0]
    return (key, index, ds.class_names[int(split.labels[index])], image)


# ---------------------------------------------------------------- results


def _fit_progress(folder) -> None:
    """The running fit of unknown detection; reruns the page once it has ended."""
    from lib import ood

    status = ood.fit_status(folder)
    if status is None or status.state not in ("queued", "running"):
        st.rerun()
    st.info(
        "Fitting unknown detection in the background: the training and validation images "
        "pass through the model once. You can go on or leave this page.",
        icon=":material/hourglass_top:",
    )


def _no_detection(entry: registry.ModelEntry) -> None:
    """A model without unknown detection: say what that means and offer to fit it."""
    from lib import ood

    folder = entry.model_path.parent
    status = ood.fit_status(folder)
    if status is not None and status.state in ("queued", "running"):
        st.fragment(run_every=2.0)(_fit_progress)(folder)
        return
    if status is not None and status.state == "failed":
        st.error(
            f"Fitting unknown detection failed: {escape_markdown(status.error)}",
            icon=":material/error:",
        )
    text, button = st.columns([3, 1], vertical_alignment="center")
    text.caption(
        "This model has no unknown detection yet, so an image unlike all its classes still "
        "gets one of them. Fitting it takes one pass over the training and validation images, "
        "in the background."
    )
    if button.button("Fit unknown detection", key=ui.PRED_OOD_FIT, icon=":material/help:"):
        try:
            ood.start_fit(entry.name)
        except Exception as exc:
            _show(exc, "Not started")
            return
        st.rerun()


def _unknown_threshold(entry: registry.ModelEntry, predictor) -> float | None:
    """The unknown-detection threshold slider (None when the model has no detection)."""
    detector = predictor.detector
    if detector is None:
        if entry.source != "upload":
            _no_detection(entry)
        return None
    low, high = detector.score_range()
    high += 0.25 * (high - low)  # room to accept everything the validation split holds
    card_value = detector.threshold()
    if st.session_state.get(ui.PRED_UNKNOWN_MODEL) != str(entry.model_path):
        st.session_state[ui.PRED_UNKNOWN_MODEL] = str(entry.model_path)
        st.session_state[ui.PRED_UNKNOWN_THRESHOLD] = card_value
    threshold = st.slider(
        "Unknown threshold",
        min_value=float(low),
        max_value=float(high),
        step=float((high - low) / 400) or 0.01,
        format="%.3g",  # as the caption below writes it (the default showed 0.89 for 0.895)
        key=ui.PRED_UNKNOWN_THRESHOLD,
        help=(
            f"Images scoring above it are answered 'unknown'. Score: {detector.score_name} "
            f"({ood_definition(detector)}). The card's threshold, {card_value:.3g}, keeps "
            f"{detector.keep:.0%} of the validation images."
        ),
        on_change=ui.refuse_echo,
        args=(ui.PRED_UNKNOWN_THRESHOLD,),
    )
    ui.hold(ui.PRED_UNKNOWN_THRESHOLD)
    st.caption(
        f"At {threshold:.3g} this rejects **{detector.rejection_share(threshold):.1%}** of the "
        f"validation images as unknown (the card's threshold {card_value:.3g} rejects "
        f"{1 - detector.keep:.0%})."
    )
    bundle = export.unknown_bundle(entry)
    if bundle is not None:
        st.download_button(
            "Unknown detection for exports (card + statistics, zip)",
            bundle,
            file_name=f"{entry.name.rsplit('.keras', 1)[0]}-unknown-detection.zip",
            mime="application/zip",
            key=ui.PRED_DOWNLOAD + "unknown",
            icon=":material/download:",
            help="The card says how to apply the score and its threshold outside Kestrel; "
            "logits-only exports (TFLite, ONNX) use its energy threshold.",
        )
    return float(threshold)


def ood_definition(detector) -> str:
    from lib.ood import DEFINITIONS

    return DEFINITIONS[detector.score_name]


def _unknown_answer(pred, threshold: float | None) -> None:
    """Say 'unknown' (with the score and the nearest classes) when the image is unlike the classes."""
    if pred.unknown_score is None:
        return
    nearest = ", ".join(f"{escape_markdown(n)} ({d:.1f})" for n, d in pred.nearest)
    if pred.is_unknown(threshold):
        st.warning(
            f"**Unknown: unlike the classes this model was trained on.** Score "
            f"{pred.unknown_score:.3g} is above the threshold {threshold:.3g}. Nearest classes "
            f"in feature space (distance): {nearest}.",
            icon=":material/help:",
        )
    else:
        st.caption(
            f"Known: unknown-detection score {pred.unknown_score:.3g} is within the threshold "
            f"{threshold:.3g}. Nearest classes: {nearest}."
        )


def _detail(entry, predictor, name, image, pred, truth: str, k: int, threshold=None) -> None:
    left, right = st.columns([1, 1])
    with left:
        ui.kept(ui.PRED_GRADCAM, (False, True), False)
        show_cam = st.toggle("Grad-CAM overlay", key=ui.PRED_GRADCAM)
        ui.remember(ui.PRED_GRADCAM)
        shown = predict.display_image(image)  # bounded, whatever the upload's shape
        caption = escape_markdown(name if not truth else f"{name} · true class: {truth}")
        if show_cam:
            _grad_cam_view(entry, predictor, image, shown, caption)
        else:
            st.image(shown, caption=caption, width=IMAGE_WIDTH)
    with right:
        verdict = f"**{escape_markdown(pred.label)}** · {pred.confidence:.1%}"
        if pred.is_unknown(threshold):
            verdict = f"Closest class by the classifier: {verdict}"
        if truth:
            verdict += " ✓" if truth == pred.label else f" ✗ (true: {escape_markdown(truth)})"
        _unknown_answer(pred, threshold)
        st.markdown(verdict)
        st.plotly_chart(top_k_figure(pred.top_k), key=ui.PRED_CHART, width="stretch")


def _grad_cam_view(entry, predictor, image, shown, caption: str) -> None:
    """The Grad-CAM overlay of the predicted class, or why there is none."""
    from lib.explain import grad_cam, overlay

    try:
        cam = grad_cam(predictor.model, predict.preprocess(image, entry.card)[None])
    except Exception as exc:
        _show(exc, "No Grad-CAM")
        st.image(shown, caption=caption, width=IMAGE_WIDTH)
        return
    name = escape_markdown(entry.card.class_names[cam.class_index])
    where = f"layer `{cam.layer}` ({cam.feature_shape[0]}×{cam.feature_shape[1]} feature map)"
    if cam.flat:
        st.image(shown, caption=caption, width=IMAGE_WIDTH)
        st.info(
            f"This map is flat: {escape_markdown(cam.flat_reason)}. No overlay is drawn, "
            f"because it would tint the whole image alike. (Grad-CAM of **{name}** on {where}.)",
            icon=":material/blur_off:",
        )
        return
    blended = overlay(predict.display_image(image, pad=False), cam.heat)
    st.image(predict.pad_to_aspect(blended), caption=caption, width=IMAGE_WIDTH)
    st.caption(
        f"Grad-CAM of **{name}** on {where}. Red and yellow: the regions that raised "
        f"{name}'s score most; untinted: regions that did not raise it."
    )


def _table(names, images, preds, threshold=None) -> None:
    rows = predict.results_rows(names, preds, threshold=threshold)
    csv_bytes = predict.results_csv(rows)
    table = [
        {"image": predict.thumbnail_data_url(img), **row}
        for img, row in zip(images, rows, strict=True)
    ]
    st.dataframe(
        table,
        column_config={
            "image": st.column_config.ImageColumn("image", width="small"),
            "confidence": st.column_config.ProgressColumn(
                "confidence", min_value=0.0, max_value=1.0, format="percent"
            ),
        },
        hide_index=True,
        width="stretch",
        row_height=64,
    )
    st.download_button(
        "Download results (CSV)",
        csv_bytes,
        file_name="predictions.csv",
        mime="text/csv",
        key=ui.PRED_DOWNLOAD + "csv",
        icon=":material/download:",
    )


def _export_panel(entry: registry.ModelEntry) -> None:
    with st.expander("Export", icon=":material/ios_share:"):
        formats = export.available_formats()
        kind = st.selectbox(
            "Format", formats, format_func=lambda k: export.FORMATS[k][0], key=ui.PRED_EXPORT_FORMAT
        )
        if not export.onnx_available():
            st.caption(
                "ONNX: not offered, tf2onnx and onnxruntime are not installed (see the README)."
            )
        model_key = (str(entry.model_path), kind)
        if kind == "keras":
            result = export.export_model(entry, "keras")
        else:
            st.caption(
                f"Converts the model, then runs it and the Keras model on {export.PARITY_IMAGES} "
                "test images and compares them."
            )
            if st.button("Convert and check", key=ui.PRED_EXPORT_BUTTON, icon=":material/sync:"):
                try:
                    with st.spinner("Converting and checking parity…"):
                        images = export.parity_images(entry, ui.data_config())
                        st.session_state[ui.PRED_EXPORT_RESULT] = (
                            model_key,
                            export.export_model(entry, kind, images),
                        )
                except Exception as exc:
                    _show(exc, "Export")
            held = st.session_state.get(ui.PRED_EXPORT_RESULT)
            result = held[1] if held and held[0] == model_key else None
        if result is None:
            return
        cols = st.columns([2, 1, 1, 1])
        cols[0].download_button(
            f"Download {escape_markdown(result.filename)}",
            result.data,
            file_name=result.filename,
            mime="application/octet-stream",
            key=ui.PRED_DOWNLOAD + "export",
            icon=":material/download:",
        )
        cols[1].metric("Size", f"{len(result.data) / 1024:,.0f} KB")
        if result.parity is not None:
            p = result.parity
            cols[2].metric(
                "Top-1 agreement", f"{p.top1_agreement:.2%}", help=f"on {p.images} test images"
            )
            cols[3].metric("Max prob. diff", f"{p.max_prob_diff:.2e}")
            if not p.ok:
                st.warning(
                    f"The exported model disagrees with the Keras model on "
                    f"{1 - p.top1_agreement:.1%} of the test images.",
                    icon=":material/warning:",
                )


# ---------------------------------------------------------------- compress


def _compress_panel(entry: registry.ModelEntry) -> None:
    """The Compress section: variants, the trade-off job and table, the browser demo."""
    from lib import compress

    with st.expander("Compress", icon=":material/compress:"):
        st.caption(
            "Smaller variants of this model (TFLite float16, dynamic-range and int8, and a "
            "magnitude-pruned fine-tune), measured on the test split against the Keras model "
            "in one background job: accuracy, classes that lose more than "
            f"{compress.FLAG_POINTS:.0f} points, size raw and gzipped, single-image latency and "
            "top-1 agreement."
        )
        try:
            folder = compress.job_dir(entry, create=False)
            status = compress.read_job(folder)
        except Exception as exc:
            _show(exc, "Compress")
            return
        if status.running:
            st.fragment(run_every=2.0)(_compress_progress)(folder)
        else:
            _compress_form(entry, status)
            if status.state == "failed":
                st.error(
                    "The compression job failed: " + escape_markdown(status.error),
                    icon=":material/error:",
                )
            elif status.table is not None:
                _compress_results(folder, status.table)
        st.divider()
        _browser_demo(entry)


def _compress_form(entry: registry.ModelEntry, status) -> None:
    from lib import compress

    defaults = compress.CompressOptions()
    variants = st.multiselect(
        "Variants",
        list(compress.VARIANTS),
        default=list(defaults.variants),
        format_func=lambda k: compress.VARIANTS[k][0],
        key=ui.PRED_COMPRESS_VARIANTS,
    )
    left, right = st.columns(2)
    int8_io = left.checkbox(
        "int8 input and output",
        value=defaults.int8_io,
        key=ui.PRED_COMPRESS_INT8_IO,
        help="For integer-only accelerators. Off: the int8 model takes and returns floats.",
    )
    lo, hi = compress.OPTION_LIMITS["sparsity"]
    sparsity = left.slider(
        "Pruning: target sparsity",
        float(lo),
        float(hi),
        float(defaults.sparsity),
        step=0.05,
        format="%.2f",
        key=ui.PRED_COMPRESS_SPARSITY,
        help="Share of each large kernel's weights set to zero.",
    )
    schedule = right.selectbox(
        "Pruning schedule",
        compress.SCHEDULES,
        index=compress.SCHEDULES.index(defaults.schedule),
        key=ui.PRED_COMPRESS_SCHEDULE,
        help="polynomial: sparsity rises over the first 70 % of fine-tuning; constant: at once.",
    )
    lo, hi = compress.OPTION_LIMITS["prune_epochs"]
    epochs = right.number_input(
        "Pruning: fine-tuning passes",
        float(lo),
        float(hi),
        float(defaults.prune_epochs),
        step=0.5,
        key=ui.PRED_COMPRESS_EPOCHS,
    )
    label = "Compress and measure" if status.table is None else "Measure again"
    if st.button(label, key=ui.PRED_COMPRESS_START, icon=":material/compress:"):
        try:
            options = compress.CompressOptions(
                variants=tuple(variants),
                int8_io=bool(int8_io),
                sparsity=float(sparsity),
                schedule=schedule,
                prune_epochs=float(epochs),
            )
            compress.start(entry, options)
            st.rerun()
        except Exception as exc:
            _show(exc, "Compress")


def _compress_progress(folder) -> None:
    """The running job's stage; reruns the page once it has ended."""
    from lib import compress

    status = compress.read_job(folder)
    if not status.running:
        st.rerun()
    st.progress(
        min(1.0, max(0.0, status.progress)),
        text=f"Compressing: {escape_markdown(status.stage or 'starting')}…",
    )
    st.caption(
        "The job runs in its own process: you can leave this page and come back; "
        "the table is stored with the model."
    )


def _compress_results(folder, table: dict) -> None:
    from lib import compress
    from lib.plots.compress import tradeoff_figure

    st.caption(
        f"{table['test_images']} test images · measured {escape_markdown(table['created'])} · "
        f"latency: {escape_markdown(table['latency'])}."
    )
    rows = table["rows"]
    st.dataframe(
        [
            {
                "variant": r["label"],
                "accuracy": r["accuracy"],
                "change (points)": r["accuracy_change_points"],
                "classes losing > 5 points": ", ".join(r["flagged_classes"]) or "none",
                "size (KB)": round(r["size_bytes"] / 1024, 1),
                "gzipped (KB)": round(r["gzip_bytes"] / 1024, 1),
                "p50 (ms)": r["latency_p50_ms"],
                "p95 (ms)": r["latency_p95_ms"],
                "agrees with Keras": r["top1_agreement"],
            }
            for r in rows
        ],
        column_config={
            "accuracy": st.column_config.NumberColumn(format="percent"),
            "agrees with Keras": st.column_config.NumberColumn(format="percent"),
        },
        hide_index=True,
        width="stretch",
    )
    for r in rows:
        if r["flagged_classes"]:
            names = ", ".join(escape_markdown(c) for c in r["flagged_classes"])
            st.warning(
                f"{escape_markdown(r['label'])}: {names} lose more than "
                f"{compress.FLAG_POINTS:.0f} points of accuracy.",
                icon=":material/warning:",
            )
    st.plotly_chart(tradeoff_figure(table), key="predict_compress_chart", width="stretch")
    with st.popover("Per-class accuracy change (points)"):
        st.dataframe(
            [
                {"class": c["class"]}
                | {r["label"]: r["per_class"][i]["change_points"] for r in rows[1:]}
                for i, c in enumerate(rows[0]["per_class"])
            ],
            hide_index=True,
        )
    files = {r["variant"]: r for r in rows if r.get("file")}
    if files:
        pick = st.selectbox(
            "Variant file",
            list(files),
            format_func=lambda k: f"{files[k]['label']} · {files[k]['size_bytes'] / 1024:,.0f} KB",
            key=ui.PRED_COMPRESS_FILE,
        )
        path = folder / files[pick]["file"]
        if path.is_file():
            st.download_button(
                f"Download {escape_markdown(path.name)}",
                path.read_bytes(),
                file_name=path.name,
                mime="application/octet-stream",
                key=ui.PRED_DOWNLOAD + "variant",
                icon=":material/download:",
            )


def _browser_demo(entry: registry.ModelEntry) -> None:
    from lib import demo_export

    st.caption(
        "**Browser demo**: a folder (as a zip) with index.html, the model as ONNX, its labels and onnxruntime-web: "
        "it classifies uploaded images and camera frames in the browser, from any static file "
        "server (e.g. `python3 -m http.server` in the folder)."
    )
    if st.button("Build browser demo", key=ui.PRED_DEMO_BUTTON, icon=":material/language:"):
        try:
            with st.spinner("Converting to ONNX and packing the demo…"):
                data, name = demo_export.demo_zip(entry)
            st.session_state[ui.PRED_DEMO_RESULT] = (str(entry.model_path), data, name)
        except Exception as exc:
            _show(exc, "Browser demo")
    held = st.session_state.get(ui.PRED_DEMO_RESULT)
    if held and held[0] == str(entry.model_path):
        st.download_button(
            f"Download {escape_markdown(held[2])} ({len(held[1]) / 2**20:.1f} MB)",
            held[1],
            file_name=held[2],
            mime="application/zip",
            key=ui.PRED_DOWNLOAD + "demo",
            icon=":material/download:",
        )


def _default_source() -> str:
    """Training run when this session looks at a completed run (a reload keeps it), else Registry."""
    selected = st.session_state.get(ui.SELECTED_RUN)
    if selected:
        try:
            if runstore.read_status(runstore.run_dir(selected)).state == "completed":
                return "Training run"
        except (KestrelError, OSError, ValueError):
            pass
    return SOURCES[0]


# ---------------------------------------------------------------- page

ui.ensure_router()
st.title("Predict")
st.caption("Classify your own images with a trained model, see what it looked at, export it.")

source = ui.segmented(st, "Model from", SOURCES, key=ui.PRED_SOURCE, first=_default_source())
_deleted = st.session_state.pop(ui.PRED_DELETE_MSG, None)
if _deleted:
    (st.success if _deleted[0] == "success" else st.error)(escape_markdown(_deleted[1]))
try:
    if source == "Training run":
        entry = _run_model()
    elif source == "Upload .keras":
        entry = _uploaded_model()
    else:
        entry = _registry_model()
except Exception as exc:
    _show(exc, "Model refused" if isinstance(exc, registry.UnsafeModelError) else "Model")
    entry = None
if entry is None:
    st.stop()
_card_summary(entry)

try:
    with st.spinner("Loading the model…"):
        predictor = predict.get_predictor(entry)
except Exception as exc:
    _show(exc, "Cannot load the model")
    st.stop()

st.divider()
mode = ui.segmented(st, "Images from", INPUTS, key=ui.PRED_INPUT, first=INPUTS[0])
names, images, truths = _images_from_input(mode)
top = min(10, entry.card.num_classes)
ui.kept(ui.PRED_TOP_K, range(1, top + 1), min(5, top))
k = st.slider("Classes shown", 1, top, key=ui.PRED_TOP_K)
ui.remember(ui.PRED_TOP_K)
threshold = _unknown_threshold(entry, predictor)

if images:
    t0 = time.perf_counter()
    try:
        preds = predictor.predict(images, k=k)
    except Exception as exc:
        _show(exc, "Prediction")
        st.stop()
    elapsed_ms = (time.perf_counter() - t0) * 1000
    h, w, c = entry.card.input_shape
    st.caption(
        f"Prediction took {elapsed_ms:.1f} ms for {len(images)} image(s), preprocessing "
        f"included (resized to {h}×{w}, {'grayscale' if c == 1 else 'RGB'}); "
        f"the model alone took {preds[0].seconds * 1000:.2f} ms per image."
    )
    if len(images) == 1:
        _detail(entry, predictor, names[0], images[0], preds[0], truths[0], k, threshold)
    else:
        _table(names, images, preds, threshold)
        i = st.selectbox(
            "Look closer at",
            range(len(names)),
            format_func=lambda j: (
                f"{j + 1}. {names[j]} "
                f"({'unknown' if preds[j].is_unknown(threshold) else preds[j].label})"
            ),  # options: plain text
            key=ui.PRED_DETAIL,
        )
        _detail(entry, predictor, names[i], images[i], preds[i], truths[i], k, threshold)
else:
    st.caption("Give an image above to see what the model thinks it is.")

_export_panel(entry)
_compress_panel(entry)
