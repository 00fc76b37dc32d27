"""Compare runs: overlaid validation curves and the runs' key numbers side by side."""

from collections import Counter

import streamlit as st

from lib import evaluation as ev
from lib import runs as runs_lib
from lib.plots import evaluation as plots
from lib.text import error_text
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
chosen = st.multiselect(
    "Runs", list(by_id), default=list(by_id)[:2], format_func=labels.get, key=ui.COMPARE_RUNS
)
if len(chosen) < 2:
    st.info("Pick two or more runs.", icon=":material/info:")
    st.stop()

metric = st.radio(
    "Curve", list(METRICS), format_func=METRICS.get, horizontal=True, key=ui.COMPARE_METRIC
)
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
