"""Figures of the Evaluate and Compare pages: confusion matrix, ROC/PR, reliability, curves.

Pure functions: arrays in, ``plotly.graph_objects.Figure`` out.

The confusion matrix is clickable: Streamlit reports point selections of
scatter traces (``st.plotly_chart(on_select=...)``) but not clicks on heatmap
cells, so an invisible scatter marker lies over every tile of the heatmap and
carries ``customdata = [true index, predicted index, ...]``;
:func:`cell_from_point` reads a selected point back into a cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.text import plotly_text

ACCENT = "#c2410c"  # the app's primary colour (.streamlit/config.toml)
COLORSCALE = "Blues"
TEXT_MAX_CLASSES = 20  # above this, numbers in the cells get unreadable: hover instead
WEBGL_MIN_CLASSES = 40  # from here (1600+ tiles) draw with WebGL: SVG gets slow in the browser


def _row_px(num_classes: int) -> int:
    """Height of one matrix row in pixels: ~700 px for the whole matrix, 10..64 per row.

    10 px is the floor because a class name needs about that much room on the axis.
    """
    return int(min(64, max(10, 700 // max(num_classes, 1))))


def _label_px(class_names: list[str], font: int) -> int:
    longest = max((len(c) for c in class_names), default=1)
    return int(min(180, 20 + longest * font * 0.62))


def confusion_matrix_figure(
    cm: np.ndarray,
    class_names: list[str],
    *,
    normalised: bool = False,
    selected: tuple[int, int] | None = None,
) -> go.Figure:
    """The confusion matrix (rows = true, columns = predicted), clickable tile by tile.

    A heatmap draws the tiles (it fills any aspect ratio, so the figure can take
    the page's width); over it lies a scatter trace with one invisible marker per
    tile, which is what a click selects: Streamlit reports selected scatter points
    but not heatmap cells. Every marker's ``customdata`` is
    ``[true index, predicted index, count, share, true name, predicted name]``.

    Args:
        cm: (K, K) counts.
        class_names: K names for the axes.
        normalised: colour and label tiles by row share instead of counts.
        selected: (true, predicted) tile to outline, if any.
    """
    k = len(class_names)
    counts = np.asarray(cm, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    value = share if normalised else counts
    row = _row_px(k)
    font = 12 if k <= 20 else 10 if k <= 50 else 8
    cmax = 1.0 if normalised else max(int(counts.max()), 1)
    heat = go.Heatmap(
        z=value,
        x=list(range(k)),
        y=list(range(k)),
        zmin=0,
        zmax=cmax,
        colorscale=COLORSCALE,
        xgap=1 if k <= 50 else 0,
        ygap=1 if k <= 50 else 0,
        hoverinfo="skip",  # the scatter on top answers hovers and clicks
        colorbar={
            "title": {"text": "share of row" if normalised else "images"},
            "thickness": 12,
            "tickformat": ".0%" if normalised else "d",
        },
    )
    if k <= TEXT_MAX_CLASSES:
        # Shares: an empty tile stays blank, so the few confusions stand out.
        heat.text = [
            [
                (f"{v:.0%}" if c else "") if normalised else f"{c}"
                for v, c in zip(r, cr, strict=True)
            ]
            for r, cr in zip(value, counts, strict=True)
        ]
        heat.texttemplate = "%{text}"
        heat.textfont = {"size": max(9, min(14, row // 3))}
    ii, jj = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    names = np.asarray([plotly_text(c) for c in class_names], dtype=object)  # user text
    customdata = np.stack(
        [ii, jj, counts[ii, jj], np.round(share[ii, jj], 4), names[ii], names[jj]], axis=1
    )
    trace = go.Scattergl if k >= WEBGL_MIN_CLASSES else go.Scatter
    invisible = {"opacity": 0}
    tiles = trace(
        x=jj,
        y=ii,
        mode="markers",
        customdata=customdata,
        marker={"symbol": "square", "size": row, "color": "rgba(0,0,0,0)", "opacity": 0},
        selected={"marker": invisible},
        unselected={"marker": invisible},
        hovertemplate=(
            "true: %{customdata[4]}<br>predicted: %{customdata[5]}"
            "<br>images: %{customdata[2]}<br>share of true class: %{customdata[3]:.1%}"
            "<extra>click to see the images</extra>"
        ),
        name="tiles",
        showlegend=False,
    )
    fig = go.Figure([heat, tiles])
    if selected is not None:
        si, sj = selected
        fig.add_shape(
            type="rect",
            x0=sj - 0.5,
            x1=sj + 0.5,
            y0=si - 0.5,
            y1=si + 0.5,
            line={"color": ACCENT, "width": 3 if row >= 16 else 2},
            name="selected",
        )
    left = _label_px(class_names, font)
    angled = k * max(len(c) for c in class_names) > 40
    steep = k > 30  # vertical names: at 10 px per tile, slanted ones overlap
    bottom = 60
    if angled:
        bottom = _label_px(class_names, font) + 30 if steep else int(left * 0.75) + 40
    axis = {
        "tickmode": "array",
        "tickvals": list(range(k)),
        "ticktext": [plotly_text(c) for c in class_names],
        "tickfont": {"size": font},
        "showgrid": False,
        "zeroline": False,
        "fixedrange": True,  # zoom and pan would only get in the way of clicking
    }
    if k <= 12:
        # Few classes: a fixed width keeps tiles near square instead of page-wide slabs.
        fig.update_layout(width=left + 130 + int(row * 1.4 * k))
    fig.update_layout(
        height=40 + row * k + bottom,
        margin={"l": left, "r": 20, "t": 40, "b": bottom},
        xaxis={
            **axis,
            "title": {"text": "predicted"},
            "tickangle": (-90 if steep else -45) if angled else 0,
            "range": [-0.5, k - 0.5],
        },
        yaxis={**axis, "title": {"text": "true"}, "range": [k - 0.5, -0.5]},
        plot_bgcolor="white",
        clickmode="event+select",
        dragmode=False,
        hovermode="closest",
        hoverdistance=max(20, row),  # a click anywhere in a tile finds its marker
        hoverlabel={"bgcolor": "white"},
    )
    return fig


def cell_from_point(point: dict[str, Any]) -> tuple[int, int] | None:
    """The (true, predicted) cell of a point from ``st.plotly_chart``'s selection, if it is one."""
    data = point.get("customdata")
    if isinstance(data, (list, tuple)) and len(data) >= 2:
        try:
            return int(data[0]), int(data[1])
        except (TypeError, ValueError):
            return None
    x, y = point.get("x"), point.get("y")
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return round(y), round(x)
    return None


def _line_figure(title: str, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title={"text": title},
        xaxis={"title": {"text": x_title}, "range": [0, 1.01]},
        yaxis={"title": {"text": y_title}, "range": [0, 1.02]},
        height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, class_name: str) -> go.Figure:
    """One-vs-rest ROC curve with the chance diagonal."""
    fig = _line_figure(f"ROC · {class_name} vs rest", "false positive rate", "true positive rate")
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance",
            line={"dash": "dot", "color": "#9ca3af"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=fpr, y=tpr, mode="lines", name=f"AUC {auc:.3f}", line={"color": ACCENT, "width": 2}
        )
    )
    return fig


def pr_figure(
    recall: np.ndarray, precision: np.ndarray, ap: float, class_name: str, prevalence: float
) -> go.Figure:
    """One-vs-rest precision-recall curve with the no-skill line at the class prevalence."""
    fig = _line_figure(f"Precision-recall · {class_name} vs rest", "recall", "precision")
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[prevalence, prevalence],
            mode="lines",
            name="no skill",
            line={"dash": "dot", "color": "#9ca3af"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=recall,
            y=precision,
            mode="lines",
            name=f"AP {ap:.3f}",
            line={"color": ACCENT, "width": 2, "shape": "hv"},
        )
    )
    return fig


def reliability_figure(
    edges: np.ndarray, accuracy: np.ndarray, confidence: np.ndarray, counts: np.ndarray, ece: float
) -> go.Figure:
    """Reliability diagram: accuracy per confidence bin against the perfect-calibration diagonal."""
    centers = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0])
    fig = _line_figure(f"Reliability · ECE {ece:.3f}", "confidence", "accuracy")
    fig.add_trace(
        go.Bar(
            x=centers,
            y=np.nan_to_num(accuracy),
            width=width * 0.95,
            name="accuracy in bin",
            marker={"color": "#3b82f6"},
            customdata=np.stack([counts, np.nan_to_num(confidence)], 1),
            hovertemplate="bin %{x:.2f}<br>accuracy %{y:.2f}<br>mean confidence "
            "%{customdata[1]:.2f}<br>images %{customdata[0]}<extra></extra>",
        )
    )
    filled = counts > 0
    # The gap spans accuracy .. mean confidence: above the bar = over-confident, inside
    # it = under-confident. Hatched on a clear fill so the bar shows through.
    fig.add_trace(
        go.Bar(
            x=centers[filled],
            y=(confidence - accuracy)[filled],
            base=accuracy[filled],
            width=width * 0.95,
            name="gap to mean confidence",
            hoverinfo="skip",
            marker={
                "color": "rgba(0,0,0,0)",
                "line": {"color": ACCENT, "width": 1.5},
                "pattern": {
                    "shape": "/",
                    "fgcolor": ACCENT,
                    "bgcolor": "rgba(0,0,0,0)",
                    "size": 6,
                },
            },
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfectly calibrated",
            line={"dash": "dot", "color": "#6b7280"},
        )
    )
    fig.update_layout(barmode="overlay")
    return fig


def _epochs(history) -> np.ndarray:
    if "epoch" in history:
        return np.asarray(history["epoch"]) + 1  # CSVLogger counts from 0; people count from 1
    return np.arange(1, len(history) + 1)


def _epoch_axis(fig: go.Figure, epochs: int) -> None:
    # Few epochs: whole-number ticks, not 1.5, 2.5.
    fig.update_xaxes(title_text="epoch", dtick=1 if epochs <= 15 else None)


def training_curves_figure(history) -> go.Figure:
    """Loss and accuracy per epoch, training and validation, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    epochs = _epochs(history)
    for col, metric in ((1, "loss"), (2, "accuracy")):
        for prefix, dash, label in (("", "solid", "train"), ("val_", "dash", "validation")):
            name = prefix + metric
            if name in history:
                fig.add_trace(
                    go.Scatter(
                        x=epochs,
                        y=history[name],
                        mode="lines+markers",
                        name=label,
                        line={"dash": dash, "color": ACCENT if prefix else "#2563eb"},
                        legendgroup=label,
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
    _epoch_axis(fig, len(history))
    fig.update_layout(
        height=340,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def compare_curves_figure(
    histories: dict[str, Any], metric: str = "val_accuracy", title: str = ""
) -> go.Figure:
    """One line per run of ``metric`` over epochs (runs missing the column are left out)."""
    fig = go.Figure()
    for label, history in histories.items():
        if metric in history:
            fig.add_trace(
                go.Scatter(
                    x=_epochs(history),
                    y=history[metric],
                    mode="lines+markers",
                    name=plotly_text(label),  # run names are user text
                )
            )
    _epoch_axis(fig, max((len(h) for h in histories.values()), default=0))
    fig.update_layout(
        yaxis={"title": {"text": title or metric.replace("_", " ")}},
        height=380,
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
