"""im2col through an index table, fused with its GEMM: the jit algorithm's tiny-problem path.

The book's layer (X (8,3,7,6), W (2,3,4,5)) has 7,680 multiply-adds per pass, and its
output rows are two pixels long. The plane kernels of :mod:`npconv.algorithms.jit`
vectorise along output rows, so on such shapes they spend their time setting up loops
of a few elements; im2col with BLAS (:mod:`npconv.algorithms.im2col`) spends it in
NumPy calls. Here each pass is one serial compiled call with no per-element branch:

* the geometry (stride, padding, dilation) goes into an index table, computed once per
  shape and cached: ``table[p, k]`` is the flat position, in one group's channels of
  one sample, of the input pixel that column k (= (c, u, v), the weight's order) of
  output pixel p reads, or one past the end for a zero-padding position. It is the
  book's im2col (14.5.1 "col2im 实现") as a gather: ``cols[p, k] = ext[table[p, k]]``,
  where ``ext`` is the sample's group followed by one zero;
* forward: ``y[co, p] = W[co, :] . cols[p, :]`` (14.4's im2col product, one small GEMM
  per sample: dot products over K = C_in/G * KH * KW, contiguous and vectorised);
* backward, one pass over dZ for both gradients: ``dW[co, :] += dz[co, p] * cols[p, :]``
  (formula 17.3 (11), summed in float64), and ``dcols[p, :] = sum_co dz[co, p] *
  W[co, :]`` scattered back through the same table into the input (col2im, 14.5.2
  "col2im 实现"; serial, so the scatter has no race). Padding positions land in the
  extra slot and are dropped, so dX has no junk terms: exact for inf and NaN too.

Only small problems come here (:func:`npconv.algorithms.jit.indexed`): the cols of
one sample are ``OH*OW x K`` and the kernels run on one thread.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from ..spec import ConvSpec

# The index table (and the cols buffer) of one sample's group stays below this many
# entries: 512 KiB of indices, a cache-sized working set.
MAX_TABLE = 65_536
_FLAGS = {"contract", "reassoc"}  # dot products: vector partial sums, FMAs


@functools.lru_cache(maxsize=64)
def table(spec: ConvSpec) -> np.ndarray:
    """The index table of ``spec`` (cached per geometry, read-only): (OH*OW, C_in/G *
    KH * KW) positions into ``C_in/G * H * W + 1`` (the last one stands for zero
    padding)."""
    (sh, sw), (dh, dw), top, left = spec.stride, spec.dilation, spec.padding[0], spec.padding[2]
    h, w = spec.h, spec.w
    i = np.arange(spec.oh).reshape(-1, 1, 1, 1, 1)
    j = np.arange(spec.ow).reshape(1, -1, 1, 1, 1)
    c = np.arange(spec.c_in_g).reshape(1, 1, -1, 1, 1)
    u = np.arange(spec.kh).reshape(1, 1, 1, -1, 1)
    v = np.arange(spec.kw).reshape(1, 1, 1, 1, -1)
    r = i * sh - top + u * dh  # (OH, 1, 1, KH, 1) input row
    q = j * sw - left + v * dw  # (1, OW, 1, 1, KW) input column
    inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)  # (OH, OW, 1, KH, KW)
    flat = np.where(inside, (c * h + r) * w + q, spec.c_in_g * h * w)  # (OH, OW, C, KH, KW)
    out = np.ascontiguousarray(flat.reshape(spec.oh * spec.ow, -1), dtype=np.intp)
    out.flags.writeable = False  # shared by every call with this geometry
    return out  # (OH*OW, K)


def table_size(spec: ConvSpec) -> int:
    """Entries of :func:`table` (without building it)."""
    return spec.oh * spec.ow * spec.c_in_g * spec.kh * spec.kw


@njit(cache=True, fastmath=_FLAGS)
def _gather(xf, b, g, ext, idx, cols):  # pragma: no cover - compiled
    """cols (P, K) of sample b, group g: im2col as a gather through the table."""
    size = xf.shape[2]
    for e in range(size):
        ext[e] = xf[b, g, e]  # ext[size] stays 0: the padding slot
    p_count, kk = idx.shape
    for p in range(p_count):
        for k in range(kk):
            cols[p, k] = ext[idx[p, k]]


@njit(cache=True)
def _geometry(x, weight, idx, groups):  # pragma: no cover - compiled
    """(N, C_out, C_out/G, P, K, C_in/G*H*W, x as (N, G, C_in/G*H*W), W as (C_out, K))."""
    n, c_out = x.shape[0], weight.shape[0]
    p_count, kk = idx.shape
    size = x.shape[1] // groups * x.shape[2] * x.shape[3]
    return (n, c_out, c_out // groups, p_count, kk, size, x.reshape(n, groups, size),
            weight.reshape(c_out, kk))


@njit(cache=True, fastmath=_FLAGS)
def _forward_kernel(x, weight, bias, y, idx, groups):  # pragma: no cover - compiled
    n, c_out, c_out_g, p_count, kk, size, xf, wf = _geometry(x, weight, idx, groups)
    yf = y.reshape(n, c_out, p_count)  # (N, C_out, OH*OW)
    ext = np.zeros(size + 1, dtype=x.dtype)
    cols = np.empty((p_count, kk), dtype=x.dtype)
    zero = y.dtype.type(0)
    for b in range(n):
        for g in range(groups):
            _gather(xf, b, g, ext, idx, cols)
            for p in range(p_count):
                for co in range(g * c_out_g, (g + 1) * c_out_g):
                    acc = zero
                    for k in range(kk):
                        acc += wf[co, k] * cols[p, k]
                    yf[b, co, p] = acc + bias[co]  # bias: C_out zeros when there is none
    return True


@njit(cache=True, fastmath=_FLAGS)
def _backward_kernel(x, weight, dz, dx, dw, db, idx, groups, need_dx, need_dw,
                     need_db):  # pragma: no cover - compiled
    n, c_out, c_out_g, p_count, kk, size, xf, wf = _geometry(x, weight, idx, groups)
    dxf = dx.reshape(n, groups, size)
    dzf = dz.reshape(n, c_out, p_count)  # (N, C_out, OH*OW)
    ext = np.zeros(size + 1, dtype=x.dtype)
    dext = np.zeros(size + 1, dtype=x.dtype)  # dX of one group, then the padding slot
    cols = np.empty((p_count, kk), dtype=x.dtype)  # read only after _gather fills it
    dcols = np.empty(kk, dtype=x.dtype)  # one row of dZ^T W
    total = np.zeros((c_out, kk), dtype=np.float64)  # dW, summed over samples and pixels
    bias_total = np.zeros(c_out, dtype=np.float64)  # dB (17.3.6), likewise
    for b in range(n):
        for g in range(groups):
            if need_dw:
                _gather(xf, b, g, ext, idx, cols)
            if need_dx:
                dext[:] = 0
            for p in range(p_count):
                if need_dx:
                    dcols[:] = 0
                for co in range(g * c_out_g, (g + 1) * c_out_g):
                    gv = dzf[b, co, p]
                    bias_total[co] += gv
                    if need_dw:
                        for k in range(kk):
                            total[co, k] += gv * cols[p, k]
                    if need_dx:
                        for k in range(kk):
                            dcols[k] += gv * wf[co, k]
                if need_dx:
                    for k in range(kk):  # col2im: serial, so no two writers
                        dext[idx[p, k]] += dcols[k]
            if need_dx:
                for e in range(size):
                    dxf[b, g, e] = dext[e]
    if need_dw:
        dwf = dw.reshape(c_out, kk)
        for co in range(c_out):
            for k in range(kk):
                dwf[co, k] = total[co, k]
    if need_db:
        for co in range(c_out):
            db[co] = bias_total[co]
    return True


def bind_forward(spec: ConvSpec, dtype, kernel=None):
    """``run(x, weight, bias) -> y`` (N, C_out, OH, OW) for C-contiguous arrays of
    ``spec`` and ``dtype`` (bias may be None), with the table and the output's shape
    looked up once: a training loop's calls on small layers take a few microseconds,
    and each lookup is a tenth of one. ``kernel(args)`` gives the compiled kernel (this
    module's by default); where that kernel returns False, ``run`` returns None."""
    idx, groups, shape = table(spec), spec.groups, spec.y_shape
    no_bias = np.zeros(spec.c_out, dtype=dtype)  # only read
    pick = kernel or (lambda args: _forward_kernel)
    compiled = []  # the kernel, once picked

    def run(x, weight, bias):
        y = np.empty(shape, dtype=dtype)
        args = (x, weight, no_bias if bias is None else bias, y, idx, groups)
        if not compiled:
            compiled.append(pick(args))
        return y if compiled[0](*args) else None

    return run


def bind_backward(spec: ConvSpec, dtype, kernel=None):
    """``run(x, weight, grad_output, need_input, need_weight, need_bias) -> (dx, dw,
    db)`` (each None unless asked for; the whole result None where the kernel returns
    False), as :func:`bind_forward`. ``x`` is read only for dW and ``weight`` only for
    dX: either may be None without it."""
    idx, groups = table(spec), spec.groups
    x_shape, w_shape, c_out = spec.x_shape, spec.weight_shape, spec.c_out
    pick = kernel or (lambda args: _backward_kernel)
    compiled = []  # the kernel, once picked

    def run(x, weight, grad_output, need_input, need_weight, need_bias):
        dx = np.empty(x_shape, dtype=dtype)  # not touched unless need_input
        dw = np.empty(w_shape, dtype=dtype)
        db = np.empty(c_out, dtype=dtype)
        if (x is None and need_weight) or (weight is None and need_input):
            raise ValueError("the weight gradient needs x, the input gradient the weight")
        args = (dx if x is None else x, dw if weight is None else weight, grad_output, dx,
                dw, db, idx, groups, need_input, need_weight, need_bias)
        if not compiled:
            compiled.append(pick(args))
        if not compiled[0](*args):
            return None
        return (dx if need_input else None, dw if need_weight else None,
                db if need_bias else None)

    return run


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec,
            bias: np.ndarray | None = None) -> np.ndarray:
    """y (N, C_out, OH, OW) from C-contiguous x (N, C_in, H, W) and weight, plus bias."""
    return bind_forward(spec, x.dtype)(x, weight, bias)


def backward(x: np.ndarray | None, weight: np.ndarray | None, grad_output: np.ndarray,
             spec: ConvSpec, need_input: bool, need_weight: bool, need_bias: bool = False):
    """``(dx, dw, db)``, each None unless asked for, from C-contiguous arrays in one pass
    over dZ (``x`` is read only for dW and ``weight`` only for dX: either may be None
    without it)."""
    return bind_backward(spec, grad_output.dtype)(x, weight, grad_output, need_input,
                                                  need_weight, need_bias)
