"""Padding modes and their adjoints.

``reflect``, ``replicate`` and ``circular`` padding copy border pixels of x into the
padded frame. Their gradient is the adjoint of that copy: every padded position sends
its gradient back to the pixel it was copied from, so border pixels collect the
gradient of each of their copies ("reflected/wrapped pixels add back").

Both directions work one axis at a time through an index map: ``source[j]`` is the row
(or column) of x that padded row ``j`` copies. The forward pass is a gather; the adjoint
is the centre block plus a small loop over the ``before + after`` border rows.
"""

from __future__ import annotations

import numpy as np

from .spec import Pad4


def source_index(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each of the ``before + size + after`` padded positions, the input position.

    Examples (size 4, before 2, after 2)::

        reflect     2 1 | 0 1 2 3 | 2 1
        replicate   0 0 | 0 1 2 3 | 3 3
        circular    2 3 | 0 1 2 3 | 0 1
    """
    j = np.arange(-before, size + after)
    if mode == "reflect":
        period = 2 * (size - 1) if size > 1 else 1
        j = np.abs(j) % period
        return np.where(j >= size, period - j, j)
    if mode == "replicate":
        return np.clip(j, 0, size - 1)
    if mode == "circular":
        return j % size
    raise ValueError(f"no index map for padding_mode {mode!r}")


def pad(x: np.ndarray, padding: Pad4, mode: str) -> np.ndarray:
    """Pad the last two axes of ``x`` by ``(top, bottom, left, right)`` in ``mode``.

    Parameters
    ----------
    x : ndarray of shape (..., H, W)
    padding : (int, int, int, int)
    mode : {"zeros", "reflect", "replicate", "circular"}

    Returns
    -------
    ndarray of shape (..., H + top + bottom, W + left + right), same dtype as ``x``.
    """
    top, bottom, left, right = padding
    if mode == "zeros":
        out = np.zeros((*x.shape[:-2], x.shape[-2] + top + bottom, x.shape[-1] + left + right),
                       dtype=x.dtype)
        out[..., top:top + x.shape[-2], left:left + x.shape[-1]] = x
        return out
    rows = source_index(x.shape[-2], top, bottom, mode)
    cols = source_index(x.shape[-1], left, right, mode)
    return x[..., rows[:, None], cols[None, :]]  # (..., H + top + bottom, W + left + right)


def _unpad_axis(g: np.ndarray, size: int, before: int, after: int, mode: str,
                axis: int) -> np.ndarray:
    """Adjoint of padding one axis: fold the border rows of ``g`` back onto ``size`` rows."""
    g = np.moveaxis(g, axis, 0)  # (size + before + after, ...)
    out = g[before:before + size].copy()  # the centre copies itself
    if mode != "zeros":
        src = source_index(size, before, after, mode)
        for j in (*range(before), *range(before + size, before + size + after)):
            out[src[j]] += g[j]
    return np.moveaxis(out, 0, axis)


def pad_adjoint(grad: np.ndarray, padding: Pad4, mode: str) -> np.ndarray:
    """Gradient of :func:`pad`: map a gradient of the padded array back onto x.

    Parameters
    ----------
    grad : ndarray of shape (..., H + top + bottom, W + left + right)
    padding : (int, int, int, int)
    mode : {"zeros", "reflect", "replicate", "circular"}

    Returns
    -------
    ndarray of shape (..., H, W), same dtype as ``grad``.
    """
    top, bottom, left, right = padding
    h = grad.shape[-2] - top - bottom
    w = grad.shape[-1] - left - right
    g = _unpad_axis(grad, h, top, bottom, mode, grad.ndim - 2)  # (..., H, W + left + right)
    return _unpad_axis(g, w, left, right, mode, grad.ndim - 1)  # (..., H, W)
