"""The im2col algorithm: convolution as matrix multiplication (14.4, 14.5).

im2col copies, for every kernel tap (u, v), the strided view of the padded input that
tap meets into a column matrix, one copy per tap and no fancy indexing::

    cols[n, c, u, v, i, j] = xp[n, c, i*S_h + u*D_h, j*S_w + v*D_w]
    cols  (N, C_in, KH, KW, OH, OW)  viewed per group as  (N, G, C_in/G*KH*KW, OH*OW)

Then, per sample and group, with K = C_in/G*KH*KW and L = OH*OW:

* forward:      y[n, g]  = W[g] (C_out/G, K) @ cols[n, g] (K, L)
* grad_weight:  dW[g]    = sum_n dZ[n, g] (C_out/G, L) @ cols[n, g].T (L, K)
  (the book's ``backward_dw_col2im``: the fully-connected rule on columns)
* grad_input:   dcols    = W[g].T (K, C_out/G) @ dZ[n, g] (C_out/G, L), and col2im adds
  each tap's block back where it was copied from (``backward_dx_col2im``); no padding
  or zero insertion is needed, the strided adds place everything.
"""

from __future__ import annotations

import numpy as np

from ..padding import pad
from ..spec import ConvSpec


def _tap(spec: ConvSpec, u: int, v: int) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel tap (u, v) meets."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    return (slice(u * dh, u * dh + sh * (spec.oh - 1) + 1, sh),
            slice(v * dw, v * dw + sw * (spec.ow - 1) + 1, sw))


def im2col(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Column matrix of x.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)

    Returns
    -------
    ndarray of shape (N, C_in, KH, KW, OH, OW)
    """
    xp = pad(x, spec.padding, "zeros") if any(spec.padding) else x  # (N, C_in, Hp, Wp)
    cols = np.empty((spec.n, spec.c_in, spec.kh, spec.kw, spec.oh, spec.ow), dtype=x.dtype)
    for u in range(spec.kh):
        for v in range(spec.kw):
            rows, columns = _tap(spec, u, v)
            cols[:, :, u, v] = xp[:, :, rows, columns]
    return cols


def col2im(cols: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Adjoint of :func:`im2col`: add every tap's block back where it came from.

    Parameters
    ----------
    cols : ndarray of shape (N, C_in, KH, KW, OH, OW)

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    dxp = np.zeros((spec.n, spec.c_in, spec.hp, spec.wp), dtype=cols.dtype)
    for u in range(spec.kh):
        for v in range(spec.kw):
            rows, columns = _tap(spec, u, v)
            dxp[:, :, rows, columns] += cols[:, :, u, v]
    pt, _, pl, _ = spec.padding
    return dxp[:, :, pt:pt + spec.h, pl:pl + spec.w]  # (N, C_in, H, W)


def _group_views(spec: ConvSpec):
    k = spec.c_in_g * spec.kh * spec.kw
    return (spec.n, spec.groups, k, spec.oh * spec.ow), (spec.groups, spec.c_out_g, k)


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """y = W @ im2col(x), per sample and group.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW)
    """
    cols_shape, w_shape = _group_views(spec)
    cols = im2col(x, spec).reshape(cols_shape)  # (N, G, K, L)
    y = np.matmul(weight.reshape(w_shape), cols)  # (N, G, C_out/G, L)
    return y.reshape(spec.y_shape)  # (N, C_out, OH, OW)


def _grad_weight_from_cols(cols: np.ndarray, dz: np.ndarray, spec: ConvSpec) -> np.ndarray:
    grad_w = np.empty((spec.groups, spec.c_out_g, cols.shape[2]), dtype=cols.dtype)
    for g in range(spec.groups):
        # sum over n and l of dZ[n, g, o, l] * cols[n, g, k, l]: one GEMM
        grad_w[g] = np.tensordot(dz[:, g], cols[:, g], axes=([0, 2], [0, 2]))  # (C_out/G, K)
    return grad_w.reshape(spec.weight_shape)


def _grad_input_from_dz(weight: np.ndarray, dz: np.ndarray, spec: ConvSpec) -> np.ndarray:
    _, w_shape = _group_views(spec)
    w_t = weight.reshape(w_shape).transpose(0, 2, 1)  # (G, K, C_out/G)
    dcols = np.matmul(w_t, dz)  # (N, G, K, L)
    return col2im(dcols.reshape(spec.n, spec.c_in, spec.kh, spec.kw, spec.oh, spec.ow), spec)


def _dz_view(grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    return grad_output.reshape(spec.n, spec.groups, spec.c_out_g, spec.oh * spec.ow)  # (N,G,O,L)


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dW = sum_n dZ @ im2col(x).T, per group.

    Returns
    -------
    ndarray of shape (C_out, C_in/groups, KH, KW)
    """
    cols = im2col(x, spec).reshape(_group_views(spec)[0])  # (N, G, K, L)
    return _grad_weight_from_cols(cols, _dz_view(grad_output, spec), spec)


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dX = col2im(W.T @ dZ), per sample and group.

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    return _grad_input_from_dz(weight, _dz_view(grad_output, spec), spec)


def backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool):
    """Both gradients, sharing the reshaped dZ."""
    dz = _dz_view(grad_output, spec)  # (N, G, C_out/G, L)
    dx = _grad_input_from_dz(weight, dz, spec) if need_input else None
    dw = grad_weight(x, grad_output, spec) if need_weight else None
    return dx, dw
