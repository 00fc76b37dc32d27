"""Compare runs: overlaid validation curves, the runs' key numbers side by side, and a run diff."""

from collections import Counter

import streamlit as st

from lib import evaluation as ev
from lib import run_diff
from lib import runs as runs_lib
from lib.plots import evaluation as plots
from lib.text import error_text, escape_markdown
from pages import ui

METRICS = {
    "val_accuracy": "validation accuracy",
    "val_loss": "validation loss",
    "accuracy": "training accuracy",
    "loss": "training loss",
}
ROWS = {  # run_summary key -> row label, in display order
    "dataset": "dataset",
    "model": "model",
    "parameters": "parameters",
    "augmentation": "augmentation",
    "optimizer": "optimizer · learning rate",
    "batch_size": "batch size",
    "epochs": "epochs",
    "train_seconds": "training time (s)",
    "precision": "computed in",
    "best_val_accuracy": "best validation accuracy",
    "test_accuracy": "test accuracy",
}


def column_labels(paths: dict) -> dict[str, str]:
    """``name · dataset · accuracy · date`` per run id; the id is added where two would read alike."""
    labels = {r: runs_lib.run_label(runs_lib.view_of(path)) for r, path in paths.items()}
    counts = Counter(labels.values())
    return {r: f"{lab} ({r})" if counts[lab] > 1 else lab for r, lab in labels.items()}


def _cell(key: str, value) -> str:
    if value is None:
        return "—"
    if key.endswith("accuracy"):
        return f"{value:.2%}"
    if key == "parameters":
        return f"{value:,}"
    return str(value)


ui.ensure_router()
st.title("Compare runs")
runs = ev.completed_runs()
if len(runs) < 2:
    st.info("Comparing needs at least two completed runs.", icon=":material/info:")
    st.stop()

# Options are run ids; labels are made per id, so a pick survives a renamed run.
by_id = {p.name: p for p in runs}
labels = column_labels(by_id)
# What is picked here is kept beside the draft: another page and back, a reload or a
# server restart show the same comparison (runs deleted since are left out).
ui.kept(ui.COMPARE_RUNS, by_id, list(by_id)[:2], many=True)
chosen = st.multiselect("Runs", list(by_id), format_func=labels.get, key=ui.COMPARE_RUNS)
ui.remember(ui.COMPARE_RUNS)
if len(chosen) < 2:
    st.info("Pick two or more runs.", icon=":material/info:")
    st.stop()

ui.kept(ui.COMPARE_METRIC, METRICS, next(iter(METRICS)))
metric = st.radio(
    "Curve", list(METRICS), format_func=METRICS.get, horizontal=True, key=ui.COMPARE_METRIC
)
ui.remember(ui.COMPARE_METRIC)
histories = {labels[r]: ev.load_history(by_id[r]) for r in chosen}
st.plotly_chart(
    plots.compare_curves_figure(histories, metric, METRICS[metric]), key="compare_curves"
)

with st.spinner("Reading the runs…"):
    table = {}
    for r in chosen:
        try:
            summary = ev.run_summary(by_id[r])
        except Exception as exc:
            st.error(error_text(exc, f"Run {r}"), icon=":material/error:")
            continue
        table[labels[r]] = [_cell(k, summary[k]) for k in ROWS]
st.dataframe(
    {"": list(ROWS.values()), **table}, hide_index=True, key="compare_table", width="stretch"
)

st.subheader("Run diff", anchor="run-diff")
st.caption(
    "Two runs on the same test images: which images the second run got right that the "
    "first got wrong, and the other way round, and how the confusion matrix moved."
)
pair = st.columns(2)
# The older run is "before" by default: a retrain on a cleaned version comes after.
by_age = sorted(chosen, key=lambda r: runs_lib.view_of(by_id[r]).created)
ui.kept(ui.COMPARE_DIFF_A, by_age, by_age[0])
ui.kept(ui.COMPARE_DIFF_B, by_age, by_age[-1])
run_a = pair[0].selectbox("Before", by_age, format_func=labels.get, key=ui.COMPARE_DIFF_A)
run_b = pair[1].selectbox("After", by_age, format_func=labels.get, key=ui.COMPARE_DIFF_B)
ui.remember(ui.COMPARE_DIFF_A)
ui.remember(ui.COMPARE_DIFF_B)
if run_a == run_b:
    st.info("Pick two different runs.", icon=":material/info:")
    st.stop()
missing = [r for r in (run_a, run_b) if not ev.has_predictions(by_id[r])]
if missing:
    names = " and ".join(labels[r] for r in missing)
    st.info(
        f"{escape_markdown(names)} {'has' if len(missing) == 1 else 'have'} no stored "
        "predictions yet. Computing them runs the model once over the test images.",
        icon=":material/info:",
    )
    if not st.button("Compute predictions", key=ui.COMPARE_DIFF_PREDICT, type="primary"):
        st.stop()
    try:
        with st.spinner("Predicting the test images…"):
            for r in missing:
                ev.compute_predictions(by_id[r])
    except Exception as exc:
        ui.show_error(exc, "Cannot compute predictions")
        st.stop()
try:
    with st.spinner("Matching the test images…"):
        diff = run_diff.diff_runs(run_a, run_b)
except Exception as exc:
    ui.show_error(exc, "Run diff")
    st.stop()
fixed, broken = diff.wrong_to_right, diff.right_to_wrong
cols = st.columns(4)
cols[0].metric("Common test images", f"{diff.common:,}")
cols[1].metric(
    "Accuracy", f"{diff.accuracy_b:.2%}", f"{(diff.accuracy_b - diff.accuracy_a) * 100:+.2f} pts"
)
cols[2].metric("Wrong → right", f"{len(fixed):,}")
cols[3].metric("Right → wrong", f"{len(broken):,}")
if diff.only_a or diff.only_b:
    st.caption(
        f"{diff.only_a:,} test image(s) only the first run saw and {diff.only_b:,} only the "
        "second saw are left out."
    )
if diff.label_changed.any():
    st.caption(
        f"{int(diff.label_changed.sum()):,} common image(s) carry another label in the second "
        "run's dataset; both runs are scored against the second's labels."
    )
st.plotly_chart(run_diff.confusion_delta_figure(diff), key="compare_diff_confusion")


def _flips(title: str, which, limit: int = 12) -> None:
    st.markdown(f"**{title}** ({len(which):,})")
    if not len(which):
        st.caption("None.")
        return
    shown = which[:limit]
    preds = ev.load_predictions(by_id[run_b])
    images = ev.load_images(by_id[run_b], preds, diff.pos_b[shown])
    grid = st.columns(6)
    names = diff.class_names
    for n, (i, img) in enumerate(zip(shown, images, strict=True)):
        grid[n % 6].image(
            ev.display_image(img),
            caption=f"{names[diff.y_true[i]]}: {names[diff.pred_a[i]]} → {names[diff.pred_b[i]]}",
        )
    if len(which) > limit:
        st.caption(f"the first {limit} of {len(which):,}")


_flips("Wrong → right", fixed)
_flips("Right → wrong", broken)
