"""What the pages share: session-state keys, the draft, the sidebar, and error display.

Session-state keys are constants here and nowhere else. The recipe a user is
editing (data, augmentation, model, training, run name) is a draft stored in the
workspace (lib.drafts); its id rides in the URL (``?draft=…``), so a reload, a
new tab, Back/Forward and a server restart bring it back, while two browsers
that opened the app separately keep their own. Session state only caches it.
"""

from __future__ import annotations

import contextlib
import runpy
import sys
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from lib import drafts, runstore
from lib.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from lib.errors import KestrelError, log_internal_error
from lib.text import escape_markdown

APP_SCRIPT = Path(__file__).resolve().parent.parent / "app.py"
DRAFT_PARAM = "draft"  # the URL query parameter holding the draft id
RUN_PARAM = "run"  # the URL query parameter holding the run this session looks at

DRAFT_ID = "draft_id"  # the id of the draft this session edits
DRAFT_CACHE = "draft_cache"  # (file mtime, Draft): the last read of the draft file
DRAFT_NOTICE = "draft_notice"  # a message about the draft (a lost id), shown once
FORM_SEEDED = "form_seeded_revision"  # {part: draft revision the widgets were seeded from}
FORM_REFUSED = "form_refused"  # {part: message of the last refused change}
DRAWN_VALUES = "drawn_values"  # {widget key: the value the last whole-page run drew it with}
FORM_NOTICE = "form_notice"  # a message after a recipe, loaded run or clone changed the draft
FORM_BOUND = "form_bound_fields"  # {"Class.field"}: fields that have a widget (for tests)
SELECTED_RUN = "selected_run_id"
VIEW_CACHE = "view_cache"  # (draft id, {widget key: value}): the draft's kept view, as last read
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
AUG_JSON_REVISION = "augment_json_revision"  # draft revision the JSON box was filled from
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
TRAIN_FINE_TUNE = "train_fine_tune"  # button: the second phase of transfer learning, into the form
TRAIN_LOAD = "train_load_recipe"
TRAIN_DELETE = "train_delete"
TRAIN_DELETE_ASK = "train_delete_confirm_run"  # run id whose deletion awaits confirmation
TRAIN_DELETE_YES = "train_delete_yes"  # button: delete for good
TRAIN_DELETE_NO = "train_delete_no"  # button: keep the run
TRAIN_ADVICE_APPLY = "train_small_data_apply"  # button: apply the small-data advice
TRAIN_RECIPE = "train_recipe_pick"  # selectbox: a named recipe (lib.recipes)
TRAIN_RECIPE_USE = "train_recipe_use"  # button: apply the picked recipe
TRAIN_SHAPES_USE = "train_shapes_recipe_use"  # button: the Shapes demo recipe, for shapes
TRAIN_MIRROR_OFF = "train_mirroring_off"  # button: turn off mirroring (digits)
TRAIN_ACTION_MSG = "train_action_message"  # (kind, text) of the last button's result
TRAIN_FORM_DRAWN = "train_form_drawn"  # (draft id, revision) the Train form was drawn from
TRAIN_PARTS_DRAWN = "train_parts_drawn"  # (draft id, data, augment, model) the Train page showed
TRAIN_CURVES_CHART = "train_curves_chart"  # live loss/accuracy chart
TRAIN_LR_CHART = "train_lr_chart"  # learning-rate chart
TRAIN_CHART_DATA = "train_chart_data"  # what the live panel's two charts last drew, and when
TRAIN_RUNS_FILTER = "train_runs_filter"  # selectbox: all runs, runs outside studies, one study
TRAIN_LRF_START = "train_lr_finder_start"  # button: start a learning-rate sweep
TRAIN_LRF_APPLY = "train_lr_finder_apply"  # button: put the suggested rate into the draft
TRAIN_LRF_CHART = "train_lr_finder_chart"  # loss against learning rate
# Tune page
TUNE_FIELD = "tune_search_"  # + "part." + field: toggle to search it (+ __low/__high/__choices)
TUNE_NAME = "tune_study_name"  # text input: the new study's name
TUNE_TRIALS = "tune_trials"  # number input: trials of the new study
TUNE_EPOCHS = "tune_budget_epochs"  # number input: epochs per trial
TUNE_SECONDS = "tune_budget_seconds"  # number input: seconds per trial (0: no limit)
TUNE_PRUNER = "tune_pruner"  # selectbox: median, hyperband or none
TUNE_WORKERS = "tune_workers"  # number input: worker processes
TUNE_STORAGE = "tune_storage"  # text input: storage URL ("" is SQLite in the workspace)
TUNE_START = "tune_start"  # button: create the study and start its workers
TUNE_PICK = "tune_study_pick"  # selectbox: the study shown
TUNE_STOP = "tune_stop_study"  # button
TUNE_RESUME = "tune_resume_study"  # button
TUNE_TRIAL_PICK = "tune_trial_pick"  # selectbox: a running trial
TUNE_TRIAL_STOP = "tune_trial_stop"  # button: stop that trial
TUNE_USE_BEST = "tune_use_best"  # button: the best trial's recipe into the draft
TUNE_SAVE_NAME = "tune_save_name"  # text input: registry name for the best trial's model
TUNE_SAVE = "tune_save_best"  # button: save the best trial's model to the registry
TUNE_MSG = "tune_message"  # (kind, text) of the study panel's last action
TUNE_START_MSG = "tune_start_message"  # (kind, text) of the last "Start study"
TUNE_CHART = "tune_chart_"  # + figure name: Optuna's plotly figures
TUNE_FIGURES = "tune_figures"  # Optuna's figures of a study, and the finished trials they show

MODEL_FIELD = "model_field_"  # + ModelConfig field name (preset, width...): that option's widget
MODEL_BLOCK = "model_block_"  # + "{index}_{ConvBlock field}": the custom builder's block widgets
MODEL_HEAD = "model_head_"  # + HeadConfig field name: the custom head's widgets
MODEL_SHOW_BACKBONE = "model_show_backbone_layers"  # toggle: list a backbone's own layers
# Dataset page
DATA_FIELD = "dataset_field_"  # + DataConfig field name: the form's widgets
DATA_UPLOAD_PICK = "dataset_upload_pick"  # selectbox: one of the stored uploads
DATA_BUILT_PICK = "dataset_built_pick"  # selectbox: a built dataset version (name@N)
DATA_UPLOAD_NAME = "dataset_upload_name"  # text input: the picked upload's display name
DATA_UPLOAD_NAME_OF = "dataset_upload_name_of"  # the upload id the name box was filled for
DATA_UPLOAD_DELETE = "dataset_upload_delete"  # button: delete the picked upload (asks first)
DATA_UPLOAD_DELETE_ASK = "dataset_upload_delete_ask"  # upload id awaiting confirmation
DATA_UPLOAD_DELETE_YES = "dataset_upload_delete_yes"
DATA_UPLOAD_DELETE_NO = "dataset_upload_delete_no"
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
PRED_DELETE = "predict_delete_model"  # button: delete the picked saved model (asks first)
PRED_DELETE_ASK = "predict_delete_model_ask"  # model path awaiting confirmation
PRED_DELETE_YES = "predict_delete_model_yes"
PRED_DELETE_NO = "predict_delete_model_no"
PRED_DELETE_MSG = "predict_delete_model_message"  # (kind, text) of the last deletion
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
# Predict page, Compress section (lib.compress, lib.demo_export)
PRED_COMPRESS_VARIANTS = "predict_compress_variants"  # multiselect: variants to build
PRED_COMPRESS_INT8_IO = "predict_compress_int8_io"  # checkbox: int8 input/output tensors
PRED_COMPRESS_SPARSITY = "predict_compress_sparsity"  # slider: pruning target sparsity
PRED_COMPRESS_SCHEDULE = "predict_compress_schedule"  # selectbox: pruning schedule
PRED_COMPRESS_EPOCHS = "predict_compress_epochs"  # number input: pruning fine-tuning passes
PRED_COMPRESS_START = "predict_compress_start"  # button: start the trade-off job
PRED_COMPRESS_FILE = "predict_compress_file"  # selectbox: which variant file to download
PRED_DEMO_BUTTON = "predict_demo_button"  # button: build the browser demo
PRED_DEMO_RESULT = "predict_demo_result"  # (model file, zip bytes, file name) of the last demo
# Unknown detection (Predict) and the robustness report (Evaluate)
PRED_UNKNOWN_THRESHOLD = "predict_unknown_threshold"  # slider: unknown-detection threshold
PRED_OOD_FIT = "predict_ood_fit"  # button: fit unknown detection in the background
PRED_UNKNOWN_MODEL = "predict_unknown_model"  # model file the threshold slider was set for
EVAL_ROBUSTNESS_START = "evaluate_robustness_start"  # button: compute the robustness report
EVAL_ROBUSTNESS_HARDEN = "evaluate_robustness_harden"  # button: clone the run, hardened
EVAL_ROBUSTNESS_METHOD = "evaluate_robustness_method"  # selectbox: how the clone is hardened
EVAL_ROBUSTNESS_NOTICE = "evaluate_robustness_notice"  # message after a start or clone

# Build a dataset page (per-class widgets: prefix + class name)
BUILD_PICK = "build_dataset_pick"  # selectbox: the dataset being built
BUILD_PICK_NONE = "build_dataset_pick_none"  # the empty picker when there is no dataset
BUILD_NEW_NAME = "build_new_name"  # text input: a new dataset's name
BUILD_CREATE = "build_create"  # button: create it
BUILD_MSG = "build_message"  # ("success" | "error", text) after the last edit
BUILD_CLASS_NEW = "build_class_new"  # text input: a new class's name
BUILD_CLASS_ADD = "build_class_add"  # button: add the class
BUILD_FILES = "build_files_"  # + class: file uploader (many images)
BUILD_FILES_ADD = "build_files_add_"  # + class: button, store the uploaded images
BUILD_CAMERA = "build_camera_"  # + class + capture number: camera input
BUILD_CAMERA_N = "build_camera_count"  # {class: captures stored}: a fresh camera after each
BUILD_CAMERA_ADD = "build_camera_add_"  # + class: button, store the capture
BUILD_RENAME = "build_rename_"  # + class: text input, the new name
BUILD_RENAME_BTN = "build_rename_btn_"  # + class: button
BUILD_DELETE = "build_delete_"  # + class: button
BUILD_REMOVE = "build_remove_"  # + class: multiselect of images to remove
BUILD_REMOVE_BTN = "build_remove_btn_"  # + class: button
BUILD_MERGE_FROM = "build_merge_from"  # multiselect: classes merged
BUILD_MERGE_TO = "build_merge_to"  # text input: the class they become
BUILD_MERGE_BTN = "build_merge_btn"
BUILD_IMPORT_PICK = "build_import_pick"  # selectbox: an upload to copy in
BUILD_IMPORT_BTN = "build_import_btn"
BUILD_USE = "build_use"  # button: train on this version (the draft's dataset)
BUILD_DELETE_DATASET = "build_delete_dataset"  # button: delete the whole dataset (asks)
BUILD_DELETE_ASK = "build_delete_ask"  # the dataset whose deletion is being asked
BUILD_DELETE_YES = "build_delete_yes"
BUILD_DELETE_NO = "build_delete_no"

# Data health page, the Evaluate galleries' label actions, the Compare page's run diff
HEALTH_TARGET = "health_target"  # selectbox: the run or dataset to check
HEALTH_START = "health_start"  # button: start a check
HEALTH_PICK = "health_check_pick"  # selectbox: the check being reviewed
HEALTH_ISSUES = "health_issue_filter"  # multiselect: issue types in the queue
HEALTH_POS = "health_queue_position"  # {check id: position in the queue}
HEALTH_RELABEL_TO = "health_relabel_to"  # selectbox: the class a relabel uses
HEALTH_ACT = "health_act_"  # + relabel/exclude/keep/prev/next: the review buttons
HEALTH_SAVE = "health_save_version"  # button: save the decisions as a dataset version
HEALTH_RETRAIN = "health_retrain"  # button: clone the recipe onto the cleaned version
HEALTH_MSG = "health_message"  # (kind, text) of the last action's outcome
HEALTH_SAVED = "health_saved_version"  # {check id: DataConfig JSON of its cleaned version}
EVAL_FIX = "evaluate_fix_"  # + image position + action: relabel/exclude under a gallery image
EVAL_FIX_TO = "evaluate_fix_to_"  # + image position: the class a relabel uses
COMPARE_DIFF_A = "compare_diff_before"  # selectbox: run A of the run diff
COMPARE_DIFF_B = "compare_diff_after"  # selectbox: run B of the run diff
COMPARE_DIFF_PREDICT = "compare_diff_predict"  # button: compute the diff's missing predictions


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


def keep_keras_state() -> None:
    """Stop Streamlit from resetting Keras after every script run (idempotent).

    Streamlit 1.67 calls ``keras.backend.clear_session()`` at the end of each run of
    any page once keras is imported (``script_runner._clean_problem_modules``), and
    clear_session ends in a full ``gc.collect()``: about 0.2 s on this process, which
    holds TensorFlow, after every click, before the session can start its next run.
    Kestrel needs no such reset: models are built in cached functions, Keras' name
    counters are per thread, and each run has its own script thread. Streamlit's other
    clean-up there, closing matplotlib's figures, is kept.
    """
    from streamlit.runtime.scriptrunner import script_runner

    current = getattr(script_runner, "_clean_problem_modules", None)
    if current is None or getattr(current, "keeps_keras_state", False):
        return

    def clean_problem_modules_but_keras() -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            with contextlib.suppress(Exception):
                plt.close("all")

    clean_problem_modules_but_keras.keeps_keras_state = True
    clean_problem_modules_but_keras.streamlit_original = current
    script_runner._clean_problem_modules = clean_problem_modules_but_keras


def init_state() -> None:
    """Find this session's draft: the URL's, else the session's, else a new one.

    A URL naming a draft that does not exist (deleted, or another workspace)
    gets a new draft with the defaults and a notice saying so, never a silent
    switch to the defaults.
    """
    wanted = st.query_params.get(DRAFT_PARAM)
    known = st.session_state.get(DRAFT_ID)
    if wanted and drafts.exists(wanted):
        draft_id = wanted
    elif wanted and wanted != known:
        draft_id = drafts.new_draft().id
        st.session_state[DRAFT_NOTICE] = (
            f"The draft in the address ({wanted[:40]}) was not found on this server, so a new "
            "draft with the default settings was started."
        )
    elif known and drafts.exists(known):
        draft_id = known
    else:
        draft_id = drafts.new_draft().id
    if known != draft_id:
        st.session_state[DRAFT_ID] = draft_id
        st.session_state.pop(DRAFT_CACHE, None)
        st.session_state.pop(FORM_SEEDED, None)
    if st.query_params.get(DRAFT_PARAM) != draft_id:
        st.query_params[DRAFT_PARAM] = draft_id
    if SELECTED_RUN not in st.session_state:
        st.session_state[SELECTED_RUN] = _run_in_url()
    select_run(st.session_state[SELECTED_RUN])  # the address follows the session


def _run_in_url() -> str | None:
    """The run named in the address (``?run=<id>``) if it exists; else None, with a notice."""
    wanted = st.query_params.get(RUN_PARAM)
    if not wanted:
        return None
    try:
        if runstore.run_dir(wanted).is_dir():
            return wanted
    except KestrelError:
        pass
    st.session_state[DRAFT_NOTICE] = (
        f"The run in the address ({escape_markdown(wanted[:40])}) was not found on this server "
        "(deleted, or another workspace), so no run is selected."
    )
    return None


def select_run(run_id: str | None) -> None:
    """Make ``run_id`` the run this session looks at, in its state and in the address.

    The address carries it (``?run=<id>``) like the draft, so a reload, Back or a
    bookmark bring the same run back on Train, Evaluate and Predict.
    """
    st.session_state[SELECTED_RUN] = run_id
    if run_id:
        if st.query_params.get(RUN_PARAM) != run_id:
            st.query_params[RUN_PARAM] = run_id
    elif RUN_PARAM in st.query_params:
        del st.query_params[RUN_PARAM]


_MISSING = object()


def _view() -> dict:
    """The view values kept beside this session's draft (lib.drafts.load_view), cached."""
    draft_id = draft().id
    cached = st.session_state.get(VIEW_CACHE)
    if not cached or cached[0] != draft_id:
        cached = (draft_id, drafts.load_view(draft_id))
        st.session_state[VIEW_CACHE] = cached
    return cached[1]


def kept(key: str, options, default, *, many: bool = False):
    """Give view widget ``key`` the value it last held for this draft; call before drawing it.

    Streamlit forgets a widget's value when a run does not draw it (the user is on
    another page) and when the session ends (a reload, a server restart). The
    session's value is used while it lasts, then the one kept beside the draft
    (:func:`remember`), then ``default``. A value no longer among ``options`` (a
    deleted run, a class of another dataset) is not used; with ``many`` (a
    multiselect) such values are dropped from the list, and a list left empty by
    that is not used either (one the user emptied is). Draw the widget without a
    default or index of its own: the value set here is its value.
    """
    options = list(options)

    def usable(value):
        if many:
            if not isinstance(value, list | tuple):
                return _MISSING
            left = [v for v in value if v in options]
            # Emptied by the user: kept. Emptied because all its values went: not used.
            return left if left or not value else _MISSING
        return value if value in options else _MISSING

    value = usable(st.session_state.get(key, _MISSING))
    if value is _MISSING:
        value = usable(_view().get(key, _MISSING))
    if value is _MISSING:
        value = default
    st.session_state[key] = value
    return value


def recall(key: str, default=None):
    """The value kept beside the draft for ``key`` (:func:`remember`), else ``default``."""
    return _view().get(key, default)


def remember(key: str) -> None:
    """Keep view widget ``key``'s value beside the draft; call after drawing it."""
    value = st.session_state.get(key)
    if isinstance(value, tuple):
        value = list(value)
    if _view().get(key, _MISSING) != value:
        draft_id = draft().id
        try:
            saved = drafts.save_view(draft_id, {key: value})
        except (TypeError, ValueError, OSError) as exc:  # a view is a convenience: log, go on
            log_internal_error(exc, f"keeping the view value {key}")
            return
        st.session_state[VIEW_CACHE] = (draft_id, saved)


def segmented(where, label: str, options, *, key: str, first, **kwargs):
    """A segmented control that always holds one of ``options`` (``first`` to begin with).

    Streamlit's control lets a click on the chosen option clear it; the page would then
    show nothing chosen while it acts on some fallback. Here such a click keeps the option.
    The choice is a view value: kept beside the draft, so a reload shows it again.
    """
    kept(key, options, first)
    value = where.segmented_control(label, options, key=key, **kwargs)
    remember(key)
    return value


def in_fragment_run() -> bool:
    """Whether this script run reruns fragments only (a fragment's timer or its own widget).

    Such a run's request carries every widget's value as the browser had it when it sent
    the request. A person's edit of a widget outside any fragment reruns the whole page,
    so a change to such a widget reported in a fragment run is an echo of an older
    screen: a live panel's timer fired after the page set the widget (a recipe the form
    took, say) and before the browser received the new value. Widget callbacks outside
    fragments ignore it (forms.commit, refuse_echo), or the echo would undo the change.
    """
    ctx = get_script_run_ctx()
    return bool(ctx is not None and getattr(ctx, "fragment_ids_this_run", None))


def hold(key: str) -> None:
    """Record the value the widget ``key`` (outside any fragment) was just drawn with.

    With ``on_change=ui.refuse_echo, args=(key,)`` on the widget, a fragment run's echo
    of an older value is put back to this one.
    """
    if not in_fragment_run():
        st.session_state.setdefault(DRAWN_VALUES, {})[key] = st.session_state.get(key)


def refuse_echo(key: str) -> None:
    """on_change of a held widget: in a fragment run, keep the value the page drew."""
    drawn = st.session_state.get(DRAWN_VALUES, {})
    if in_fragment_run() and key in drawn:
        st.session_state[key] = drawn[key]


def draft() -> drafts.Draft:
    """The draft this session edits, read from its file (cached while the file is unchanged)."""
    draft_id = st.session_state.get(DRAFT_ID)
    if not draft_id:
        init_state()
        draft_id = st.session_state[DRAFT_ID]
    path = drafts.draft_path(draft_id)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    cached = st.session_state.get(DRAFT_CACHE)
    if cached and stamp is not None and cached[0] == stamp and cached[1].id == draft_id:
        return cached[1]
    try:
        current = drafts.load(draft_id)
    except drafts.DraftError as exc:
        st.session_state[DRAFT_NOTICE] = (
            f"{exc}; a new draft with the default settings was started."
        )
        current = drafts.new_draft()
        st.session_state[DRAFT_ID] = current.id
        st.query_params[DRAFT_PARAM] = current.id
        path = drafts.draft_path(current.id)
        stamp = path.stat().st_mtime_ns
    st.session_state[DRAFT_CACHE] = (stamp, current)
    return current


def save_draft(new: drafts.Draft) -> drafts.Draft:
    """Store ``new`` as the draft's next revision (no-op when nothing changed)."""
    stored = drafts.save(new)
    st.session_state[DRAFT_CACHE] = (drafts.draft_path(stored.id).stat().st_mtime_ns, stored)
    return stored


def data_config() -> DataConfig:
    return draft().data


def augment_config() -> AugmentConfig:
    return draft().augment


def model_config() -> ModelConfig:
    return draft().model


def train_config() -> TrainConfig:
    return draft().train


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
    }.get(cfg.source, f"{cfg.source.replace('_', ' ')} {Path(cfg.path).name}")
    if cfg.source == "shapes":
        name += f" ({cfg.shapes_count} × {cfg.shapes_size}px)"
    if cfg.image_size:
        name += f", resized to {cfg.image_size}px"
    return name


def describe_model(cfg: ModelConfig) -> str:
    if cfg.preset == "custom":
        return f"custom CNN ({len(cfg.blocks)} blocks)"
    return cfg.preset


# Streamlit clears the address's parameters when the page changes, and the server then
# puts the draft (and run) back. Under load the browser recorded both steps as history
# entries (``/dataset`` then ``/dataset?draft=…``), so Back needed two presses and the
# first one landed on the same page. Here an entry is a page: a change of the address
# that keeps the page replaces the current entry instead of adding one.
ONE_HISTORY_ENTRY_PER_PAGE = """<script>
(() => {
  if (window.kestrelOneEntryPerPage) return;
  window.kestrelOneEntryPerPage = true;
  const push = window.history.pushState.bind(window.history);
  window.history.pushState = (state, title, url) => {
    const next = url == null ? null : new URL(url, window.location.href);
    if (next && next.pathname === window.location.pathname) {
      return window.history.replaceState(state, title, url);
    }
    return push(state, title, url);
  };
})();
</script>"""


def sidebar() -> None:
    """The draft's recipe, shown on every page."""
    current = draft()
    with st.sidebar:
        st.caption(f"Draft {current.id} · saved as you edit")
        # Generated descriptions, no user text: safe as markdown.
        st.markdown(f"**Dataset** · {describe_data(current.data)}")
        st.markdown(f"**Model** · {describe_model(current.model)}")
        st.markdown(f"**Augmentation** · {current.augment.preset}")
        st.html(ONE_HISTORY_ENTRY_PER_PAGE, unsafe_allow_javascript=True)  # draws nothing
    notice = st.session_state.pop(DRAFT_NOTICE, None)
    if notice:
        st.warning(notice, icon=":material/warning:")


def show_error(exc: Exception, what: str = "") -> None:
    """Show an error: a user-fixable one as its message, anything else as an internal error.

    A KestrelError says what to change. Anything else is a bug: its traceback goes to the
    internal log, and the message names that log instead of pretending the user
    did something wrong.
    """
    prefix = f"{what}: " if what else ""
    if isinstance(exc, KestrelError):
        st.error(f"{prefix}{escape_markdown(exc)}", icon=":material/error:")
        return
    path = log_internal_error(exc, what)
    st.error(
        f"{prefix}internal error ({type(exc).__name__}). The details are in {path}.",
        icon=":material/bug_report:",
    )
