"""Compare runs: overlaid validation curves and the runs' key numbers side by side."""

import streamlit as st

from lib import evaluation as ev
from lib.plots import evaluation as plots
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

by_id = {p.name: p for p in runs}
labels = {p.name: ev.run_label(p) for p in runs}
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
    summaries = []
    for r in chosen:
        try:
            summaries.append(ev.run_summary(by_id[r]))
        except ValueError as exc:
            ui.show_error(exc, f"Run {r}")
table = {s["run"]: [_cell(k, s[k]) for k in ROWS] for s in summaries}
st.dataframe(
    {"": list(ROWS.values()), **table}, hide_index=True, key="compare_table", width="stretch"
)
