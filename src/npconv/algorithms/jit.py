"""The jit algorithm: direct convolution loops compiled by Numba (17.3's ``jit_conv_2d``).

Three kernels, each parallel over an axis whose iterations write disjoint outputs, so
no two threads ever add into the same element:

* forward: one task per (sample, output channel), or per (sample, block of output
  channels) on the stride-1 path; each accumulates its own output planes.
* grad_input: one task per (sample, input channel), or per (sample, block of input
  channels); each task adds every ``dZ * w`` term that reaches its input planes
  (formulas 17.3 (5)-(9)) into private padded buffers, so work is split by what it
  writes and no two threads share an element.
* grad_weight: one task per (output channel, input channel of its group); each kernel
  tap is a sum of input times dZ over samples and output pixels (formula 17.3 (11)),
  computed as one dot product per (sample, row or plane) and summed in float64.

Every inner loop runs along one output row (or, with stride 1, one whole plane) over a
view sliced once, so it has no index arithmetic or branch left and LLVM vectorises it:
element-wise multiply-adds as they are, the weight gradient's dot products because
those kernels may reorder their sums (vector partial sums kept in registers). The view
is a plain contiguous slice: with stride 1 of the padded plane itself; with a larger
stride, of one of its stride phases, which the kernels split the plane into first (a
slice with a run-time step is typed as non-contiguous and its loop stays scalar, about
3x slower). The phase kernels' row-by-row forms are also the exact fallbacks at stride 1
(non-finite weights or inputs), where a stride-1 plane is its own single phase.

With unit stride and a few channels per group, real layers go to the register-tiled
kernels of :mod:`npconv.algorithms._blocked` instead (:func:`tiled` decides): 4 output
channels x 16 pixels per task kept in vector registers over every tap, dX by scattering
(4 input channels x 16 dZ positions per tile), dW as register-tiled dot products.
Layers with 16 or more output channels per group whose outputs are strided or narrow
(LeNet's 10x10, the stride-2 ResNet layer) run their forward pass and weight gradient
as implicit GEMMs in :mod:`npconv.algorithms._implicit` instead (:func:`implicit`
decides): im2col's products with the column matrix read in place, no junk columns; so do
unpadded unit-stride 1x1 layers with AVX-512 (:func:`pointwise`), all three passes. The
same forward tiles run dX as a correlation of dZ with W's rotated taps (17.3.2): of
unit-stride layers whole wherever they take that correlation (:func:`adjoint`; the
scatter stays for the others), of strided layers phase by phase
(:func:`phases`: each stride phase of dX meets only the taps that reach it).
Tiny problems (the book's layer) and small strided ones go to the index-table kernels
of :mod:`npconv.algorithms._indexed` (:func:`indexed` decides): im2col as a gather
fused with its GEMM, one serial call per pass, both gradients in one pass over dZ.
The plane kernels below remain for depthwise layers, mid-sized serial problems,
non-finite weights and strided layers with few channels.

The kernels see only validated, C-contiguous, writeable arrays (:func:`_prepare`), and
index the zero-padded input they are given, so every index is in bounds by construction.
Compiled code is cached on disk (``cache=True``); the first call in a fresh environment
compiles (a few seconds per dtype).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .. import tuning
from .._numba import VECTOR_BYTES, serial_and_parallel
from .._scratch import output
from ..spec import ConvSpec, plan_conv2d
from . import _blocked, _dense, _implicit, _indexed, bias_grad
from ._bias import plane_sum
from .transpose import transposed_kernel

FUSES_BIAS = True  # forward(x, weight, spec, bias); backward(..., need_bias)


def _prepare(a: np.ndarray) -> np.ndarray:
    """C-contiguous, aligned and writeable: one compiled signature per dtype, whatever
    came in."""
    if a.flags.carray:  # all three
        return a
    return np.array(a, order="C")  # a copy: the caller's array is never written


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


def _forward_wide_kernel(x, weight, bias, y, top, left, hq, wp, dh, dw, groups,
                         cb):  # pragma: no cover - compiled
    """y = x (*) W + bias (zeros for none: the sums start at +0.0, which adding +0.0
    leaves as they are), the bias added as each plane is copied out (a pass of its own
    over y took 0.3-0.5 ms of the depthwise suite layer's 1.8 ms forward pass)."""
    n = x.shape[0]
    c_out, c_in_g, kh, kw = weight.shape
    _, _, oh, ow = y.shape
    c_out_g = c_out // groups
    length = oh * wp
    blocks = (c_out_g + cb - 1) // cb  # blocks of up to cb output channels per group
    for task in prange(n * groups * blocks):
        b = task // (groups * blocks)
        g = task // blocks % groups
        c0 = g * c_out_g + task % blocks * cb
        nc = min(cb, (g + 1) * c_out_g - c0)
        acc = np.zeros((nc, length), dtype=y.dtype)  # output planes, pitch Wp
        plane = np.zeros(hq * wp, dtype=x.dtype)  # padded input plane, pitch Wp
        for ci in range(c_in_g):
            _fill_plane(x[b, g * c_in_g + ci], plane, wp, top, left)  # once per task
            for u in range(kh):
                for v in range(kw):
                    src = plane[u * dh * wp + v * dw:u * dh * wp + v * dw + length]
                    for c in range(nc):
                        wv = weight[c0 + c, ci, u, v]
                        out = acc[c]
                        for t in range(length):
                            out[t] += wv * src[t]
        for c in range(nc):
            bv = bias[c0 + c]
            for i in range(oh):
                row = acc[c, i * wp:i * wp + ow]
                dst = y[b, c0 + c, i]
                for j in range(ow):
                    dst[j] = row[j] + bv


def _grad_input_wide_kernel(dz, weight, dx, top, left, hq, wp, dh, dw, groups,
                            cb):  # pragma: no cover - compiled
    n, _, h, w = dx.shape
    c_out, c_in_g, kh, kw = weight.shape
    oh = dz.shape[2]
    c_out_g = c_out // groups
    length = oh * wp
    blocks = (c_in_g + cb - 1) // cb  # blocks of up to cb input channels per group
    for task in prange(n * groups * blocks):
        b = task // (groups * blocks)
        g = task // blocks % groups
        i0 = task % blocks * cb  # first input channel of the block, within the group
        nc = min(cb, c_in_g - i0)
        acc = np.zeros((nc, hq * wp), dtype=dx.dtype)  # padded dx planes, pitch Wp
        grad = np.zeros(length, dtype=dz.dtype)  # dZ plane, pitch Wp, junk columns 0
        for co in range(g * c_out_g, (g + 1) * c_out_g):
            _fill_wide(dz[b, co], grad, wp)  # once per task
            for c in range(nc):
                out = acc[c]
                for u in range(kh):
                    for v in range(kw):
                        wv = weight[co, i0 + c, u, v]
                        dst = out[u * dh * wp + v * dw:u * dh * wp + v * dw + length]
                        for t in range(length):
                            dst[t] += wv * grad[t]
        for c in range(nc):
            for r in range(h):
                src = acc[c, (r + top) * wp + left:(r + top) * wp + left + w]
                row = dx[b, g * c_in_g + i0 + c, r]
                for q in range(w):
                    row[q] = src[q]


def _grad_weight_wide_kernel(x, dz, grad_w, db, top, left, hq, wp, dh, dw,
                             groups):  # pragma: no cover - compiled
    """dW, and with ``db`` (C_out,) not empty dB too (formula 17.3.6, in float64), each
    output channel's summed by the task of its first input channel from the dZ planes
    it reads anyway (numpy's sum over dZ, a pass of its own, took 0.55 ms of the
    depthwise suite layer's 5 ms step)."""
    n = x.shape[0]
    c_out, c_in_g, kh, kw = grad_w.shape
    oh = dz.shape[2]
    c_out_g = c_out // groups
    length = oh * wp
    for task in prange(c_out * c_in_g):
        co = task // c_in_g
        ci = task % c_in_g
        cin = (co // c_out_g) * c_in_g + ci
        total = np.zeros(kh * kw, dtype=np.float64)  # per tap, summed over samples
        plane = np.zeros(hq * wp, dtype=x.dtype)
        grad = np.zeros(length, dtype=dz.dtype)  # junk columns stay 0
        zero = dz.dtype.type(0)
        bias_total = 0.0
        for b in range(n):
            _fill_plane(x[b, cin], plane, wp, top, left)
            _fill_wide(dz[b, co], grad, wp)
            for u in range(kh):
                for v in range(kw):
                    src = plane[u * dh * wp + v * dw:u * dh * wp + v * dw + length]
                    part = zero  # a dot product: vectorised with register accumulators
                    for t in range(length):
                        part += src[t] * grad[t]
                    total[u * kw + v] += part
            if ci == 0 and db.shape[0]:
                bias_total += plane_sum(dz[b, co])
        for u in range(kh):
            for v in range(kw):
                grad_w[co, ci, u, v] = total[u * kw + v]
        if ci == 0 and db.shape[0]:
            db[co] = bias_total


# ------------------------------------------------------------------ strides: phase planes
# With stride S, output pixel (i, j) of tap (u, v) reads padded pixel
# (i*S_h + u*D_h, j*S_w + v*D_w). Split the padded plane into its S_h x S_w phases,
# phase (p, q) holding the pixels at rows r*S_h + p and columns s*S_w + q: then that
# pixel is phase ((u*D_h) % S_h, (v*D_w) % S_w) at row i + (u*D_h) // S_h, column
# j + (v*D_w) // S_w, so every tap reads each output row as one contiguous run of one
# phase, and the row loops vectorise as they do at stride 1 (the strided slices of the
# row kernels above stay scalar). Splitting costs one pass over the input plane, in the
# task's own buffer. Measured on MobileNet's stride-2 depthwise layer, (16, 96, 56, 56):
# forward 9.3 ms against PyTorch's 3.1 with the strided row slices, 4.4 with the
# phases; dW 7.4 against PyTorch's 3.0, then 5.7-6.1; dX 6.4, then 5.8.

@njit(inline="always")
def _column_pairs(left, w, wq):  # pragma: no cover - compiled
    """At a column stride of 2, ``left`` >= 0 padding columns and ``wq`` phase columns:
    (the phase of input column 0, the phase columns of input columns 0 and 1, how many
    column pairs (2t, 2t + 1) of a ``w``-wide row land inside the phases)."""
    sa, sb = left // 2, (left + 1) // 2
    return left % 2, sa, sb, max(0, min(w // 2, wq - sa, wq - sb))


@njit(inline="always")
def _fill_phases(src, phases, top, left, sh, sw):  # pragma: no cover - compiled
    """phases[p, q, r, s] = the zero-padded ``src`` (H, W) at row r*sh + p - top and
    column s*sw + q - left (zero outside it). Each input row is read once."""
    h, w = src.shape
    _, _, rows, wq = phases.shape
    flat = phases.reshape(-1)
    zero = phases.dtype.type(0)
    for t in range(flat.shape[0]):
        flat[t] = zero
    for xr in range(max(0, -top), min(h, rows * sh - top)):
        p, r = (xr + top) % sh, (xr + top) // sh
        row = src[xr]
        if sw == 2 and left >= 0:
            # columns 2t and 2t + 1 in one loop, which LLVM vectorises (loads and
            # shuffles); the loop per phase below reads every other column one at a time
            qa, sa, sb, pairs = _column_pairs(left, w, wq)
            a0 = ((p * 2 + qa) * rows + r) * wq + sa
            b0 = ((p * 2 + 1 - qa) * rows + r) * wq + sb
            even, odd = flat[a0:a0 + pairs], flat[b0:b0 + pairs]
            for t in range(pairs):
                even[t] = row[2 * t]
                odd[t] = row[2 * t + 1]
            for c in range(2 * pairs, w):  # an odd last column, or columns cut at wq
                s = (c + left) // 2
                if s < wq:
                    flat[((p * 2 + (c + left) % 2) * rows + r) * wq + s] = row[c]
            continue
        for q in range(sw):
            # phase columns s with 0 <= s*sw + q - left < w
            lo = min(wq, max(0, -((q - left) // sw)))
            hi = max(lo, min(wq, (w - 1 - q + left) // sw + 1))
            base = ((p * sw + q) * rows + r) * wq + lo
            # unsigned indices (all >= 0) skip the negative-index wraparound check
            first = np.uint64(lo * sw + q - left)
            dst = flat[base:base + hi - lo]
            for t in range(hi - lo):
                dst[t] = row[first + np.uint64(t * sw)]


@njit(inline="always")
def _tap_run(phases, u, v, dh, dw, sh, sw, length):  # pragma: no cover - compiled
    """Tap (u, v)'s run of ``length`` in ``phases``: output position t (rows of pitch wq)
    reads phase ((u*D_h) % S_h, (v*D_w) % S_w) at flat position t + r0*wq + s0, with
    r0 = (u*D_h) // S_h and s0 = (v*D_w) // S_w."""
    wq = phases.shape[3]
    start = (u * dh) // sh * wq + (v * dw) // sw
    return phases[(u * dh) % sh, (v * dw) % sw].reshape(-1)[start:start + length]


def _forward_phases_kernel(x, weight, bias, y, top, left, sh, sw, dh, dw, groups, hq,
                           wq):  # pragma: no cover - compiled
    """y = x (*) W + bias, the bias added as each plane is copied out (as
    :func:`_forward_wide_kernel`)."""
    n = x.shape[0]
    c_out, c_in_g, kh, kw = weight.shape
    _, _, oh, ow = y.shape
    c_out_g = c_out // groups
    length = oh * wq
    for task in prange(n * c_out):
        b = task // c_out
        co = task % c_out
        first = (co // c_out_g) * c_in_g
        # one spare row: the last tap's run ends (D_w*(KW-1)) // S_w past the last row
        phases = np.empty((sh, sw, hq + 1, wq), dtype=x.dtype)
        acc = np.zeros(length, dtype=y.dtype)  # y[b, co] in rows of pitch wq
        for ci in range(c_in_g):
            _fill_phases(x[b, first + ci], phases, top, left, sh, sw)
            for u in range(kh):
                for v in range(kw):
                    wv = weight[co, ci, u, v]
                    # the whole plane as one run, as the wide kernels do at stride 1:
                    # columns OW .. wq of each row are junk, never stored
                    src = _tap_run(phases, u, v, dh, dw, sh, sw, length)
                    for t in range(length):
                        acc[t] += wv * src[t]
        bv = bias[co]
        for i in range(oh):
            dst = y[b, co, i]
            row = acc[i * wq:i * wq + ow]
            for j in range(ow):
                dst[j] = row[j] + bv


def _grad_weight_phases_kernel(x, dz, grad_w, top, left, sh, sw, dh, dw, groups, hq,
                               wq):  # pragma: no cover - compiled
    n = x.shape[0]
    c_out, c_in_g, kh, kw = grad_w.shape
    _, _, oh, ow = dz.shape
    c_out_g = c_out // groups
    for task in prange(c_out * c_in_g):
        co = task // c_in_g
        ci = task % c_in_g
        cin = (co // c_out_g) * c_in_g + ci
        total = np.zeros(kh * kw, dtype=np.float64)  # per tap, summed over rows
        phases = np.empty((sh, sw, hq, wq), dtype=x.dtype)
        zero = dz.dtype.type(0)
        for b in range(n):
            _fill_phases(x[b, cin], phases, top, left, sh, sw)
            for u in range(kh):
                p, r0 = (u * dh) % sh, (u * dh) // sh
                for v in range(kw):
                    q, s0 = (v * dw) % sw, (v * dw) // sw
                    for i in range(oh):
                        src = phases[p, q, r0 + i, s0:s0 + ow]
                        grad = dz[b, co, i]
                        part = zero  # a dot product along a contiguous row: vectorised
                        for j in range(ow):
                            part += src[j] * grad[j]
                        total[u * kw + v] += part
        for u in range(kh):
            for v in range(kw):
                grad_w[co, ci, u, v] = total[u * kw + v]


def _grad_weight_phases_wide_kernel(x, dz, grad_w, db, top, left, sh, sw, dh, dw, groups,
                                    hq, wq):  # pragma: no cover - compiled
    """:func:`_grad_weight_phases_kernel` with each tap's sum over a sample as one dot
    product over the plane: dZ laid out in rows of pitch wq, its junk columns zero.
    Those meet the phases' pixels as x * 0, NaN where x is inf or NaN, which the caller
    checks for (the row kernel is exact). dB as in :func:`_grad_weight_wide_kernel`."""
    n = x.shape[0]
    c_out, c_in_g, kh, kw = grad_w.shape
    oh = dz.shape[2]
    c_out_g = c_out // groups
    length = oh * wq
    for task in prange(c_out * c_in_g):
        co = task // c_in_g
        ci = task % c_in_g
        cin = (co // c_out_g) * c_in_g + ci
        total = np.zeros(kh * kw, dtype=np.float64)  # per tap, summed over samples
        phases = np.empty((sh, sw, hq + 1, wq), dtype=x.dtype)  # a spare row, as above
        grad = np.zeros(length, dtype=dz.dtype)  # junk columns stay 0
        zero = dz.dtype.type(0)
        bias_total = 0.0
        for b in range(n):
            _fill_phases(x[b, cin], phases, top, left, sh, sw)
            _fill_wide(dz[b, co], grad, wq)
            for u in range(kh):
                for v in range(kw):
                    src = _tap_run(phases, u, v, dh, dw, sh, sw, length)
                    part = zero  # a dot product: vectorised with register accumulators
                    for t in range(length):
                        part += src[t] * grad[t]
                    total[u * kw + v] += part
            if ci == 0 and db.shape[0]:
                bias_total += plane_sum(dz[b, co])
        for u in range(kh):
            for v in range(kw):
                grad_w[co, ci, u, v] = total[u * kw + v]
        if ci == 0 and db.shape[0]:
            db[co] = bias_total


def _grad_input_phases_kernel(dz, weight, dx, top, left, sh, sw, dh, dw, groups, hq,
                              wq, whole):  # pragma: no cover - compiled
    """dX of a strided layer by scattering into the stride phases of a private padded
    plane, which are then interleaved into dx. With ``whole``, each tap adds ``w * dz``
    over the whole plane as one run, dZ laid out in rows of pitch wq whose junk columns
    are zero (finite weights only: they meet w as 0 * w); else row by row, each row one
    contiguous run of one phase, every product of a real dZ value (exact for any
    weights)."""
    n, c_in, h, w = dx.shape
    c_out, c_in_g, kh, kw = weight.shape
    _, _, oh, ow = dz.shape
    c_out_g = c_out // groups
    zero = dx.dtype.type(0)
    length = oh * wq
    for task in prange(n * c_in):
        b = task // c_in
        cin = task % c_in
        g = cin // c_in_g
        ci = cin % c_in_g
        # one spare row: a whole-plane run ends (D_w*(KW-1)) // S_w past the last row
        phases = np.zeros((sh, sw, hq + 1, wq), dtype=dx.dtype)
        grad = np.zeros(length if whole else 0, dtype=dz.dtype)  # junk columns stay 0
        for co in range(g * c_out_g, (g + 1) * c_out_g):
            if whole:
                _fill_wide(dz[b, co], grad, wq)
                for u in range(kh):
                    for v in range(kw):
                        wv = weight[co, ci, u, v]
                        run = _tap_run(phases, u, v, dh, dw, sh, sw, length)
                        for t in range(length):
                            run[t] += wv * grad[t]
                continue
            for i in range(oh):
                src = dz[b, co, i]
                for u in range(kh):
                    p, r0 = (u * dh) % sh, (u * dh) // sh
                    for v in range(kw):
                        q, s0 = (v * dw) % sw, (v * dw) // sw
                        wv = weight[co, ci, u, v]
                        dst = phases[p, q, r0 + i, s0:s0 + ow]  # (OW,), contiguous
                        for j in range(ow):
                            dst[j] += wv * src[j]
        # padded pixel (r*sh + p, s*sw + q) is input pixel (.. - top, .. - left); the
        # pixels no tap reads (past the last phase row or column) get no gradient
        for xr in range(h):
            p, r = (xr + top) % sh, (xr + top) // sh
            row = dx[b, cin, xr]
            for xc in range(w):
                row[xc] = zero
            if r >= hq:
                continue
            if sw == 2 and left >= 0:  # two columns at a time, as _fill_phases reads them
                qa, sa, sb, pairs = _column_pairs(left, w, wq)
                even, odd = phases[p, qa, r, sa:sa + pairs], phases[p, 1 - qa, r, sb:sb + pairs]
                for t in range(pairs):
                    row[2 * t] = even[t]
                    row[2 * t + 1] = odd[t]
                for xc in range(2 * pairs, w):
                    s = (xc + left) // 2
                    if s < wq:
                        row[xc] = phases[p, (xc + left) % 2, r, s]
                continue
            for q in range(sw):
                # phase columns s with 0 <= s*sw + q - left < w, and s < wq
                lo = min(wq, max(0, -((q - left) // sw)))
                hi = max(lo, min(wq, (w - 1 - q + left) // sw + 1))
                first = np.uint64(lo * sw + q - left)
                src = phases[p, q, r]
                for t in range(hi - lo):
                    row[first + np.uint64(t * sw)] = src[lo + t]


def _phase_args(spec: ConvSpec) -> tuple:
    """(top, left, S_h, S_w, D_h, D_w, G, rows, columns) of the phase kernels: each phase
    as tall and wide as the farthest tap reads, (D*(K-1)) // S + OH (and OW)."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    return (spec.padding[0], spec.padding[2], sh, sw, dh, dw, spec.groups,
            dh * (spec.kh - 1) // sh + spec.oh, dw * (spec.kw - 1) // sw + spec.ow)



# Each kernel is compiled twice: parallel for real layers, serial for small problems,
# where waking the thread pool costs more than the arithmetic (the book's layer: about
# 0.1 ms per call in parallel, a few microseconds serially). Every kernel may fuse a
# multiply and an add into one FMA ("contract"); the weight-gradient kernels, whose
# inner loops are dot products, may also reorder their sums ("reassoc") so that LLVM
# keeps vector partial sums in registers. Neither flag assumes away inf or NaN.
_FUSED = {"contract"}
_DOT = {"contract", "reassoc"}
_KERNELS = {
    name: serial_and_parallel(fn, fastmath=flags)
    for name, fn, flags in (("forward_wide", _forward_wide_kernel, _FUSED),
                            ("grad_input_wide", _grad_input_wide_kernel, _FUSED),
                            ("grad_weight_wide", _grad_weight_wide_kernel, _DOT),
                            ("forward_phases", _forward_phases_kernel, _FUSED),
                            ("grad_input_phases", _grad_input_phases_kernel, _FUSED),
                            ("grad_weight_phases", _grad_weight_phases_kernel, _DOT),
                            ("grad_weight_phases_wide", _grad_weight_phases_wide_kernel,
                             _DOT))
}
PARALLEL_MIN_MACS = 200_000
# The forward and input-gradient kernels of the wide path keep a block of output (or
# input) planes per task; a block aims at this many bytes, so it stays in the L1 cache
# while every tap of every channel adds into it.
BLOCK_BYTES = 16 * 1024


def _parallel(spec: ConvSpec) -> bool:
    return spec.flops // 2 >= PARALLEL_MIN_MACS


def _kernel(name: str, spec: ConvSpec):
    return _KERNELS[name][_parallel(spec)]  # (serial, parallel)


def _block(spec: ConvSpec, channels: int, plane_bytes: int) -> int:
    """Channels per task of a wide kernel: planes filling :data:`BLOCK_BYTES`, but never
    so many that the N * G * ceil(channels / block) tasks leave a thread with fewer
    than two. The results do not depend on it (each plane sums in the same order)."""
    block = max(1, min(channels, BLOCK_BYTES // plane_bytes))
    if _parallel(spec):
        tasks_wanted = 2 * numba.get_num_threads()
        while block > 1 and spec.n * spec.groups * -(-channels // block) < tasks_wanted:
            block = -(-block // 2)
    return block


def tiled(spec: ConvSpec, op: str, itemsize: int) -> bool:
    """Whether ``op`` ("forward", "grad_input" or "grad_weight") runs in the
    register-tiled kernels of :mod:`._blocked` rather than the plane kernels.

    They need unit stride; they compute in blocks of CB channels, so a group with fewer
    than CB - 1 channels to compute wastes too much (a depthwise layer 3 of every 4);
    they copy their input and output once more, which tiny problems (the book's)
    notice; and those copies (about the size of x and y) must fit the workspace limit.
    """
    if not (_wide(spec) and _parallel(spec)):
        return False
    computed = spec.c_in_g if op == "grad_input" else spec.c_out_g
    if computed < _blocked.CB - 1 or (op == "grad_weight" and spec.c_in_g < 2):
        return False
    copies = (spec.n * spec.c_in * spec.hp * spec.wp
              + spec.n * spec.c_out * (spec.oh + 1) * spec.wp)  # padded planes + wide rows
    return copies * itemsize <= tuning.workspace_limit()


# Output planes up to this many pixels are too small for the plane kernels' row loops:
# the index-table kernels win there (the book's layer: forward 4 us against 9 us,
# backward 9 us against 27 us; a 6x6 output with 16 channels 2-3x).
INDEXED_MAX_PIXELS = 64


def indexed(spec: ConvSpec) -> bool:
    """Whether the index-table kernels of :mod:`._indexed` run ``spec``: problems small
    enough for one thread whose output planes are at most :data:`INDEXED_MAX_PIXELS`
    pixels, or strided (the plane kernels' strided loops are scalar: 2-8x slower), with
    a table of at most :data:`._indexed.MAX_TABLE` entries."""
    return (not _parallel(spec)
            and (spec.stride != (1, 1) or spec.oh * spec.ow <= INDEXED_MAX_PIXELS)
            and _indexed.table_size(spec) <= _indexed.MAX_TABLE)


# The implicit-GEMM kernels (:mod:`._implicit`) against the others, measured: they win
# where the wide rows of :mod:`._blocked` carry much junk (LeNet's 10x10 outputs of
# 14-wide rows, 29%: forward 0.57 ms against 0.70, dW 0.37-0.82 against 0.90-1.35) or
# the stride is not 1 with columns of a few hundred (channel, tap) pairs (the stride-2
# ResNet layer, K = 576: forward 18-25 ms against im2col's 26-38, dW 15-20 against
# 25-29; a 5x5 stride-2 layer, K = 400: forward 2.8 against 6.0, dW 4.6 against 6.0).
# They lose with few channels to vectorise over (LeNet's first layer: 6 output
# channels), short columns (CIFAR's stem, K = 27: dW 2-3x slower; a 1x1 stride-2 layer,
# K = 64: 5-15%) and long ones, where BLAS's blocking pays (K = 1152 and 2304: dW 1.6x
# and 2.2x slower), and tie on wide outputs (32x32 with 36-wide rows), except for the
# forward pass of a dilated layer, where they won on every layer measured since idle
# OpenMP threads spin briefly: forward, tiled / implicit, ms: (16, 32, 32, 32) with 32
# 3x3 kernels, dilation 2, 5.5 / 4.5; (16, 64, 32, 32) 19.8 / 13.3; (8, 32, 64, 64),
# dilation 4, 10.3 / 8.4; (32, 16, 28, 28) 4.0 / 2.9 (the whole steps 1.0-1.2x faster).
IMPLICIT_MIN_CHANNELS = 16
IMPLICIT_MIN_K = 100
IMPLICIT_MAX_K = 640
IMPLICIT_MIN_JUNK = 0.2
# The forward pass keeps winning past 640 pairs while the layer has few output channels
# (BLAS's GEMM is then short in M as well); with many it ties or loses. Forward, im2col
# / implicit, ms, two runs each: 5x5 stride 2, K = 800, 32 output channels 6.0-6.3 /
# 2.6-2.8, 64 channels 10.0-12.0 / 6.2-7.6, 128 channels 7.1-7.5 / 6.0-6.3; 3x3 stride 2,
# K = 864, 64 channels 5.3-5.5 / 4.0-4.2; a 1x7 kernel on 17x17 (Inception's), K = 896,
# 128 channels 13.0-13.9 / 9.6-10.2; against 192 channels at K = 864, 10.0-10.4 /
# 11.0, 256 at K = 1008 14.7-15.1 / 14.9-15.8 and at K = 1152 16.1-16.4 / 18.0-19.5.
IMPLICIT_FORWARD_MAX_K = 1024
IMPLICIT_FORWARD_LONG_K_MAX_CHANNELS = 128
# Strided layers with few output channels (stems, thin strided layers) win too, where
# im2col's GEMMs are short in M (and, below 100 pairs, in K); the strided plane kernels
# only come close on depthwise layers. im2col / implicit, stride 2, ms, two runs each:
# forward, (16, 3, 112, 112) with 8 3x3 kernels 2.6-3.6 / 0.64-0.69, 16 kernels
# 2.1-2.6 / 1.0-1.2, 4 kernels 1.8-2.6 / 0.7; (16, 1, 112, 112) with 16 2.3-2.8 /
# 0.7-0.8; (16, 32, 56, 56) with 8, 10.4-11.8 / 2.1-2.5; (16, 16, 56, 56) with 12,
# 4.0-8.0 / 1.2-1.5; dW, 8 kernels on (16, 32, 56, 56) 5.0-10.1 / 3.9-4.0, on
# (16, 3, 112, 112) 3.3-6.8 / 2.3-2.5, 16 kernels there 4.5-5.4 / 3.4. With 24 kernels
# and K = 27 the forward lost (2.3-2.4 / 2.5-2.6), so short columns stay at 16 channels.
IMPLICIT_STRIDED_MIN_CHANNELS = {"forward": 4, "grad_weight": 8}
IMPLICIT_SHORT_K_MAX_CHANNELS = 16
# The figures above are AVX2's. With AVX-512 (:data:`VECTOR_BYTES` 64, 32 x 8 tiles in
# :mod:`._implicit`) the implicit kernels beat the tiled ones whatever the junk, from 32
# output channels per group for the forward pass and 16 for dW, at every K from 100 to
# 4608; but from K = 2304 im2col's GEMM ties with them or wins on the forward pass. So
# there the junk rule is lifted and K may reach :data:`IMPLICIT_ANY_SHAPE_MAX_K`.
# Measured on an AVX-512 Xeon, implicit / tiled, ms, forward and dW: res56 14.1 / 17.2
# and 21.5 / 33.9; res28 (K = 1152) 13.5 / 18.0 and 20.2 / 29.1; VGG's (8, 64, 64, 64)
# 10.8 / 10.7 and 12.1 / 21.1; (16, 256, 14, 14) with 256 kernels 14.5 / 17.4 and 22.4
# / 57.7, and (16, 512, 7, 7) with 512, 21.0 / 23.7 and 64 / 136. Forward against
# im2col: (16, 256, 14, 14) implicit 19.4, im2col 15.9, winograd 16.7 in another run;
# five samples 5.4 / 6.1 / 8.1; (6, 512, 7, 7) implicit 10.5, im2col 7.2. With 16 kernels
# on (32, 16, 32, 32), 6% junk: forward 1.45 / 1.09 (so fewer than 32 channels keep the
# rules above), dW 1.26 / 1.68. Short columns still lose (CIFAR's stem, K = 27: forward
# 3.2 / 1.0, dW 2.1 / 1.4).
IMPLICIT_ANY_SHAPE_CHANNELS = {"forward": 32, "grad_weight": 16}
IMPLICIT_ANY_SHAPE_MAX_K = 1152
# Since the forward kernels walk K in blocks that stay in the L1 cache
# (:data:`._implicit.FORWARD_K_BLOCK`) their forward pass beats im2col's GEMM at any K
# with AVX-512, except with 512 channels on a few 7x7 outputs. Forward, implicit /
# im2col, ms, on an AVX-512 Xeon: K = 2304, (16, 256, 14, 14) with 256 3x3 kernels
# 10.6 / 14.3, five samples 3.9 / 5.1, (32, 256, 7, 7) 6.6 / 8.1, (16, 256, 7, 7)
# 3.5 / 4.2, but (6, 256, 7, 7) 1.90 / 1.75; K = 4608, (16, 512, 14, 14) 45.7 / 56.9,
# (8, 512, 14, 14) 28.4 / 28.4, (16, 512, 10, 10) 25.3 / 27.2, (32, 512, 7, 7) 26.6 /
# 28.6, but (16, 512, 7, 7) 16.2-16.7 / 14.4-15.7 and (6, 512, 7, 7) 7.9 / 6.0; K =
# 9216, (32, 1024, 7, 7) with 256, 29.0 / 39.9; and with few pixels, K = 2304, (2, 256,
# 14, 14) 2.4 / 2.1. So past IMPLICIT_ANY_SHAPE_MAX_K the forward pass takes K up to
# IMPLICIT_FORWARD_LONG_K from IMPLICIT_FORWARD_LONG_K_MIN_PIXELS output pixels
# (N*OH*OW), and any K from IMPLICIT_FORWARD_ANY_K_MIN_PIXELS.
IMPLICIT_FORWARD_LONG_K = 2304
IMPLICIT_FORWARD_LONG_K_MIN_PIXELS = 512
IMPLICIT_FORWARD_ANY_K_MIN_PIXELS = 1024
# Since dW runs cache-sized chunks of samples (:func:`._implicit.sample_chunk`) its
# implicit GEMM beats im2col's at any K with AVX-512 up to this many output channels per
# group, where im2col's GEMM is short in M. dW, implicit / im2col, ms, on an AVX-512 Xeon:
# 64 output channels, (4, 64, 28, 28) with 5x5 kernels (K = 1600) 1.96 / 4.16, (1, ...)
# 0.77 / 1.22, (16, ...) 6.81 / 14.89, (2, 192, 28, 28) 5x5 (K = 4800) 3.48 / 6.23, (8,
# ...) 10.6 / 23.0, (8, 64, 56, 56) 7x7 27.1 / 55.9; 96, (8, 96, 28, 28) 5x5 8.54 /
# 13.5; 128, (8, 256, 28, 28) 3x3 (K = 2304) 11.8 / 16.7, (16, 512, 14, 14) (K = 4608)
# 13.6 / 18.0, (16, 128, 14, 14) 5x5 8.49 / 12.3, (4, 128, 28, 28) 5x5 8.66 / 11.3; 160,
# (16, 160, 14, 14) (K = 1440) 5.07 / 6.66, (2, 160, 28, 28) 2.92 / 3.52, (16, 160, 17,
# 17) 6.97 / 9.03. Beyond, mixed or lost: 192, (16, 192, 17, 17) with 7x1 kernels 8.56
# / 9.12 but (1, 192, 28, 28) 3x3 3.03 / 2.54; 256, level ((16, 256, 14, 14) 14.2 /
# 15.0, (32, 256, 7, 7) 7.92 / 8.12, (4, 256, 28, 28) 15.8 / 15.6) or lost ((2, 256, 14,
# 14) 3.77 / 2.43); 512, 2.1-3.4x slower.
IMPLICIT_WEIGHT_ANY_K_MAX_CHANNELS = 160
# The implicit kernels are float32 kernels: LLVM's SLP vectoriser packs their float64
# accumulators into no vector registers at any tile size tried (16x4, 8x8, 8x4, 4x8,
# 8x6, 4x16, 8x2, 4x4), so they run scalar, 10-15x slower than in float32. Measured in
# float64, forward, implicit / plane or tiled kernels, ms: LeNet's second layer 6.8 /
# 1.3, the dilated suite layer 65 / 18 (its adjoint dX 64 / 23); the stride-2 ResNet
# layer 317 / 327, where only im2col's BLAS GEMMs run well (43).
IMPLICIT_ITEMSIZE = 4
# Without gathers (:data:`npconv._numba.KERNEL_FEATURES`) and with AVX-512's 32 registers,
# the weight gradient's float64 tile (16 channels: two registers, x 6 pairs) does
# vectorise: float64 dW, implicit / the tiled and plane kernels, ms, on an AVX-512 Xeon:
# LeNet's second layer 0.29 / 0.79, the dilated suite layer 3.2 / 5.6, res28 34 / 58,
# the stride-2 ResNet layer 20 / 204 (im2col: 21). The forward tile still runs scalar.
IMPLICIT_FLOAT64_WEIGHT_VECTOR_BYTES = 64
# An unpadded 1x1 layer at stride 1 has no junk and no padding for the implicit GEMM to
# skip, and its dX is the forward correlation of dZ with W's channel axes swapped (17.3.2
# with nothing to pad or rotate). With AVX-512 all three of its passes run there, at any
# column length (K = C_in/G for the forward pass and dW, C_out/G for dX), from
# POINTWISE_MIN_CHANNELS channels per group on either side. Measured on an AVX-512 Xeon,
# the jit algorithm's kernels before / the implicit GEMM, on 23 random 1x1 layers (2-32
# samples, 16-512 input and 4-256 output channels, 7x7 to 56x56): forward 1.0-2.8x
# faster wherever the tiled kernels ran it (fewer than 32 output channels, or K < 100),
# dW 1.0-4.3x, dX (where the tiled kernels scattered it) 1.0-2.9x; slower in 4 of the 69
# passes (dX 0.85-0.99x with 4-8 output channels on 28x28 and 56x56, the forward pass of
# 256 channels from 16-32 on 56x56 0.90-0.91x).
POINTWISE_MIN_CHANNELS = 4


def pointwise(spec: ConvSpec, itemsize: int) -> bool:
    """Whether every pass of ``spec`` runs on the implicit GEMM as an unpadded unit-stride
    1x1 layer (:data:`POINTWISE_MIN_CHANNELS`): float32, AVX-512, a parallel-sized
    problem."""
    return (VECTOR_BYTES >= 64 and itemsize == IMPLICIT_ITEMSIZE and _parallel(spec)
            and spec.kh == spec.kw == 1 and _wide(spec) and not any(spec.padding)
            and min(spec.c_in_g, spec.c_out_g) >= POINTWISE_MIN_CHANNELS)


# A strided layer's dX runs phase by phase on the implicit GEMM's forward tiles
# (:func:`._implicit.input_grad_phases`: each stride phase of dX a unit-stride
# correlation of dZ with the taps of W that reach it) from PHASES_MIN_CHANNELS input
# channels per group (the tiles' channels). Measured on an AVX-512 Xeon against the
# phase-plane kernels that ran it before: the stride-2 ResNet layer 46 ms / 7.6 (and
# against im2col's GEMM and col2im, 8.3: see npconv.tuning.PHASES_MAX_OUT_CHANNELS);
# with AVX2 tiles 47.5 / 12.7 (im2col 12.8), and a 5x5 stride-2 layer, (16, 32, 56, 56)
# with 64 kernels, 31.1 / 7.2 (im2col 10.4).
PHASES_MIN_CHANNELS = 16


def phases(spec: ConvSpec, itemsize: int) -> bool:
    """Whether dX of strided ``spec`` (finite weights) runs phase by phase on the
    implicit GEMM (:data:`PHASES_MIN_CHANNELS`): float32, a parallel-sized problem, one
    sample's padded dZ and phases' planes within the workspace limit."""
    if (_wide(spec) or itemsize != IMPLICIT_ITEMSIZE or not _parallel(spec)
            or spec.c_in_g < PHASES_MIN_CHANNELS):
        return False
    # one sample's padded dZ and phases' planes at least (it runs a chunk at a time)
    return _implicit.phase_sample_bytes(spec, itemsize) <= tuning.workspace_limit()


def _implicit_copies_fit(spec: ConvSpec, op: str, itemsize: int) -> bool:
    """Whether the implicit kernels' copies (the padded input, and dZ for the weight
    gradient) of one sample fit the workspace limit (they run a chunk of samples at a
    time: :func:`._implicit.sample_chunk`), and the weight gradient's partial sums
    (:func:`._implicit.weight_sums_bytes`) too."""
    limit = tuning.workspace_limit()
    return (_implicit.sample_bytes(spec, op, itemsize) <= limit
            and (op != "grad_weight" or _implicit.weight_sums_bytes(spec, itemsize) <= limit))


def implicit(spec: ConvSpec, op: str, itemsize: int) -> bool:
    """Whether ``op`` ("forward" or "grad_weight") runs in the implicit-GEMM kernels of
    :mod:`._implicit`: a float32 (:data:`IMPLICIT_ITEMSIZE`; float64 too for dW with
    AVX-512, :data:`IMPLICIT_FLOAT64_WEIGHT_VECTOR_BYTES`), parallel-sized problem with
    at least :data:`IMPLICIT_MIN_CHANNELS` output channels per group (strided:
    :data:`IMPLICIT_STRIDED_MIN_CHANNELS`) and columns of :data:`IMPLICIT_MIN_K` (strided
    with at most :data:`IMPLICIT_SHORT_K_MAX_CHANNELS` output channels per group: any) to
    :data:`IMPLICIT_MAX_K` (channel, tap) pairs (for the forward pass with at most
    :data:`IMPLICIT_FORWARD_LONG_K_MAX_CHANNELS` output channels per group, to
    :data:`IMPLICIT_FORWARD_MAX_K`), strided, or
    with unit stride and wide rows that would be at least :data:`IMPLICIT_MIN_JUNK` junk
    (any junk for the forward pass of a dilated layer); with AVX-512, from
    :data:`IMPLICIT_ANY_SHAPE_CHANNELS`, K up to :data:`IMPLICIT_ANY_SHAPE_MAX_K` and
    any junk (the forward pass: K up to :data:`IMPLICIT_FORWARD_LONG_K` from
    :data:`IMPLICIT_FORWARD_LONG_K_MIN_PIXELS` output pixels, any K from
    :data:`IMPLICIT_FORWARD_ANY_K_MIN_PIXELS`; dW any K up to
    :data:`IMPLICIT_WEIGHT_ANY_K_MAX_CHANNELS` output channels per group); or any 1x1
    layer :func:`pointwise` takes; its copies (the padded input, and dZ for the weight
    gradient) must fit the workspace limit, and so must dW's partial sums."""
    if op in ("forward", "grad_weight") and pointwise(spec, itemsize):
        return _implicit_copies_fit(spec, op, itemsize)
    float64_weight = (op == "grad_weight" and itemsize == 8
                      and VECTOR_BYTES >= IMPLICIT_FLOAT64_WEIGHT_VECTOR_BYTES)
    if (op not in ("forward", "grad_weight")
            or (itemsize != IMPLICIT_ITEMSIZE and not float64_weight)
            or not _parallel(spec)):
        return False
    any_shape = VECTOR_BYTES >= 64 and spec.c_out_g >= IMPLICIT_ANY_SHAPE_CHANNELS[op]
    long_k = op == "forward" and spec.c_out_g <= IMPLICIT_FORWARD_LONG_K_MAX_CHANNELS
    if any_shape and op == "forward":
        pixels = spec.n * spec.oh * spec.ow
        max_k = (math.inf if pixels >= IMPLICIT_FORWARD_ANY_K_MIN_PIXELS
                 else IMPLICIT_FORWARD_LONG_K if pixels >= IMPLICIT_FORWARD_LONG_K_MIN_PIXELS
                 else IMPLICIT_ANY_SHAPE_MAX_K)
    elif (any_shape and op == "grad_weight" and itemsize == IMPLICIT_ITEMSIZE
          and spec.c_out_g <= IMPLICIT_WEIGHT_ANY_K_MAX_CHANNELS):
        max_k = math.inf  # dW of a float32 layer with few output channels
    else:
        max_k = (IMPLICIT_ANY_SHAPE_MAX_K if any_shape
                 else max(IMPLICIT_MAX_K, IMPLICIT_FORWARD_MAX_K) if long_k else IMPLICIT_MAX_K)
    strided = not _wide(spec)
    min_channels = (min(IMPLICIT_MIN_CHANNELS, IMPLICIT_STRIDED_MIN_CHANNELS[op]) if strided
                    else IMPLICIT_MIN_CHANNELS)
    short_k = strided and spec.c_out_g <= IMPLICIT_SHORT_K_MAX_CHANNELS
    min_k = 1 if short_k else IMPLICIT_MIN_K
    if (spec.c_out_g < min_channels
            or not min_k <= spec.c_in_g * spec.kh * spec.kw <= max_k):
        return False
    dilated_forward = op == "forward" and spec.dilation != (1, 1)
    if (_wide(spec) and (spec.wp - spec.ow) < IMPLICIT_MIN_JUNK * spec.wp
            and not (dilated_forward or any_shape)):
        return False
    return _implicit_copies_fit(spec, op, itemsize)


def bind_forward(spec: ConvSpec, dtype):
    """``run(x, weight, bias) -> y`` for arrays of ``spec`` and ``dtype``
    (:func:`npconv.algorithms.bind_forward`). For the layers :func:`indexed` sends to
    the small-problem kernels the path is chosen here, once: the dense matrix
    (:mod:`._dense`) where it applies and x is finite, else the index table. Their calls
    take a few microseconds, and choosing on every call took 0.7 us of each. Other
    layers run :func:`forward`."""
    if not indexed(spec):
        return lambda x, weight, bias: forward(x, weight, spec, bias)
    return _small_forward(spec, np.dtype(dtype))


def _small_forward(spec: ConvSpec, dtype):
    """:func:`bind_forward` for a layer :func:`indexed` takes."""
    table = _indexed.bind_forward(spec, dtype)
    first = (_dense.bind_forward(spec, dtype) if _dense.applies(spec, dtype.itemsize)
             else table)  # the dense matrix returns None where x is not finite

    def run(x, weight, bias):
        # C-contiguous, aligned and writeable (:func:`_prepare`), checked inline (its
        # three calls: 0.12 us of the book's 3 us forward call)
        if not (x.flags.carray and weight.flags.carray
                and (bias is None or bias.flags.carray)):
            x, weight = _prepare(x), _prepare(weight)
            bias = None if bias is None else _prepare(bias)
        y = first(x, weight, bias)
        return table(x, weight, bias) if y is None else y

    return run


def bind_backward(spec: ConvSpec, dtype):
    """``run(x, weight, grad_output, need_input, need_weight, need_bias) -> (dx, dw,
    db)``, as :func:`bind_forward` (the dense matrix where dZ is finite or dX is not
    asked for); x may be None without dW and the weight without dX."""
    if not indexed(spec):
        return lambda x, weight, grad_output, need_input, need_weight, need_bias: backward(
            x, weight, grad_output, spec, need_input, need_weight, need_bias)
    return _small_backward(spec, np.dtype(dtype))


def _small_backward(spec: ConvSpec, dtype):
    """:func:`bind_backward` for a layer :func:`indexed` takes."""
    table = _indexed.bind_backward(spec, dtype)
    first = (_dense.bind_backward(spec, dtype) if _dense.applies(spec, dtype.itemsize)
             else table)  # the dense matrix returns None where dZ is not finite

    def run(x, weight, grad_output, need_input, need_weight, need_bias):
        # as the forward's run: the flags checked inline, x and W dropped where unread
        if need_weight:
            x = x if x.flags.carray else _prepare(x)
        else:
            x = None
        if need_input:
            weight = weight if weight.flags.carray else _prepare(weight)
        else:
            weight = None
        if not grad_output.flags.carray:
            grad_output = _prepare(grad_output)
        grads = first(x, weight, grad_output, need_input, need_weight, need_bias)
        if grads is None:
            grads = table(x, weight, grad_output, need_input, need_weight, need_bias)
        return grads

    return run


def _wide(spec: ConvSpec) -> bool:
    """Stride 1 in both directions: the wide-plane kernels apply."""
    return spec.stride == (1, 1)


def _wide_args(spec: ConvSpec):
    """(top, left, rows of the padded plane plus one spare, row pitch Wp, D_h, D_w, G)."""
    return (spec.padding[0], spec.padding[2], spec.hp + 1, spec.wp, *spec.dilation,
            spec.groups)


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec,
            bias: np.ndarray | None = None) -> np.ndarray:
    """Direct convolution (one task per sample and output channel), plus the bias.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)
    bias : ndarray of shape (C_out,), optional

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW)
    """
    bias = None if bias is None else _prepare(bias)
    if indexed(spec):  # the index-table, implicit and tiled paths take the bias along
        return _small_forward(spec, x.dtype)(x, weight, bias)
    if implicit(spec, "forward", x.itemsize):
        return _implicit.correlate(_prepare(x), _prepare(weight), spec, _parallel(spec),
                                   bias)
    if tiled(spec, "forward", x.itemsize):
        return _blocked.correlate(_prepare(x), _prepare(weight), (spec.oh, spec.ow),
                                  spec.padding[0], spec.padding[2], spec.dilation,
                                  spec.groups, _parallel(spec), bias)
    return _forward(x, weight, spec, bias)


def _forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec,
             bias: np.ndarray | None) -> np.ndarray:
    """The plane kernels' forward, plus the bias (the implicit and tiled paths are taken
    in :func:`forward`)."""
    bias = np.zeros(spec.c_out, dtype=x.dtype) if bias is None else bias
    y = output(spec.y_shape, x.dtype)
    if _wide(spec):  # pads each plane inside the kernel
        cb = _block(spec, spec.c_out_g, spec.oh * spec.wp * x.itemsize)
        _kernel("forward_wide", spec)(_prepare(x), _prepare(weight), bias, y,
                                      *_wide_args(spec), cb)
        return y
    _kernel("forward_phases", spec)(_prepare(x), _prepare(weight), bias, y,
                                    *_phase_args(spec))
    return y


def adjoint(spec: ConvSpec, itemsize: int) -> ConvSpec | None:
    """dX of a unit-stride layer, or of a 1x1 one :func:`pointwise` takes, as a forward
    correlation (17.3.2): dZ padded by the kernel's dilated extent less the layer's
    padding, correlated with W rotated by 180 degrees, its channel axes swapped (for the
    1x1 layer nothing is padded or rotated). Its spec, where that correlation runs on the
    implicit GEMM (:func:`implicit`) and the layer is not padded beyond the kernel's
    extent; else None.

    Measured against the scattering input gradient (:func:`_blocked.scatter_input_grad`),
    dX, ms, scatter / adjoint. Dilated: (16, 32, 32, 32) with 32 3x3 kernels, dilation
    2, 5.75 / 5.47; (16, 64, 32, 32) 20.2 / 15.7; (8, 32, 64, 64), dilation 4, 11.8 /
    10.5. Undilated, on an AVX-512 Xeon, once the implicit kernels walked K in blocks
    (:data:`._implicit.FORWARD_K_BLOCK`): res56 16.7 / 10.8, res28 15.3 / 10.3, (16, 256,
    14, 14) with 256 22.3 / 11.7, (32, 512, 7, 7) with 512 57.2 / 30.7, Inception's (16,
    128, 17, 17) with 128 1x7 and 7x1 kernels 5.28 / 3.11 and 4.24 / 3.06, (4, 64, 28,
    28) with 64 5x5 kernels 2.54 / 1.75; 0.44-0.92x on every one of 40 random layers
    (1-64 samples, 32-512 channels, 3x3 to 7x7, grouped, asymmetric padding). With AVX2
    tiles the implicit GEMM takes fewer layers (:func:`implicit`: junk-heavy rows, K up
    to :data:`IMPLICIT_MAX_K`); there, 0.69-0.84x: the 1x7 layer 7.83 / 5.62, with 64
    channels 2.02 / 1.40, (32, 16, 14, 14) with 16 5x5 kernels 0.58 / 0.47.
    """
    if not _wide(spec) or (spec.kh * spec.kw == 1 and spec.dilation == (1, 1)
                           and not pointwise(spec, itemsize)):
        return None
    (dh, dw), (top, bottom, left, right) = spec.dilation, spec.padding
    extent_h, extent_w = dh * (spec.kh - 1), dw * (spec.kw - 1)
    padding = ((extent_h - top, extent_h - bottom), (extent_w - left, extent_w - right))
    if min(min(pair) for pair in padding) < 0:  # a layer padded beyond the kernel
        return None
    adjoint = plan_conv2d((spec.n, spec.c_out, spec.oh, spec.ow),
                          (spec.c_in, spec.c_out_g, spec.kh, spec.kw), padding=padding,
                          dilation=spec.dilation, groups=spec.groups).spec
    return adjoint if implicit(adjoint, "forward", itemsize) else None


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
    if indexed(spec):
        return _small_backward(spec, grad_output.dtype)(None, weight, grad_output, True,
                                                        False, False)[0]
    # the junk columns of the wide planes meet the weights as 0 * w: exact unless w has
    # an inf or a NaN, where the row kernel keeps the answer exact
    finite_weights = bool(np.isfinite(weight).all())
    finite = _wide(spec) and finite_weights
    correlation = adjoint(spec, grad_output.itemsize)
    # the zeros around dZ meet w as 0 * w too: finite w only, unless nothing is padded
    if correlation is not None and (finite or not any(correlation.padding)):
        # W' read where it lies, as a view: the packing reads any strides (a contiguous
        # copy first cost as much as the packing again)
        return _implicit.correlate(_prepare(grad_output),
                                   transposed_kernel(_prepare(weight), spec.groups),
                                   correlation, _parallel(spec))
    if not _wide(spec) and phases(spec, grad_output.itemsize) and finite_weights:
        return _implicit.input_grad_phases(_prepare(grad_output), _prepare(weight), spec,
                                           _parallel(spec))
    if finite and tiled(spec, "grad_input", grad_output.itemsize):
        return _blocked.scatter_input_grad(_prepare(grad_output), _prepare(weight),
                                           (spec.h, spec.w), spec.padding, spec.dilation,
                                           spec.groups, _parallel(spec))
    dx = output(spec.x_shape, grad_output.dtype)
    if finite:
        cb = _block(spec, spec.c_in_g, (spec.hp + 1) * spec.wp * dx.itemsize)
        _kernel("grad_input_wide", spec)(_prepare(grad_output), _prepare(weight), dx,
                                         *_wide_args(spec), cb)
        return dx
    # strided layers, and any layer with an inf or NaN weight: the stride phases (at
    # stride 1 the padded plane itself), whole-plane runs only for finite weights
    whole = not _wide(spec) and finite_weights
    _kernel("grad_input_phases", spec)(_prepare(grad_output), _prepare(weight), dx,
                                       *_phase_args(spec), whole)
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
    return _weight_bias_grad(x, grad_output, spec, False)[0]


def _weight_bias_grad(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec,
                      need_bias: bool) -> tuple:
    """(dW, dB or None): :func:`grad_weight`, and with ``need_bias`` dB (formula 17.3.6)
    summed on the way where the kernels read dZ anyway (the implicit GEMM's pixel-major
    copy, the plane kernels' planes; in float64), else by :func:`bias_grad`."""
    if indexed(spec):
        return _small_backward(spec, x.dtype)(x, None, grad_output, False, True,
                                              need_bias)[1:]
    if implicit(spec, "grad_weight", x.itemsize):  # no junk: exact for inf and NaN too
        if need_bias:  # dB summed as dZ is laid out for dW: dZ read once for both
            return _implicit.weight_bias_grad(_prepare(x), _prepare(grad_output), spec,
                                              _parallel(spec))
        return _implicit.weight_grad(_prepare(x), _prepare(grad_output), spec,
                                     _parallel(spec)), None
    db = np.empty(spec.c_out if need_bias else 0, dtype=np.float64)
    if tiled(spec, "grad_weight", x.itemsize):
        grad_w = _blocked.weight_grad(_prepare(x), _prepare(grad_output), (spec.kh, spec.kw),
                                      spec.padding[0], spec.padding[2], spec.dilation,
                                      spec.groups, _parallel(spec))
        db = bias_grad(grad_output) if need_bias else db
    else:
        grad_w = np.empty(spec.weight_shape, dtype=x.dtype)
        if _wide(spec):
            _kernel("grad_weight_wide", spec)(_prepare(x), _prepare(grad_output), grad_w, db,
                                              *_wide_args(spec))
        else:
            _kernel("grad_weight_phases_wide", spec)(_prepare(x), _prepare(grad_output),
                                                     grad_w, db, *_phase_args(spec))
    # junk columns meet x as x * 0, which is NaN where x is inf or NaN: only then can a
    # NaN appear that the exact sum would not have, so recompute by rows (the stride
    # phases' row kernel; at stride 1 the padded plane itself). dB never meets x.
    if np.isnan(grad_w).any():
        _kernel("grad_weight_phases", spec)(_prepare(x), _prepare(grad_output), grad_w,
                                            *_phase_args(spec))
    return grad_w, db.astype(x.dtype, copy=False) if need_bias else None


def backward(x: np.ndarray, weight: np.ndarray, grad_output: np.ndarray, spec: ConvSpec,
             need_input: bool, need_weight: bool, need_bias: bool = False):
    """``(dx, dw, db)``, each None unless asked for: one pass over dZ for all three on
    the index-table path, else :func:`grad_input`, then dW and dB together where dW's
    kernels read dZ anyway (:func:`_weight_bias_grad`: the implicit GEMM's and the plane
    kernels'), else dW and a sum (:func:`bias_grad`)."""
    if indexed(spec):
        return _small_backward(spec, grad_output.dtype)(x, weight, grad_output, need_input,
                                                        need_weight, need_bias)
    dx = grad_input(grad_output, weight, spec) if need_input else None
    if need_weight:  # dB with dW where its kernels read dZ anyway
        return (dx, *_weight_bias_grad(x, grad_output, spec, need_bias))
    return dx, None, bias_grad(grad_output) if need_bias else None
