"""The jit algorithm: direct convolution loops compiled by Numba (17.3's ``jit_conv_2d``).

Three kernels, each parallel over an axis whose iterations write disjoint outputs, so
no two threads ever add into the same element:

* forward: one task per (sample, output channel); each accumulates its output plane.
* grad_input: one task per (sample, input channel); each task adds every ``dZ * w``
  term that reaches its input plane (formulas 17.3 (5)-(9)) into a private padded
  buffer, so work is split by what it writes and no two threads share an element.
* grad_weight: one task per (output channel, input channel of its group); each kernel
  tap sums input times dZ over samples and output pixels (formula 17.3 (11)).

Every inner loop runs along one output row over a row view sliced once, so it has no
index arithmetic or branch left and LLVM vectorises it (reductions are kept as
per-column partial sums for the same reason). With stride 1 the view is a plain
contiguous slice: a slice with a run-time step is typed as non-contiguous and its loop
stays scalar, about 3x slower.

The kernels see only validated, C-contiguous, writeable arrays (:func:`_prepare`), and
index the zero-padded input they are given, so every index is in bounds by construction.
Compiled code is cached on disk (``cache=True``); the first call in a fresh environment
compiles (a few seconds per dtype).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..padding import pad
from ..spec import ConvSpec


def _prepare(a: np.ndarray) -> np.ndarray:
    """C-contiguous and writeable: one compiled signature per dtype, whatever came in."""
    if a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, order="C")  # a copy: the caller's array is never written


def _forward_kernel(xp, weight, y, sh, sw, dh, dw, groups):  # pragma: no cover - compiled
    n = xp.shape[0]
    c_out, c_in_g, kh, kw = weight.shape
    _, _, oh, ow = y.shape
    c_out_g = c_out // groups
    for task in prange(n * c_out):
        b = task // c_out
        co = task % c_out
        first = (co // c_out_g) * c_in_g
        for i in range(oh):
            dst = y[b, co, i]  # one output row stays in cache while every tap adds into it
            for ci in range(c_in_g):
                for u in range(kh):
                    row = xp[b, first + ci, i * sh + u * dh]
                    for v in range(kw):
                        wv = weight[co, ci, u, v]
                        if sw == 1:  # contiguous: vectorised
                            src = row[v * dw:v * dw + ow]  # (OW,)
                            for j in range(ow):
                                dst[j] += wv * src[j]
                        else:
                            src_s = row[v * dw:v * dw + sw * (ow - 1) + 1:sw]  # (OW,)
                            for j in range(ow):
                                dst[j] += wv * src_s[j]


def _grad_input_kernel(dz, weight, dx, hp, wp, top, left, sh, sw, dh, dw,
                       groups):  # pragma: no cover - compiled
    n, c_in, h, w = dx.shape
    c_out, c_in_g, kh, kw = weight.shape
    _, _, oh, ow = dz.shape
    c_out_g = c_out // groups
    for task in prange(n * c_in):
        b = task // c_in
        cin = task % c_in
        g = cin // c_in_g
        ci = cin % c_in_g
        # this task owns input plane (b, cin): it scatters into a private padded copy,
        # so no other thread ever touches the same element
        buf = np.zeros((hp, wp), dtype=dx.dtype)
        for co in range(g * c_out_g, (g + 1) * c_out_g):
            for i in range(oh):
                src = dz[b, co, i]
                for u in range(kh):
                    row = buf[i * sh + u * dh]
                    for v in range(kw):
                        wv = weight[co, ci, u, v]
                        if sw == 1:  # contiguous: vectorised
                            dst = row[v * dw:v * dw + ow]  # (OW,)
                            for j in range(ow):
                                dst[j] += wv * src[j]
                        else:
                            dst_s = row[v * dw:v * dw + sw * (ow - 1) + 1:sw]  # (OW,)
                            for j in range(ow):
                                dst_s[j] += wv * src[j]
        for hi in range(h):
            for wi in range(w):
                dx[b, cin, hi, wi] = buf[hi + top, wi + left]


def _grad_weight_kernel(xp, dz, grad_w, sh, sw, dh, dw, groups):  # pragma: no cover
    n = xp.shape[0]
    c_out, c_in_g, kh, kw = grad_w.shape
    _, _, oh, ow = dz.shape
    c_out_g = c_out // groups
    for task in prange(c_out * c_in_g):
        co = task // c_in_g
        ci = task % c_in_g
        cin = (co // c_out_g) * c_in_g + ci
        # one partial sum per (tap, output column): the j loop is an element-wise
        # multiply-add that vectorises; the partial sums are added at the end
        acc = np.zeros((kh, kw, ow), dtype=grad_w.dtype)
        for b in range(n):
            for i in range(oh):
                grad = dz[b, co, i]
                for u in range(kh):
                    row = xp[b, cin, i * sh + u * dh]
                    for v in range(kw):
                        part = acc[u, v]
                        if sw == 1:  # contiguous: vectorised
                            src = row[v * dw:v * dw + ow]  # (OW,)
                            for j in range(ow):
                                part[j] += src[j] * grad[j]
                        else:
                            src_s = row[v * dw:v * dw + sw * (ow - 1) + 1:sw]  # (OW,)
                            for j in range(ow):
                                part[j] += src_s[j] * grad[j]
        for u in range(kh):
            for v in range(kw):
                grad_w[co, ci, u, v] = acc[u, v].sum()


# ------------------------------------------------------------------ stride 1: wide planes
# With unit stride, tap (u, v) of output pixel (i, j) reads padded pixel (i + u*D_h,
# j + v*D_w). In a padded plane stored with row pitch Wp that is flat position
# i*Wp + j + (u*D_h*Wp + v*D_w): a whole output plane, stored with the same pitch, is
# one contiguous run of the input plane per tap. So each tap is ONE multiply-add over
# OH*Wp elements instead of OH short row loops (slicing a row costs about as much as
# the arithmetic on it). Columns OW .. Wp of every output row are junk: the forward
# drops them, the backward gives them zero gradient. Planes get one spare zero row at
# the bottom, because the last tap's run ends (KW-1)*D_w elements past the padded plane.

@njit(inline="always")
def _fill_plane(src, plane, wp, top, left):  # pragma: no cover - compiled
    """Copy src (H, W) into the zeroed padded plane (flat, pitch Wp) at (top, left)."""
    h, w = src.shape
    for r in range(h):
        row = src[r]
        dst = plane[(r + top) * wp + left:(r + top) * wp + left + w]
        for q in range(w):
            dst[q] = row[q]


@njit(inline="always")
def _fill_wide(src, wide, wp):  # pragma: no cover - compiled
    """Copy src (OH, OW) into the first OW columns of each Wp-pitched row of ``wide``."""
    oh, ow = src.shape
    for i in range(oh):
        row = src[i]
        dst = wide[i * wp:i * wp + ow]
        for j in range(ow):
            dst[j] = row[j]


def _forward_wide_kernel(x, weight, y, top, left, hq, wp, dh, dw,
                         groups):  # pragma: no cover - compiled
    n = x.shape[0]
    c_out, c_in_g, kh, kw = weight.shape
    _, _, oh, ow = y.shape
    c_out_g = c_out // groups
    length = oh * wp
    for task in prange(n * c_out):
        b = task // c_out
        co = task % c_out
        first = (co // c_out_g) * c_in_g
        acc = np.zeros(length, dtype=y.dtype)  # output plane, pitch Wp
        plane = np.zeros(hq * wp, dtype=x.dtype)  # padded input plane, pitch Wp
        for ci in range(c_in_g):
            _fill_plane(x[b, first + ci], plane, wp, top, left)
            for u in range(kh):
                for v in range(kw):
                    wv = weight[co, ci, u, v]
                    src = plane[u * dh * wp + v * dw:u * dh * wp + v * dw + length]
                    for t in range(length):
                        acc[t] += wv * src[t]
        for i in range(oh):
            row = acc[i * wp:i * wp + ow]
            dst = y[b, co, i]
            for j in range(ow):
                dst[j] = row[j]


def _grad_input_wide_kernel(dz, weight, dx, top, left, hq, wp, dh, dw,
                            groups):  # pragma: no cover - compiled
    n, c_in, h, w = dx.shape
    c_out, c_in_g, kh, kw = weight.shape
    oh = dz.shape[2]
    c_out_g = c_out // groups
    length = oh * wp
    for task in prange(n * c_in):
        b = task // c_in
        cin = task % c_in
        g = cin // c_in_g
        ci = cin % c_in_g
        acc = np.zeros(hq * wp, dtype=dx.dtype)  # padded dx plane, pitch Wp
        grad = np.zeros(length, dtype=dz.dtype)  # dZ plane, pitch Wp, junk columns 0
        for co in range(g * c_out_g, (g + 1) * c_out_g):
            _fill_wide(dz[b, co], grad, wp)
            for u in range(kh):
                for v in range(kw):
                    wv = weight[co, ci, u, v]
                    dst = acc[u * dh * wp + v * dw:u * dh * wp + v * dw + length]
                    for t in range(length):
                        dst[t] += wv * grad[t]
        for r in range(h):
            src = acc[(r + top) * wp + left:(r + top) * wp + left + w]
            row = dx[b, cin, r]
            for q in range(w):
                row[q] = src[q]


def _grad_weight_wide_kernel(x, dz, grad_w, top, left, hq, wp, dh, dw,
                             groups):  # pragma: no cover - compiled
    n = x.shape[0]
    c_out, c_in_g, kh, kw = grad_w.shape
    oh = dz.shape[2]
    c_out_g = c_out // groups
    length = oh * wp
    for task in prange(c_out * c_in_g):
        co = task // c_in_g
        ci = task % c_in_g
        cin = (co // c_out_g) * c_in_g + ci
        acc = np.zeros((kh * kw, length), dtype=grad_w.dtype)  # partial sums per tap
        plane = np.zeros(hq * wp, dtype=x.dtype)
        grad = np.zeros(length, dtype=dz.dtype)  # junk columns stay 0
        for b in range(n):
            _fill_plane(x[b, cin], plane, wp, top, left)
            _fill_wide(dz[b, co], grad, wp)
            for u in range(kh):
                for v in range(kw):
                    part = acc[u * kw + v]
                    src = plane[u * dh * wp + v * dw:u * dh * wp + v * dw + length]
                    for t in range(length):
                        part[t] += src[t] * grad[t]
        for u in range(kh):
            for v in range(kw):
                grad_w[co, ci, u, v] = acc[u * kw + v].sum()


# Each kernel is compiled twice: parallel for real layers, serial for small problems,
# where waking the thread pool costs more than the arithmetic (the book's layer: about
# 0.1 ms per call in parallel, a few microseconds serially).
_KERNELS = {
    name: (njit(parallel=True, cache=True)(fn), njit(cache=True)(fn))
    for name, fn in (("forward", _forward_kernel), ("grad_input", _grad_input_kernel),
                     ("grad_weight", _grad_weight_kernel),
                     ("forward_wide", _forward_wide_kernel),
                     ("grad_input_wide", _grad_input_wide_kernel),
                     ("grad_weight_wide", _grad_weight_wide_kernel))
}
PARALLEL_MIN_MACS = 200_000


def _kernel(name: str, spec: ConvSpec):
    parallel, serial = _KERNELS[name]
    return parallel if spec.flops // 2 >= PARALLEL_MIN_MACS else serial


def _wide(spec: ConvSpec) -> bool:
    """Stride 1 in both directions: the wide-plane kernels apply."""
    return spec.stride == (1, 1)


def _wide_args(spec: ConvSpec):
    """(top, left, rows of the padded plane plus one spare, row pitch Wp, D_h, D_w, G)."""
    return (spec.padding[0], spec.padding[2], spec.hp + 1, spec.wp, *spec.dilation,
            spec.groups)


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Direct convolution (one task per sample and output channel).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW)
    """
    if _wide(spec):  # pads each plane inside the kernel
        y = np.empty(spec.y_shape, dtype=x.dtype)
        _kernel("forward_wide", spec)(_prepare(x), _prepare(weight), y, *_wide_args(spec))
        return y
    xp = _prepare(pad(x, spec.padding, "zeros") if any(spec.padding) else x)  # (N,C_in,Hp,Wp)
    y = np.zeros(spec.y_shape, dtype=x.dtype)
    _kernel("forward", spec)(xp, _prepare(weight), y, *spec.stride, *spec.dilation, spec.groups)
    return y


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Input gradient by gathering, race-free (one task per sample and input channel).

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, OH, OW)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    dx = np.empty(spec.x_shape, dtype=grad_output.dtype)
    # the junk columns of the wide planes meet the weights as 0 * w: exact unless w has
    # an inf or a NaN, where the row kernel keeps the answer exact
    if _wide(spec) and np.isfinite(weight).all():
        _kernel("grad_input_wide", spec)(_prepare(grad_output), _prepare(weight), dx,
                                         *_wide_args(spec))
        return dx
    _kernel("grad_input", spec)(_prepare(grad_output), _prepare(weight), dx, spec.hp, spec.wp,
                                spec.padding[0], spec.padding[2], *spec.stride, *spec.dilation,
                                spec.groups)
    return dx


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Weight gradient, one task per kernel (output channel, input channel).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    grad_output : ndarray of shape (N, C_out, OH, OW)

    Returns
    -------
    ndarray of shape (C_out, C_in/groups, KH, KW)
    """
    grad_w = np.empty(spec.weight_shape, dtype=x.dtype)
    if _wide(spec):
        _kernel("grad_weight_wide", spec)(_prepare(x), _prepare(grad_output), grad_w,
                                          *_wide_args(spec))
        # junk columns meet x as x * 0, which is NaN where x is inf or NaN: only then
        # can a NaN appear that the exact sum would not have, so recompute by rows
        if not np.isnan(grad_w).any():
            return grad_w
    xp = _prepare(pad(x, spec.padding, "zeros") if any(spec.padding) else x)  # (N,C_in,Hp,Wp)
    _kernel("grad_weight", spec)(xp, _prepare(grad_output), grad_w, *spec.stride,
                                 *spec.dilation, spec.groups)
    return grad_w
