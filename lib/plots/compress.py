"""Figures of the compression trade-off: accuracy against size, one point per variant.

Pure functions: data in, ``plotly.graph_objects.Figure`` out.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

ACCENT = "#c2410c"  # the app's primary colour (.streamlit/config.toml)
MUTED = "#64748b"


def tradeoff_figure(table: dict[str, Any]) -> go.Figure:
    """Test accuracy against file size: filled markers raw, hollow markers gzipped.

    Args:
        table: :func:`lib.compress.tradeoff`'s result (its ``rows``).
    """
    rows = table.get("rows", [])
    fig = go.Figure()
    for key, name, symbol in (
        ("size_bytes", "file size", "circle"),
        ("gzip_bytes", "gzipped", "circle-open"),
    ):
        fig.add_trace(
            go.Scatter(
                x=[r[key] / 1024 for r in rows],
                y=[r["accuracy"] * 100 for r in rows],
                mode="markers+text" if key == "size_bytes" else "markers",
                text=[r["label"] for r in rows] if key == "size_bytes" else None,
                # Alternate above/below so variants of one size (Keras, float32) stay legible.
                textposition=["top center" if i % 2 else "bottom center" for i in range(len(rows))],
                name=name,
                marker={
                    "size": 12,
                    "symbol": symbol,
                    "color": [ACCENT if r["flagged_classes"] else MUTED for r in rows],
                    "line": {"width": 2},
                },
                customdata=[
                    [
                        r["label"],
                        r["top1_agreement"] * 100,
                        ", ".join(r["flagged_classes"]) or "none",
                    ]
                    for r in rows
                ],
                hovertemplate=(
                    "%{customdata[0]}<br>" + name + ": %{x:,.0f} KB<br>accuracy %{y:.2f} %"
                    "<br>agrees with Keras on %{customdata[1]:.2f} %"
                    "<br>classes losing > 5 points: %{customdata[2]}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        height=380,
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        xaxis={"title": "size (KB, log scale)", "type": "log"},
        yaxis={"title": "test accuracy (%)"},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
