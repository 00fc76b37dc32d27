"""Figures of the Predict page: the top-k probability bars.

Pure functions: data in, ``plotly.graph_objects.Figure`` out.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from lib.text import plotly_text

ACCENT = "#c2410c"  # the app's primary colour (.streamlit/config.toml)
MUTED = "#94a3b8"


def top_k_figure(top_k: Sequence[tuple[str, float]], *, title: str = "") -> go.Figure:
    """Horizontal bars of the top-k class probabilities, the best on top and highlighted.

    Args:
        top_k: (class name, probability in [0, 1]) pairs, best first.
        title: optional figure title.
    """
    names = [plotly_text(name) for name, _ in top_k][::-1]  # class names are user text
    probs = [float(p) for _, p in top_k][::-1]
    colours = [MUTED] * len(probs)
    if colours:
        colours[-1] = ACCENT
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=names,
            orientation="h",
            marker_color=colours,
            text=[f"{p:.1%}" for p in probs],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title or None,
        height=60 + 34 * max(len(probs), 1),
        margin={"l": 10, "r": 40, "t": 40 if title else 10, "b": 30},
        xaxis={"range": [0, 1.12], "tickformat": ".0%", "title": "probability"},
        yaxis={"automargin": True},
        showlegend=False,
    )
    return fig
