"""What the pages share: session-state keys, the sidebar, and error display.

Session-state keys are constants here and nowhere else. The active recipe parts
(data, augmentation, model, training) live in session state as frozen configs,
so each browser session has its own selections while runs are shared.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import streamlit as st

from lib.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig

APP_SCRIPT = Path(__file__).resolve().parent.parent / "app.py"

DATA = "active_data_config"
AUGMENT = "active_augment_config"
MODEL = "active_model_config"
TRAIN = "active_train_config"
SELECTED_RUN = "selected_run_id"
# Evaluate / Compare pages
EVAL_RUN = "evaluate_run_pick"  # selectbox: the run being evaluated
EVAL_CELL = "evaluate_selected_cell"  # (run_id, true index, predicted index) or None
EVAL_CM_CHART = "evaluate_confusion_chart"  # the clickable confusion-matrix chart
EVAL_CM_MODE = "evaluate_confusion_mode"  # radio: counts or row-normalised
EVAL_CURVE_CLASS = "evaluate_curve_class"  # selectbox: class of the ROC/PR curves
COMPARE_RUNS = "compare_runs_pick"  # multiselect of runs
COMPARE_METRIC = "compare_curve_metric"  # radio: which history column to overlay
# Augmentation page
AUG_FIELD = "augment_field_"  # prefix + AugmentConfig field name: that option's widget
AUG_PRESET = "augment_preset_pick"  # selectbox: preset, or "custom"
AUG_SAMPLE_SEED = "augment_sample_seed"  # which dataset images the preview shows
AUG_NEW_SAMPLES = "augment_new_samples"  # button: pick other preview images
AUG_UPLOAD = "augment_upload"  # file uploader: preview on the user's own image
AUG_JSON = "augment_json_text"  # text area: settings as JSON
AUG_JSON_APPLY = "augment_json_apply"  # button: load the JSON into the form
AUG_JSON_ERROR = "augment_json_error"  # the last refused JSON's error message, or None
# Train page
TRAIN_FIELD_PREFIX = "train_field_"  # + TrainConfig field name: the form's widgets
TRAIN_RUN_NAME = "train_run_name"  # text input: the new run's name
TRAIN_FORM = "train_form"  # the hyperparameter form
TRAIN_START = "train_start"  # form submit button
TRAIN_START_ERROR = "train_start_error"  # the last refused start's message, or None
TRAIN_WATCH = "train_watch_run"  # selectbox: the run the live panel shows
TRAIN_STOP = "train_stop"  # buttons of the live panel
TRAIN_RESUME = "train_resume"
TRAIN_CLONE = "train_clone"
TRAIN_LOAD = "train_load_recipe"
TRAIN_DELETE = "train_delete"
TRAIN_RECIPE = "train_recipe_pick"  # selectbox: a named recipe (lib.recipes)
TRAIN_RECIPE_USE = "train_recipe_use"  # button: apply the picked recipe
TRAIN_ACTION_MSG = "train_action_message"  # (kind, text) of the last button's result
TRAIN_CURVES_CHART = "train_curves_chart"  # live loss/accuracy chart
TRAIN_LR_CHART = "train_lr_chart"  # learning-rate chart

MODEL_FIELD = "model_field_"  # + ModelConfig field name (preset, width...): that option's widget
MODEL_BLOCK = "model_block_"  # + "{index}_{ConvBlock field}": the custom builder's block widgets
MODEL_HEAD = "model_head_"  # + HeadConfig field name: the custom head's widgets
MODEL_SHOW_BACKBONE = "model_show_backbone_layers"  # toggle: list a backbone's own layers
MODEL_SYNCED = "model_form_synced_config"  # the ModelConfig the form last wrote to MODEL
# Dataset page
DATA_SOURCE = "dataset_source_pick"  # selectbox: which source the form describes
DATA_FIELD = "dataset_field_"  # + DataConfig field name: the form's widgets
DATA_FORM = "dataset_form"  # the options form
DATA_APPLY = "dataset_apply"  # form submit button: make the form's config active
DATA_UPLOAD_PICK = "dataset_upload_pick"  # selectbox: one of the stored uploads
DATA_ZIP = "dataset_zip_file"  # file uploader: a .zip of class folders
DATA_ZIP_SAVE = "dataset_zip_save"  # button: store the zip
DATA_DIR = "dataset_dir_files"  # file uploader (directory): a folder of class folders
DATA_DIR_SAVE = "dataset_dir_save"  # button: store the folder
DATA_UPLOAD_MSG = "dataset_upload_message"  # (kind, text) of the last upload's outcome
DATA_SAMPLE_SPLIT = "dataset_sample_split"  # segmented control: split the samples come from
DATA_SAMPLE_SEED = "dataset_sample_seed"  # int: which random samples are shown
DATA_RESHUFFLE = "dataset_sample_reshuffle"  # button: show other samples
DATA_SAMPLE_CLASSES = "dataset_sample_classes"  # multiselect: classes shown (large sets)
DATA_CHART = "dataset_counts_chart"  # plotly chart: images per class per split

# Predict page
PRED_SOURCE = "predict_model_source"  # segmented control: registry, run or upload
PRED_REGISTRY_PICK = "predict_registry_pick"  # selectbox: a registry model
PRED_RUN_PICK = "predict_run_pick"  # selectbox: a completed run
PRED_MODEL_UPLOAD = "predict_model_upload"  # file uploader: a .keras model
PRED_UPLOADED_MODEL = (
    "predict_uploaded_model"  # (upload file id, ModelEntry) of the accepted upload
)
PRED_INPUT = "predict_input_mode"  # segmented control: upload, camera or dataset sample
PRED_IMAGES = "predict_image_upload"  # file uploader: one or many images
PRED_CAMERA = "predict_camera"  # camera input
PRED_SAMPLE_BUTTON = "predict_sample_button"  # button: another sample from the active dataset
PRED_SAMPLE = "predict_sample"  # (dataset label, index, true class, uint8 image) or None
PRED_TOP_K = "predict_top_k"  # slider: classes listed per image
PRED_GRADCAM = "predict_gradcam"  # toggle: show the Grad-CAM overlay
PRED_DETAIL = "predict_detail_pick"  # selectbox: which of many images is shown in detail
PRED_SAVE_NAME = "predict_save_name"  # text input: registry name for a run's model
PRED_SAVE = "predict_save_button"  # button: save the run's model to the registry
PRED_EXPORT_FORMAT = "predict_export_format"  # selectbox: export format
PRED_EXPORT_BUTTON = "predict_export_button"  # button: convert and check
PRED_EXPORT_RESULT = "predict_export_result"  # (model key, ExportResult) of the last export
PRED_DOWNLOAD = "predict_download_"  # + what: download buttons (csv, export)
PRED_CHART = "predict_topk_chart"  # the top-k probability chart

_DEFAULTS = {
    DATA: DataConfig,
    AUGMENT: AugmentConfig,
    MODEL: ModelConfig,
    TRAIN: TrainConfig,
}


def ensure_router() -> None:
    """Make sure this page runs inside app.py's navigation; call first on every page.

    While a ``pages/`` folder sits beside app.py, Streamlit starts each server
    (and each AppTest run) in its legacy multipage mode, in which a deep link
    (``/train``) runs the page file alone: no session defaults, no sidebar, no
    navigation. The mode ends at the first ``st.navigation`` call. Ending it
    here and running app.py in place routes the same URL through the router
    within this very run, so widget events of the run (a click) are kept.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(APP_SCRIPT), run_name="__main__")
        st.stop()


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
