"""Source pictures for the 17.3.7 experiment: drawn ones, and any picture file.

The book trains on ``circle.png``, an 80x80 grayscale circle it does not print. npconv
draws its own, deterministically (no randomness depends on ``--seed``):

* ``circle``: a ring of radius 26 and width 3 with hard (not anti-aliased) edges;
* ``shapes`` (the default): the ring plus a grey square and a patch of dots;
* ``soft-disc``: an anti-aliased filled disc, smooth on purpose.

How fast gradient descent recovers a kernel depends on the picture only, through the
eigenvalues of ``H = P.T @ P / m`` (P: one row of KH*KW input pixels per output pixel):
each error component along an eigenvector shrinks by ``(1 - lr * eigenvalue)`` per
iteration, so ``lr * max < 2`` is needed and a small minimum is slow. The kernel only sets
where the descent starts. Hard edges and dots excite every direction of a 3x3 kernel;
smooth pictures do not: ``soft-disc``'s smallest eigenvalue is 0.0011 against 0.0082 for
``circle`` and 0.0128 for ``shapes``, and with it the Laplacian and sharpen kernels do not
reach loss 1e-7 in 10000 iterations (sharpen ends 1.1e-2 away from w_true).
"""

from __future__ import annotations

import os

import numpy as np

SIZE = 80  # the book's picture is 80x80
SOURCES = ("shapes", "circle", "soft-disc")


def _pixel_centres(size: int, supersample: int = 1):
    """Row and column coordinates of (sub)pixel centres, in pixel units."""
    t = (np.arange(size * supersample, dtype=np.float64) + 0.5) / supersample
    return np.meshgrid(t, t, indexing="ij")  # (size*ss, size*ss) each


def make_source(name: str = "shapes") -> np.ndarray:
    """A drawn 80x80 grayscale picture in [0, 1].

    Parameters
    ----------
    name : {"shapes", "circle", "soft-disc"}

    Returns
    -------
    ndarray of shape (80, 80), float64
    """
    if name not in SOURCES:
        raise ValueError(f"unknown source picture {name!r}; choose one of {', '.join(SOURCES)}")
    rows, cols = _pixel_centres(SIZE)
    radius = np.hypot(rows - SIZE / 2, cols - SIZE / 2)  # (80, 80)
    if name == "soft-disc":
        rows, cols = _pixel_centres(SIZE, 4)
        inside = np.hypot(rows - SIZE / 2, cols - SIZE / 2) < 28  # (320, 320)
        return inside.reshape(SIZE, 4, SIZE, 4).mean(axis=(1, 3))  # area-averaged (80, 80)
    image = (np.abs(radius - 26) < 1.6).astype(np.float64)  # the ring: 3 pixels wide
    if name == "shapes":
        image[6:18, 62:74] = 0.6  # a grey square, top right
        dots = np.random.default_rng(17).random((14, 14)) < 0.3  # fixed: not --seed
        image[62:76, 4:18] = 0.8 * dots  # a patch of dots, bottom left
    return image


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Resampling weights: row i averages the input cells that output cell i covers.

    Output cell ``i`` spans ``[i, i + 1) * n_in / n_out`` in input coordinates; each
    weight is the overlap with input cell ``j``, normalised so rows sum to 1. Shrinking,
    this is area averaging; enlarging, each output cell takes its one or two input cells.

    Returns
    -------
    ndarray of shape (n_out, n_in), float64
    """
    edges = np.arange(n_out + 1, dtype=np.float64) * n_in / n_out
    j = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j),
                      0.0, None)  # (n_out, n_in)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Centre square crop, then area resize to ``size`` x ``size``.

    Parameters
    ----------
    image : ndarray of shape (H, W)

    Returns
    -------
    ndarray of shape (size, size), float64
    """
    h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side].astype(np.float64)  # (side, side)
    a = area_matrix(side, size)  # (size, side)
    return a @ square @ a.T  # (size, size)


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """Any image array as grayscale floats in [0, 1] (ITU-R 601 luma for colour).

    Parameters
    ----------
    pixels : ndarray of shape (H, W), (H, W, 3) or (H, W, 4)
        Integers (scaled by their type's maximum) or floats in [0, 1]; alpha is dropped.

    Returns
    -------
    ndarray of shape (H, W), float64
    """
    if pixels.dtype.kind in "ui":
        pixels = pixels.astype(np.float64) / np.iinfo(pixels.dtype).max
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = pixels[..., :3] @ np.array([0.299, 0.587, 0.114])  # (H, W)
    elif pixels.ndim == 3 and pixels.shape[2] in (1, 2):
        pixels = pixels[..., 0]
    if pixels.ndim != 2:
        raise ValueError(f"expected a grayscale or colour image, got an array of shape "
                         f"{pixels.shape}")
    return np.clip(pixels, 0.0, 1.0)


def load_image(path, size: int = SIZE) -> np.ndarray:
    """Read a picture file as a ``size`` x ``size`` grayscale array in [0, 1].

    Uses Pillow when it is installed (any format it reads), else
    ``matplotlib.pyplot.imread`` (PNG); both come with ``pip install 'npconv[plot]'``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a picture either library can read.
    ImportError
        If neither Pillow nor matplotlib is installed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such picture file: {path}")
    try:
        from PIL import Image
    except ImportError:
        Image = None
    try:
        if Image is not None:
            with Image.open(path) as picture:
                pixels = np.asarray(picture.convert("L"))  # (H, W) uint8
        else:
            try:
                import matplotlib.pyplot as plt
            except ImportError:
                raise ImportError("reading --image needs Pillow or matplotlib: "
                                  "pip install 'npconv[plot]'") from None
            pixels = plt.imread(path)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as a picture: {exc}") from None
    return resize(to_gray(pixels), size)
