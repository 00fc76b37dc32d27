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
with cols[0].container(border=True):
    st.caption("Dataset")
    st.text(ui.describe_data(ui.data_config()))
with cols[1].container(border=True):
    st.caption("Model")
    st.text(ui.describe_model(ui.model_config()))
with cols[2].container(border=True):
    st.caption("Latest run")
    runs = runstore.list_run_dirs()
    if runs:
        status = runstore.read_status(runs[0])
        name = runstore.read_config(runs[0]).name or runs[0].name
        st.text(f"{name} · {status.state}")  # a user's name: text, never markdown
    else:
        st.markdown("**none yet**")
st.page_link("pages/dataset.py", label="Start with a dataset", icon=":material/arrow_forward:")
