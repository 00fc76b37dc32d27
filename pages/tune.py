"""Tune: search hyperparameters of the draft's recipe with an Optuna study, and watch it live.

Any number of the draft's training, model or augmentation settings is switched to a
range (a subset for a choice) by the same metadata the forms use (pages/forms.py).
Each trial is an ordinary run (the Train page lists it); study workers run in their
own processes (lib.tuning), so a reload or a server restart loses nothing. The
study panel is a fragment that rereads the study's storage every few seconds.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from lib import jobs, registry, runstore, tuning
from lib.errors import KestrelError, log_internal_error
from lib.text import escape_markdown
from pages import forms, ui

REFRESH_S = 2.0
START = ui.TUNE_START_MSG
PART_TITLES = {"train": "Training", "model": "Model", "augment": "Augmentation"}
STATE_WORDS = {
    "running": ":material/play_circle: running",
    "stopping": ":material/pending: stopping",
    "finished": ":material/check_circle: finished",
    "stopped": ":material/stop_circle: stopped",
    "interrupted": ":material/error: interrupted (no worker)",
}


def _say(kind: str, text: str, where: str = ui.TUNE_MSG) -> None:
    st.session_state[where] = (kind, text)


def _show_message(where: str = ui.TUNE_MSG) -> None:
    kind, text = st.session_state.get(where) or (None, "")
    if kind == "success":
        st.success(text, icon=":material/check_circle:")
    elif kind == "error":
        st.error(text, icon=":material/error:")


def _param_label(path: str) -> str:
    part, _, name = path.partition(".")
    return forms.label(tuning.SEARCH_PARTS[part], name)


# ---------------------------------------------------------------- a new study


def _space_form(draft) -> dict:
    """One "Search …" toggle per searchable field, grouped by part; returns the space."""
    space = {}
    tabs = st.tabs([PART_TITLES[p] for p in tuning.SEARCH_PARTS])
    for tab, (part, cls) in zip(tabs, tuning.SEARCH_PARTS.items(), strict=True):
        config = getattr(draft, part)
        names = tuning.searchable_fields(part)
        cols = tab.columns(3)
        for i, name in enumerate(names):
            entry = forms.search_field(
                cls,
                name,
                f"{ui.TUNE_FIELD}{part}.",
                getattr(config, name),
                container=cols[i % 3],
            )
            if entry is not None:
                space[f"{part}.{name}"] = entry
    return space


def _start_study(space: dict) -> None:
    ss = st.session_state
    try:
        draft = ui.draft()
        spec = tuning.StudySpec(
            name=str(ss.get(ui.TUNE_NAME, "")).strip(),
            base=draft.run_config(),
            space=space,
            n_trials=int(ss[ui.TUNE_TRIALS]),
            budget_epochs=int(ss[ui.TUNE_EPOCHS]),
            budget_seconds=float(ss[ui.TUNE_SECONDS]),
            pruner=ss[ui.TUNE_PRUNER],
            storage=str(ss.get(ui.TUNE_STORAGE, "")).strip(),
        )
        folder = tuning.create_study(spec)
        if tuning.live_workers(folder):
            raise tuning.TuningError(f"study {spec.name} is running already")
        tuning.spawn_workers(folder, int(ss[ui.TUNE_WORKERS]))
    except KestrelError as exc:
        _say("error", f"Not started: {escape_markdown(forms.in_ui_words(str(exc)))}", START)
        return
    except Exception as exc:
        path = log_internal_error(exc, "tune: start study")
        _say("error", f"Not started: an internal error ({type(exc).__name__}); see {path}", START)
        return
    ss[ui.TUNE_PICK] = folder.name
    _say(
        "success",
        f"Study {escape_markdown(spec.name)} started: {spec.n_trials} trials; each is a run "
        "you also find on the Train page.",
        START,
    )


def new_study_section(draft, has_studies: bool) -> None:
    with st.expander("New study", expanded=not has_studies, icon=":material/add:"):
        st.caption(
            "The study starts from the draft's recipe (the Dataset, Augmentation, Model and "
            "Train pages) and searches the settings switched on below. The objective is the "
            "best validation accuracy a trial reaches within its budget."
        )
        c1, c2, c3, c4 = st.columns(4)
        c1.text_input(
            "Study name", value=time.strftime("study-%m%d-%H%M"), key=ui.TUNE_NAME, max_chars=80
        )
        c2.number_input("Trials", 1, 1000, value=8, key=ui.TUNE_TRIALS)
        c3.number_input("Epochs per trial", 1, 1000, value=draft.train.epochs, key=ui.TUNE_EPOCHS)
        c4.number_input(
            "Time limit per trial (s, 0 = none)", 0, 7 * 24 * 3600, value=0, key=ui.TUNE_SECONDS
        )
        c1, c2, c3 = st.columns([1, 1, 2])
        c1.selectbox(
            "Pruner",
            tuning.PRUNERS,
            key=ui.TUNE_PRUNER,
            format_func={"median": "median", "hyperband": "Hyperband", "none": "none"}.get,
            help="Stops trials whose validation accuracy at an epoch is worse than others' were.",
        )
        c2.number_input(
            "Worker processes",
            1,
            16,
            value=1,
            key=ui.TUNE_WORKERS,
            help=f"Trials at once; runs still wait for a free slot ({jobs.MAX_CONCURRENT_ENV}).",
        )
        c3.text_input(
            "Storage (optional)",
            key=ui.TUNE_STORAGE,
            placeholder="empty: an SQLite file in the workspace; or postgresql://user:pw@host/db",
            help="Workers on other machines join with: python -m lib tune STUDY.json --storage URL",
        )
        st.markdown("**Search space** — switch a setting to a range or a set of values")
        space = _space_form(draft)
        st.button(
            "Start study",
            type="primary",
            icon=":material/play_arrow:",
            key=ui.TUNE_START,
            on_click=_start_study,
            args=(space,),
            disabled=not space,
            help=None if space else "Switch at least one setting to a range or values first.",
        )
    _show_message(START)  # outside: the expander folds once a study exists


# ---------------------------------------------------------------- a study's panel


def _stop_study(folder) -> None:
    tuning.stop_study(folder)
    _say("success", "Stopping the study: running trials stop after their batch, no new ones start.")


def _resume_study(folder, workers: int) -> None:
    try:
        tuning.resume_study(folder, workers)
    except KestrelError as exc:
        _say("error", escape_markdown(str(exc)))
        return
    _say("success", "Study resumed.")


def _stop_trial(rows_by_number: dict) -> None:
    number = st.session_state.get(ui.TUNE_TRIAL_PICK)
    row = rows_by_number.get(number)
    if row is None:
        return
    try:
        jobs.request_stop(row.run_id)
    except KestrelError as exc:
        _say("error", escape_markdown(str(exc)))
        return
    _say("success", f"Trial {number} stops after its current batch; the study goes on.")


def _use_best(run_id: str, number: int) -> None:
    config = runstore.read_config(runstore.run_dir(run_id))
    forms.update_draft(
        lambda d: d.with_recipe(config, data=False),
        f"The draft now holds trial {number}'s augmentation, model and training; the Train "
        "page shows it.",
    )
    _say("success", f"Trial {number}'s recipe is in the draft: open the Train page to start it.")


def _save_best(run_id: str) -> None:
    name = str(st.session_state.get(ui.TUNE_SAVE_NAME, "")).strip()
    try:
        target = registry.save_run_to_registry(runstore.run_dir(run_id), name)
    except KestrelError as exc:
        _say("error", f"Not saved: {escape_markdown(str(exc))}")
        return
    _say("success", f"Saved as {escape_markdown(target.name)} in the model registry.")


def _trial_table(rows: list, space: dict) -> None:
    records = []
    for r in rows:
        rec = {
            "trial": r.number,
            "state": r.state,
            "val accuracy": r.value,
            "pruned at epoch": r.pruned_epoch,
            "duration (s)": None if r.duration_s is None else round(r.duration_s),
        }
        for path in space:
            rec[_param_label(path)] = r.params.get(path)
        rec["run"] = r.run_id
        rec["note"] = r.note
        records.append(rec)
    st.dataframe(pd.DataFrame(records), hide_index=True, width="stretch")


FIGURE_MAKERS = (
    ("history", "History", "plot_optimization_history"),
    ("parallel", "Parallel coordinates", "plot_parallel_coordinate"),
    ("importance", "Importance", "plot_param_importances"),
    ("slice", "Slices", "plot_slice"),
)


def _figures(study, slug: str) -> None:
    """Optuna's charts of the study, made again only when a trial has finished since.

    The panel refreshes every REFRESH_S; making the importances (fANOVA, random forests)
    took 0.85 CPU-s each time for 12 trials of 4 settings (once, on a busy machine), beside
    the trials training on the same cores. Unchanged figures are also kept as drawn by the
    browser.
    """
    from optuna import visualization as vis

    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    if len(done) < 2:
        st.caption("Optuna's charts appear once two trials have finished.")
        return
    finished = tuple((t.number, t.state.name, t.value, sorted(t.params.items())) for t in done)
    shown = (slug, repr(finished))
    cached = st.session_state.get(ui.TUNE_FIGURES)
    if cached is None or cached[0] != shown:
        figures = {}
        for name, _, maker in FIGURE_MAKERS:
            try:
                figures[name] = getattr(vis, maker)(study)
            except Exception as exc:  # e.g. importances of a single searched setting
                figures[name] = f"Not available yet: {escape_markdown(str(exc))}"
        cached = (shown, figures)
        st.session_state[ui.TUNE_FIGURES] = cached
    tabs = st.tabs([title for _, title, _ in FIGURE_MAKERS])
    for tab, (name, _, _) in zip(tabs, FIGURE_MAKERS, strict=True):
        with tab:
            fig = cached[1][name]
            if isinstance(fig, str):
                st.caption(fig)
            else:
                st.plotly_chart(fig, key=f"{ui.TUNE_CHART}{name}", width="stretch")


def _study_name(slug: str) -> str:
    try:
        return tuning.read_spec(tuning.study_dir(slug)).name
    except KestrelError:
        return slug


def study_panel() -> None:
    folders = tuning.list_studies()
    if not folders:
        st.info("No studies yet: set one up above.", icon=":material/info:")
        return
    names = [f.name for f in folders]
    ui.kept(ui.TUNE_PICK, names, names[0])  # kept beside the draft: a reload shows it again
    slug = st.selectbox("Study", names, key=ui.TUNE_PICK, format_func=_study_name)
    ui.remember(ui.TUNE_PICK)
    folder = tuning.study_dir(slug)
    try:
        spec = tuning.read_spec(folder)
        study = tuning.load_study(spec, folder, heartbeat=True)  # fail_stale needs it
    except KestrelError as exc:
        st.error(escape_markdown(str(exc)), icon=":material/error:")
        return
    jobs.poll()
    tuning.fail_stale(study)
    rows = tuning.trial_rows(study)
    state = tuning.study_state(folder, study, spec)
    best = tuning.best_trial(study)
    c1, c2, c3 = st.columns([2, 1, 1])
    best_text = "–" if best is None else f"{best.value:.4f} (trial {best.number})"
    c1.markdown(
        f"**{escape_markdown(spec.name)}** · {STATE_WORDS[state]} · "
        f"{tuning.counted_trials(study)}/{spec.n_trials} trials done · best val accuracy "
        f"{best_text} · pruner {spec.pruner}"
    )
    if state in ("running", "stopping"):
        c2.button(
            "Stop study",
            key=ui.TUNE_STOP,
            icon=":material/stop:",
            on_click=_stop_study,
            args=(folder,),
            disabled=state == "stopping",
        )
    elif state != "finished":
        c2.button(
            "Resume study",
            key=ui.TUNE_RESUME,
            icon=":material/play_arrow:",
            on_click=_resume_study,
            args=(folder, int(st.session_state.get(ui.TUNE_WORKERS, 1))),
        )
    _show_message()
    _trial_table(rows, spec.space)
    active = {r.number: r for r in rows if r.state in ("queued", "running") and r.run_id}
    if active:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.selectbox(
            "Running trial",
            list(active),
            key=ui.TUNE_TRIAL_PICK,
            # No state in the label: it would stay "queued" in the box once the trial runs
            # (Streamlit 1.67 keeps a selectbox's value as its label text); the table has it.
            format_func=lambda n: f"trial {n} · run {active[n].run_id}",
        )
        c2.button("Stop trial", key=ui.TUNE_TRIAL_STOP, on_click=_stop_trial, args=(active,))
    if best is not None and best.user_attrs.get("run_id"):
        run_id = best.user_attrs["run_id"]
        c1, c2, c3 = st.columns([1, 2, 1], vertical_alignment="bottom")
        if c1.button(
            "Use best",
            key=ui.TUNE_USE_BEST,
            type="primary",
            icon=":material/done_all:",
            help="Put the best trial's augmentation, model and training into the draft.",
        ):
            _use_best(run_id, best.number)
            # The whole page, not this fragment: the sidebar's draft summary shows it too.
            st.rerun()
        c2.text_input(
            "Registry name", value=f"{spec.slug}-best", key=ui.TUNE_SAVE_NAME, max_chars=80
        )
        c3.button("Save best model", key=ui.TUNE_SAVE, on_click=_save_best, args=(run_id,))
    _figures(study, slug)


ui.ensure_router()
st.title("Tune")
_draft = ui.draft()
forms.show_notice()
new_study_section(_draft, has_studies=bool(tuning.list_studies()))
st.divider()
st.fragment(run_every=REFRESH_S)(study_panel)()
