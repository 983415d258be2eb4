"""Pooling in Numba kernels (the older edition's jit max-pooling), plane by plane.

Every kernel works on one (sample, channel) plane at a time, through row views
pre-sliced outside the innermost loop, and reads and writes only that plane, so the
backward scatter needs no atomics. Each kernel comes serial and parallel over the
N*C planes: waking Numba's sleeping threads costs more than pooling all of LeNet-5's
(64, 6, 28, 28) on one core, so the threads only take inputs of at least
:data:`npconv.nn.kernels.PARALLEL_MIN` elements. Windows are clipped to the input, as
in :mod:`.pool_naive`, so padding is never materialised. Kernels see C-contiguous
arrays of shape (N*C, H, W) only and are cached on disk (``cache=True``).

The 2x2, stride-2, unpadded max pooling of LeNet and the book has its own kernels:
forward with no branch (the winner and its tap are selected arithmetically: random
data would mispredict half the branches), on one thread and for even sizes in two
passes that LLVM vectorises (:func:`_max_2x2_even`), else with the four taps
unrolled; backward as one zero fill and one store per window.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._numba import serial_and_parallel
from .kernels import parallel


@njit(inline="always")
def _wins(v, best):  # pragma: no cover - compiled
    """PyTorch's rule: a larger value or any NaN takes the window (so the last NaN wins)."""
    return (v > best) | (v != v)


# ---------------------------------------------------------------- one plane each
@njit(inline="always")
def _max_2x2_plane(xp, yp, tp):  # pragma: no cover - compiled
    for i in range(yp.shape[0]):
        top, bottom = xp[2 * i], xp[2 * i + 1]  # (W,) each
        y_row, tap_row = yp[i], tp[i]  # (OW,) each
        for j in range(y_row.shape[0]):
            a, b = top[2 * j], top[2 * j + 1]
            c, d = bottom[2 * j], bottom[2 * j + 1]
            win_b = np.uint8(_wins(b, a))
            best = np.maximum(a, b)  # NaN-propagating, like the rule
            win_c = np.uint8(_wins(c, best))
            best = np.maximum(best, c)
            win_d = np.uint8(_wins(d, best))
            y_row[j] = np.maximum(best, d)
            tap = win_b  # tap = k where the k-th candidate won last
            tap += win_c * (np.uint8(2) - tap)
            tap += win_d * (np.uint8(3) - tap)
            tap_row[j] = tap


@njit(inline="always")
def _max_2x2_backward_plane(gp, tp, dp):  # pragma: no cover - compiled
    dp[:, :] = 0
    for i in range(gp.shape[0]):
        g_row, tap_row = gp[i], tp[i]  # (OW,) each
        top, bottom = dp[2 * i], dp[2 * i + 1]  # (W,) each
        for j in range(g_row.shape[0]):
            tap = tap_row[j]
            row = top if tap < 2 else bottom
            row[2 * j + (tap & 1)] = g_row[j]


@njit(inline="always")
def _max_plane(xp, yp, tp, kh, kw, sh, sw, ph, pw):  # pragma: no cover - compiled
    h, w = xp.shape
    for i in range(yp.shape[0]):
        top = i * sh - ph
        u0, u1 = max(-top, 0), min(kh, h - top)
        y_row, tap_row = yp[i], tp[i]  # (OW,) each
        for j in range(y_row.shape[0]):
            left = j * sw - pw
            v0, v1 = max(-left, 0), min(kw, w - left)
            best = xp[top + u0, left + v0]
            tap = u0 * kw + v0
            for u in range(u0, u1):
                row = xp[top + u, left + v0:left + v1]  # the window's in-bounds part
                for k in range(row.shape[0]):
                    if _wins(row[k], best):
                        best = row[k]
                        tap = u * kw + v0 + k
            y_row[j] = best
            tap_row[j] = tap


@njit(inline="always")
def _max_backward_plane(gp, tp, dp, kw, sh, sw, ph, pw):  # pragma: no cover - compiled
    dp[:, :] = 0
    for i in range(gp.shape[0]):
        g_row, tap_row = gp[i], tp[i]  # (OW,) each
        for j in range(g_row.shape[0]):
            u, v = divmod(np.int64(tap_row[j]), kw)
            dp[i * sh - ph + u, j * sw - pw + v] += g_row[j]


@njit(inline="always")
def _avg_plane(xp, yp, kh, kw, sh, sw, ph, pw, include_pad):  # pragma: no cover
    h, w = xp.shape
    for i in range(yp.shape[0]):
        r0, r1 = max(i * sh - ph, 0), min(i * sh - ph + kh, h)
        y_row = yp[i]  # (OW,)
        for j in range(y_row.shape[0]):
            c0, c1 = max(j * sw - pw, 0), min(j * sw - pw + kw, w)
            total = y_row.dtype.type(0)
            for r in range(r0, r1):
                row = xp[r, c0:c1]
                for q in range(row.shape[0]):
                    total += row[q]
            count = kh * kw if include_pad else (r1 - r0) * (c1 - c0)
            y_row[j] = total / y_row.dtype.type(count)


@njit(inline="always")
def _avg_backward_plane(gp, dp, kh, kw, sh, sw, ph, pw, include_pad):  # pragma: no cover
    h, w = dp.shape
    dp[:, :] = 0
    for i in range(gp.shape[0]):
        r0, r1 = max(i * sh - ph, 0), min(i * sh - ph + kh, h)
        g_row = gp[i]  # (OW,)
        for j in range(g_row.shape[0]):
            c0, c1 = max(j * sw - pw, 0), min(j * sw - pw + kw, w)
            count = kh * kw if include_pad else (r1 - r0) * (c1 - c0)
            share = g_row[j] / g_row.dtype.type(count)
            for r in range(r0, r1):
                row = dp[r, c0:c1]
                for q in range(row.shape[0]):
                    row[q] += share


# ---------------------------------------------------------------- over the planes
# Arrays of shape (N*C, H, W) / (N*C, OH, OW): one task per plane. Each loop is written
# once and compiled twice (below): serial, and parallel over the planes.
def _max_2x2(x, y, taps):  # pragma: no cover - compiled
    for p in prange(x.shape[0]):
        _max_2x2_plane(x[p], y[p], taps[p])


def _max_2x2_backward(grad_output, taps, dx):  # pragma: no cover - compiled
    for p in prange(dx.shape[0]):
        _max_2x2_backward_plane(grad_output[p], taps[p], dx[p])


def _max(x, y, taps, kh, kw, sh, sw, ph, pw):  # pragma: no cover - compiled
    for p in prange(x.shape[0]):
        _max_plane(x[p], y[p], taps[p], kh, kw, sh, sw, ph, pw)


def _max_backward(grad_output, taps, dx, kw, sh, sw, ph, pw):  # pragma: no cover
    for p in prange(dx.shape[0]):
        _max_backward_plane(grad_output[p], taps[p], dx[p], kw, sh, sw, ph, pw)


def _avg(x, y, kh, kw, sh, sw, ph, pw, include_pad):  # pragma: no cover
    for p in prange(x.shape[0]):
        _avg_plane(x[p], y[p], kh, kw, sh, sw, ph, pw, include_pad)


def _avg_backward(grad_output, dx, kh, kw, sh, sw, ph, pw, include_pad):  # pragma: no cover
    for p in prange(dx.shape[0]):
        _avg_backward_plane(grad_output[p], dx[p], kh, kw, sh, sw, ph, pw, include_pad)


# (serial, parallel) per loop: index with parallel(size)
_KERNELS = {fn.__name__.lstrip("_"): serial_and_parallel(fn)
            for fn in (_max_2x2, _max_2x2_backward, _max, _max_backward, _avg, _avg_backward)}


@njit(cache=True, error_model="numpy")
def _max_2x2_even(x, y, taps, pair_max, pair_tap):  # pragma: no cover - compiled
    """The 2x2 windows of planes of even height and width, in two passes LLVM vectorises.

    ``x`` flat (N*C*H*W,); ``y``, ``taps`` of shape (N*C*OH, OW); ``pair_max``,
    ``pair_tap`` of shape (N*C*OH, 2*OW). First every horizontal pair (a, b) of the
    whole input as one flat loop (with W even no pair crosses a row; row by row the
    loops would run only OW times), keeping each pair's winner and whether b won; then
    each window as its top pair against its bottom pair. Same result as the sequential
    rule over a, b, c, d: the top pair holds the first maximum unless the bottom
    pair's is larger, and a NaN in the bottom pair is the last one.
    """
    pairs_v, pairs_t = pair_max.reshape(-1), pair_tap.reshape(-1)  # (N*C*H*OW,) each
    for k in range(pairs_v.shape[0]):
        a, b = x[2 * k], x[2 * k + 1]
        pairs_t[k] = np.uint8(_wins(b, a))
        pairs_v[k] = np.maximum(a, b)
    ow = y.shape[1]
    for r in range(y.shape[0]):
        top_v, bottom_v = pair_max[r, :ow], pair_max[r, ow:]  # (OW,) each
        top_t, bottom_t = pair_tap[r, :ow], pair_tap[r, ow:]
        y_row, tap_row = y[r], taps[r]
        for j in range(ow):
            top, bottom = top_v[j], bottom_v[j]
            down = np.uint8(_wins(bottom, top))
            y_row[j] = np.maximum(top, bottom)
            tap_row[j] = top_t[j] + down * (np.uint8(2) + bottom_t[j] - top_t[j])


# ---------------------------------------------------------------- the form's API
def _is_2x2(s) -> bool:
    return (s.kh, s.kw, s.sh, s.sw, s.ph, s.pw) == (2, 2, 2, 2, 0, 0)


def _geometry(s):
    return s.kh, s.kw, s.sh, s.sw, s.ph, s.pw


def _planes(a: np.ndarray, s, h: int, w: int) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(s.n * s.c, h, w)  # (N*C, h, w)


def max_forward(x: np.ndarray, s):
    """y of shape (N, C, OH, OW) and the winning tap ``u*KW + v`` of each window."""
    y = np.empty(s.y_shape, dtype=x.dtype)
    taps = np.empty(s.y_shape, dtype=s.tap_dtype)
    threads = parallel(x.size)
    planes = (_planes(x, s, s.h, s.w), y.reshape(s.n * s.c, s.oh, s.ow),
              taps.reshape(s.n * s.c, s.oh, s.ow))  # (N*C, H, W), (N*C, OH, OW) x 2
    if _is_2x2(s) and s.h % 2 == 0 and s.w % 2 == 0 and not threads:  # ~30% faster
        rows = (s.n * s.c * s.oh, s.ow)  # output rows
        pairs = (s.n * s.c * s.oh, 2 * s.ow)  # the horizontal pairs of two input rows
        _max_2x2_even(planes[0].reshape(-1), y.reshape(rows), taps.reshape(rows),
                      np.empty(pairs, dtype=x.dtype), np.empty(pairs, dtype=np.uint8))
    elif _is_2x2(s):
        _KERNELS["max_2x2"][threads](*planes)
    else:
        _KERNELS["max"][threads](*planes, *_geometry(s))
    return y, taps


def max_backward(grad_output: np.ndarray, taps: np.ndarray, s) -> np.ndarray:
    """dx of shape (N, C, H, W)."""
    dx = np.empty(s.x_shape, dtype=grad_output.dtype)  # each kernel zero-fills its planes
    threads = parallel(dx.size)
    planes = (_planes(grad_output, s, s.oh, s.ow), _planes(taps, s, s.oh, s.ow),
              dx.reshape(s.n * s.c, s.h, s.w))  # (N*C, OH, OW) x 2, (N*C, H, W)
    if _is_2x2(s):
        _KERNELS["max_2x2_backward"][threads](*planes)
    else:
        _KERNELS["max_backward"][threads](*planes, s.kw, s.sh, s.sw, s.ph, s.pw)
    return dx


def avg_forward(x: np.ndarray, s, include_pad: bool) -> np.ndarray:
    """y of shape (N, C, OH, OW)."""
    y = np.empty(s.y_shape, dtype=x.dtype)
    kernel = _KERNELS["avg"][parallel(x.size)]
    kernel(_planes(x, s, s.h, s.w), y.reshape(s.n * s.c, s.oh, s.ow), *_geometry(s),
           include_pad)
    return y


def avg_backward(grad_output: np.ndarray, s, include_pad: bool) -> np.ndarray:
    """dx of shape (N, C, H, W)."""
    dx = np.empty(s.x_shape, dtype=grad_output.dtype)  # each kernel zero-fills its planes
    kernel = _KERNELS["avg_backward"][parallel(dx.size)]
    kernel(_planes(grad_output, s, s.oh, s.ow), dx.reshape(s.n * s.c, s.h, s.w),
           *_geometry(s), include_pad)
    return dx
