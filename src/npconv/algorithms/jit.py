"""The jit algorithm: direct convolution loops compiled by Numba (17.3's ``jit_conv_2d``).

Three kernels, each parallel over an axis whose iterations write disjoint outputs, so
no two threads ever add into the same element:

* forward: one task per (sample, output channel); each accumulates its output plane.
* grad_input: one task per (sample, input channel); each task adds every ``dZ * w``
  term that reaches its input plane (formulas 17.3 (5)-(9)) into a private padded
  buffer, so work is split by what it writes and no two threads share an element.
* grad_weight: one task per (output channel, input channel of its group); each kernel
  tap sums input times dZ over samples and output pixels (formula 17.3 (11)).

Every inner loop runs along one output row over a row view sliced once (``start:stop:
stride``), so it has no index arithmetic or branch left and LLVM vectorises it
(reductions are kept as per-column partial sums for the same reason).

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
                        src = row[v * dw:v * dw + sw * (ow - 1) + 1:sw]  # (OW,)
                        for j in range(ow):
                            dst[j] += wv * src[j]


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
                        dst = row[v * dw:v * dw + sw * (ow - 1) + 1:sw]  # (OW,)
                        for j in range(ow):
                            dst[j] += wv * src[j]
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
                        src = row[v * dw:v * dw + sw * (ow - 1) + 1:sw]  # (OW,)
                        part = acc[u, v]
                        for j in range(ow):
                            part[j] += src[j] * grad[j]
        for u in range(kh):
            for v in range(kw):
                grad_w[co, ci, u, v] = acc[u, v].sum()


# Each kernel is compiled twice: parallel for real layers, serial for small problems,
# where waking the thread pool costs more than the arithmetic (the book's layer: about
# 0.1 ms per call in parallel, a few microseconds serially).
_KERNELS = {
    name: (njit(parallel=True, cache=True)(fn), njit(cache=True)(fn))
    for name, fn in (("forward", _forward_kernel), ("grad_input", _grad_input_kernel),
                     ("grad_weight", _grad_weight_kernel))
}
PARALLEL_MIN_MACS = 200_000


def _kernel(name: str, spec: ConvSpec):
    parallel, serial = _KERNELS[name]
    return parallel if spec.flops // 2 >= PARALLEL_MIN_MACS else serial


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Direct convolution.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW)
    """
    xp = _prepare(pad(x, spec.padding, "zeros") if any(spec.padding) else x)  # (N,C_in,Hp,Wp)
    y = np.zeros(spec.y_shape, dtype=x.dtype)
    _kernel("forward", spec)(xp, _prepare(weight), y, *spec.stride, *spec.dilation, spec.groups)
    return y


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Input gradient by gathering, race-free.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, OH, OW)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    dx = np.empty(spec.x_shape, dtype=grad_output.dtype)
    _kernel("grad_input", spec)(_prepare(grad_output), _prepare(weight), dx, spec.hp, spec.wp,
                       spec.padding[0], spec.padding[2], *spec.stride, *spec.dilation,
                       spec.groups)
    return dx


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Weight gradient, one task per kernel.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    grad_output : ndarray of shape (N, C_out, OH, OW)

    Returns
    -------
    ndarray of shape (C_out, C_in/groups, KH, KW)
    """
    xp = _prepare(pad(x, spec.padding, "zeros") if any(spec.padding) else x)  # (N,C_in,Hp,Wp)
    grad_w = np.empty(spec.weight_shape, dtype=x.dtype)
    _kernel("grad_weight", spec)(xp, _prepare(grad_output), grad_w, *spec.stride, *spec.dilation,
                        spec.groups)
    return grad_w
