"""Figures of the robustness report (Evaluate page): accuracy per corruption and per attack.

Pure functions: a report dict (lib.robustness) in, ``plotly.graph_objects.Figure`` out.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.text import plotly_text

ACCENT = "#c2410c"
PALETTE = ("#c2410c", "#2563eb", "#16a34a", "#9333ea", "#ca8a04", "#0891b2", "#db2777")


def robustness_figure(report: dict, baseline: dict | None = None, *, names=("this run", "")):
    """Accuracy vs corruption severity (left) and vs attack ε (right).

    Args:
        report: the run's report.
        baseline: another run's report drawn dashed beside it (the run a hardened clone
            came from), or None.
        names: legend names of (report, baseline).
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Common corruptions", "Adversarial attacks"),
        column_widths=[0.6, 0.4],
    )
    for data, dash, who in ((report, "solid", names[0]), (baseline, "dash", names[1])):
        if data is None:
            continue
        suffix = f" · {plotly_text(who)}" if baseline is not None and who else ""
        for i, (name, entry) in enumerate(data["corruptions"].items()):
            fig.add_trace(
                go.Scatter(
                    x=[0, 1, 2, 3],
                    y=[data["clean"], *entry["accuracy"]],
                    mode="lines+markers",
                    name=name.replace("_", " ") + suffix,
                    line={"color": PALETTE[i % len(PALETTE)], "dash": dash},
                    legendgroup=name,
                    hovertemplate="severity %{x}: %{y:.1%}<extra>" + name + "</extra>",
                ),
                row=1,
                col=1,
            )
        for i, (method, entry) in enumerate(data["attacks"].items()):
            fig.add_trace(
                go.Scatter(
                    x=[0, *entry["epsilons"]],
                    y=[data["clean"], *entry["accuracy"]],
                    mode="lines+markers",
                    name=method.upper() + suffix,
                    line={"color": ("#111827", "#6b7280")[i % 2], "dash": dash, "width": 3},
                    hovertemplate="ε %{x}/255: %{y:.1%}<extra>" + method.upper() + "</extra>",
                ),
                row=1,
                col=2,
            )
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title_text="accuracy", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(tickvals=[0, 1, 2, 3], ticktext=["clean", "1", "2", "3"], row=1, col=1)
    fig.update_xaxes(title_text="severity", row=1, col=1)
    fig.update_xaxes(title_text="ε (of 255)", row=1, col=2)
    fig.update_layout(
        height=420, margin={"l": 40, "r": 10, "t": 40, "b": 40}, legend={"font": {"size": 11}}
    )
    return fig
