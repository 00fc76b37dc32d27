"""Data health: check a dataset for label issues, duplicates, outliers and leakage, and fix them.

A check runs as a background process (lib.health); its folder is the truth, so
a reload or another browser shows the same check. The review queue lists the
most likely problems first; relabel (L), exclude (X) and keep (K) record a
decision and move on (← and → step through the queue). The decisions are saved
as a new version of the dataset (lib.health_versions), and "Retrain on the
cleaned version" clones the recipe onto it.
"""

import json
import time

import numpy as np
import streamlit as st

from lib import drafts, health, health_versions, jobs, preflight, runstore
from lib import evaluation as ev
from lib import runs as runs_lib
from lib.config import DataConfig
from lib.errors import KestrelError
from lib.text import escape_markdown
from pages import forms, ui

DRAFT_TARGET = "draft"  # the target option meaning "the dataset of the draft"
SHORTCUTS = {"relabel": "L", "exclude": "X", "keep": "K", "prev": "Left", "next": "Right"}


def _say(kind: str, text: str) -> None:
    st.session_state[ui.HEALTH_MSG] = (kind, text)


def _show_message() -> None:
    said = st.session_state.get(ui.HEALTH_MSG)
    if said:
        kind, text = said
        getattr(st, kind)(text)


def _target_label(target: str) -> str:
    if target == DRAFT_TARGET:
        return f"The draft's dataset: {ui.describe_data(ui.data_config())}"
    try:
        return f"Run {runs_lib.run_label(runs_lib.get_view(target))}"
    except KestrelError:
        return f"Run {target}"


def _start(target: str) -> None:
    try:
        if target == DRAFT_TARGET:
            data, run_id = ui.data_config(), ""
        else:
            data, run_id = runstore.read_config(runstore.run_dir(target)).data, target
        check_id = health.start_check(data, run_id=run_id)
    except Exception as exc:  # shown below; KestrelError as its message
        _say("error", f"Not started: {exc}")
        return
    st.session_state[ui.HEALTH_PICK] = check_id
    _say("success", f"Health check {check_id} started.")


def _check_label(path, status) -> str:
    """dataset · date: a label that stays the same while the check runs.

    In Streamlit 1.67 the browser keeps a selectbox's value as its label text, so a
    label holding the state still said "running" above the finished report; the page
    below the picker says how the check stands.
    """
    try:
        request = health.read_request(path)
        what = ui.describe_data(request["data"])
    except (OSError, ValueError, KestrelError):
        what = "?"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(status.created or 0))
    return f"{what} · {when}"


@st.cache_data(max_entries=32, show_spinner=False)
def _image(data_json: str, split: str, index: int) -> np.ndarray:
    from lib.data import load_dataset

    img = load_dataset(DataConfig.from_json(data_json)).splits[split].images([index])[0]
    return ev.display_image(img, min_side=160)


@st.fragment(run_every=2.0)
def _watch(path) -> None:
    status = health.check_status(path)
    if status.state != "running":
        st.rerun()
    phase = health.latest_phase(path) or "starting"
    st.info(f"Checking… {escape_markdown(phase)}", icon=":material/hourglass_top:")


def _decide(path, key: str, action: str, label: str, position: int, total: int) -> None:
    try:
        health.decide(path, key, action, label)
    except KestrelError as exc:
        _say("error", str(exc))
        return
    said = {"relabel": f"relabelled as {label}", "exclude": "excluded", "keep": "kept"}[action]
    _say("success", f"Image {key} {said}.")
    _move(path.name, min(position + 1, total - 1))


def _move(check_id: str, position: int) -> None:
    positions = st.session_state.setdefault(ui.HEALTH_POS, {})
    positions[check_id] = max(0, position)


def _save_version(path, data: DataConfig) -> None:
    try:
        new_cfg, text = health_versions.save_cleaned(data, health.read_decisions(path))
    except Exception as exc:
        _say("error", f"Not saved: {exc}")
        return
    health.write_cleaned(path, new_cfg)
    _say("success", f"Saved: {text}.")


def _retrain(path, request: dict, cleaned: DataConfig) -> None:
    """Clone the recipe (the checked run's, else the draft's) onto the cleaned version."""
    run_id = request.get("run_id") or ""
    try:
        if run_id:
            config = runstore.read_config(runstore.run_dir(run_id))
            draft = forms.update_draft(
                lambda d: d.with_recipe(config).with_parts(data=cleaned, run_name="")
            )
        else:
            draft = forms.update_draft(lambda d: d.with_parts(data=cleaned, run_name=""))
        preflight.check_startable(draft.run_config())
        new_id, fresh = drafts.start_once(
            draft.id,
            lambda d: jobs.start_run(d.run_config(), validate=False),
            key=f"{draft.revision}:health:{path.name}",
        )
    except KestrelError as exc:
        _say("error", f"Not started: {exc}")
        return
    ui.select_run(new_id)
    if fresh:
        _say("success", f"Retraining on {cleaned.path} as run {new_id} (see the Train page).")
    else:
        _say("info", f"Already started as run {new_id}: nothing new was queued.")


ui.ensure_router()
st.title("Data health")
st.caption(
    "Finds images whose label the data contradicts (cross-validated predictions and the labels "
    "of similar images, scored by cleanlab), near-duplicates, outliers, and test images copied into training."
)

targets = [DRAFT_TARGET] + [v.run_id for v in runs_lib.completed_views()]
with st.container(border=True):
    cols = st.columns([4, 1], vertical_alignment="bottom")
    target_labels = {t: _target_label(t) for t in targets}  # pure lookups: no state needed
    # The target, the check and the issue types shown are kept beside the draft: another
    # page and back, or a reload, show the same review.
    ui.kept(ui.HEALTH_TARGET, targets, targets[0])
    target = cols[0].selectbox(
        "Check the dataset of", targets, format_func=target_labels.get, key=ui.HEALTH_TARGET
    )
    ui.remember(ui.HEALTH_TARGET)
    cols[1].button(
        "Start check", key=ui.HEALTH_START, type="primary", on_click=_start, args=(target,)
    )

_show_message()
checks = health.list_checks()
if not checks:
    st.info("No health check yet: pick a dataset and start one.", icon=":material/info:")
    st.stop()
by_id = {p.name: p for p in checks}
ui.kept(ui.HEALTH_PICK, by_id, checks[0].name)
# Each check's status is read once per run of the page.
statuses = {c: health.check_status(p) for c, p in by_id.items()}
check_labels = {c: _check_label(p, statuses[c]) for c, p in by_id.items()}
check_id = st.selectbox(
    "Health check", list(by_id), format_func=check_labels.get, key=ui.HEALTH_PICK
)
ui.remember(ui.HEALTH_PICK)
path = by_id[check_id]
status = statuses[check_id]
if status.state in ("queued", "running"):
    _watch(path)
    st.stop()
if status.state != "completed":
    st.error(f"The check failed: {escape_markdown(status.error)}", icon=":material/error:")
    st.stop()

request = health.read_request(path)
data: DataConfig = request["data"]
report = health.read_report(path)
counts = report.get("counts", {})
metric_cols = st.columns(len(health.ISSUE_TYPES))
for col, issue in zip(metric_cols, health.ISSUE_TYPES, strict=True):
    col.metric(health.ISSUE_LABELS[issue], f"{counts.get(issue, 0):,}")
sizes = report.get("sizes", {})
st.caption(
    "Checked " + ", ".join(f"{v:,} {k}" for k, v in sizes.items()) + " images in "
    f"{sum(report.get('seconds', {}).values()):.0f} s."
)

queue = health.read_queue(path)
present = [i for i in health.ISSUE_TYPES if counts.get(i)]
ui.kept(ui.HEALTH_ISSUES, present, present, many=True)
issues = st.multiselect("Show", present, format_func=health.ISSUE_LABELS.get, key=ui.HEALTH_ISSUES)
ui.remember(ui.HEALTH_ISSUES)
items = [row for row in queue if row["issue"] in issues]
decisions = health.read_decisions(path)
class_names = report.get("class_names", [])

st.subheader("Review queue")
if not items:
    st.info("Nothing to review.", icon=":material/check_circle:")
else:
    # A new session (a reload, another browser) starts at the first image not decided yet.
    first_open = next((n for n, row in enumerate(items) if row["key"] not in decisions), 0)
    positions = st.session_state.setdefault(ui.HEALTH_POS, {})
    pos = min(positions.get(check_id, first_open), len(items) - 1)
    item = items[pos]
    key = item["key"]
    done = sum(1 for row in items if row["key"] in decisions)
    st.progress(done / len(items), text=f"Image {pos + 1} of {len(items)} · {done} decided")
    left, right = st.columns([1, 2])
    with left:
        try:
            left.image(_image(data.to_json(indent=None), item["split"], item["index"]))
        except Exception as exc:
            ui.show_error(exc, "Cannot load the image")
        if item["other"]:
            other_split, _, other_index = item["other"].split(",")[0].partition(":")
            try:
                left.image(
                    _image(data.to_json(indent=None), other_split, int(other_index)),
                    caption=f"its copy: {other_split} image {other_index}",
                )
            except Exception as exc:
                ui.show_error(exc, "Cannot load the related image")
    with right:
        st.markdown(
            f"**{health.ISSUE_LABELS[item['issue']]}** · {item['split']} image {item['index']}"
        )
        st.markdown(
            f"Given label: **{escape_markdown(item['given'])}**  \n"
            f"Suggested label: **{escape_markdown(item['suggested'])}**  \n"
            f"Score: **{item['score']:.2f}** (1 is a certain problem)"
        )
        decided = decisions.get(key)
        if decided:
            label = f" as {decided['label']}" if decided["action"] == "relabel" else ""
            st.caption(f"Decided: {decided['action']}{escape_markdown(label)}")
        suggested = item["suggested"] if item["suggested"] in class_names else class_names[0]
        relabel_to = st.selectbox(
            "Relabel to",
            class_names,
            index=class_names.index(suggested),
            key=f"{ui.HEALTH_RELABEL_TO}_{check_id}_{key}",
        )
        acts = st.columns(5)
        acts[0].button(
            "Relabel", key=ui.HEALTH_ACT + "relabel", shortcut=SHORTCUTS["relabel"],
            on_click=_decide, args=(path, key, "relabel", relabel_to, pos, len(items)),
        )  # fmt: skip
        acts[1].button(
            "Exclude", key=ui.HEALTH_ACT + "exclude", shortcut=SHORTCUTS["exclude"],
            on_click=_decide, args=(path, key, "exclude", "", pos, len(items)),
        )  # fmt: skip
        acts[2].button(
            "Keep", key=ui.HEALTH_ACT + "keep", shortcut=SHORTCUTS["keep"],
            on_click=_decide, args=(path, key, "keep", "", pos, len(items)),
        )  # fmt: skip
        acts[3].button(
            "Previous", key=ui.HEALTH_ACT + "prev", shortcut=SHORTCUTS["prev"],
            on_click=_move, args=(check_id, pos - 1), disabled=pos == 0,
        )  # fmt: skip
        acts[4].button(
            "Next", key=ui.HEALTH_ACT + "next", shortcut=SHORTCUTS["next"],
            on_click=_move, args=(check_id, min(pos + 1, len(items) - 1)),
            disabled=pos >= len(items) - 1,
        )  # fmt: skip
        st.caption("Keys: L relabel · X exclude · K keep · ← previous · → next")

st.subheader("Save and retrain")
active = {k: v for k, v in decisions.items() if v["action"] in ("relabel", "exclude")}
n_relabel = sum(1 for v in active.values() if v["action"] == "relabel")
st.markdown(
    f"{n_relabel} relabelled, {len(active) - n_relabel} excluded, "
    f"{len(decisions) - len(active)} kept. The checked dataset is never changed: saving makes "
    "a new version."
)
cols = st.columns(2)
cols[0].button(
    "Save as a new dataset version", key=ui.HEALTH_SAVE, disabled=not active,
    on_click=_save_version, args=(path, data),
)  # fmt: skip
cleaned = health.read_cleaned(path)
if cleaned is not None:
    st.success(f"Cleaned version: {escape_markdown(cleaned.path)}", icon=":material/check:")
    cols[1].button(
        "Retrain on the cleaned version", key=ui.HEALTH_RETRAIN, type="primary",
        on_click=_retrain, args=(path, request, cleaned),
    )  # fmt: skip
    st.caption("When the new run has finished, Compare runs shows what changed (Run diff).")
with st.expander("Queue as CSV"):
    st.download_button(
        "Download the review queue",
        (path / health.QUEUE_FILE).read_bytes(),
        file_name=f"health-{check_id}.csv",
        mime="text/csv",
        key="health_queue_download",
    )
    st.caption(json.dumps(report.get("settings", {})))
