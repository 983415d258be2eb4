"""Pooling by loops over output pixels (the book's loop form): the readable reference.

Each output pixel (i, j) looks at the in-bounds part of its window,
rows ``i*S_h - P_h .. i*S_h - P_h + KH`` clipped to ``[0, H)`` (columns likewise), for
all samples and channels at once. Padding is never materialised: it is -inf for max
pooling (never chosen) and zeros for average pooling (counted in the divisor when
``count_include_pad``).
"""

from __future__ import annotations

import numpy as np


def _window(i: int, j: int, s):
    """In-bounds rows [r0, r1) and columns [c0, c1) of output pixel (i, j)'s window."""
    r, c = i * s.sh - s.ph, j * s.sw - s.pw
    return max(r, 0), min(r + s.kh, s.h), max(c, 0), min(c + s.kw, s.w)


def winner(windows: np.ndarray) -> np.ndarray:
    """Position of each window's winner along the last axis: the first maximum, or the
    last NaN when there is one (PyTorch's rule: ``val > max || isnan(val)``)."""
    k = np.argmax(windows, axis=-1)  # first maximum (or first NaN)
    nan = np.isnan(windows)
    if nan.any():
        last_nan = windows.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
        k = np.where(nan.any(axis=-1), last_nan, k)
    return k


def max_forward(x: np.ndarray, s):
    """y of shape (N, C, OH, OW) and the winning tap ``u*KW + v`` of each window."""
    y = np.empty(s.y_shape, dtype=x.dtype)
    taps = np.empty(s.y_shape, dtype=s.tap_dtype)
    for i in range(s.oh):
        for j in range(s.ow):
            r0, r1, c0, c1 = _window(i, j, s)
            win = x[:, :, r0:r1, c0:c1].reshape(s.n, s.c, -1)  # (N, C, rows*cols)
            k = winner(win)  # (N, C)
            y[:, :, i, j] = np.take_along_axis(win, k[..., None], axis=2)[..., 0]
            rows, cols = np.divmod(k, c1 - c0)
            u, v = r0 - (i * s.sh - s.ph) + rows, c0 - (j * s.sw - s.pw) + cols
            taps[:, :, i, j] = u * s.kw + v
    return y, taps


def max_backward(grad_output: np.ndarray, taps: np.ndarray, s) -> np.ndarray:
    """dx of shape (N, C, H, W): each gradient added where its window's winner was."""
    dx = np.zeros(s.x_shape, dtype=grad_output.dtype)
    nn, cc = np.meshgrid(np.arange(s.n), np.arange(s.c), indexing="ij")  # (N, C) each
    for i in range(s.oh):
        for j in range(s.ow):  # one pixel's winners never repeat within a plane
            u, v = np.divmod(taps[:, :, i, j].astype(np.int64), s.kw)  # (N, C) each
            dx[nn, cc, i * s.sh - s.ph + u, j * s.sw - s.pw + v] += grad_output[:, :, i, j]
    return dx


def _divisor(r0, r1, c0, c1, s, include_pad: bool) -> int:
    return s.kh * s.kw if include_pad else (r1 - r0) * (c1 - c0)


def avg_forward(x: np.ndarray, s, include_pad: bool) -> np.ndarray:
    """y of shape (N, C, OH, OW): window sums over their divisors."""
    y = np.empty(s.y_shape, dtype=x.dtype)
    for i in range(s.oh):
        for j in range(s.ow):
            r0, r1, c0, c1 = _window(i, j, s)
            total = x[:, :, r0:r1, c0:c1].sum(axis=(2, 3), dtype=x.dtype)  # (N, C)
            y[:, :, i, j] = total / x.dtype.type(_divisor(r0, r1, c0, c1, s, include_pad))
    return y


def avg_backward(grad_output: np.ndarray, s, include_pad: bool) -> np.ndarray:
    """dx of shape (N, C, H, W): each gradient over its divisor, spread over its window."""
    dtype = grad_output.dtype
    dx = np.zeros(s.x_shape, dtype=dtype)
    for i in range(s.oh):
        for j in range(s.ow):
            r0, r1, c0, c1 = _window(i, j, s)
            share = grad_output[:, :, i, j] / dtype.type(_divisor(r0, r1, c0, c1, s, include_pad))
            dx[:, :, r0:r1, c0:c1] += share[:, :, None, None]
    return dx
