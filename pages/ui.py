"""What the pages share: session-state keys, the sidebar, and error display.

Session-state keys are constants here and nowhere else. The active recipe parts
(data, augmentation, model, training) live in session state as frozen configs,
so each browser session has its own selections while runs are shared.
"""

from __future__ import annotations

import streamlit as st

from lib.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig

DATA = "active_data_config"
AUGMENT = "active_augment_config"
MODEL = "active_model_config"
TRAIN = "active_train_config"
SELECTED_RUN = "selected_run_id"

_DEFAULTS = {
    DATA: DataConfig,
    AUGMENT: AugmentConfig,
    MODEL: ModelConfig,
    TRAIN: TrainConfig,
}


def init_state() -> None:
    """Give every session the default recipe the first time it runs."""
    for key, factory in _DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = factory()
    if SELECTED_RUN not in st.session_state:
        st.session_state[SELECTED_RUN] = None


def data_config() -> DataConfig:
    return st.session_state[DATA]


def augment_config() -> AugmentConfig:
    return st.session_state[AUGMENT]


def model_config() -> ModelConfig:
    return st.session_state[MODEL]


def train_config() -> TrainConfig:
    return st.session_state[TRAIN]


def describe_data(cfg: DataConfig) -> str:
    name = {
        "fashion_mnist": "Fashion-MNIST",
        "mnist": "MNIST",
        "cifar10": "CIFAR-10",
        "cifar100": "CIFAR-100",
        "digits": "digits (8×8)",
        "shapes": "shapes",
        "folder": "server folder",
        "upload": "uploaded set",
    }[cfg.source]
    if cfg.source == "shapes":
        name += f" ({cfg.shapes_count} × {cfg.shapes_size}px)"
    if cfg.image_size:
        name += f", resized to {cfg.image_size}px"
    return name


def describe_model(cfg: ModelConfig) -> str:
    if cfg.preset == "custom":
        return f"custom CNN ({len(cfg.blocks)} blocks)"
    return cfg.preset


def sidebar() -> None:
    """The active recipe, shown on every page."""
    with st.sidebar:
        st.caption("Active")
        st.markdown(f"**Dataset** · {describe_data(data_config())}")
        st.markdown(f"**Model** · {describe_model(model_config())}")
        aug = augment_config()
        st.markdown(f"**Augmentation** · {aug.preset}")


def show_error(exc: Exception, what: str = "") -> None:
    """Show a user-caused error as a message, never a traceback."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{exc}", icon=":material/error:")
