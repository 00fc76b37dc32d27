"""Train: set the hyperparameters, start a background run, and watch it live.

Runs train in their own processes (lib.jobs); this page only writes a recipe and
reads run directories. The live panel is a fragment that reruns every couple of
seconds on its own, so the form above it is never disturbed; a reload or a
second browser shows the same runs because everything comes from the run folders.
"""

from __future__ import annotations

import time

import streamlit as st
from streamlit.errors import StreamlitAPIException

from lib import jobs, runstore
from lib.config import OPTIMIZERS, SCHEDULES, RunConfig, TrainConfig
from lib.plots.training import live_curves_figure, lr_figure
from lib.recipes import RECIPE_INFO, RECIPES
from pages import ui

ACTIVE_REFRESH_S = 1.5  # live panel refresh while a run is queued or training
IDLE_REFRESH_S = 5.0  # slower while nothing trains (still picks up CLI runs)
STATE_ICONS = {"queued": "⏳", "running": "▶️", "completed": "✅", "failed": "❌", "stopped": "⏹️"}
SCHEDULE_LABELS = {
    "constant": "constant",
    "cosine": "cosine decay",
    "warmup_cosine": "warm-up + cosine",
    "one_cycle": "one-cycle",
    "step": "step decay",
    "reduce_on_plateau": "reduce on plateau",
}


def _key(field: str) -> str:
    return f"{ui.TRAIN_FIELD_PREFIX}{field}"


def _link(page: str, label: str, icon: str) -> None:
    # A page that is not in the navigation yet cannot be linked; say where it is instead.
    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitAPIException:
        st.caption(label)


def _recipe_summary() -> None:
    data, aug, model = ui.data_config(), ui.augment_config(), ui.model_config()
    cols = st.columns(3)
    with cols[0], st.container(border=True):
        st.markdown(f"**Dataset** · {ui.describe_data(data)}")
        st.caption(
            f"validation {data.val_fraction:.0%} · test {data.test_fraction:.0%} · seed {data.seed}"
        )
        _link("pages/dataset.py", "Change dataset", ":material/photo_library:")
    with cols[1], st.container(border=True):
        st.markdown(f"**Augmentation** · {aug.preset}")
        on = [f for f in ("horizontal_flip", "vertical_flip") if getattr(aug, f)]
        on += [
            f
            for f in (
                "rotation",
                "zoom",
                "translate",
                "crop",
                "contrast",
                "brightness",
                "noise",
                "erasing",
                "mixup",
                "cutmix",
            )
            if getattr(aug, f)
        ]
        st.caption(", ".join(on).replace("_", " ") if on else "no random transforms")
        _link("pages/augmentation.py", "Change augmentation", ":material/auto_awesome:")
    with cols[2], st.container(border=True):
        st.markdown(f"**Model** · {ui.describe_model(model)}")
        st.caption(
            f"width ×{model.width:g} · dropout {model.dropout:g}"
            + (
                f" · {model.weights} weights"
                if model.preset in ("mobilenetv2", "efficientnetb0", "resnet50")
                else ""
            )
        )
        _link("pages/model.py", "Change model", ":material/neurology:")


def _number(
    field: str,
    label: str,
    cfg: TrainConfig,
    *,
    fmt: str | None = None,
    step: float | None = None,
    help_text: str | None = None,
):
    meta = TrainConfig.field_help(field)
    lo, hi = meta["range"]
    value = getattr(cfg, field)
    if isinstance(value, int) and not isinstance(value, bool):
        return st.number_input(
            label,
            min_value=int(lo),
            max_value=int(hi),
            value=value,
            step=int(step or 1),
            key=_key(field),
            help=help_text or meta.get("doc"),
        )
    return st.number_input(
        label,
        min_value=float(lo),
        max_value=float(hi),
        value=float(value),
        step=step,
        format=fmt,
        key=_key(field),
        help=help_text or meta.get("doc"),
    )


def _choice(field: str, label: str, cfg: TrainConfig, options, fmt=None):
    value = getattr(cfg, field)
    return st.selectbox(
        label, options, index=list(options).index(value), key=_key(field), format_func=fmt or str
    )


def _form_values() -> dict:
    names = [f for f in TrainConfig.__dataclass_fields__ if _key(f) in st.session_state]
    values = {f: st.session_state[_key(f)] for f in names}
    for f, v in values.items():
        if isinstance(getattr(TrainConfig(), f), int) and not isinstance(v, bool):
            values[f] = int(v)
    return values


def _start_run() -> None:
    """Form submit callback: validate, queue the run and watch it."""
    st.session_state[ui.TRAIN_START_ERROR] = None
    try:
        train = TrainConfig(**_form_values())
        st.session_state[ui.TRAIN] = train
        config = RunConfig(
            name=st.session_state.get(ui.TRAIN_RUN_NAME, "").strip(),
            data=ui.data_config(),
            augment=ui.augment_config(),
            model=ui.model_config(),
            train=train,
        )
        run_id = jobs.start_run(config)
    except ValueError as exc:  # config, dataset and model errors all say what to change
        st.session_state[ui.TRAIN_START_ERROR] = str(exc)
        return
    _watch(run_id)


def _watch(run_id: str | None) -> None:
    st.session_state[ui.SELECTED_RUN] = run_id
    st.session_state[ui.TRAIN_WATCH] = run_id


def _use_recipe() -> None:
    """Put a named recipe's augmentation, model and training into the session; data stays."""
    name = st.session_state[ui.TRAIN_RECIPE]
    recipe = RECIPES[name]
    st.session_state[ui.AUGMENT] = recipe.augment
    st.session_state[ui.MODEL] = recipe.model
    st.session_state[ui.TRAIN] = recipe.train
    for field in TrainConfig.__dataclass_fields__:  # widgets re-read the new values
        st.session_state.pop(_key(field), None)
    st.session_state[ui.TRAIN_ACTION_MSG] = (
        "info",
        f"Using the {RECIPE_INFO[name].title} recipe for augmentation, model and training; "
        "the dataset is unchanged.",
    )


def _recipe_picker() -> None:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    name = c1.selectbox(
        "Start from a recipe",
        list(RECIPES),
        format_func=lambda n: RECIPE_INFO[n].title,
        key=ui.TRAIN_RECIPE,
        help="Measured recipes: they set augmentation, model and training, not the dataset.",
    )
    c2.button("Use recipe", key=ui.TRAIN_RECIPE_USE, on_click=_use_recipe)
    st.caption(RECIPE_INFO[name].description)


def _hyperparameter_form() -> None:
    cfg = ui.train_config()
    with st.form(ui.TRAIN_FORM, border=True):
        c1, c2, c3, c4 = st.columns(4)
        with c1:
            _number("epochs", "Epochs", cfg)
        with c2:
            _number("batch_size", "Batch size", cfg)
        with c3:
            _choice(
                "optimizer",
                "Optimizer",
                cfg,
                OPTIMIZERS,
                {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}.get,
            )
        with c4:
            _number("learning_rate", "Learning rate", cfg, fmt="%.1e", step=1e-4)
        c1, c2, c3, c4 = st.columns(4)
        with c1:
            _choice("schedule", "LR schedule", cfg, SCHEDULES, SCHEDULE_LABELS.get)
        with c2:
            _number("warmup_epochs", "Warm-up epochs", cfg, fmt="%.1f", step=0.5)
        with c3:
            _number("early_stopping_patience", "Early-stopping patience", cfg)
        with c4:
            st.text_input("Run name (optional)", key=ui.TRAIN_RUN_NAME, max_chars=120)
        with st.expander("More options"):
            c1, c2, c3, c4 = st.columns(4)
            with c1:
                _number("momentum", "Momentum", cfg, fmt="%.3f", step=0.01)
                st.checkbox("Nesterov (SGD)", value=cfg.nesterov, key=_key("nesterov"))
                _number("weight_decay", "Weight decay", cfg, fmt="%.4f", step=1e-4)
            with c2:
                _number(
                    "step_epochs",
                    "Step: epochs per drop",
                    cfg,
                    help_text="step schedule: epochs between drops; plateau: patience",
                )
                _number("step_factor", "Step / plateau factor", cfg, fmt="%.3f", step=0.05)
                _number("label_smoothing", "Label smoothing", cfg, fmt="%.2f", step=0.05)
            with c3:
                _choice("class_weights", "Class weights", cfg, ("none", "balanced"))
                _number("seed", "Seed", cfg)
                st.checkbox("Flip test-time augmentation", value=cfg.tta_flip, key=_key("tta_flip"))
            with c4:
                _choice("mixed_precision", "Mixed precision", cfg, ("auto", "on", "off"))
                _choice("device", "Device", cfg, ("auto", "cpu", "gpu"))
        st.form_submit_button(
            "Start training",
            type="primary",
            icon=":material/play_arrow:",
            key=ui.TRAIN_START,
            on_click=_start_run,
        )
    if st.session_state.get(ui.TRAIN_START_ERROR):
        st.error(f"Not started: {st.session_state[ui.TRAIN_START_ERROR]}", icon=":material/error:")


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
        result = action(run_id)
    except ValueError as exc:
        st.session_state[ui.TRAIN_ACTION_MSG] = ("error", str(exc))
        return
    if action is jobs.clone:
        _watch(result)
        done = f"{done} as run {result}"
    elif action is jobs.delete:
        _watch(None)
    st.session_state[ui.TRAIN_ACTION_MSG] = ("info", done)


def _load_recipe(run_id: str) -> None:
    """Put a run's recipe into this session's active configs and the form."""
    try:
        config = runstore.read_config(runstore.run_dir(run_id))
    except ValueError as exc:
        st.session_state[ui.TRAIN_ACTION_MSG] = ("error", str(exc))
        return
    st.session_state[ui.DATA] = config.data
    st.session_state[ui.AUGMENT] = config.augment
    st.session_state[ui.MODEL] = config.model
    st.session_state[ui.TRAIN] = config.train
    for field in TrainConfig.__dataclass_fields__:  # widgets re-read the new values
        st.session_state.pop(_key(field), None)
    st.session_state[ui.TRAIN_ACTION_MSG] = (
        "info",
        f"Loaded the recipe of run {run_id} into the form; change it and start a new run.",
    )


def _run_label(rows: dict[str, jobs.RunSummary], run_id: str) -> str:
    r = rows.get(run_id)
    if r is None:
        return run_id
    name = f"{r.name} · " if r.name else ""
    return f"{STATE_ICONS.get(r.state, '')} {name}{r.run_id} · {r.dataset} · {r.model}"


def _progress_section(summary: jobs.RunSummary, progress: jobs.Progress) -> None:
    ev = progress.latest
    if summary.state == "queued":
        st.info("Queued: it starts when a training slot is free.", icon=":material/schedule:")
    if summary.state == "running" and ev is None:
        st.caption(f"Preparing… {progress.phase}")
    epochs = summary.epochs
    if ev is not None:
        frac = progress.fraction_epochs if summary.state != "completed" else 1.0
        if ev["type"] == "epoch":
            epoch_no, batch, steps = ev["epoch"] + 1, ev.get("steps", 0), ev.get("steps", 0)
        else:
            epoch_no, batch, steps = ev["epoch"] + 1, ev["batch"], ev["steps"]
        st.progress(frac, text=f"Epoch {min(epoch_no, epochs)} of {epochs}")
        st.progress(min(1.0, batch / max(1, steps)), text=f"Batch {batch} of {steps}")
    batch_ev = progress.batch or {}
    epoch_logs = (progress.epoch or {}).get("logs", {})
    m = st.columns(6)
    running = summary.state == "running"
    m[0].metric(
        "Images/s",
        f"{batch_ev['images_per_sec']:,.0f}" if running and batch_ev.get("images_per_sec") else "–",
    )
    m[1].metric("Elapsed", _fmt_duration(summary.duration_s))
    m[2].metric("ETA", _fmt_duration(ev.get("eta")) if running and ev else "–")
    loss = batch_ev.get("loss") if running and batch_ev else epoch_logs.get("loss")
    acc = batch_ev.get("accuracy") if running and batch_ev else epoch_logs.get("accuracy")
    m[3].metric("Loss", f"{loss:.4f}" if isinstance(loss, float) else "–")
    m[4].metric("Accuracy", f"{acc:.2%}" if isinstance(acc, float) else "–")
    best = summary.best_val_accuracy
    m[5].metric("Best val acc", f"{best:.2%}" if best is not None else "–")
    if running and ev is not None and progress.phase:
        st.caption(progress.phase)  # e.g. the hardware line, "evaluating" at the end


def _buttons(summary: jobs.RunSummary) -> None:
    rid = summary.run_id
    cols = st.columns(5)
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
        help="start a new run with exactly this recipe",
        on_click=_act,
        args=(jobs.clone, rid, "Cloned"),
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
    cols[4].button(
        "Delete",
        key=ui.TRAIN_DELETE,
        icon=":material/delete:",
        width="stretch",
        disabled=summary.state == "running",
        on_click=_act,
        args=(jobs.delete, rid, f"Deleted run {rid}."),
    )


def _runs_table(summaries: list[jobs.RunSummary]) -> None:
    rows = [
        {
            "run": r.run_id,
            "name": r.name,
            "status": f"{STATE_ICONS.get(r.state, '')} {r.state}",
            "dataset": r.dataset,
            "model": r.model,
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
    try:
        jobs.poll()
    except ValueError as exc:
        ui.show_error(exc, "Cannot check the runs")
    summaries = jobs.list_runs()
    if not summaries:
        st.info("No runs yet: set the hyperparameters above and start one.", icon=":material/info:")
        return
    rows = {r.run_id: r for r in summaries}
    selected = st.session_state.get(ui.SELECTED_RUN)
    if selected not in rows:
        active = [r for r in summaries if r.state in runstore.ACTIVE_STATES]
        selected = (active or summaries)[0].run_id
        _watch(selected)
    if st.session_state.get(ui.TRAIN_WATCH) not in rows:
        st.session_state[ui.TRAIN_WATCH] = selected
    st.selectbox(
        "Watching run",
        list(rows),
        key=ui.TRAIN_WATCH,
        format_func=lambda rid: _run_label(rows, rid),
        on_change=lambda: st.session_state.__setitem__(
            ui.SELECTED_RUN, st.session_state[ui.TRAIN_WATCH]
        ),
    )
    summary = rows[selected]
    path = runstore.run_dir(selected)

    msg = st.session_state.pop(ui.TRAIN_ACTION_MSG, None)
    if msg:
        (st.error if msg[0] == "error" else st.success)(msg[1])
    if summary.state == "failed" and summary.error:
        st.error(f"Failed: {summary.error}", icon=":material/error:")
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

    progress = jobs.read_progress(path)
    _progress_section(summary, progress)
    _buttons(summary)

    history = jobs.read_history(path)
    now_epoch = None
    if progress.latest and summary.state == "running":
        now_epoch = progress.fraction_epochs * summary.epochs
    live = progress.live if summary.state == "running" else None
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
_recipe_summary()
_recipe_picker()
_hyperparameter_form()
st.divider()
_any_active = any(r.state in runstore.ACTIVE_STATES for r in jobs.list_runs())
st.fragment(run_every=ACTIVE_REFRESH_S if _any_active else IDLE_REFRESH_S)(live_panel)()
