"""Train: set the hyperparameters, start a background run, and watch it live.

Runs train in their own processes (lib.jobs); this page only writes a recipe and
reads run directories. The live panel is a fragment that reruns every couple of
seconds on its own, so the form above it is never disturbed; a reload or a
second browser shows the same runs because everything comes from the run folders.
"""

from __future__ import annotations

import dataclasses
import time

import streamlit as st
from streamlit.errors import StreamlitAPIException

from lib import augment, drafts, fine_tune, hardware, jobs, measured, preflight, runs, runstore
from lib.advice import mirroring_advice, small_data_advice
from lib.config import TRANSFER_PRESETS, AugmentConfig, ModelConfig, RunConfig, TrainConfig
from lib.data import DatasetError, load_dataset
from lib.errors import KestrelError, log_internal_error
from lib.plots.training import held_for_redraw, live_curves_figure, lr_figure
from lib.progress import Progress, read_progress
from lib.recipes import RECIPE_INFO, RECIPES
from lib.runs import RunView
from lib.text import escape_markdown
from pages import forms, ui

ACTIVE_REFRESH_S = 1.5  # live panel refresh while a run is queued or training
IDLE_REFRESH_S = 5.0  # slower while nothing trains (still picks up CLI runs)
# While a run trains, its two charts redraw at each epoch's end and otherwise at most this
# often (the dotted line of the epoch in progress moves with every batch); the rest of the
# live panel (progress, buttons) still refreshes every ACTIVE_REFRESH_S. Watching the fast
# recipe train on Fashion-MNIST for 30 s, Chromium used 9.7 and 9.9 CPU-s redrawing them on
# every refresh, 6.4 and 7.0 with this (one-off runs, interleaved): CPU the run trains without.
CHART_REFRESH_S = 5.0
MESSAGE_S = 12.0  # how long a button's outcome stays on screen
# The runs table's state marks: text symbols any common font has (emoji showed as empty
# boxes in a browser without an emoji font).
STATE_ICONS = {"queued": "○", "running": "▶", "completed": "✓", "failed": "✗", "stopped": "■"}
STATE_MATERIAL = {  # the same in markdown: Material icons render without an emoji font
    "queued": ":material/schedule:",
    "running": ":material/play_circle:",
    "completed": ":material/check_circle:",
    "failed": ":material/error:",
    "stopped": ":material/stop_circle:",
}


def _link(page: str, label: str, icon: str) -> None:
    # A page that is not in the navigation yet cannot be linked; say where it is instead.
    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitAPIException:
        st.caption(label)


def _recipe_summary(draft: drafts.Draft) -> None:
    data, aug, model = draft.data, draft.augment, draft.model
    cols = st.columns(3)
    with cols[0], st.container(border=True):
        st.markdown(f"**Dataset** · {ui.describe_data(data)}")
        st.caption(
            f"validation {data.val_fraction:.0%} · test {data.test_fraction:.0%} · seed {data.seed}"
        )
        _link("pages/dataset.py", "Change dataset", ":material/photo_library:")
    with cols[1], st.container(border=True):
        st.markdown(f"**Augmentation** · {aug.preset}")
        # every transform that is on, in the form's words (the field metadata's labels)
        on = [
            forms.label(AugmentConfig, f.name).lower()
            for f in dataclasses.fields(AugmentConfig)
            if f.name not in ("preset", "randaugment_magnitude") and getattr(aug, f.name)
        ]
        st.caption(", ".join(on) if on else "no random transforms")
        _link("pages/augmentation.py", "Change augmentation", ":material/auto_awesome:")
    with cols[2], st.container(border=True):
        st.markdown(f"**Model** · {ui.describe_model(model)}")
        st.caption(f"width ×{model.width:g} · dropout {model.dropout:g}" + _weights_words(model))
        _link("pages/model.py", "Change model", ":material/neurology:")


def _weights_words(model: ModelConfig) -> str:
    """Where a transfer model's weights come from and what trains, for the recipe card."""
    if model.preset not in TRANSFER_PRESETS:
        return ""
    if model.start_from:
        source = escape_markdown(model.start_from)
        where = f" · starts from run {source}'s trained weights"
    else:
        where = f" · {forms.choice_words(ModelConfig, 'weights')(model.weights)} weights"
    if not model.freeze_backbone:
        return where + " · whole backbone trains"
    if model.unfreeze_last:
        return where + f" · last {model.unfreeze_last} backbone layers train"
    return where + " · backbone frozen"


def _field(name: str, container=None, **kwargs) -> None:
    forms.field(TrainConfig, name, "train", container=container, **kwargs)


def _commit_screen() -> None:
    """Save what the widgets show right now (a value typed just before clicking Start)."""
    forms.commit("train")
    forms.commit("run_name")


def _start_run() -> None:
    """Start button: train exactly the draft the form shows, once per draft revision."""
    st.session_state[ui.TRAIN_START_ERROR] = None
    drawn = st.session_state.get(ui.TRAIN_PARTS_DRAWN)
    current = ui.draft()
    shown = (current.id, current.data, current.augment, current.model)
    if drawn is not None and drawn[0] == current.id and drawn != shown:
        # Another tab or window on this draft changed what the form does not edit: the
        # page (sidebar, summary) showed the old recipe. Start nothing; the rerun shows it.
        st.session_state[ui.TRAIN_START_ERROR] = (
            "the dataset, augmentation or model was changed in another tab or window "
            "after this page was drawn; the page now shows the change: check it, then "
            "press Start again"
        )
        return
    _commit_screen()
    if st.session_state.get(ui.FORM_REFUSED):
        st.session_state[ui.TRAIN_START_ERROR] = "a value was refused; see the message above"
        return
    draft = ui.draft()
    try:
        preflight.check_startable(draft.run_config())
        run_id, fresh = drafts.start_once(
            draft.id, lambda d: jobs.start_run(d.run_config(), validate=False)
        )
    except KestrelError as exc:  # config, dataset, weights: the message says what to change
        st.session_state[ui.TRAIN_START_ERROR] = str(exc)
        return
    except Exception as exc:
        path = log_internal_error(exc, "starting a run")
        st.session_state[ui.TRAIN_START_ERROR] = (
            f"internal error ({type(exc).__name__}); the details are in {path}"
        )
        return
    if not fresh:
        _say(
            "info",
            f"This form was already started as run {run_id}: nothing new was queued. "
            "Change a setting to start another run.",
        )
    _watch(run_id)


def watch_label(view: RunView) -> str:
    """name · dataset · date: a label that stays the same while the run trains."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(view.created)) if view.created else "–"
    return " · ".join((view.name or view.run_id, view.dataset, when))


def _say(kind: str, text: str) -> None:
    """Keep a button's outcome on screen for a while (the live panel refreshes every few seconds)."""
    st.session_state[ui.TRAIN_ACTION_MSG] = (kind, text, time.time() + MESSAGE_S)


def _watch(run_id: str | None) -> None:
    ui.select_run(run_id)


def _use_recipe(name: str | None = None) -> None:
    """Put a named recipe's augmentation, model and training into the draft; data stays.

    Without ``name``, the recipe picked in the selectbox; with one, the selectbox shows it.
    """
    if name is None:
        name = st.session_state[ui.TRAIN_RECIPE]
    else:
        st.session_state[ui.TRAIN_RECIPE] = name
    forms.update_draft(
        lambda d: d.with_recipe(RECIPES[name], data=False),
        f"Using the {RECIPE_INFO[name].title} recipe for augmentation, model and training "
        "(the form below shows its values); the dataset is unchanged.",
    )


def _holds(draft: drafts.Draft, recipe: RunConfig) -> bool:
    """Whether the draft trains ``recipe`` (its dataset aside: recipes keep the user's)."""
    return (draft.augment, draft.model, draft.train) == (recipe.augment, recipe.model, recipe.train)


def _recipe_picker(draft: drafts.Draft) -> None:
    if ui.TRAIN_RECIPE not in st.session_state:
        # A new session (a reload, another tab): the picker starts on the recipe the form
        # holds, if it holds one, not on Fast while the form shows another.
        match = next((n for n, r in RECIPES.items() if _holds(draft, r)), None)
        if match is not None:
            st.session_state[ui.TRAIN_RECIPE] = match
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    name = c1.selectbox(
        "Start from a recipe",
        list(RECIPES),
        format_func=lambda n: RECIPE_INFO[n].title,
        key=ui.TRAIN_RECIPE,
        help="Measured recipes: they set augmentation, model and training, not the dataset.",
        on_change=ui.refuse_echo,
        args=(ui.TRAIN_RECIPE,),
    )
    ui.hold(ui.TRAIN_RECIPE)
    c2.button("Use recipe", key=ui.TRAIN_RECIPE_USE, on_click=_use_recipe)
    st.caption(RECIPE_INFO[name].description)
    if _holds(draft, RECIPES[name]):
        st.caption(":material/check: The form below holds this recipe.")
    else:
        # After a reload the picker cannot know which recipe the changed form started from.
        st.caption(
            ":material/edit_note: The form below holds other values than this recipe "
            "(changed since, or another recipe): **Use recipe** puts this recipe's in it."
        )
    if RECIPE_INFO[name].sized_for_bfloat16 and hardware.emulates_bfloat16():
        measured_here = measured.schedule_sentence(name, hardware.server_tier())
        st.caption(
            ":material/schedule: This server's CPU has no native bfloat16 (AVX-512 BF16 or "
            "AMX), so this recipe trains in float32 here and takes longer than it is sized for"
            + (f": measured on a CPU of its kind, {measured_here}" if measured_here else ".")
        )


def _lr_finder_section(draft: drafts.Draft) -> None:
    """Find a learning rate: a sweep of the draft's recipe in the background, one click to apply.

    The sweep trains a few hundred steps (a minute or more on a CPU with a real
    dataset), so it runs in its own process (lib.lr_finder) like a run: the page
    stays usable, and a reload or another tab finds the result by the draft's id.
    """
    from lib import lr_finder

    folder = lr_finder.folder_for(draft.id)

    def start() -> None:
        try:
            lr_finder.start_background(ui.draft().run_config(), draft.id)
        except KestrelError as exc:
            _say("error", f"The sweep did not start: {forms.in_ui_words(str(exc))}")

    def apply(rate: float) -> None:
        forms.update_draft(
            lambda d: d.with_parts(train=d.train.replace(learning_rate=rate)),
            f"Learning rate set to {rate:.2g} (the finder's suggestion).",
        )

    def panel(was_running: bool) -> None:
        state = lr_finder.state(folder)
        if was_running != (state["state"] == "running"):
            # Started (Run the sweep reruns this fragment only, which has no timer yet) or
            # done: redraw the page, so the fragment gets its timer or loses it.
            st.rerun()
        c1, c2 = st.columns([1, 3], vertical_alignment="center")
        c1.button(
            "Run the sweep" if state["state"] == "none" else "Run it again",
            key=ui.TRAIN_LRF_START,
            icon=":material/insights:",
            on_click=start,
            disabled=state["state"] == "running",
        )
        if state["state"] == "running":
            done, total = state["done"], max(state["total"], 1)
            c2.progress(done / total, text=f"sweeping: step {done} of {total}")
        elif state["state"] == "failed":
            c2.error(escape_markdown(forms.in_ui_words(state["error"])), icon=":material/error:")
        elif state["state"] == "done":
            result = state["result"]
            rate = float(f"{result.suggestion:.2g}")
            c2.markdown(
                f"Suggested learning rate **{rate:.2g}** (a tenth of the rate at the lowest "
                f"loss, {result.min_loss_lr:.2g}); the form has {draft.train.learning_rate:.2g}."
            )
            st.plotly_chart(lr_finder.result_figure(result), key=ui.TRAIN_LRF_CHART)
            if st.button(
                f"Use {rate:.2g}",
                key=ui.TRAIN_LRF_APPLY,
                type="primary",
                disabled=rate == draft.train.learning_rate,
            ):
                apply(rate)
                # The whole page, not this fragment: the form below must show the new rate.
                st.rerun()

    sweep = lr_finder.state(folder)["state"]
    running = sweep == "running"
    # Open from the start of a sweep on, so its end (a rerun) does not fold the result away.
    with st.expander("Find a learning rate", expanded=sweep != "none", icon=":material/insights:"):
        st.caption(
            f"Trains the recipe for {lr_finder.DEFAULT_STEPS} steps while the learning rate "
            "grows from 1e-6 to 1 and plots the loss against it; nothing is kept."
        )
        st.fragment(run_every=1.0 if running else None)(panel)(running)


def _apply_advice(config: RunConfig) -> None:
    forms.update_draft(
        lambda d: d.with_recipe(config, data=False),
        "Applied the small-dataset advice; the form and the cards above show the new recipe.",
    )


def _small_data_section(draft: drafts.Draft) -> None:
    """Advice for datasets with few images per class or lopsided classes, applied in one click."""
    try:
        ds = load_dataset(draft.data)
    except (DatasetError, KestrelError):
        return  # the Dataset page says what is wrong
    shape = tuple(ds.image_shape)
    advice = small_data_advice(
        ds.counts()["train"],
        list(ds.class_names),
        draft.run_config(),
        weights_problem=lambda m: preflight.weights_problem(m, shape),
    )
    if advice is None:
        return
    with st.container(border=True):
        st.markdown("**Small dataset** · " + escape_markdown("; ".join(advice.reasons)) + ".")
        if advice.suggestions:
            st.markdown("What helps:\n" + "\n".join(f"- {s}" for s in advice.suggestions))
        for caveat in advice.caveats:
            st.caption(escape_markdown(caveat))
        if advice.suggestions:
            st.button(
                "Apply these changes",
                key=ui.TRAIN_ADVICE_APPLY,
                icon=":material/auto_fix_high:",
                on_click=_apply_advice,
                args=(advice.config,),
            )


def _turn_off_mirroring(config: RunConfig) -> None:
    forms.update_draft(
        lambda d: d.with_recipe(config, data=False),
        "Mirroring is off: Horizontal flip (Augmentation page) and Flip test-time "
        "augmentation (More options below); everything else is as it was.",
    )


def _mirroring_section(draft: drafts.Draft) -> None:
    """On digits, a recipe that mirrors images: say what mirrors, offer to turn it off."""
    advice = mirroring_advice(draft.data.source, draft.run_config())
    if advice is None:
        return
    with st.container(border=True):
        st.markdown(
            "**Mirroring digits** · this recipe "
            + escape_markdown(" and ".join(advice.uses))
            + ". Digits have a handedness: "
            + escape_markdown(augment.MIRROR_REASON)
            + "."
        )
        st.button(
            "Turn off mirroring",
            key=ui.TRAIN_MIRROR_OFF,
            icon=":material/flip:",
            on_click=_turn_off_mirroring,
            args=(advice.config,),
        )


def _shapes_section(draft: drafts.Draft) -> None:
    """On the generated shapes set, the Fast CNN learns little: say so, offer the shapes recipe.

    The Fashion-MNIST recipes' network has one convolution; the shapes (any colour, size
    and angle) need more of them and more steps than 6 epochs of 3000 images give. Shown
    while the draft trains shapes with the Fast CNN, not once the user picked another model.
    """
    if draft.data.source != "shapes" or draft.model.preset != "fast_cnn":
        return
    with st.container(border=True):
        st.markdown(
            "**Generated shapes** · the Fast CNN is tuned for Fashion-MNIST: with one "
            "convolution it learns little of the shapes in a few epochs. The Shapes demo "
            "recipe is the one that trained the shipped shapes-demo model."
        )
        st.caption(RECIPE_INFO["shapes"].description)
        st.button(
            "Use the Shapes demo recipe",
            key=ui.TRAIN_SHAPES_USE,
            icon=":material/category:",
            on_click=_use_recipe,
            args=("shapes",),
        )


def _hyperparameter_form(draft: drafts.Draft) -> None:
    with st.container(border=True):
        c1, c2, c3, c4 = st.columns(4)
        _field("epochs", c1)
        _field("batch_size", c2)
        _field("optimizer", c3)
        _field("learning_rate", c4)
        c1, c2, c3, c4 = st.columns(4)
        _field("schedule", c1)
        _field("warmup_epochs", c2)
        _field("early_stopping_patience", c3)
        forms.mark_bound(RunConfig, "name")
        c4.text_input(
            forms.label(RunConfig, "name"),
            key=ui.TRAIN_RUN_NAME,
            max_chars=120,
            on_change=forms.commit,
            args=("run_name",),
        )
        with st.expander("More options"):
            c1, c2, c3, c4 = st.columns(4)
            for name in ("momentum", "nesterov", "weight_decay"):
                _field(name, c1)
            for name in ("step_epochs", "step_factor", "label_smoothing"):
                _field(name, c2)
            for name in ("class_weights", "seed", "tta_flip"):
                _field(name, c3)
            for name in ("mixed_precision", "device"):
                _field(name, c4)
            here = hardware.precision_here(
                draft.train.mixed_precision, draft.model.preset in TRANSFER_PRESETS
            )
            if here and draft.train.device != "gpu":
                c4.caption(here)
        forms.show_refusal("train")
        forms.show_refusal("run_name")
        st.button(
            "Start training",
            type="primary",
            icon=":material/play_arrow:",
            key=ui.TRAIN_START,
            on_click=_start_run,
        )
    if st.session_state.get(ui.TRAIN_START_ERROR):
        text = escape_markdown(forms.in_ui_words(st.session_state[ui.TRAIN_START_ERROR]))
        st.error(f"Not started: {text}", icon=":material/error:")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "–"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _act(action, run_id: str, done: str) -> None:
    """Button callback: run a job action and keep its result for the panel."""
    try:
        action(run_id)
    except KestrelError as exc:
        _say("error", str(exc))
        return
    _say("success", done)


def _read_recipe(run_id: str) -> RunConfig | None:
    try:
        return runstore.read_config(runstore.run_dir(run_id))
    except KestrelError as exc:
        _say("error", str(exc))
        return None


def _load_recipe(run_id: str) -> None:
    """Put a run's whole recipe (its dataset too) into the draft, so the form shows it."""
    config = _read_recipe(run_id)
    if config is None:
        return
    forms.update_draft(
        lambda d: d.with_recipe(config).with_parts(run_name=""),
        f"Loaded the recipe of run {config.name or run_id} into the form (dataset, "
        "augmentation, model and training); change it and start a new run.",
    )


def _clone(run_id: str) -> None:
    """Clone: the run's recipe goes into the draft (the form shows it), then it starts."""
    config = _read_recipe(run_id)
    if config is None:
        return
    draft = forms.update_draft(lambda d: d.with_recipe(config).with_parts(run_name=""))
    try:
        preflight.check_startable(draft.run_config())
        new_id, fresh = drafts.start_once(
            draft.id,
            lambda d: jobs.start_run(d.run_config(), validate=False),
            key=f"{draft.revision}:clone:{run_id}",
        )
    except KestrelError as exc:
        _say("error", f"Not cloned: {exc}")
        return
    if fresh:
        message = (
            "success",
            f"Cloned {config.name or run_id} as run {new_id}; the form shows its recipe.",
        )
    else:
        message = ("info", f"Already cloned as run {new_id}: nothing new was queued.")
    _say(*message)
    _watch(new_id)


def _load_fine_tune(run_id: str) -> None:
    """The second phase of transfer learning for a run, into the form (Start starts it)."""
    try:
        config = fine_tune.fine_tune_recipe(run_id)
    except KestrelError as exc:
        _say("error", f"Not loaded: {exc}")
        return
    m, t = config.model, config.train
    forms.update_draft(
        lambda d: d.with_recipe(config).with_parts(run_name=config.name),
        f"The form now fine-tunes run {config.name.removesuffix(' fine-tuned')}: it starts "
        f"from its trained weights, with the last {m.unfreeze_last} backbone layers unfrozen, "
        f"{t.epochs} epochs at a constant learning rate of {t.learning_rate:g}. Check the "
        "Model and Train settings, then press Start training.",
    )


def _ask_delete(run_id: str) -> None:
    st.session_state[ui.TRAIN_DELETE_ASK] = run_id


def _delete(run_id: str) -> None:
    st.session_state.pop(ui.TRAIN_DELETE_ASK, None)
    try:
        jobs.delete(run_id)
    except KestrelError as exc:
        _say("error", str(exc))
        return
    _watch(None)
    _say("success", f"Deleted run {run_id}.")


def _cancel_delete() -> None:
    st.session_state.pop(ui.TRAIN_DELETE_ASK, None)


def _progress_section(summary: RunView, progress: Progress) -> None:
    ev = progress.latest
    if summary.state == "queued":
        st.info("Queued: it starts when a training slot is free.", icon=":material/schedule:")
    if summary.state == "running" and ev is None:
        st.caption(f"Preparing… {progress.phase}")
    epochs = summary.epochs
    running = summary.state == "running"
    if ev is not None:
        frac = progress.fraction_epochs if summary.state != "completed" else 1.0
        st.progress(frac, text=f"Epoch {min(ev.epoch + 1, epochs)} of {epochs}")
        done = ev.batches_done
        st.progress(min(1.0, done / max(1, ev.steps)), text=f"Batch {done} of {ev.steps}")
    batch = progress.batch if running else None
    logs = progress.epoch_logs
    m = st.columns(6)
    m[0].metric(
        "Images/s", f"{batch.images_per_sec:,.0f}" if batch and batch.images_per_sec else "–"
    )
    m[1].metric("Elapsed", _fmt_duration(summary.duration_s))
    m[2].metric("ETA", _fmt_duration(progress.eta) if running else "–")
    loss = batch.loss if batch else logs.get("loss")
    acc = batch.accuracy if batch else logs.get("accuracy")
    m[3].metric("Loss", f"{loss:.4f}" if isinstance(loss, float) else "–")
    m[4].metric("Accuracy", f"{acc:.2%}" if isinstance(acc, float) else "–")
    best = summary.best_val_accuracy
    m[5].metric("Best val acc", f"{best:.2%}" if best is not None else "–")
    if running and ev is not None and progress.phase:
        st.caption(progress.phase)  # e.g. the hardware line, "evaluating" at the end


def _buttons(summary: RunView) -> None:
    rid = summary.run_id
    cols = st.columns(6)
    cols[0].button(
        "Stop",
        key=ui.TRAIN_STOP,
        icon=":material/stop:",
        width="stretch",
        disabled=summary.state not in ("queued", "running") or summary.stop_requested,
        on_click=_act,
        args=(
            jobs.request_stop,
            rid,
            "Stop requested: the run finishes its current batch and saves a checkpoint.",
        ),
    )
    cols[1].button(
        "Resume",
        key=ui.TRAIN_RESUME,
        icon=":material/play_arrow:",
        width="stretch",
        disabled=summary.state not in ("stopped", "failed"),
        on_click=_act,
        args=(jobs.resume, rid, "Resumed from the last checkpoint."),
    )
    cols[2].button(
        "Clone",
        key=ui.TRAIN_CLONE,
        icon=":material/content_copy:",
        width="stretch",
        help="put this run's recipe into the form and start it again",
        on_click=_clone,
        args=(rid,),
    )
    cols[3].button(
        "Load recipe",
        key=ui.TRAIN_LOAD,
        icon=":material/edit:",
        width="stretch",
        help="copy this run's recipe into the form to change it",
        on_click=_load_recipe,
        args=(rid,),
    )
    fine_tunable = (
        summary.state == "completed"
        and summary.has_model
        and (summary.config.model.preset in TRANSFER_PRESETS)
    )
    cols[4].button(
        "Fine-tune",
        key=ui.TRAIN_FINE_TUNE,
        icon=":material/tune:",
        width="stretch",
        disabled=not fine_tunable,
        help=(
            "phase two of transfer learning: put a recipe into the form that starts from this "
            "run's trained weights and unfreezes the top of the backbone"
            if fine_tunable
            else "for completed transfer-learning runs (MobileNetV2, EfficientNetB0, ResNet50)"
        ),
        on_click=_load_fine_tune,
        args=(rid,),
    )
    cols[5].button(
        "Delete",
        key=ui.TRAIN_DELETE,
        icon=":material/delete:",
        width="stretch",
        disabled=summary.state == "running",
        help="asks first",
        on_click=_ask_delete,
        args=(rid,),
    )
    if st.session_state.get(ui.TRAIN_DELETE_ASK) == rid:
        with st.container(border=True):
            st.warning(
                f"Delete run {escape_markdown(summary.name or rid)}? This removes its folder for good: the "
                "trained model, checkpoints, predictions, history and log. Models already "
                "saved to the registry stay.",
                icon=":material/delete_forever:",
            )
            yes, no = st.columns(2)
            yes.button(
                "Delete for good",
                key=ui.TRAIN_DELETE_YES,
                type="primary",
                on_click=_delete,
                args=(rid,),
                width="stretch",
            )
            no.button("Keep it", key=ui.TRAIN_DELETE_NO, on_click=_cancel_delete, width="stretch")


# The runs filter's values besides a study's name (which starts with a letter or digit).
ALL_RUNS, NO_STUDY = "", " none"


def _study_filter(summaries: list[RunView]) -> list[RunView]:
    """The runs the table shows: all, those outside studies, or one study's trials."""
    studies = sorted({r.study for r in summaries if r.study})
    if not studies:
        return summaries
    labels = {ALL_RUNS: "All runs", NO_STUDY: "Runs outside studies"}
    options = [ALL_RUNS, NO_STUDY, *studies]
    ui.kept(ui.TRAIN_RUNS_FILTER, options, ALL_RUNS)  # all runs, too, once its study went
    pick = st.selectbox(
        "Show",
        options,
        format_func=lambda v: labels.get(v, f"Study {v}: its trials"),
        key=ui.TRAIN_RUNS_FILTER,
        help="A tuning study's trials are ordinary runs; show one study's trials together.",
    )
    ui.remember(ui.TRAIN_RUNS_FILTER)
    if pick == ALL_RUNS:
        return summaries
    if pick == NO_STUDY:
        return [r for r in summaries if not r.study]
    trials = [r for r in summaries if r.study == pick]
    return sorted(trials, key=lambda r: int(r.trial.get("trial_number", 0) or 0))


def _runs_table(summaries: list[RunView]) -> None:
    summaries = _study_filter(summaries)
    rows = [
        {
            "run": r.run_id,
            "name": r.name,
            "status": f"{STATE_ICONS.get(r.state, '')} {r.state}",
            "dataset": r.dataset,
            "model": r.model,
            "study": r.study_label,
            "epochs": f"{r.epochs_done}/{r.epochs}",
            "best val acc": r.best_val_accuracy,
            "duration": _fmt_duration(r.duration_s),
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started or r.created)),
        }
        for r in summaries
    ]
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "best val acc": st.column_config.ProgressColumn(
                "best val acc", format="percent", min_value=0.0, max_value=1.0
            ),
        },
    )


def live_panel() -> None:
    """The selected run's live progress, its actions, and the runs table."""
    current = ui.draft()
    if st.session_state.get(ui.TRAIN_FORM_DRAWN) != (current.id, current.revision):
        # A button in here (Load recipe, Clone, Fine-tune) or another tab changed the
        # draft: redraw the whole page, so the form above shows what now trains.
        st.rerun(scope="app")
    try:
        jobs.poll()
    except KestrelError as exc:
        ui.show_error(exc, "Cannot check the runs")
    summaries = runs.list_views()
    if not summaries:
        st.info("No runs yet: set the hyperparameters above and start one.", icon=":material/info:")
        return
    rows = {r.run_id: r for r in summaries}
    selected = st.session_state.get(ui.SELECTED_RUN)
    if selected not in rows:
        active = [r for r in summaries if r.state in runstore.ACTIVE_STATES]
        selected = (active or summaries)[0].run_id
        _watch(selected)
    # The picker holds a run id and SELECTED_RUN is the truth. Its labels never change
    # while a run trains (name · dataset · date; the accuracy is beside it): in Streamlit
    # 1.67 the browser keeps a selectbox's value as its label text, and a label that
    # changes under it made the box jump to another run.
    if st.session_state.get(ui.TRAIN_WATCH) != selected:
        st.session_state[ui.TRAIN_WATCH] = selected
    st.selectbox(
        "Watching run",
        list(rows),
        key=ui.TRAIN_WATCH,
        format_func=lambda rid: watch_label(rows[rid]),
        on_change=lambda: _watch(st.session_state[ui.TRAIN_WATCH]),
    )
    state = rows[selected].state
    acc = rows[selected].accuracy
    accuracy = (
        f" · {acc:.1%} {'test' if rows[selected].test_accuracy is not None else 'best val'} accuracy"
        if acc is not None
        else ""
    )
    st.caption(f"{STATE_MATERIAL.get(state, '')} {state}{accuracy}")
    summary = rows[selected]
    path = runstore.run_dir(selected)

    msg = st.session_state.get(ui.TRAIN_ACTION_MSG)
    if msg and time.time() < msg[2]:
        {"error": st.error, "info": st.info}.get(msg[0], st.success)(escape_markdown(msg[1]))
    if summary.state == "failed" and summary.error:
        st.error(f"Failed: {escape_markdown(summary.error)}", icon=":material/error:")
    elif summary.state == "stopped":
        st.info(
            "Stopped. Resume continues from the last finished epoch.",
            icon=":material/pause_circle:",
        )
    elif summary.state == "completed":
        acc = summary.test_accuracy
        st.success(
            "Completed" + (f" · test accuracy {acc:.2%}" if acc is not None else ""),
            icon=":material/check_circle:",
        )
    if summary.warning:
        st.warning(summary.warning)
    if summary.stop_requested and summary.state == "running":
        st.caption("Stopping after the current batch…")

    progress = read_progress(path)
    _progress_section(summary, progress)
    _buttons(summary)

    history = summary.history
    now_epoch = None
    if progress.latest and summary.state == "running":
        now_epoch = progress.fraction_epochs * summary.epochs
    live = progress.live if summary.state == "running" else None
    history, live, now_epoch = held_for_redraw(
        st.session_state.setdefault(ui.TRAIN_CHART_DATA, {}),
        (selected, summary.state, len(history.get("epoch", []))),
        (history, live, now_epoch),
        now=time.monotonic(),
        hold_s=CHART_REFRESH_S if summary.state == "running" else 0.0,
    )
    if history or live:
        left, right = st.columns([2, 1])
        left.plotly_chart(
            live_curves_figure(history, live), width="stretch", key=ui.TRAIN_CURVES_CHART
        )
        right.plotly_chart(
            lr_figure(jobs.read_lr_plan(path), history, now_epoch),
            width="stretch",
            key=ui.TRAIN_LR_CHART,
        )
    else:
        st.caption("Loss, accuracy and learning-rate curves appear with the first batches.")
    if summary.state == "completed":
        _link("pages/evaluate.py", "Evaluate this run", ":material/analytics:")
    with st.expander("Worker log"):
        st.code(jobs.read_log_tail(path) or "(empty)", language=None)
    st.subheader("Runs")
    _runs_table(summaries)


ui.ensure_router()
st.title("Train")
_draft = forms.bind("train", "run_name")
# What the sidebar and the summary show of the recipe; Start refuses if the draft has moved on.
st.session_state[ui.TRAIN_PARTS_DRAWN] = (_draft.id, _draft.data, _draft.augment, _draft.model)
_recipe_summary(_draft)
_small_data_section(_draft)
_shapes_section(_draft)
_recipe_picker(_draft)
_mirroring_section(_draft)
_lr_finder_section(_draft)
forms.show_notice()
_hyperparameter_form(_draft)
st.divider()
_drawn = ui.draft()
st.session_state[ui.TRAIN_FORM_DRAWN] = (_drawn.id, _drawn.revision)
_any_active = any(r.state in runstore.ACTIVE_STATES for r in runs.list_views())
st.fragment(run_every=ACTIVE_REFRESH_S if _any_active else IDLE_REFRESH_S)(live_panel)()
