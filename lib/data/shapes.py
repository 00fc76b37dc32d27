"""The procedural ``shapes`` dataset: the embedded default that needs nothing.

Six classes of filled shapes (circle, square, triangle, star, cross, hexagon) in
random colours, sizes, positions and rotations, on random gradient backgrounds
with noise. Everything comes from one seed, so the same seed gives the same
images, bit for bit. Shape masks are drawn with Pillow at twice the size and
averaged down (anti-aliasing); backgrounds, colours and noise are numpy over the
whole batch, so 3000 64×64 images take well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ["circle", "square", "triangle", "star", "cross", "hexagon"]


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a regular shape of circumradius ``r`` rotated by ``angle`` radians."""
    if kind == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif kind == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    elif kind == "star":
        pts = []
        for i in range(10):
            rad = 1.0 if i % 2 == 0 else 0.42
            a = i * math.pi / 5 - math.pi / 2
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif kind == "cross":
        t = 0.3  # half arm width, relative to the radius
        pts = [(t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1),
               (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t), (-t, -1)]  # fmt: skip
    else:
        raise ValueError(f"unknown shape {kind!r}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage mask in [0, 1], float32 (size, size)."""
    scale = 2
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = cx * scale, cy * scale, r * scale
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=255)
    small = canvas.reduce(scale)
    return np.asarray(small, dtype=np.float32) / 255.0


@dataclass(frozen=True)
class _Draws:
    """Every random choice of one batch, in the order the generator draws them."""

    labels: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    theta: np.ndarray
    colour: np.ndarray
    radius: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    angle: np.ndarray
    noise_std: np.ndarray
    noise_seed: int


def _draw(count: int, size: int, seed: int) -> _Draws:
    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES)
    labels = rng.permutation(np.arange(count) % k).astype(np.int32)

    c0 = rng.uniform(0, 255, (count, 3)).astype(np.float32)
    c1 = np.clip(c0 + rng.normal(0, 60, (count, 3)), 0, 255).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi, count).astype(np.float32)

    # Shape colour: random, pushed away from the background so the shape is visible.
    colour = rng.uniform(0, 255, (count, 3)).astype(np.float32)
    mean_bg = (c0 + c1) / 2
    dist = np.linalg.norm(colour - mean_bg, axis=1)
    far = 255.0 - mean_bg  # the colour's opposite corner of the RGB cube
    weak = dist < 110
    colour[weak] = np.clip(0.25 * colour[weak] + 0.75 * np.where(far[weak] > 127, 255, 0), 0, 255)

    radius = rng.uniform(0.18, 0.42, count) * size
    cx = rng.uniform(0, 1, count) * (size - 2 * radius) + radius
    cy = rng.uniform(0, 1, count) * (size - 2 * radius) + radius
    angle = rng.uniform(0, 2 * np.pi, count)
    noise_std = rng.uniform(0, 12, count).astype(np.float32)
    noise_seed = int(rng.integers(0, 2**63 - 1))
    return _Draws(labels, c0, c1, theta, colour, radius, cx, cy, angle, noise_std, noise_seed)


def shape_boxes(count: int, size: int, seed: int) -> np.ndarray:
    """The bounding box of the shape in each image :func:`generate_shapes` makes.

    Same arguments, same random draws, so box ``i`` belongs to image ``i``; no
    image is drawn, so this is cheap.

    Returns:
        float32 (count, 4): ``(x0, y0, x1, y1)`` in pixels, x to the right and y
        down, clipped to the image.
    """
    d = _draw(count, size, seed)
    boxes = np.empty((count, 4), np.float32)
    for i in range(count):
        kind = CLASS_NAMES[d.labels[i]]
        cx, cy, r = float(d.cx[i]), float(d.cy[i]), float(d.radius[i])
        if kind == "circle":
            boxes[i] = (cx - r, cy - r, cx + r, cy + r)
        else:
            pts = np.asarray(_polygon(kind, cx, cy, r, float(d.angle[i])))
            boxes[i] = (*pts.min(axis=0), *pts.max(axis=0))
    return np.clip(boxes, 0, size)


def generate_shapes(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``count`` RGB images of side ``size``, balanced over the six classes.

    Returns:
        ``(images uint8 (count, size, size, 3), labels int32 (count,))``.
    """
    d = _draw(count, size, seed)
    labels, c0, c1, theta, colour = d.labels, d.c0, d.c1, d.theta, d.colour
    radius, cx, cy, angle, noise_std, noise_seed = (
        d.radius, d.cx, d.cy, d.angle, d.noise_std, d.noise_seed
    )  # fmt: skip

    grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    out = np.empty((count, size, size, 3), np.uint8)
    chunk = max(1, 2**18 // (size * size))  # keeps the float temporaries cache-sized
    noise_rng = np.random.default_rng(noise_seed)
    for start in range(0, count, chunk):
        sl = slice(start, min(start + chunk, count))
        n = sl.stop - sl.start
        # Background: a linear gradient between two colours at a random angle.
        t = np.cos(theta[sl])[:, None, None] * grid[None, None, :]
        t = t + np.sin(theta[sl])[:, None, None] * grid[None, :, None] + 0.5
        t = np.clip(t, 0, 1)[..., None]
        img = c0[sl, None, None, :] + (c1[sl] - c0[sl])[:, None, None, :] * t
        masks = np.empty((n, size, size, 1), np.float32)
        for j, i in enumerate(range(sl.start, sl.stop)):
            masks[j, :, :, 0] = _mask(
                CLASS_NAMES[labels[i]], size, cx[i], cy[i], radius[i], angle[i]
            )
        img += (colour[sl, None, None, :] - img) * masks
        noise = noise_rng.standard_normal(img.shape, dtype=np.float32)
        img += noise * noise_std[sl, None, None, None]
        np.rint(img, out=img)
        np.clip(img, 0, 255, out=img)
        out[sl] = img
    return out, labels
