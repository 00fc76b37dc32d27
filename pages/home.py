"""Home: what Kestrel does, in a few lines, and where this session stands."""

import streamlit as st

from lib import runstore
from pages import ui

ui.ensure_router()
st.title("Kestrel")
st.markdown(
    "Train image classifiers in the browser. "
    "**1. Dataset** — pick a built-in set or upload your own. "
    "**2. Augmentation** — preview random transforms on your images. "
    "**3. Model** — choose a preset or build a CNN. "
    "**4. Train** — runs in the background; close the tab and come back. "
    "**5. Evaluate** and **Predict** — see where the model is wrong, classify new images."
)

cols = st.columns(3)
cols[0].metric("Dataset", ui.describe_data(ui.data_config()))
cols[1].metric("Model", ui.describe_model(ui.model_config()))
runs = runstore.list_run_dirs()
if runs:
    latest = runs[0]
    status = runstore.read_status(latest)
    cols[2].metric("Latest run", latest.name, status.state, delta_color="off")
else:
    cols[2].metric("Latest run", "none yet")
st.page_link("pages/dataset.py", label="Start with a dataset", icon=":material/arrow_forward:")
