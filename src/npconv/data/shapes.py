"""A procedurally generated data set of coloured shapes: no download, fully seeded.

Each image (3, S, S) shows one filled shape on a dark, slightly noisy background. The
class is the shape; colour, size, position and the background are nuisances drawn
from the seed::

    0 circle   1 square   2 triangle   3 diamond   4 cross   5 ring

Sizes: radius 0.22 S .. 0.38 S; the shape lies fully inside the image. Colours come
from a palette of eight. The same seed always gives the same images, on any machine.
"""

from __future__ import annotations

import numpy as np

SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "cross", "ring")
PALETTE = np.array([
    [0.95, 0.25, 0.20],  # red
    [0.25, 0.80, 0.30],  # green
    [0.25, 0.45, 0.95],  # blue
    [0.95, 0.85, 0.20],  # yellow
    [0.85, 0.30, 0.85],  # magenta
    [0.25, 0.85, 0.90],  # cyan
    [0.95, 0.95, 0.95],  # white
    [0.95, 0.55, 0.15],  # orange
], dtype=np.float32)


def shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float,
               r: float) -> np.ndarray:
    """Boolean mask of shape ``kind`` centred at (cy, cx) with radius r on the grid."""
    dy, dx = yy - cy, xx - cx
    if kind == 0:  # circle
        return dy * dy + dx * dx <= r * r
    if kind == 1:  # square, the same area as the circle roughly
        half = 0.85 * r
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if kind == 2:  # upright triangle: apex at the top, base at the bottom
        top, bottom = cy - r, cy + 0.8 * r
        depth = (yy - top) / (bottom - top)  # 0 at the apex, 1 at the base
        return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= depth * r)
    if kind == 3:  # diamond
        return np.abs(dy) + np.abs(dx) <= 1.15 * r
    if kind == 4:  # plus-shaped cross
        arm = 0.3 * r
        return (((np.abs(dy) <= arm) & (np.abs(dx) <= r))
                | ((np.abs(dx) <= arm) & (np.abs(dy) <= r)))
    if kind == 5:  # ring
        d2 = dy * dy + dx * dx
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(f"unknown shape class {kind}; there are {len(SHAPE_CLASSES)}")


def make_shapes(n: int, seed: int = 0, size: int = 28, noise: float = 0.05):
    """``n`` images of shape (n, 3, size, size), float32 in [0, 1], and int64 labels (n,).

    Classes are balanced (``i % 6`` before shuffling) and the order is shuffled.

    Raises
    ------
    ValueError
        If ``n`` is negative or ``size`` is below 12 pixels.
    """
    if n < 0 or size < 12:
        raise ValueError(f"make_shapes: need n >= 0 and size >= 12, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % len(SHAPE_CLASSES))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)  # pixel centres
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for i, kind in enumerate(labels):
        r = rng.uniform(0.22, 0.38) * size
        cy, cx = rng.uniform(r + 0.5, size - r - 0.5, size=2)
        background = rng.uniform(0.0, 0.25, size=3).astype(np.float32)
        colour = PALETTE[rng.integers(len(PALETTE))]
        mask = shape_mask(int(kind), yy, xx, cy, cx, r)  # (size, size)
        images[i] = np.where(mask, colour[:, None, None], background[:, None, None])
        images[i] += rng.normal(0.0, noise, size=(3, size, size)).astype(np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    return images, labels
