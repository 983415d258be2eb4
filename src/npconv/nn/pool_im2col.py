"""Pooling by im2col: columns of shape (N, C, KH*KW, OH, OW), one strided copy per tap.

Tap ``t = u*KW + v`` of every window is the strided slice
``xp[:, :, u : u + S_h*(OH-1) + 1 : S_h, v : v + S_w*(OW-1) + 1 : S_w]`` of the padded
input ``xp`` (padding -inf for max, 0 for average), so the loops run over the KH*KW
taps only and every copy is a plain slice. The backward pass (col2im) adds each tap's
share back through the same slices, then crops the padding.
"""

from __future__ import annotations

import numpy as np

from .pool_naive import winner


def _taps(s):
    """(t, row slice, column slice) of every kernel tap in the padded input."""
    for u in range(s.kh):
        for v in range(s.kw):
            yield (u * s.kw + v, slice(u, u + s.sh * (s.oh - 1) + 1, s.sh),
                   slice(v, v + s.sw * (s.ow - 1) + 1, s.sw))


def _padded(x: np.ndarray, s, fill) -> np.ndarray:
    if s.ph == 0 and s.pw == 0:
        return x
    xp = np.full((s.n, s.c, s.h + 2 * s.ph, s.w + 2 * s.pw), fill, dtype=x.dtype)
    xp[:, :, s.ph:s.ph + s.h, s.pw:s.pw + s.w] = x
    return xp


def im2col(x: np.ndarray, s, fill) -> np.ndarray:
    """Columns of shape (N, C, KH*KW, OH, OW) of the input padded with ``fill``."""
    xp = _padded(x, s, fill)  # (N, C, H + 2P_h, W + 2P_w)
    cols = np.empty((s.n, s.c, s.kh * s.kw, s.oh, s.ow), dtype=x.dtype)
    for t, rows, columns in _taps(s):
        cols[:, :, t] = xp[:, :, rows, columns]
    return cols


def col2im(dcols_of_tap, s, dtype) -> np.ndarray:
    """dx of shape (N, C, H, W) from ``dcols_of_tap(t)``, each of shape (N, C, OH, OW)."""
    dxp = np.zeros((s.n, s.c, s.h + 2 * s.ph, s.w + 2 * s.pw), dtype=dtype)
    for t, rows, columns in _taps(s):
        dxp[:, :, rows, columns] += dcols_of_tap(t)
    return np.ascontiguousarray(dxp[:, :, s.ph:s.ph + s.h, s.pw:s.pw + s.w])  # (N, C, H, W)


def _tap_positions(s):
    """Row and column in the unpadded input of every tap of every window.

    Returns two int64 arrays of shape (KH*KW, OH, OW).
    """
    u, v = np.divmod(np.arange(s.kh * s.kw, dtype=np.int64), s.kw)  # (KH*KW,) each
    rows = u[:, None, None] + (np.arange(s.oh, dtype=np.int64) * s.sh - s.ph)[None, :, None]
    cols = v[:, None, None] + (np.arange(s.ow, dtype=np.int64) * s.sw - s.pw)[None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)  # (KH*KW, OH, OW) each
    return rows, cols


def max_forward(x: np.ndarray, s):
    """y of shape (N, C, OH, OW) and the winning tap ``u*KW + v`` of each window."""
    cols = im2col(x, s, -np.inf)  # (N, C, KH*KW, OH, OW)
    taps = winner(np.moveaxis(cols, 2, -1))  # (N, C, OH, OW): first max, last NaN
    y = np.take_along_axis(cols, taps[:, :, None], axis=2)[:, :, 0]  # (N, C, OH, OW)
    if s.ph or s.pw:  # a window of -inf only: its first in-bounds tap wins, as in PyTorch
        rows, columns = _tap_positions(s)
        inside = (rows >= 0) & (rows < s.h) & (columns >= 0) & (columns < s.w)
        first_inside = np.argmax(inside, axis=0)  # (OH, OW)
        taps = np.where(y == -np.inf, first_inside, taps)
    return y, taps.astype(s.tap_dtype)


def max_backward(grad_output: np.ndarray, taps: np.ndarray, s) -> np.ndarray:
    """dx of shape (N, C, H, W): tap t of a window receives its gradient where it won."""
    zero = grad_output.dtype.type(0)
    return col2im(lambda t: np.where(taps == t, grad_output, zero), s, grad_output.dtype)


def _divisors(s, include_pad: bool, dtype) -> np.ndarray:
    """Divisor of each window, of shape (OH, OW)."""
    if include_pad:
        return np.full((s.oh, s.ow), s.kh * s.kw, dtype=dtype)
    rows, columns = _tap_positions(s)
    inside = (rows >= 0) & (rows < s.h) & (columns >= 0) & (columns < s.w)
    return inside.sum(axis=0).astype(dtype)  # (OH, OW)


def avg_forward(x: np.ndarray, s, include_pad: bool) -> np.ndarray:
    cols = im2col(x, s, 0)  # (N, C, KH*KW, OH, OW)
    return cols.sum(axis=2, dtype=x.dtype) / _divisors(s, include_pad, x.dtype)


def avg_backward(grad_output: np.ndarray, s, include_pad: bool) -> np.ndarray:
    share = grad_output / _divisors(s, include_pad, grad_output.dtype)  # (N, C, OH, OW)
    return col2im(lambda t: share, s, grad_output.dtype)
