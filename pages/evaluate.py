"""Evaluate: where a finished run's model is right and wrong, down to the very images.

Everything here is read from the run's stored predictions (lib.evaluation); the
model runs only when the user asks to compute predictions that are missing.
Clicking a confusion-matrix tile stores the cell in session state (ui.EVAL_CELL)
and the gallery below the matrix shows those images.
"""

from pathlib import Path

import numpy as np
import streamlit as st

from lib import evaluation as ev
from lib import runs as runs_lib
from lib import runstore
from lib.plots import evaluation as plots
from lib.text import error_text, escape_markdown
from pages import ui

GALLERY_MAX = 48  # images shown per gallery; the count says how many there are
GALLERY_COLUMNS = 8
MODES = ("counts", "share of true class")


@st.cache_data(max_entries=8, show_spinner=False)
def _predictions(path: str, mtime: float) -> ev.Predictions:
    # mtime is part of the key so recomputed predictions are read again.
    return ev.load_predictions(path)


@st.cache_data(max_entries=16, show_spinner=False)
def _images(path: str, mtime: float, positions: tuple[int, ...]) -> list[np.ndarray]:
    preds = _predictions(path, mtime)
    images = ev.load_images(path, preds, np.asarray(positions, dtype=np.int64))
    return [ev.display_image(img) for img in images]


def _show(exc: BaseException, where: str) -> None:
    """A user-fixable error as its message; anything else logged as an internal error."""
    st.error(error_text(exc, where), icon=":material/error:")


def _fix(run_id: str, key: str, action: str, widget: str) -> None:
    """Record a relabel/exclude decision for one image in the run's health review."""
    from lib import health

    label = st.session_state.get(widget, "") if action == "relabel" else ""
    try:
        health.decide(health.review_for_run(run_id), key, action, label)
    except Exception as exc:
        st.session_state[ui.HEALTH_MSG] = ("error", f"Not recorded: {exc}")
        return
    done = f"relabelled as {label}" if action == "relabel" else "excluded"
    st.session_state[ui.HEALTH_MSG] = (
        "success", f"Image {key} {done}; Data health saves it as a new dataset version."
    )  # fmt: skip


def _fix_buttons(col, run_dir: Path, preds: ev.Predictions, p: int, where: str) -> None:
    """Relabel / exclude under one gallery image (decisions go to Data health)."""
    key = f"{preds.split}:{int(preds.indices[p])}"
    widget = f"{ui.EVAL_FIX_TO}{where}_{p}"
    with col.popover("Fix", width="stretch"):
        names = list(preds.class_names)
        st.selectbox("Relabel as", names, index=int(preds.y_pred[p]), key=widget)
        st.button("Relabel", key=f"{ui.EVAL_FIX}{where}_{p}_relabel", on_click=_fix,
                  args=(run_dir.name, key, "relabel", widget))  # fmt: skip
        st.button("Exclude", key=f"{ui.EVAL_FIX}{where}_{p}_exclude", on_click=_fix,
                  args=(run_dir.name, key, "exclude", widget))  # fmt: skip


def _gallery(
    run_dir: Path, preds: ev.Predictions, positions: np.ndarray, captions: list[str],
    fix: str = "",
):  # fmt: skip
    if len(positions) == 0:
        st.caption("No images.")
        return
    said = st.session_state.pop(ui.HEALTH_MSG, None) if fix else None
    if said:  # the outcome of the last Fix (relabel/exclude) click
        getattr(st, said[0])(escape_markdown(said[1]))
    mtime = (run_dir / runstore.PREDICTIONS_FILE).stat().st_mtime
    shown = positions[:GALLERY_MAX]
    try:
        with st.spinner("Loading images…"):
            images = _images(str(run_dir), mtime, tuple(int(p) for p in shown))
    except Exception as exc:
        _show(exc, "Cannot load the images")
        return
    for start in range(0, len(images), GALLERY_COLUMNS):
        cols = st.columns(GALLERY_COLUMNS)
        row = zip(cols, images[start:], captions[start:], strict=False)
        for k, (col, img, cap) in enumerate(row):
            col.image(img, caption=escape_markdown(cap), width="stretch", clamp=True)
            if fix:
                _fix_buttons(col, run_dir, preds, int(shown[start + k]), fix)


def _on_cell_click(run_id: str) -> None:
    """Store the clicked tile; runs before the script, so the matrix can outline it."""
    event = st.session_state.get(ui.EVAL_CM_CHART)
    points = event.selection.points if event is not None else []
    for point in points:
        cell = plots.cell_from_point(point)
        if cell is not None:
            st.session_state[ui.EVAL_CELL] = (run_id, *cell)
            return


ui.ensure_router()
st.title("Evaluate")
runs = ev.completed_runs()  # paths, newest first
if not runs:
    st.info(
        "No completed run yet. Train a model first; its results will appear here.",
        icon=":material/info:",
    )
    st.stop()

# Options are run ids and the label is made per id, so the pick survives a
# change of the run's name, state or accuracy.
ids = [p.name for p in runs]
labels = {p.name: runs_lib.run_label(runs_lib.view_of(p)) for p in runs}
if st.session_state.get(ui.EVAL_RUN) not in ids:
    selected = st.session_state.get(ui.SELECTED_RUN)
    st.session_state[ui.EVAL_RUN] = selected if selected in ids else ids[0]
run_id = st.selectbox(
    "Run", ids, format_func=labels.get, key=ui.EVAL_RUN,
    on_change=ui.refuse_echo, args=(ui.EVAL_RUN,),
)  # fmt: skip
ui.hold(ui.EVAL_RUN)
ui.select_run(run_id)
run_dir = runstore.run_dir(run_id)
try:
    cfg = runstore.read_config(run_dir)
except Exception as exc:
    _show(exc, f"Run {run_id}")
    st.stop()
# What the run trained in: Mixed precision "auto" means bfloat16 on some CPUs, float16 on GPUs.
_precision = runs_lib.view_of(run_dir).metrics.get("precision")
_computed = ev.PRECISION_WORDS.get(_precision, _precision)
st.caption(
    escape_markdown(
        f"{ui.describe_data(cfg.data)} · {ui.describe_model(cfg.model)}"
        + (f" · trained in {_computed}" if _computed else "")
    )
)

if not ev.has_predictions(run_dir):
    st.info(
        "This run has no stored predictions yet. Computing them runs the model once "
        "over the test images; every view below reads the result.",
        icon=":material/info:",
    )
    if not st.button("Compute predictions", key="evaluate_compute", type="primary"):
        st.stop()
    try:
        with st.spinner("Predicting the test images…"):
            ev.compute_predictions(run_dir)
    except Exception as exc:
        _show(exc, "Cannot compute predictions")
        st.stop()

pred_path = run_dir / runstore.PREDICTIONS_FILE
try:
    preds = _predictions(str(run_dir), pred_path.stat().st_mtime)
except Exception as exc:
    _show(exc, f"Run {run_id}")
    st.stop()
names = list(preds.class_names)
shown_names = [escape_markdown(n) for n in names]  # class names are folder names: user text
head = ev.summary(preds)
cm = ev.confusion_counts(preds.y_true, preds.y_pred, preds.num_classes)

# --- Headline ---------------------------------------------------------------
where = "test" if preds.split == "test" else "validation (the dataset has no test split)"
st.caption(f"{head['n']} {where} images · {len(names)} classes")
cols = st.columns(5)
cols[0].metric("Accuracy", f"{head['accuracy']:.1%}")
if head["top_k"]:
    cols[1].metric(f"Top-{head['top_k']} accuracy", f"{head['top_k_accuracy']:.1%}")
else:
    cols[1].metric("Top-k accuracy", "—", help="needs more than 3 classes")
cols[2].metric("Macro F1", f"{head['macro_f1']:.3f}")
cols[3].metric("Weighted F1", f"{head['weighted_f1']:.3f}")
cols[4].metric("Loss", f"{head['loss']:.3f}", help="mean cross-entropy of the true class")

tab_cm, tab_class, tab_losses, tab_curves, tab_calib, tab_train, tab_dl = st.tabs(
    [
        "Confusion matrix",
        "Per class",
        "Top losses",
        "ROC & PR",
        "Calibration",
        "Training curves",
        "Downloads",
    ]
)

# --- Confusion matrix + gallery ----------------------------------------------
with tab_cm:
    # The values shown and the clicked tile are kept beside the draft: another page and
    # back, or a reload, show the same tile's images.
    ui.kept(ui.EVAL_CM_MODE, MODES, MODES[0])
    mode = st.radio("Values", MODES, horizontal=True, key=ui.EVAL_CM_MODE)
    ui.remember(ui.EVAL_CM_MODE)
    if ui.EVAL_CELL not in st.session_state:
        st.session_state[ui.EVAL_CELL] = ui.recall(ui.EVAL_CELL)
    state = st.session_state.get(ui.EVAL_CELL)
    cell = None
    if isinstance(state, list | tuple) and len(state) == 3 and state[0] == run_id:
        cell = (state[1], state[2])
    if cell is not None and not all(isinstance(k, int) and 0 <= k < len(names) for k in cell):
        cell = None
    ui.remember(ui.EVAL_CELL)
    fig = plots.confusion_matrix_figure(cm, names, normalised=mode == MODES[1], selected=cell)
    st.caption("Rows are the true class, columns the prediction. Click a tile to see its images.")
    st.plotly_chart(
        fig,
        on_select=lambda: _on_cell_click(run_id),
        selection_mode="points",
        key=ui.EVAL_CM_CHART,
        width="content" if fig.layout.width else "stretch",
        config={"displayModeBar": False},
    )
    if cell is None:
        st.info("Click a tile of the matrix to see the images in it.", icon=":material/touch_app:")
    else:
        i, j = cell
        positions = ev.cell_positions(preds, i, j)
        verdict = "correct" if i == j else "mistaken"
        st.subheader(f"{shown_names[i]} → {shown_names[j]}")
        more = f", showing the first {GALLERY_MAX}" if len(positions) > GALLERY_MAX else ""
        if len(positions) == 0:
            st.caption(f"No {shown_names[i]} image was predicted as {shown_names[j]}.")
        else:
            st.caption(
                f"{len(positions)} {verdict} images, most confident first{more}. "
                f"Each caption is the probability of {shown_names[j]}."
            )
            conf = preds.confidence
            _gallery(run_dir, preds, positions, [f"{conf[p]:.1%}" for p in positions], "cell")

    st.markdown("**Most confused pairs**")
    pairs = ev.most_confused(cm, names, top=10)
    if pairs:
        st.dataframe(
            [{k: p[k] for k in ("true", "predicted", "count", "share")} for p in pairs],
            hide_index=True,
            column_config={
                "share": st.column_config.NumberColumn("share of true class", format="percent")
            },
            key="evaluate_pairs",
        )
    else:
        st.caption("No mistakes at all.")

# --- Per class -----------------------------------------------------------------
per_class = ev.per_class_metrics(preds.y_true, preds.y_pred, names)
with tab_class:
    st.caption("Worst classes first (lowest F1). Click a column header to sort.")
    st.dataframe(
        per_class,
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(c, format="%.3f")
            for c in ("precision", "recall", "f1")
        },
        key="evaluate_per_class",
    )

# --- Top losses ----------------------------------------------------------------
with tab_losses:
    positions = ev.top_losses(preds, n=24)
    st.caption(
        "The wrong predictions the model was surest of (highest loss first). "
        "Caption: true → predicted, probability of the prediction."
    )
    _gallery(
        run_dir,
        preds,
        positions,
        [
            f"{names[preds.y_true[p]]} → {names[preds.y_pred[p]]} {preds.confidence[p]:.0%}"
            for p in positions
        ],
        "loss",
    )

# --- ROC & PR ------------------------------------------------------------------
with tab_curves:
    worst = names.index(per_class["class"].iloc[0])
    ui.kept(ui.EVAL_CURVE_CLASS, range(len(names)), worst)
    cls = st.selectbox(
        "Class (one vs rest)",
        range(len(names)),
        format_func=names.__getitem__,
        key=ui.EVAL_CURVE_CLASS,
    )
    ui.remember(ui.EVAL_CURVE_CLASS)
    roc = ev.roc_curve_ovr(preds.y_true, preds.probs, cls)
    pr = ev.pr_curve_ovr(preds.y_true, preds.probs, cls)
    if roc is None or pr is None:
        st.info(f"The {preds.split} images hold no (or only) {shown_names[cls]}: no curve to draw.")
    else:
        left, right = st.columns(2)
        left.plotly_chart(plots.roc_figure(roc.x, roc.y, roc.area, names[cls]), key="evaluate_roc")
        right.plotly_chart(
            plots.pr_figure(pr.x, pr.y, pr.area, names[cls], pr.positives / len(preds)),
            key="evaluate_pr",
        )

# --- Calibration ---------------------------------------------------------------
with tab_calib:
    rel = ev.reliability(preds.y_true, preds.probs, bins=10)
    st.plotly_chart(
        plots.reliability_figure(rel.edges, rel.accuracy, rel.confidence, rel.counts, rel.ece),
        key="evaluate_reliability",
    )
    st.caption(
        f"Expected calibration error {rel.ece:.3f}: the average gap between how sure the "
        "model is and how often it is right, weighted by images per bin. Bars below the "
        "diagonal mean over-confidence."
    )

# --- Training curves -----------------------------------------------------------
with tab_train:
    history = ev.load_history(run_dir)
    if history.empty:
        st.info("This run has no history.csv.")
    else:
        st.plotly_chart(plots.training_curves_figure(history), key="evaluate_history")

# --- Downloads -----------------------------------------------------------------
with tab_dl:
    st.download_button(
        "Per-class metrics (CSV)",
        per_class.to_csv(index=False),
        f"{run_id}-per-class.csv",
        mime="text/csv",
        key="evaluate_dl_per_class",
        icon=":material/download:",
    )
    st.download_button(
        "Confusion matrix (CSV)",
        ev.confusion_csv(cm, names),
        f"{run_id}-confusion.csv",
        mime="text/csv",
        key="evaluate_dl_confusion",
        icon=":material/download:",
    )
    st.download_button(
        "Predictions (CSV)",
        ev.predictions_table(preds, names).to_csv(index=False),
        f"{run_id}-predictions.csv",
        mime="text/csv",
        key="evaluate_dl_predictions",
        icon=":material/download:",
    )

# --- Robustness ------------------------------------------------------------------


def _start_robustness(run_id: str) -> None:
    from lib import robustness

    try:
        robustness.start_report(run_id)
        st.session_state[ui.EVAL_ROBUSTNESS_NOTICE] = ("info", "Robustness report started.")
    except Exception as exc:
        st.session_state[ui.EVAL_ROBUSTNESS_NOTICE] = ("error", error_text(exc, "Not started"))


def _harden(run_id: str) -> None:
    from lib import robustness

    method = st.session_state.get(ui.EVAL_ROBUSTNESS_METHOD)
    try:
        new_id = robustness.hardened_clone(run_id, method)
        st.session_state[ui.EVAL_ROBUSTNESS_NOTICE] = (
            "success",
            f"Hardened clone {new_id} queued ({escape_markdown(method)}). Watch it on the Train "
            "page; when it completes, pick it here and compute its report to compare.",
        )
    except Exception as exc:
        st.session_state[ui.EVAL_ROBUSTNESS_NOTICE] = ("error", error_text(exc, "Not cloned"))


def _robustness_table(report: dict, base: dict | None) -> None:
    from lib import robustness

    rows = robustness.table_rows(report)
    if base is not None:
        base_rows = {
            (r["condition"], r["level"]): r["accuracy"] for r in robustness.table_rows(base)
        }
        for row in rows:
            row["before hardening"] = base_rows.get((row["condition"], row["level"]))
    st.dataframe(
        rows,
        column_config={
            "accuracy": st.column_config.NumberColumn("accuracy", format="percent"),
            "drop": st.column_config.NumberColumn("drop from clean", format="percent"),
            "before hardening": st.column_config.NumberColumn("before hardening", format="percent"),
        },
        hide_index=True,
        width="stretch",
    )


def _robustness_comparison(report: dict, base: dict, base_id: str) -> None:
    from lib import robustness

    diff = robustness.compare(base, report)
    st.markdown(f"**Hardened clone of** `{escape_markdown(base_id)}`: what hardening bought")
    cols = st.columns(4)
    gained = diff.get("pgd_eps2_gained")
    cols[0].metric(
        "PGD ε=2/255 accuracy", f"{robustness.robust_accuracy(report):.1%}",
        delta=None if gained is None else f"{gained:+.1%}",
    )  # fmt: skip
    fg = diff.get("fgsm_eps2_gained")
    cols[1].metric(
        "FGSM ε=2/255 accuracy", f"{robustness.robust_accuracy(report, 'fgsm'):.1%}",
        delta=None if fg is None else f"{fg:+.1%}",
    )  # fmt: skip
    cols[2].metric("Clean accuracy", f"{report['clean']:.1%}", delta=f"{-diff['clean_lost']:+.1%}")
    cols[3].metric(
        "Mean corruption accuracy", f"{robustness.mean_corruption_accuracy(report):.1%}",
        delta=f"{diff['corruption_gained']:+.1%}",
    )  # fmt: skip


def _robustness_panel(run_id: str, run_dir: Path, polling: bool) -> None:
    from lib import robustness
    from lib.plots.robustness import robustness_figure

    status = robustness.job_status(run_dir)
    running = status is not None and status.state in ("queued", "running")
    if polling and not running:
        st.rerun(scope="app")  # the job ended: redraw the page without the poll
    said = st.session_state.pop(ui.EVAL_ROBUSTNESS_NOTICE, None)
    if said:
        getattr(st, said[0])(said[1])
    report = robustness.read_report(run_dir)
    if running:
        phase = robustness.latest_phase(run_dir) or "starting"
        st.info(
            f"Computing the robustness report… {escape_markdown(phase)}",
            icon=":material/hourglass_top:",
        )
    elif status is not None and status.state == "failed":
        st.error(
            f"The robustness report failed: {escape_markdown(status.error)}",
            icon=":material/error:",
        )
    if report is None and not running:
        st.caption(
            f"Accuracy on up to {robustness.REPORT_IMAGES} held-out images under seven common "
            "corruptions at three severities, and under FGSM and PGD attacks at ε = 1, 2, 4 and "
            "8 of 255. Computed in the background; a few minutes on a CPU."
        )
    c1, c2, c3 = st.columns([1, 2, 1])
    if c1.button(
        "Compute robustness report" if report is None else "Compute again",
        key=ui.EVAL_ROBUSTNESS_START, icon=":material/shield:", disabled=running,
    ):  # fmt: skip
        _start_robustness(run_id)
        st.rerun(scope="app")  # the whole page, so the panel polls while the job runs
    c2.selectbox(
        "Hardening", list(robustness.HARDENING_METHODS), key=ui.EVAL_ROBUSTNESS_METHOD,
        label_visibility="collapsed",
    )  # fmt: skip
    c3.button(
        "Clone hardened", key=ui.EVAL_ROBUSTNESS_HARDEN, icon=":material/content_copy:",
        on_click=_harden, args=(run_id,),
        help="A new run with this run's recipe, trained with the hardening on the left.",
    )  # fmt: skip
    if report is None:
        return
    base_id = robustness.hardened_from(run_dir)
    base = robustness.read_report(runstore.run_dir(base_id)) if base_id else None
    if base_id and base is None:
        st.caption(
            f"This run is a hardened clone of `{escape_markdown(base_id)}`: compute that run's "
            "report too to compare them."
        )
    if base is not None:
        _robustness_comparison(report, base, base_id)
    st.caption(
        f"{report['images']} {report['split']} images · clean accuracy {report['clean']:.1%} · "
        f"computed in {report['seconds']:.0f} s"
    )
    st.plotly_chart(
        robustness_figure(report, base, names=("hardened", "before")),
        key="evaluate_robustness_chart",
    )
    _robustness_table(report, base)


def _robustness_running(run_dir: Path) -> bool:
    from lib import robustness

    status = robustness.job_status(run_dir)
    return status is not None and status.state in ("queued", "running")


st.divider()
st.subheader("Robustness")
# While the report job runs, only this panel polls the run folder (every 2 s).
_polling = _robustness_running(run_dir)
st.fragment(run_every=2.0 if _polling else None)(_robustness_panel)(run_id, run_dir, _polling)
