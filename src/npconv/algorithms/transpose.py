"""The transpose algorithm: the backward pass as forward convolutions (14.5.1, 14.5.2).

The book reuses its forward convolution ``_conv4d`` for both gradients by swapping
axes so the shapes line up (tables 14.5.1 to 14.5.5):

* dW (14.5.1 "转置实现"): X' = X with N and C swapped, (C_in, N, H, W); dZ' = dZ with
  N and C swapped, (C_out, N, OH, OW), used as the kernel. conv4d(X', dZ') gives
  dW' (C_in, C_out, KH, KW), swapped back to dW. The roles of stride and dilation
  exchange: dZ' taps are ``stride`` apart in X', and dW's taps are ``dilation`` apart.
* dX (14.5.2, 17.3.3/17.3.4): dZ is zero-inserted with ``stride - 1`` zeros between
  entries (17.3.2), padded by formula 14.5.1 (asymmetric when the stride leaves a
  remainder, see :func:`npconv.spec.backward_padding`) and correlated, with stride 1
  and the forward dilation, with W' = W with C_out and C_in swapped and each kernel
  rotated by 180 degrees.

Because dX multiplies W by the zeros inserted into and padded around dZ, an inf in W
meets those zeros and gives NaN (inf * 0) in dX where the exact gradient, and
PyTorch's, is inf. The other algorithms never multiply by a padding zero.

The book's version handled stride 1 and no padding only; this one handles stride,
padding, dilation and groups, and is tested against the naive loops and PyTorch.
"""

from __future__ import annotations

import numpy as np

from ..padding import pad
from ..spec import ConvSpec, backward_padding


def _conv4d(x: np.ndarray, weight: np.ndarray, stride=(1, 1), dilation=(1, 1),
            groups: int = 1) -> np.ndarray:
    """Valid (unpadded) multi-channel correlation, one GEMM per kernel tap or output pixel.

    It loops over whichever is fewer: the kernel taps (each tap is one GEMM over every
    output pixel) or the output pixels (each is one GEMM over every tap). dW by
    transposition uses dZ' as the kernel, which can have thousands of taps and only
    KH x KW outputs, so the second order keeps it fast.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    weight : ndarray of shape (O, C/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, O, OH, OW), ``OH = (H - D*(KH-1) - 1) // S + 1``.
    """
    n, _, h, w = x.shape
    o, c_g, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    o_g = o // groups
    xg = x.reshape(n, groups, c_g, h, w)  # (N, G, C/G, H, W)
    wg = weight.reshape(groups, o_g, c_g, kh, kw)  # (G, O/G, C/G, KH, KW)
    y = np.zeros((n, groups, o_g, oh * ow), dtype=x.dtype)
    if kh * kw <= oh * ow:
        for u in range(kh):
            for v in range(kw):
                tap = xg[:, :, :, u * dh:u * dh + sh * (oh - 1) + 1:sh,
                         v * dw:v * dw + sw * (ow - 1) + 1:sw]  # (N, G, C/G, OH, OW)
                y += np.matmul(wg[:, :, :, u, v], tap.reshape(n, groups, c_g, oh * ow))
    else:
        w_cols = wg.reshape(groups, o_g, c_g * kh * kw).transpose(0, 2, 1)  # (G, K, O/G)
        for i in range(oh):
            for j in range(ow):
                window = xg[:, :, :, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                            j * sw:j * sw + dw * (kw - 1) + 1:dw]  # (N, G, C/G, KH, KW)
                window = window.reshape(n, groups, 1, c_g * kh * kw)  # (N, G, 1, K)
                y[:, :, :, i * ow + j] = np.matmul(window, w_cols)[:, :, 0]  # (N, G, O/G)
    return y.reshape(n, o, oh, ow)  # (N, O, OH, OW)


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """y = conv4d(pad(x), W).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW)
    """
    xp = pad(x, spec.padding, "zeros")  # (N, C_in, Hp, Wp)
    return _conv4d(xp, weight, spec.stride, spec.dilation, spec.groups)


def zero_insert(grad_output: np.ndarray, stride) -> np.ndarray:
    """17.3.2: put ``stride - 1`` zeros between the entries of dZ.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C, OH, OW)

    Returns
    -------
    ndarray of shape (N, C, (OH - 1)*S_h + 1, (OW - 1)*S_w + 1)
    """
    n, c, oh, ow = grad_output.shape
    sh, sw = stride
    if (sh, sw) == (1, 1):
        return grad_output
    out = np.zeros((n, c, (oh - 1) * sh + 1, (ow - 1) * sw + 1), dtype=grad_output.dtype)
    out[:, :, ::sh, ::sw] = grad_output
    return out


def transposed_kernel(weight: np.ndarray, groups: int) -> np.ndarray:
    """W' of 14.5.2: C_out and C_in swapped (within each group), kernels rotated 180 degrees.

    Parameters
    ----------
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (C_in, C_out/groups, KH, KW)
    """
    c_out, c_in_g, kh, kw = weight.shape
    w_t = weight.reshape(groups, c_out // groups, c_in_g, kh, kw).transpose(0, 2, 1, 3, 4)
    w_t = w_t.reshape(groups * c_in_g, c_out // groups, kh, kw)  # (C_in, C_out/G, KH, KW)
    return w_t[:, :, ::-1, ::-1]  # rot180 inside every kernel


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dX = conv4d(pad_14.5.1(zero_insert(dZ)), rot180(W')), cropped to the unpadded input.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, OH, OW)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    top, bottom = backward_padding(spec.hp, spec.oh, spec.kh, spec.stride[0], spec.dilation[0])
    left, right = backward_padding(spec.wp, spec.ow, spec.kw, spec.stride[1], spec.dilation[1])
    dz = zero_insert(grad_output, spec.stride)  # (N, C_out, (OH-1)*S+1, (OW-1)*S+1)
    dz = pad(dz, (top, bottom, left, right), "zeros")  # (N, C_out, Hp + KEh - 1, Wp + KEw - 1)
    dxp = _conv4d(dz, transposed_kernel(weight, spec.groups), (1, 1), spec.dilation,
                  spec.groups)  # (N, C_in, Hp, Wp)
    pt, _, pl, _ = spec.padding
    return dxp[:, :, pt:pt + spec.h, pl:pl + spec.w]  # (N, C_in, H, W)


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dW = swap(conv4d(X', dZ')), per group, with stride and dilation exchanged.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    grad_output : ndarray of shape (N, C_out, OH, OW)

    Returns
    -------
    ndarray of shape (C_out, C_in/groups, KH, KW)
    """
    x_t = pad(x, spec.padding, "zeros").transpose(1, 0, 2, 3)  # X' (C_in, N, Hp, Wp)
    dz_t = grad_output.transpose(1, 0, 2, 3)  # dZ' (C_out, N, OH, OW), used as the kernel
    grad_w = np.empty(spec.weight_shape, dtype=x.dtype)
    cig, cog = spec.c_in_g, spec.c_out_g
    for g in range(spec.groups):
        # dW' (C_in/G, C_out/G, >=KH, >=KW): rows past KH only exist when the stride left
        # input rows unused; they are not kernel taps.
        dw_t = _conv4d(x_t[g * cig:(g + 1) * cig], dz_t[g * cog:(g + 1) * cog],
                       stride=spec.dilation, dilation=spec.stride)
        grad_w[g * cog:(g + 1) * cog] = dw_t[:, :, :spec.kh, :spec.kw].transpose(1, 0, 2, 3)
    return grad_w
