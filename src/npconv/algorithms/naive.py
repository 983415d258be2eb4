"""The naive algorithm: the book's loops, generalised. The readable reference.

Every other algorithm is tested against this one. Speed does not matter here;
each function follows the chain rule of 17.3 one output pixel at a time:

* forward (the book's ``_conv2d`` / ``_conv4d``): each output pixel is the sum of a
  window of the padded input times the kernel, formulas 17.3 (1)-(4);
* grad_weight (the book's ``backward_dw_simple``, formula 17.3 (11)
  ``dW = X * dZ``): each kernel tap collects input pixels times the output gradient
  they produced;
* grad_input (formulas 17.3 (5)-(9)): each output gradient flows back, times the
  kernel, into the window of input pixels that produced it. Summing these windows is
  what "pad dZ and correlate with rot180(W)" computes in one step.

Stride, zero padding (any of the four sides), dilation and groups are all handled by
the window arithmetic: output pixel ``(i, j)`` reads padded rows
``i*S_h + u*D_h`` for kernel row ``u``.
"""

from __future__ import annotations

import numpy as np

from ..padding import pad
from ..spec import ConvSpec


def _window(spec: ConvSpec, i: int, j: int) -> tuple[slice, slice]:
    """Rows and columns of the padded input that output pixel (i, j) reads."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    rows = slice(i * sh, i * sh + dh * (spec.kh - 1) + 1, dh)
    cols = slice(j * sw, j * sw + dw * (spec.kw - 1) + 1, dw)
    return rows, cols


def _group_channels(spec: ConvSpec, co: int) -> slice:
    """Input channels seen by output channel ``co`` (its group's slice)."""
    g = co // spec.c_out_g
    return slice(g * spec.c_in_g, (g + 1) * spec.c_in_g)


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """y[n, co, i, j] = sum over (ci, u, v) of xp[n, ci, i*S + u*D, j*S + v*D] * w[co, ci, u, v].

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)
    spec : ConvSpec

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW)
    """
    xp = pad(x, spec.padding, "zeros")  # (N, C_in, Hp, Wp)
    y = np.zeros(spec.y_shape, dtype=x.dtype)
    for n in range(spec.n):
        for co in range(spec.c_out):
            channels = _group_channels(spec, co)
            for i in range(spec.oh):
                for j in range(spec.ow):
                    rows, cols = _window(spec, i, j)
                    window = xp[n, channels, rows, cols]  # (C_in/groups, KH, KW)
                    y[n, co, i, j] = np.sum(window * weight[co])
    return y


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dx: every dZ[n, co, i, j] adds dZ * w[co] into the window it was computed from.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, OH, OW)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)
    spec : ConvSpec

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    top, _, left, _ = spec.padding
    dxp = np.zeros((spec.n, spec.c_in, spec.hp, spec.wp), dtype=grad_output.dtype)
    for n in range(spec.n):
        for co in range(spec.c_out):
            channels = _group_channels(spec, co)
            for i in range(spec.oh):
                for j in range(spec.ow):
                    rows, cols = _window(spec, i, j)
                    dxp[n, channels, rows, cols] += grad_output[n, co, i, j] * weight[co]
    return dxp[:, :, top:top + spec.h, left:left + spec.w]  # drop the zero padding


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dW[co, ci, u, v] = sum over (n, i, j) of xp[n, ci', i*S + u*D, j*S + v*D] * dZ[n, co, i, j].

    The book's ``backward_dw_simple``: for each sample and channel pair, the input
    image correlated with dZ used as the kernel (formula 17.3 (11), ``dW = X * dZ``).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    grad_output : ndarray of shape (N, C_out, OH, OW)
    spec : ConvSpec

    Returns
    -------
    ndarray of shape (C_out, C_in/groups, KH, KW)
    """
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    xp = pad(x, spec.padding, "zeros")  # (N, C_in, Hp, Wp)
    grad_w = np.zeros(spec.weight_shape, dtype=x.dtype)
    for n in range(spec.n):
        for co in range(spec.c_out):
            first = _group_channels(spec, co).start
            for ci in range(spec.c_in_g):
                for u in range(spec.kh):
                    for v in range(spec.kw):
                        # the input pixels that met kernel tap (u, v): one per output pixel
                        seen = xp[n, first + ci,
                                  u * dh: u * dh + sh * (spec.oh - 1) + 1: sh,
                                  v * dw: v * dw + sw * (spec.ow - 1) + 1: sw]  # (OH, OW)
                        grad_w[co, ci, u, v] += np.sum(seen * grad_output[n, co])
    return grad_w
