"""The one binding between form widgets and configs, and the draft they edit.

A widget is built from its config field's metadata (label, help, range, step,
choices and their words: lib/config.py), seeded from the draft, and read back
as a validated config; pages never type a limit or a choice again.

How a page uses it::

    draft = forms.bind("train")                  # seed the part's widgets from the draft
    forms.field(TrainConfig, "epochs", "train")  # one widget per field
    ...
    forms.show_refusal("train")                  # the last refused change, if any

A change is committed the moment the widget reports it (``on_change``): the
part is rebuilt from its widgets, validated, and saved as the draft's next
revision. A refused value (a cross-field rule, say) puts the widgets back to
the draft's values and says why, so what the screen shows is always the draft,
and the draft is what Start trains. There are no ``st.form``s: Enter in a
field only commits that field. Forms are never drawn inside fragments: a change
reported in a fragment run is an echo of an older screen and is not committed
(``ui.in_fragment_run``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from lib import drafts
from lib.config import (
    AugmentConfig,
    ConvBlock,
    DataConfig,
    HeadConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from lib.text import escape_markdown
from pages import ui

# part of the draft -> (config class, widget key prefix)
PARTS: dict[str, tuple[type, str]] = {
    "data": (DataConfig, ui.DATA_FIELD),
    "augment": (AugmentConfig, ui.AUG_FIELD),
    "model": (ModelConfig, ui.MODEL_FIELD),
    "train": (TrainConfig, ui.TRAIN_FIELD_PREFIX),
}


def key(prefix: str, name: str) -> str:
    """The session-state key of a field's widget."""
    return f"{prefix}{name}"


def meta(cls: type, name: str) -> dict[str, Any]:
    """A config field's metadata (range, choices, label, help…)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return dict(f.metadata)
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _hint(cls: type, name: str) -> Any:
    return _type_hints(cls)[name]


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # get_type_hints evaluates every (string) annotation of the class each call, and the
    # forms ask for each field's on every rerun; the config classes never change.
    return typing.get_type_hints(cls)


def label(cls: type, name: str) -> str:
    """The words a form shows for a field."""
    return meta(cls, name).get("label") or name.replace("_", " ").capitalize()


def choice_words(cls: type, name: str) -> Callable[[Any], str]:
    """format_func of a choice field: its metadata's words, else the value itself."""
    words = meta(cls, name).get("labels") or {}
    return lambda value: words.get(value, str(value))


_CONFIG_CLASSES = {
    c.__name__: c
    for c in (AugmentConfig, DataConfig, ModelConfig, TrainConfig, ConvBlock, HeadConfig, RunConfig)
}
_FIELD_REF = re.compile(r"\b(" + "|".join(_CONFIG_CLASSES) + r")\.(\w+)")


def in_ui_words(text: str) -> str:
    """A lib message with ``TrainConfig.batch_size`` put as the form says it: 'Batch size'."""

    def words(match: re.Match) -> str:
        cls = _CONFIG_CLASSES[match.group(1)]
        try:
            return f"'{label(cls, match.group(2))}'"
        except KeyError:
            return match.group(0)

    return _FIELD_REF.sub(words, text)


def mark_bound(cls: type, name: str) -> None:
    """Record that ``cls.name`` has a widget on some page (tests check every field has one)."""
    st.session_state.setdefault(ui.FORM_BOUND, set()).add(f"{cls.__name__}.{name}")


# ---------------------------------------------------------------- values <-> widgets


def to_widget(cls: type, name: str, value: Any) -> Any:
    """A config value as its widget holds it."""
    hint = _hint(cls, name)
    if typing.get_origin(hint) is tuple:
        return ", ".join(str(v) for v in value)
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    return value


def from_widget(cls: type, name: str, value: Any) -> Any:
    """A widget's value as the config field wants it; ValueError names the field."""
    hint = _hint(cls, name)
    if typing.get_origin(hint) is tuple:
        parts = [p.strip() for p in str(value).replace(";", ",").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"{label(cls, name)} must be whole numbers separated by commas "
                f"(e.g. 128, 64), got {value!r}"
            ) from None
    if hint is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{label(cls, name)} must be a whole number, got {value!r}")
        return int(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value.strip()
    return value


def seed_widgets(cls: type, cfg: Any, prefix: str, names: Sequence[str], *, force: bool) -> None:
    """Put ``cfg``'s values into the widgets' state (missing ones only, unless ``force``)."""
    for name in names:
        k = key(prefix, name)
        if force or k not in st.session_state:
            st.session_state[k] = to_widget(cls, name, getattr(cfg, name))


def read_widgets(cls: type, base: Any, prefix: str, names: Sequence[str] | None = None) -> Any:
    """``base`` with the values of the fields' widgets that are on the page (validated)."""
    names = names if names is not None else [f.name for f in dataclasses.fields(cls)]
    changes = {
        n: from_widget(cls, n, st.session_state[key(prefix, n)])
        for n in names
        if key(prefix, n) in st.session_state
    }
    return base.replace(**changes)


# ---------------------------------------------------------------- the draft's parts


def _field_names(cls: type) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if not f.metadata.get("cli_only") and _is_scalar(cls, f.name)
    ]


def _is_scalar(cls: type, name: str) -> bool:
    hint = _hint(cls, name)
    return not dataclasses.is_dataclass(hint) and not (
        typing.get_origin(hint) is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0])
    )


def bind(*parts: str) -> drafts.Draft:
    """Seed the widgets of ``parts`` from the draft; call before drawing them.

    Widgets the page drew before keep their state unless the draft changed since
    (a recipe, a loaded run, another tab): then every widget is re-seeded, so
    the screen shows the draft at once.
    """
    draft = ui.draft()
    seeded = st.session_state.setdefault(ui.FORM_SEEDED, {})
    for part in parts:
        if part == "run_name":
            force = seeded.get(part) != draft.revision
            if force or ui.TRAIN_RUN_NAME not in st.session_state:
                st.session_state[ui.TRAIN_RUN_NAME] = draft.run_name
            seeded[part] = draft.revision
            continue
        cls, prefix = PARTS[part]
        force = seeded.get(part) != draft.revision
        seed_widgets(cls, getattr(draft, part), prefix, _field_names(cls), force=force)
        seeded[part] = draft.revision
    return draft


def commit(part: str, build: Callable[[drafts.Draft], drafts.Draft] | None = None) -> None:
    """Widget callback: save the part's widget values as the draft's next revision.

    Args:
        part: "data", "augment", "model", "train" or "run_name".
        build: makes the new draft from the stored one (default: read the part's
            widgets). A ValueError it raises refuses the change.
    """
    draft = ui.draft()
    if ui.in_fragment_run():
        # An echo of an older screen, not an edit (ui.in_fragment_run; forms are never
        # drawn in fragments): keep the draft, and seed every widget from it again on the
        # next whole-page run, so the widgets' state matches the screen.
        _reseed(draft)
        return
    refusals = st.session_state.setdefault(ui.FORM_REFUSED, {})
    refusals.pop(part, None)
    try:
        if build is not None:
            new = build(draft)
        elif part == "run_name":
            name = str(st.session_state.get(ui.TRAIN_RUN_NAME, "")).strip()
            new = draft.with_parts(run_name=name)
            new.run_config()  # validates the length
        else:
            cls, prefix = PARTS[part]
            new = draft.with_parts(**{part: read_widgets(cls, getattr(draft, part), prefix)})
    except ValueError as exc:
        refusals[part] = str(exc)
        _reseed(draft)
        return
    ui.save_draft(new)


def _reseed(draft: drafts.Draft) -> None:
    """Put every bound widget back to the draft's values (after a refused change)."""
    st.session_state.setdefault(ui.FORM_SEEDED, {}).clear()


def update_draft(change: Callable[[drafts.Draft], drafts.Draft], message: str = "") -> drafts.Draft:
    """Apply ``change`` to the draft and save it; every widget shows the result on this run."""
    draft = ui.save_draft(change(ui.draft()))
    if message:
        st.session_state[ui.FORM_NOTICE] = message
    return draft


def show_refusal(part: str) -> None:
    """The last refused change of ``part``: what was wrong, and that the old value stays."""
    text = st.session_state.get(ui.FORM_REFUSED, {}).get(part)
    if text:
        st.error(
            f"Not changed: {escape_markdown(in_ui_words(text))}. The form shows the values in use.",
            icon=":material/error:",
        )


def show_notice() -> None:
    text = st.session_state.pop(ui.FORM_NOTICE, None)
    if text:
        st.success(text, icon=":material/check_circle:")


# ---------------------------------------------------------------- widgets


def field(
    cls: type,
    name: str,
    part: str,
    *,
    prefix: str | None = None,
    container: Any = None,
    label_text: str | None = None,
    options: Sequence[Any] | None = None,
    format_func: Callable[[Any], str] | None = None,
    disabled: bool = False,
    help_text: str | None = None,
    on_change: Callable[..., None] | None = None,
    args: tuple = (),
) -> Any:
    """Draw the widget of ``cls.name`` from its metadata; returns its value.

    Args:
        cls: the config class (TrainConfig, ConvBlock…).
        name: the field.
        part: the draft part the widget commits (its on_change), unless ``on_change`` is given.
        prefix: the widget key prefix (default: the part's).
        container: where to draw it (a column); default the page.
        label_text, options, format_func, help_text: override the metadata's words,
            e.g. a choice's words from a lib table (architecture titles).
    """
    m = meta(cls, name)
    prefix = prefix if prefix is not None else PARTS[part][1]
    k = key(prefix, name)
    where = container if container is not None else st
    callback = on_change or commit
    cb_args = args if on_change else (part,)
    common = {
        "key": k,
        "help": help_text or m.get("help") or m.get("doc") or None,
        "disabled": disabled,
        "on_change": callback,
        "args": cb_args,
    }
    text = label_text or label(cls, name)
    mark_bound(cls, name)
    hint = _hint(cls, name)
    widget = m.get("widget")
    if "choices" in m or options is not None:  # (options: choices the page computes)
        opts = list(options if options is not None else m["choices"])
        fmt = format_func or choice_words(cls, name)
        if widget == "radio":
            return where.radio(text, opts, format_func=fmt, horizontal=True, **common)
        return where.selectbox(text, opts, format_func=fmt, **common)
    if hint is bool:
        if widget == "toggle":
            return where.toggle(text, **common)
        return where.checkbox(text, **common)
    if "range" in m:
        lo, hi = m["range"]
        if hint is int:
            lo, hi, step = int(lo), int(hi), int(m.get("step", 1))
        else:
            lo, hi, step = float(lo), float(hi), m.get("step")
        if widget == "slider":
            return where.slider(text, lo, hi, step=step, **common)
        fmt = m.get("format")
        return where.number_input(text, min_value=lo, max_value=hi, step=step, format=fmt, **common)
    return where.text_input(text, **common)


# ---------------------------------------------------------------- search spaces (the Tune page)


def search_field(cls: type, name: str, prefix: str, value: Any, *, container: Any = None) -> Any:
    """A field switched between its draft value and a search range or subset, from its metadata.

    A toggle "Search <label>" turns the field into a range (two number boxes with
    the field's limits and format; log scale where the metadata says ``log``) or,
    for a choice, a subset (a multiselect of the field's choices in their words).

    Args:
        cls: the config class; name: the field.
        prefix: the widget key prefix (the toggle's key is ``prefix + name``).
        value: the draft's value (the first range or subset is built around it).
        container: where to draw (a column); default the page.

    Returns:
        None while the toggle is off, else ``{"low", "high", "log"}`` or ``{"choices"}``
        (lib.tuning.check_space checks it).
    """
    m = meta(cls, name)
    where = container if container is not None else st
    k = key(prefix, name)
    mark_bound(cls, name)
    text = label(cls, name)
    if not where.toggle(f"Search {text}", key=k, help=m.get("help") or m.get("doc") or None):
        return None
    if "choices" in m:
        picked = where.multiselect(
            f"{text}: values to try",
            list(m["choices"]),
            default=[value] if value in m["choices"] else None,
            format_func=choice_words(cls, name),
            key=f"{k}__choices",
        )
        return {"choices": list(picked)}
    lo, hi = m["range"]
    log = bool(m.get("log"))
    if _hint(cls, name) is int:
        lo, hi, step, fmt = int(lo), int(hi), int(m.get("step", 1)), None
        first = (max(lo, int(value) // 2), min(hi, max(int(value) * 2, int(value) + 1)))
    else:
        lo, hi, step, fmt = float(lo), float(hi), m.get("step"), m.get("format")
        v = float(value)
        if log and v > 0:
            first = (max(lo, v / 10), min(hi, v * 10))
        else:
            first = (lo, hi) if v in (lo, hi) else (max(lo, v / 2), min(hi, v * 2 if v else hi))
    c1, c2 = where.columns(2)
    low = c1.number_input("lowest", lo, hi, value=first[0], step=step, format=fmt, key=f"{k}__low")
    high = c2.number_input(
        "highest", lo, hi, value=first[1], step=step, format=fmt, key=f"{k}__high"
    )
    if log:
        where.caption("searched on a log scale")
    return {"low": low, "high": high, "log": log}
