"""The im2col algorithm: convolution as matrix multiplication (14.4, 14.5).

im2col copies, for every input channel c and kernel tap (u, v), the input pixels that
tap meets into one row of a column matrix (zero where the tap falls in the padding);
the copy is one NumPy assignment from a strided sliding-window view, no fancy
indexing::

    cols[n, (c, u, v), (i, j)] = xp[n, c, i*S_h + u*D_h, j*S_w + v*D_w]
    cols  (C_in*KH*KW, N*OH*OW)  with rows (c, u, v) and columns (n, i, j);
    group g owns rows g*K .. (g+1)*K,  K = C_in/G * KH * KW

Then one GEMM per group (dZ' is dZ with N and C_out swapped, (C_out, N*OH*OW)):

* forward:      y'[g]  = W[g] (C_out/G, K) @ cols[g] (K, N*L), then (N, C_out, L);
* grad_weight:  dW[g]  = dZ'[g] (C_out/G, N*L) @ cols[g].T (N*L, K)
  (the book's ``backward_dw_col2im``: the fully-connected rule on columns);
* grad_input:   dcols  = W[g].T (K, C_out/G) @ dZ'[g] (C_out/G, N*L), and col2im adds
  every entry back onto the pixel it was copied from (``backward_dx_col2im``); no
  padding or zero insertion is needed, the index arithmetic places everything.

Unpacking (col2im) is a parallel Numba kernel, one task per (sample, channel), so no two
threads add into the same element; it writes the unpadded gradient directly. The GEMMs
go to BLAS. The column matrix never exceeds
:func:`npconv.tuning.workspace_limit`: larger problems run in chunks of samples, or of
output rows when one sample alone is too large, with identical results.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.lib.stride_tricks import sliding_window_view

from .. import tuning
from ..padding import pad
from ..spec import ConvSpec


@njit(cache=True)
def _inside(off, sw, w, ow):  # pragma: no cover - compiled
    """The output columns j in [j_lo, j_hi) whose input column j*sw + off is in [0, w)."""
    j_lo = 0 if off >= 0 else min(ow, (-off + sw - 1) // sw)
    j_hi = min(ow, (w - 1 - off) // sw + 1) if w - 1 - off >= 0 else 0
    return j_lo, max(j_hi, j_lo)


@njit(parallel=True, cache=True)
def _unpack(dcols, dx, nb, n0, i0, kh, kw, sh, sw, dh, dw, top, left,
            ow):  # pragma: no cover - compiled
    """Adjoint of :func:`_pack`: dx[n0+b, c, row, col] += dcols[(c,u,v), b*l + i*ow + j]."""
    length = dcols.shape[1] // nb
    _, c_in, h, w = dx.shape
    rows_out = length // ow
    for task in prange(nb * c_in):
        b = task // c_in
        c = task % c_in
        plane = dx[n0 + b, c]
        for u in range(kh):
            for v in range(kw):
                src = dcols[(c * kh + u) * kw + v, b * length:(b + 1) * length]
                off = v * dw - left
                j_lo, j_hi = _inside(off, sw, w, ow)
                for i in range(rows_out):
                    row = (i0 + i) * sh + u * dh - top
                    if row < 0 or row >= h:
                        continue
                    dst = plane[row]
                    base = i * ow
                    if sw == 1:
                        for j in range(j_lo, j_hi):
                            dst[j + off] += src[base + j]
                    else:
                        for j in range(j_lo, j_hi):
                            dst[j * sw + off] += src[base + j]


def _contiguous(a: np.ndarray) -> np.ndarray:
    return np.require(a, requirements=("C", "W"))


def chunks(spec: ConvSpec, itemsize: int):
    """``(n0, n1, i0, i1)`` chunks whose column matrix fits the workspace limit."""
    k = spec.c_in * spec.kh * spec.kw
    per_sample = k * spec.oh * spec.ow * itemsize
    limit = tuning.workspace_limit()
    if per_sample <= limit:
        step = max(1, min(spec.n, limit // per_sample))
        for n0 in range(0, spec.n, step):
            yield n0, min(spec.n, n0 + step), 0, spec.oh
        return
    rows = max(1, limit // (k * spec.ow * itemsize))
    for n0 in range(spec.n):
        for i0 in range(0, spec.oh, rows):
            yield n0, n0 + 1, i0, min(spec.oh, i0 + rows)


def _kernel_args(spec: ConvSpec):
    return (spec.kh, spec.kw, *spec.stride, *spec.dilation, spec.padding[0], spec.padding[2],
            spec.ow)


def im2col(x: np.ndarray, spec: ConvSpec, n0: int = 0, n1: int | None = None, i0: int = 0,
           i1: int | None = None) -> np.ndarray:
    """Column matrix of samples ``n0:n1`` and output rows ``i0:i1`` of x.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), C-contiguous

    Returns
    -------
    ndarray of shape (C_in*KH*KW, (n1 - n0) * (i1 - i0)*OW), rows ordered (c, u, v) and
    columns (sample, output row, output column).
    """
    n1 = spec.n if n1 is None else n1
    i1 = spec.oh if i1 is None else i1
    nb, length = n1 - n0, (i1 - i0) * spec.ow
    if _is_pointwise(spec):  # 1x1, stride 1, no padding: a transpose of x is the matrix
        cols = np.empty((spec.c_in, nb * length), dtype=x.dtype)
        view = x[n0:n1].reshape(nb, spec.c_in, -1)[:, :, i0 * spec.ow:i1 * spec.ow]
        cols.reshape(spec.c_in, nb, length)[...] = view.transpose(1, 0, 2)  # (C_in, nb, l)
        return cols
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    rows_in = slice(i0 * sh, (i1 - 1) * sh + dh * (spec.kh - 1) + 1)  # padded rows read
    xp = pad(x[n0:n1], spec.padding, "zeros") if any(spec.padding) else x[n0:n1]
    windows = sliding_window_view(xp[:, :, rows_in], (dh * (spec.kh - 1) + 1,
                                                      dw * (spec.kw - 1) + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # (nb, C_in, i1-i0, OW, KH, KW), a view
    cols = np.empty((spec.c_in, spec.kh, spec.kw, nb, i1 - i0, spec.ow), dtype=x.dtype)
    cols[...] = windows.transpose(1, 4, 5, 0, 2, 3)  # the one copy
    return cols.reshape(spec.c_in * spec.kh * spec.kw, nb * length)  # (C_in*KH*KW, nb*l)


def col2im(dcols: np.ndarray, dx: np.ndarray, spec: ConvSpec, nb: int, n0: int = 0,
           i0: int = 0) -> None:
    """Add the column-matrix gradient ``dcols`` back onto ``dx`` (in place).

    Parameters
    ----------
    dcols : ndarray of shape (C_in*KH*KW, nb * rows*OW)
    dx : ndarray of shape (N, C_in, H, W), C-contiguous; samples ``n0:n0+nb`` receive it.
    """
    if _is_pointwise(spec):
        length = dcols.shape[1] // nb
        dx_view = dx.reshape(spec.n, spec.c_in, spec.h * spec.w)  # (N, C_in, L)
        dx_view[n0:n0 + nb, :, i0 * spec.ow:i0 * spec.ow + length] += (
            dcols.reshape(spec.c_in, nb, length).transpose(1, 0, 2))
        return
    _unpack(dcols, dx, nb, n0, i0, *_kernel_args(spec))


def _is_pointwise(spec: ConvSpec) -> bool:
    """A 1x1 kernel with stride 1 and no padding reads every pixel once, in order."""
    return (spec.kh, spec.kw, *spec.stride, *spec.padding) == (1, 1, 1, 1, 0, 0, 0, 0)


def _group_rows(spec: ConvSpec, g: int) -> slice:
    """Rows of the column matrix (and of W's matrix) that belong to group ``g``."""
    k = spec.c_in_g * spec.kh * spec.kw
    return slice(g * k, (g + 1) * k)


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """y = W @ im2col(x), one GEMM per group and chunk, chunked to the workspace limit.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW)
    """
    x = _contiguous(x)
    w_mat = np.ascontiguousarray(weight).reshape(spec.c_out, -1)  # (C_out, C_in/G*KH*KW)
    y = np.empty(spec.y_shape, dtype=x.dtype)
    y_view = y.reshape(spec.n, spec.c_out, spec.oh * spec.ow)  # (N, C_out, L)
    cog = spec.c_out_g
    for n0, n1, i0, i1 in chunks(spec, x.itemsize):
        cols = im2col(x, spec, n0, n1, i0, i1)  # (C_in*KH*KW, nb*l)
        out = np.empty((spec.c_out, cols.shape[1]), dtype=x.dtype)  # (C_out, nb*l)
        for g in range(spec.groups):
            np.matmul(w_mat[g * cog:(g + 1) * cog], cols[_group_rows(spec, g)],
                      out=out[g * cog:(g + 1) * cog])
        y_view[n0:n1, :, i0 * spec.ow:i1 * spec.ow] = (
            out.reshape(spec.c_out, n1 - n0, -1).transpose(1, 0, 2))  # (nb, C_out, l)
    return y


def backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool):
    """Both gradients in one pass over the chunks (dZ is rearranged once per chunk).

    Returns
    -------
    (dx of shape (N, C_in, H, W) or None, dw of shape (C_out, C_in/groups, KH, KW) or None)
    """
    dz_all = grad_output.reshape(spec.n, spec.c_out, spec.oh * spec.ow)  # (N, C_out, L)
    cog = spec.c_out_g
    if need_input:
        w_mat = np.ascontiguousarray(weight).reshape(spec.c_out, -1)  # (C_out, K_g)
        dx = np.zeros(spec.x_shape, dtype=grad_output.dtype)
    if need_weight:
        x = _contiguous(x)
        dw = np.zeros((spec.c_out, spec.c_in_g * spec.kh * spec.kw), dtype=x.dtype)
    for n0, n1, i0, i1 in chunks(spec, grad_output.itemsize):
        nb = n1 - n0
        dz = np.ascontiguousarray(
            dz_all[n0:n1, :, i0 * spec.ow:i1 * spec.ow].transpose(1, 0, 2)
        ).reshape(spec.c_out, -1)  # (C_out, nb*l)
        if need_weight:
            cols = im2col(x, spec, n0, n1, i0, i1)  # (C_in*KH*KW, nb*l)
            for g in range(spec.groups):
                rows = _group_rows(spec, g)
                dw[g * cog:(g + 1) * cog] += dz[g * cog:(g + 1) * cog] @ cols[rows].T
            del cols
        if need_input:
            dcols = np.empty((spec.c_in * spec.kh * spec.kw, dz.shape[1]), dtype=dz.dtype)
            for g in range(spec.groups):
                np.matmul(w_mat[g * cog:(g + 1) * cog].T, dz[g * cog:(g + 1) * cog],
                          out=dcols[_group_rows(spec, g)])
            col2im(dcols, dx, spec, nb, n0, i0)
    return (dx if need_input else None,
            dw.reshape(spec.weight_shape) if need_weight else None)


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dX = col2im(W.T @ dZ), one GEMM per group and chunk.

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    return backward(None, weight, grad_output, spec, True, False)[0]


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dW = dZ @ im2col(x).T, one GEMM per group and chunk.

    Returns
    -------
    ndarray of shape (C_out, C_in/groups, KH, KW)
    """
    return backward(x, None, grad_output, spec, False, True)[1]
