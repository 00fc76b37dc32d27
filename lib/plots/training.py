"""Figures of the Train page: live loss/accuracy curves and the learning-rate curve.

Pure functions: the run's history columns (lib.runstore.read_history), its recent
batch events (lib.progress.BatchEvent) and its LR plan in,
``plotly.graph_objects.Figure`` out.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.progress import BatchEvent

ACCENT = "#c2410c"  # the app's primary colour (.streamlit/config.toml): training
VALIDATION = "#1d4ed8"
MUTED = "#9ca3af"


def _finite(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def held_for_redraw(
    store: MutableMapping[str, Any], key: Any, data: Any, *, now: float, hold_s: float
) -> Any:
    """What a live chart draws: ``data``, or what it drew less than ``hold_s`` seconds ago.

    An unchanged figure sent to the browser is kept as drawn rather than redrawn, so a
    chart refreshed every second or so can redraw less often. ``store`` keeps the last
    drawing between calls (a session's state); another ``key`` (run, state, epochs done)
    draws at once.
    """
    if store.get("key") == key and now - store.get("at", -math.inf) < hold_s:
        return store["data"]
    store.update(key=key, at=now, data=data)
    return data


def live_curves_figure(
    history: dict[str, list[float]],
    live: Sequence[BatchEvent] | None = None,
    *,
    height: int = 320,
) -> go.Figure:
    """Loss and accuracy per epoch, training and validation, side by side.

    Args:
        history: columns of history.csv; ``epoch`` is 1-based (the end of that epoch).
        live: batch events of the epoch in progress; drawn as a dotted line that
            continues the training curve, so the chart moves during an epoch.
        height: figure height in pixels.
    """
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.08
    )
    epochs = history.get("epoch", [])
    for col, metric in ((1, "loss"), (2, "accuracy")):
        for key, name, colour in (
            (metric, "train", ACCENT),
            (f"val_{metric}", "validation", VALIDATION),
        ):
            x, y = _finite(epochs, history.get(key, []))
            if not x:
                continue
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    name=name,
                    mode="lines+markers",
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": colour, "width": 2},
                    marker={"size": 6},
                    hovertemplate=f"epoch %{{x}}<br>{name} {metric} %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        if live:
            xs = [ev.position for ev in live]
            ys = [getattr(ev, metric) for ev in live]
            if epochs:  # join the dotted line to the last finished epoch
                last_x, last_y = _finite(epochs, history.get(metric, []))
                if last_x:
                    xs, ys = [last_x[-1], *xs], [last_y[-1], *ys]
            x, y = _finite(xs, ys)
            if x:
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        name="train (this epoch)",
                        mode="lines",
                        legendgroup="live",
                        showlegend=col == 1,
                        line={"color": ACCENT, "width": 1.5, "dash": "dot"},
                        hovertemplate=f"epoch %{{x:.2f}}<br>running {metric} %{{y:.4f}}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch", rangemode="tozero")
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.25, "x": 0},
        template="plotly_white",
        uirevision="live-curves",
    )
    return fig


def lr_figure(
    plan: dict[str, Any] | None,
    history: dict[str, list[float]],
    current_epoch: float | None = None,
    *,
    height: int = 260,
) -> go.Figure:
    """The learning rate over training: the planned schedule and the rates actually used.

    Args:
        plan: lr_plan.json (``epoch`` and ``learning_rate`` lists); None if not written yet.
        history: columns of history.csv; its ``learning_rate`` is the rate at each epoch end.
        current_epoch: where training is now (epochs, fractional), marked by a line.
        height: figure height in pixels.
    """
    fig = go.Figure()
    if plan and plan.get("epoch"):
        fig.add_trace(
            go.Scatter(
                x=plan["epoch"],
                y=plan["learning_rate"],
                mode="lines",
                name="adaptive start" if plan.get("adaptive") else "planned",
                line={
                    "color": MUTED,
                    "width": 2,
                    "dash": "dash" if plan.get("adaptive") else "solid",
                },
                hovertemplate="epoch %{x:.2f}<br>lr %{y:.3g}<extra></extra>",
            )
        )
    x, y = _finite(history.get("epoch", []), history.get("learning_rate", []))
    if x:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="markers",
                name="used (epoch end)",
                marker={"color": ACCENT, "size": 7},
                hovertemplate="epoch %{x}<br>lr %{y:.3g}<extra></extra>",
            )
        )
    if current_epoch is not None:
        fig.add_vline(x=current_epoch, line={"color": ACCENT, "width": 1, "dash": "dot"})
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title={"text": "Learning rate", "font": {"size": 14}},
        xaxis_title="epoch",
        yaxis={"exponentformat": "e", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.3, "x": 0},
        template="plotly_white",
        uirevision="lr-curve",
    )
    return fig
