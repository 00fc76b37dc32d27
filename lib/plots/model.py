"""Figure builders for the Model page: the block diagram of a network."""

from __future__ import annotations

import plotly.graph_objects as go

from lib.model_summary import Stage, format_shape, human_count

# One colour per kind of stage, so the eye finds the conv stages and the head.
_COLOURS = {
    "input": "#9aa5b1",
    "conv": "#4c78a8",
    "backbone": "#72b7b2",
    "head": "#f58518",
    "output": "#e45756",
    "other": "#bab0ac",
}


def _family(stage: Stage) -> str:
    kinds = set(stage.kinds)
    if stage.name in ("pixels", "input") or kinds <= {"InputLayer"}:
        return "input"
    if stage.name == "logits":
        return "output"
    if stage.name == "head":
        return "head"
    if kinds & {"Functional", "Model"}:
        return "backbone"
    if kinds & {"Conv2D", "DepthwiseConv2D", "SeparableConv2D"}:
        return "conv"
    return "other"


def model_diagram_figure(stages: list[Stage] | tuple[Stage, ...], title: str = "") -> go.Figure:
    """A top-to-bottom chain of boxes, one per stage, with its layers, output shape and size.

    Args:
        stages: the stages of a ModelSummary, in order.
        title: optional figure title.

    Returns:
        a plotly Figure; hovering a box adds the stage's FLOPs.
    """
    # Shapes and annotations go in as lists in one layout: add_shape/add_annotation
    # validate and copy the whole list on every call (most of the Model page's rerun).
    n = len(stages)
    box_h, gap = 1.0, 0.45
    centres, shapes, annotations = [], [], []
    for i, stage in enumerate(stages):
        top = -i * (box_h + gap)
        centres.append(top - box_h / 2)
        colour = _COLOURS[_family(stage)]
        shapes.append(
            {
                "type": "rect",
                "x0": 0,
                "x1": 1,
                "y0": top - box_h,
                "y1": top,
                "line": {"color": colour, "width": 1},
                "fillcolor": colour,
                "opacity": 0.9,
                "layer": "below",
            }
        )
        if i < n - 1:
            annotations.append(
                {
                    "x": 0.5,
                    "y": top - box_h - gap,
                    "ax": 0.5,
                    "ay": top - box_h,
                    "xref": "x",
                    "yref": "y",
                    "axref": "x",
                    "ayref": "y",
                    "showarrow": True,
                    "arrowhead": 2,
                    "arrowwidth": 1.2,
                    "arrowcolor": "#888",
                    "text": "",
                }
            )
        kinds = ", ".join(k for k in stage.kinds if k != "InputLayer") or "input"
        annotations.append(
            {
                "x": 0.02,
                "y": top - box_h / 2,
                "xanchor": "left",
                "text": f"<b>{stage.name}</b>  <span style='font-size:11px'>{kinds}</span>",
                "showarrow": False,
                "font": {"color": "white", "size": 13},
            }
        )
        annotations.append(
            {
                "x": 0.98,
                "y": top - box_h / 2,
                "xanchor": "right",
                "text": f"{format_shape(stage.output_shape)} · {human_count(stage.params)} params",
                "showarrow": False,
                "font": {"color": "white", "size": 12},
            }
        )
    fig = go.Figure(layout={"shapes": shapes, "annotations": annotations})
    # invisible markers carry the hover text (shapes have none)
    fig.add_trace(
        go.Scatter(
            x=[0.5] * n,
            y=centres,
            mode="markers",
            marker={"size": 30, "opacity": 0},
            hovertext=[
                f"{s.name}: {', '.join(s.kinds)}<br>output {format_shape(s.output_shape)}"
                f"<br>{s.params:,} params · {human_count(s.flops)}FLOPs per image"
                for s in stages
            ],
            hoverinfo="text",
            showlegend=False,
        )
    )
    bottom = -(n * (box_h + gap) - gap)
    fig.update_xaxes(visible=False, range=[-0.01, 1.01], fixedrange=True)
    fig.update_yaxes(visible=False, range=[bottom - 0.05, 0.05], fixedrange=True)
    fig.update_layout(
        title=title or None,
        height=34 * n + 10 + (40 if title else 0),
        margin={"l": 0, "r": 0, "t": 40 if title else 5, "b": 5},
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
    )
    return fig
