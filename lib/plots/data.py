"""Figures of the Dataset page: images per class per split, and sample mosaics.

Pure functions: counts or images in, a plotly Figure or a uint8 image out.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

SPLIT_COLOURS = {"train": "#c2410c", "val": "#1d4ed8", "test": "#6b7280"}
SPLIT_LABELS = {"train": "train", "val": "validation", "test": "test"}


def class_counts_figure(
    class_names: list[str], counts: dict[str, np.ndarray], *, height: int = 360
) -> go.Figure:
    """Stacked bars: images per class, one colour per split.

    Args:
        class_names: one name per class index.
        counts: ``{"train": (K,), "val": (K,), "test": (K,)}`` as ``Dataset.counts()``.
        height: figure height in pixels.
    """
    fig = go.Figure()
    for split, values in counts.items():
        values = np.asarray(values)
        fig.add_bar(
            name=SPLIT_LABELS.get(split, split),
            x=list(class_names),
            y=values.tolist(),
            marker_color=SPLIT_COLOURS.get(split),
            hovertemplate="%{x}: %{y} images<extra>" + SPLIT_LABELS.get(split, split) + "</extra>",
        )
    many = len(class_names) > 20
    fig.update_layout(
        barmode="stack",
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "traceorder": "normal"},
        yaxis_title="images",
        xaxis={"tickangle": -60 if many else 0, "type": "category"},
        bargap=0.15,
    )
    return fig


def sample_mosaic(images: np.ndarray, *, cell: int = 72, gap: int = 4) -> np.ndarray:
    """Images side by side in one row, each enlarged to about ``cell`` px without blurring.

    Small images (8×8 digits) are enlarged by whole-number nearest-neighbour
    factors so their pixels stay crisp; larger ones are shown as they are.

    Args:
        images: uint8 (N, H, W, C), C = 1 or 3.
        cell: target side of each tile in pixels.
        gap: white pixels between tiles.

    Returns:
        uint8 (H', W', 3) mosaic.
    """
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or len(images) == 0:
        return np.full((cell, cell, 3), 255, np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    h, w = images.shape[1:3]
    factor = max(1, cell // max(h, w))
    tiles = images.repeat(factor, axis=1).repeat(factor, axis=2)
    th, tw = tiles.shape[1:3]
    out = np.full((th, len(tiles) * (tw + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        out[:, i * (tw + gap) : i * (tw + gap) + tw] = tile
    return out
