"""Kestrel: a Streamlit studio for image classification with Keras 3.

Run with ``make run`` (or ``streamlit run app.py``). This file is only the router:
it declares the pages, draws the shared sidebar and runs the selected page.
"""

import streamlit as st

from pages import ui

st.set_page_config(page_title="Kestrel", page_icon=":material/flight:", layout="wide")

pages = {
    "": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Data": [
        st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:"),
        st.Page("pages/builder.py", title="Build a dataset", icon=":material/add_photo_alternate:"),
        st.Page("pages/augmentation.py", title="Augmentation", icon=":material/auto_awesome:"),
        st.Page("pages/health.py", title="Data health", icon=":material/health_and_safety:"),
    ],
    "Model": [
        st.Page("pages/model.py", title="Model", icon=":material/neurology:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/tune.py", title="Tune", icon=":material/tune:"),
    ],
    "Results": [
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("pages/compare.py", title="Compare runs", icon=":material/compare:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    ],
}

navigation = st.navigation(pages)
ui.keep_keras_state()
ui.init_state()
ui.sidebar()
navigation.run()
