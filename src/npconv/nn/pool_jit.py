"""Pooling in Numba kernels (the older edition's jit max-pooling), parallel over planes.

One task per (sample, channel) plane; a task reads and writes only its own plane, so
the backward scatter needs no atomics. Windows are clipped to the input, as in
:mod:`.pool_naive`, so padding is never materialised. Kernels see C-contiguous arrays
only and are cached on disk (``cache=True``).

The 2x2, stride-2, unpadded max pooling of LeNet and the book has its own kernel: with
the four taps unrolled, the comparisons compile to branch-free selects, about 7x faster
than the general kernel's window loops (whose trip counts are only known at run time).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _wins(v, best):  # pragma: no cover - compiled
    """PyTorch's rule: a larger value or any NaN takes the window (so the last NaN wins)."""
    return (v > best) | (v != v)


@njit(parallel=True, cache=True)
def _max_forward_kernel(x, y, taps, kh, kw, sh, sw, ph, pw):  # pragma: no cover
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for task in prange(n * c):
        b, ch = task // c, task % c
        for i in range(oh):
            top = i * sh - ph
            u0, u1 = max(-top, 0), min(kh, h - top)
            for j in range(ow):
                left = j * sw - pw
                v0, v1 = max(-left, 0), min(kw, w - left)
                best = x[b, ch, top + u0, left + v0]
                tap = u0 * kw + v0
                for u in range(u0, u1):
                    for v in range(v0, v1):
                        val = x[b, ch, top + u, left + v]
                        if _wins(val, best):
                            best = val
                            tap = u * kw + v
                y[b, ch, i, j] = best
                taps[b, ch, i, j] = tap


@njit(parallel=True, cache=True)
def _max_forward_2x2_kernel(x, y, taps):  # pragma: no cover - compiled
    n, c = x.shape[0], x.shape[1]
    oh, ow = y.shape[2], y.shape[3]
    for task in prange(n * c):
        b, ch = task // c, task % c
        for i in range(oh):
            for j in range(ow):
                best = x[b, ch, 2 * i, 2 * j]
                tap = 0
                val = x[b, ch, 2 * i, 2 * j + 1]
                if _wins(val, best):
                    best, tap = val, 1
                val = x[b, ch, 2 * i + 1, 2 * j]
                if _wins(val, best):
                    best, tap = val, 2
                val = x[b, ch, 2 * i + 1, 2 * j + 1]
                if _wins(val, best):
                    best, tap = val, 3
                y[b, ch, i, j] = best
                taps[b, ch, i, j] = tap


@njit(parallel=True, cache=True)
def _max_backward_2x2_kernel(grad_output, taps, dx):  # pragma: no cover - compiled
    n, c, oh, ow = grad_output.shape
    zero = grad_output.dtype.type(0)
    for task in prange(n * c):
        b, ch = task // c, task % c
        for i in range(oh):
            for j in range(ow):
                g, tap = grad_output[b, ch, i, j], taps[b, ch, i, j]
                dx[b, ch, 2 * i, 2 * j] = g if tap == 0 else zero
                dx[b, ch, 2 * i, 2 * j + 1] = g if tap == 1 else zero
                dx[b, ch, 2 * i + 1, 2 * j] = g if tap == 2 else zero
                dx[b, ch, 2 * i + 1, 2 * j + 1] = g if tap == 3 else zero


@njit(parallel=True, cache=True)
def _max_backward_kernel(grad_output, taps, dx, kw, sh, sw, ph, pw):  # pragma: no cover
    n, c, oh, ow = grad_output.shape
    for task in prange(n * c):
        b, ch = task // c, task % c
        for i in range(oh):
            for j in range(ow):
                u, v = divmod(np.int64(taps[b, ch, i, j]), kw)
                dx[b, ch, i * sh - ph + u, j * sw - pw + v] += grad_output[b, ch, i, j]


@njit(parallel=True, cache=True)
def _avg_forward_kernel(x, y, kh, kw, sh, sw, ph, pw, include_pad):  # pragma: no cover
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for task in prange(n * c):
        b, ch = task // c, task % c
        for i in range(oh):
            r0, r1 = max(i * sh - ph, 0), min(i * sh - ph + kh, h)
            for j in range(ow):
                c0, c1 = max(j * sw - pw, 0), min(j * sw - pw + kw, w)
                total = x[b, ch, r0, c0] * 0
                for r in range(r0, r1):
                    for q in range(c0, c1):
                        total += x[b, ch, r, q]
                count = kh * kw if include_pad else (r1 - r0) * (c1 - c0)
                y[b, ch, i, j] = total / count


@njit(parallel=True, cache=True)
def _avg_backward_kernel(grad_output, dx, kh, kw, sh, sw, ph, pw,
                         include_pad):  # pragma: no cover
    n, c, oh, ow = grad_output.shape
    h, w = dx.shape[2], dx.shape[3]
    for task in prange(n * c):
        b, ch = task // c, task % c
        for i in range(oh):
            r0, r1 = max(i * sh - ph, 0), min(i * sh - ph + kh, h)
            for j in range(ow):
                c0, c1 = max(j * sw - pw, 0), min(j * sw - pw + kw, w)
                count = kh * kw if include_pad else (r1 - r0) * (c1 - c0)
                share = grad_output[b, ch, i, j] / count
                for r in range(r0, r1):
                    for q in range(c0, c1):
                        dx[b, ch, r, q] += share


def _is_2x2(s) -> bool:
    return (s.kh, s.kw, s.sh, s.sw, s.ph, s.pw) == (2, 2, 2, 2, 0, 0)


def _geometry(s):
    return s.kh, s.kw, s.sh, s.sw, s.ph, s.pw


def max_forward(x: np.ndarray, s):
    """y of shape (N, C, OH, OW) and the winning tap ``u*KW + v`` of each window."""
    y = np.empty(s.y_shape, dtype=x.dtype)
    taps = np.empty(s.y_shape, dtype=s.tap_dtype)
    x = np.ascontiguousarray(x)
    if _is_2x2(s):
        _max_forward_2x2_kernel(x, y, taps)
    else:
        _max_forward_kernel(x, y, taps, *_geometry(s))
    return y, taps


def max_backward(grad_output: np.ndarray, taps: np.ndarray, s) -> np.ndarray:
    """dx of shape (N, C, H, W)."""
    grad_output, taps = np.ascontiguousarray(grad_output), np.ascontiguousarray(taps)
    if _is_2x2(s) and s.h % 2 == 0 and s.w % 2 == 0:  # the windows tile the input
        dx = np.empty(s.x_shape, dtype=grad_output.dtype)  # every element is written
        _max_backward_2x2_kernel(grad_output, taps, dx)
        return dx
    dx = np.zeros(s.x_shape, dtype=grad_output.dtype)
    _max_backward_kernel(grad_output, taps, dx, s.kw, s.sh, s.sw, s.ph, s.pw)
    return dx


def avg_forward(x: np.ndarray, s, include_pad: bool) -> np.ndarray:
    """y of shape (N, C, OH, OW)."""
    y = np.empty(s.y_shape, dtype=x.dtype)
    _avg_forward_kernel(np.ascontiguousarray(x), y, *_geometry(s), include_pad)
    return y


def avg_backward(grad_output: np.ndarray, s, include_pad: bool) -> np.ndarray:
    """dx of shape (N, C, H, W)."""
    dx = np.zeros(s.x_shape, dtype=grad_output.dtype)
    _avg_backward_kernel(np.ascontiguousarray(grad_output), dx, *_geometry(s), include_pad)
    return dx
