"""The im2col algorithm: convolution as matrix multiplication (14.4, 14.5).

im2col copies, for every input channel c and kernel tap (u, v), the input pixels that
tap meets into one row of a column matrix (zero where the tap falls in the padding),
with slices and strided views, never fancy indexing::

    cols[(c, u, v), (b, i, j)] = xp[b, c, i*S_h + u*D_h, j*S_w + v*D_w]
    cols  (C_in*KH*KW, nb*rows*JW)  rows (c, u, v), columns (sample, output row, column);
    group g owns rows g*K .. (g+1)*K,  K = C_in/G * KH * KW

Then one GEMM per group (dZ' is dZ with N and C_out swapped, (C_out, nb*rows*JW)):

* forward:      y'[g]  = W[g] (C_out/G, K) @ cols[g] (K, nb*rows*JW);
* grad_weight:  dW[g] += dZ'[g] (C_out/G, nb*rows*JW) @ cols[g].T
  (the book's ``backward_dw_col2im``: the fully-connected rule on columns);
* grad_input:   dcols  = W[g].T (K, C_out/G) @ dZ'[g], and col2im adds every entry
  back onto the pixel it was copied from (``backward_dx_col2im``); no padding or zero
  insertion is needed, the index arithmetic places everything.

Three things make it fast:

* **Cache-sized chunks.** The work runs in chunks of samples (or of output rows, when
  one sample is too large) whose buffers fit in the last-level cache
  (:data:`CACHE_BYTES`), reused from chunk to chunk: the column matrix is written and
  read back by the GEMMs without a trip to main memory and without fresh pages. No
  chunk ever exceeds :func:`npconv.tuning.workspace_limit` (one output row at least).
* **Pointwise layers skip im2col.** A 1x1 kernel with stride 1 and no padding reads
  every pixel once, so x[n] (C_in, H*W) is already its column matrix. A chunk of
  samples is copied side by side, channel-major (C, nb*H*W), so that y, dX and dW are
  each one long GEMM per chunk and group rather than a short one per sample.
* **Wide rows for stride 1.** With unit stride, output row i of tap (u, v) reads the
  padded input from flat position ``(i + u*D_h)*Wp + v*D_w`` on, so a row of the column
  matrix can be one contiguous run of the padded plane: column j runs to ``JW = Wp``
  instead of ``OW``. Packing becomes one copy per (channel, tap) and col2im one add;
  the ``Wp - OW`` extra columns of each row are junk that the forward drops and the
  backward zeroes (in dZ' and in dcols; in the column matrix too when x holds an inf or
  a NaN, so an inf never meets a junk zero). Used when the junk costs the GEMMs little
  (:data:`WIDE_MAX_WASTE`).

Packing (wide rows) and col2im (always) are Numba kernels, one task per (sample,
channel), so no two threads write the same element; col2im writes the unpadded
gradient directly. Narrow rows are packed by one NumPy copy from a strided view. The
GEMMs go to BLAS.

A call large enough, with at least one sample per thread, is split between the threads
by samples (:func:`npconv._workers.shares`): each thread chunks, packs,
multiplies (single-threaded BLAS) and unpacks its own samples in its own buffers, with
the kernels' serial variants, and returns its part of dW. Otherwise the chunks run one
after the other on all threads: parallel kernels, multi-threaded BLAS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from numpy.lib.stride_tricks import as_strided

from .. import _workers, tuning
from .._numba import serial_and_parallel
from .._scratch import KEEP_MAX_BYTES, output, scratch
from ..spec import ConvSpec

# A chunk's buffers (column matrix, GEMM output, padded input) aim at this many bytes,
# so they stay in the last-level cache (32 MiB L3 on the machine this was tuned on).
CACHE_BYTES = 8 * 2**20
# ... but each chunk's GEMM has at least MIN_GEMM_COLUMNS columns where the workspace
# limit allows: BLAS packs the whole weight matrix again for every GEMM, and for long
# columns (K = C_in*KH*KW) on small images a cache-sized chunk holds few of them.
# (16, 512, 7, 7) with 512 3x3 kernels (W: 9.4 MB, 0.9 MB of columns a sample) ran in
# GEMMs of 147 columns, 3 to each thread's 8 samples. Measured on an AVX-512 Xeon, ms,
# at least 0 / 512 / 1024 / 2048 columns: forward 14.25 / 12.72 / 12.62 / 12.66,
# backward 32.5 / 28.5 / 28.6 / 28.9; (16, 256, 14, 14) with 256 3x3 kernels, backward
# 29.8 / 28.2 / 27.5 / 27.6; Inception's 1x7 on 17x17 level (forward 4.7, backward
# 10.0-10.3). Layers with short columns or large images already have that many.
MIN_GEMM_COLUMNS = 1024
# Wide rows (stride 1) add (Wp - OW) / OW to every GEMM; above this the copy they save
# is worth less than the arithmetic they add. Measured, im2col forward / backward, ms,
# wide rows against narrow, on an AVX-512 Xeon and (in brackets) with AVX-512 off
# everywhere: (16, 512, 7, 7), 512 3x3 kernels (28% junk) 16.7 / 43.6 against 14.7 /
# 39.8 [23.9 / 72.5 against 19.8 / 66.9]; Inception's 1x7 on 17x17 (35%) 5.9 / 12.6
# against 4.6 / 10.5 [8.3 / 17.1 against 6.4 / 13.8]; (16, 256, 14, 14), 256 3x3
# (14%) 14.5 / 42.3 against 13.4 / 41.7 [21.1 / 55.8 against 19.1 / 54.3]; but with 4%
# (16, 64, 56, 56) 17.4 / 39.2 against 18.0 / 41.8 [level], with 7% ((16, 128, 28,
# 28)) 15.5 / 33.2 against 14.5 / 33.5. (An earlier machine had set this at 0.5.)
WIDE_MAX_WASTE = 0.1


@njit(inline="always")
def _unpack_pair(row_a, row_b, plane, b, i0, rows, jw, ow, u, off, sh, dh,
                 top):  # pragma: no cover - compiled
    """:func:`_unpack` for two taps at stride 2 whose output column j reads input columns
    ``off + 2j`` (``row_a``, the column matrix's row of the first tap) and ``off + 2j +
    1`` (``row_b``). The second tap's valid columns j start and end no later than the
    first's (lo_b <= lo_a, hi_b <= hi_a): the second alone over [lo_b, lo_a), both as
    one run of pairs up to hi_b, the first alone after it."""
    h, w = plane.shape
    lo_a = 0 if off >= 0 else min(ow, (-off + 1) // 2)
    hi_a = min(ow, (w - 1 - off) // 2 + 1) if w - 1 - off >= 0 else 0
    lo_b = 0 if off + 1 >= 0 else min(ow, -off // 2)
    hi_b = min(ow, (w - 2 - off) // 2 + 1) if w - 2 - off >= 0 else 0
    hi = max(lo_a, hi_b)  # the pairs: [lo_a, hi)
    for i in range(rows):
        r = (i0 + i) * sh + u * dh - top
        if r < 0 or r >= h:
            continue
        base = (b * rows + i) * jw
        a, z, dst = row_a[base:base + ow], row_b[base:base + ow], plane[r]
        for j in range(lo_b, min(lo_a, hi_b)):
            dst[off + 1 + 2 * j] += z[j]
        pairs = dst[off + 2 * lo_a:off + 2 * hi]  # (2 * (hi - lo_a),), contiguous
        ra, rz = a[lo_a:hi], z[lo_a:hi]
        for j in range(hi - lo_a):
            pairs[2 * j] += ra[j]
            pairs[2 * j + 1] += rz[j]
        for j in range(hi, hi_a):
            dst[off + 2 * j] += a[j]


def _unpack(dcols, dx, n0, nb, i0, rows, jw, ow, kh, kw, sh, sw, dh, dw, top,
            left):  # pragma: no cover - compiled
    """Adjoint of the packing: dx[n0+b, c, row, col] += dcols[(c,u,v), (b*rows + i)*jw + j].

    Only the ``OW`` real columns of each ``jw``-wide row are read (junk is never added).
    """
    _, c_in, h, w = dx.shape
    # at stride 2, taps v and v + 1 of an undilated row write the even and odd columns
    # of one run: they go two at a time, which LLVM vectorises (each element still
    # gets the same additions in the same order, tap by tap); the strided slice of one
    # tap below runs one column at a time
    paired = sw == 2 and dw == 1
    for task in prange(nb * c_in):
        b = task // c_in
        c = task % c_in
        plane = dx[n0 + b, c]
        for u in range(kh):
            for v in range(kw):
                if paired and v % 2 == 0 and v + 1 < kw:
                    _unpack_pair(dcols[(c * kh + u) * kw + v], dcols[(c * kh + u) * kw + v + 1],
                                 plane, b, i0, rows, jw, ow, u, v - left, sh, dh, top)
                    continue
                if paired and v % 2 == 1:
                    continue  # done with tap v - 1
                src_row = dcols[(c * kh + u) * kw + v]
                off = v * dw - left  # input column of output column 0
                j_lo = 0 if off >= 0 else min(ow, (-off + sw - 1) // sw)
                j_hi = min(ow, (w - 1 - off) // sw + 1) if w - 1 - off >= 0 else 0
                if j_hi <= j_lo:
                    continue
                for i in range(rows):
                    r = (i0 + i) * sh + u * dh - top
                    if r < 0 or r >= h:
                        continue
                    base = (b * rows + i) * jw
                    src = src_row[base + j_lo:base + j_hi]
                    if sw == 1:  # a contiguous slice: LLVM vectorises the add
                        dst = plane[r, j_lo + off:j_hi + off]
                        for j in range(j_hi - j_lo):
                            dst[j] += src[j]
                    else:
                        dst_s = plane[r, j_lo * sw + off:(j_hi - 1) * sw + off + 1:sw]
                        for j in range(j_hi - j_lo):
                            dst_s[j] += src[j]


def _pack_wide(x, cols, n0, nb, r0, rows, top, left, kh, kw, dh, dw, wp, ow,
               zero_junk):  # pragma: no cover - compiled
    """Wide-row im2col, one task per (sample, channel)::

        cols[(c,u,v), b*rows*wp + t] = xpad[n0+b, c].flat[(r0 + u*dh)*wp + v*dw + t]

    for t < rows*wp: each row is one contiguous copy of the padded plane, which the task
    builds in a private buffer (padded rows r0 .. r0 + rows_in). With ``zero_junk`` the
    Wp - OW junk columns of every output row are zeroed (for dW).
    """
    _, c_in, h, w = x.shape
    rows_in = rows + dh * (kh - 1) + 1
    length = rows * wp
    for task in prange(nb * c_in):
        b = task // c_in
        c = task % c_in
        plane = np.zeros(rows_in * wp, dtype=x.dtype)  # (rows_in*Wp,), zero padding
        for r in range(rows_in):
            xr = r0 + r - top
            if xr >= 0 and xr < h:
                src = x[n0 + b, c, xr]
                dst = plane[r * wp + left:r * wp + left + w]
                for q in range(w):
                    dst[q] = src[q]
        for u in range(kh):
            for v in range(kw):
                o = u * dh * wp + v * dw
                src = plane[o:o + length]
                dst = cols[(c * kh + u) * kw + v, b * length:(b + 1) * length]
                for t in range(length):
                    dst[t] = src[t]
                if zero_junk:
                    for i in range(rows):
                        junk = dst[i * wp + ow:(i + 1) * wp]
                        for t in range(wp - ow):
                            junk[t] = 0


def _unpack_wide(dcols, dx, n0, nb, r0, rows, top, left, kh, kw, dh, dw, wp,
                 ow):  # pragma: no cover - compiled
    """Adjoint of :func:`_pack_wide`, one task per (sample, channel).

    The task zeroes the junk columns of its own rows of ``dcols`` (W.T @ 0 is 0 unless
    W holds an inf), adds every tap's row into a private padded plane as one contiguous
    run, then adds the plane's interior onto dx[n0+b, c].
    """
    _, c_in, h, w = dx.shape
    rows_in = rows + dh * (kh - 1) + 1
    length = rows * wp
    for task in prange(nb * c_in):
        b = task // c_in
        c = task % c_in
        plane = np.zeros(rows_in * wp, dtype=dx.dtype)  # (rows_in*Wp,)
        for u in range(kh):
            for v in range(kw):
                o = u * dh * wp + v * dw
                src = dcols[(c * kh + u) * kw + v, b * length:(b + 1) * length]
                for i in range(rows):
                    junk = src[i * wp + ow:(i + 1) * wp]
                    for t in range(wp - ow):
                        junk[t] = 0
                dst = plane[o:o + length]
                for t in range(length):
                    dst[t] += src[t]
        for r in range(rows_in):
            xr = r0 + r - top
            if xr >= 0 and xr < h:
                src = plane[r * wp + left:r * wp + left + w]
                dst = dx[n0 + b, c, xr]
                for q in range(w):
                    dst[q] += src[q]


# Each kernel twice (:func:`npconv._numba.serial_and_parallel`): the parallel variant, one
# task per (sample, channel), when the call runs on all threads; the serial one, without
# the GIL, inside a thread's share of a split call (:mod:`npconv._workers`).
_UNPACK = serial_and_parallel(_unpack, nogil=True)
_PACK_WIDE = serial_and_parallel(_pack_wide, nogil=True)
_UNPACK_WIDE = serial_and_parallel(_unpack_wide, nogil=True)


@dataclass(frozen=True)
class Layout:
    """How the column matrix of one convolution is laid out (see the module docstring).

    Attributes
    ----------
    wide : bool
        Rows of the column matrix are contiguous runs of the padded input.
    width : int
        JW, columns per output row: ``Wp`` for wide rows, else ``OW``.
    copy_input : bool
        Narrow rows with padding: chunks read a zero-padded copy of x rather than x
        itself (wide rows pad each plane inside the packing kernel).
    """

    wide: bool
    width: int
    copy_input: bool


def layout(spec: ConvSpec) -> Layout:
    """The :class:`Layout` im2col uses for ``spec``."""
    wp = spec.wp
    wide = (spec.stride == (1, 1) and spec.kw > 1
            and wp - spec.ow <= WIDE_MAX_WASTE * spec.ow)
    return Layout(wide, wp if wide else spec.ow, not wide and any(spec.padding))


def _input_rows(spec: ConvSpec, lay: Layout, rows: int) -> int:
    """Rows of the padded input that ``rows`` output rows read."""
    return (rows - 1) * spec.stride[0] + spec.dilation[0] * (spec.kh - 1) + 1


def _row_bytes(spec: ConvSpec, lay: Layout, itemsize: int) -> tuple[int, int]:
    """(bytes of the column matrix and GEMM output per output row, bytes of the padded
    input copy per input row)."""
    wp = spec.wp
    per_row = (spec.c_in * spec.kh * spec.kw + spec.c_out) * lay.width * itemsize
    return per_row, spec.c_in * wp * itemsize if lay.copy_input else 0


def chunk_budget(spec: ConvSpec, itemsize: int, share: int = 1) -> int:
    """Bytes each chunk's buffers may take when ``share`` threads chunk side by side:
    ``min(CACHE_BYTES, workspace_limit()) / share``, or what :data:`MIN_GEMM_COLUMNS`
    columns take where that is more, within ``workspace_limit() / share`` and the size
    of buffer :mod:`npconv._scratch` keeps from call to call (a larger one would be
    page-faulted in again on every call)."""
    lay = layout(spec)
    per_row, input_row = _row_bytes(spec, lay, itemsize)
    limit = tuning.workspace_limit() // share
    least = min(-(-MIN_GEMM_COLUMNS // lay.width) * (per_row + input_row), KEEP_MAX_BYTES)
    return max(1, min(CACHE_BYTES // share, limit), min(limit, least))


def chunks(spec: ConvSpec, itemsize: int, n_lo: int = 0, n_hi: int | None = None,
           share: int = 1):
    """``(n0, n1, i0, i1)``: samples n0:n1 and output rows i0:i1 of each chunk.

    A chunk's buffers (column matrix, GEMM output or dZ', padded input) fit in
    :func:`chunk_budget`: whole samples when one fits, else rows of one sample (at least
    one row). Only samples ``n_lo:n_hi`` (all by default) are chunked; ``share`` threads
    chunking their own samples side by side divide the budget between them.
    """
    n_hi = spec.n if n_hi is None else n_hi
    lay = layout(spec)
    per_row, input_row = _row_bytes(spec, lay, itemsize)
    budget = chunk_budget(spec, itemsize, share)
    per_sample = per_row * spec.oh + input_row * _input_rows(spec, lay, spec.oh)
    if per_sample <= budget:
        step = max(1, min(n_hi - n_lo, budget // per_sample))
        for n0 in range(n_lo, n_hi, step):
            yield n0, min(n_hi, n0 + step), 0, spec.oh
        return
    rows = max(1, min(spec.oh, budget // (per_row + input_row * spec.stride[0])))
    for n0 in range(n_lo, n_hi):
        for i0 in range(0, spec.oh, rows):
            yield n0, n0 + 1, i0, min(spec.oh, i0 + rows)


def work(spec: ConvSpec, itemsize: int) -> list[list[tuple[int, int, int, int]]]:
    """The chunks of one call, as each thread runs them: one list per share of
    :func:`npconv._workers.shares` (a single list when the call is not split)."""
    parts = _workers.shares(spec)
    return [list(chunks(spec, itemsize, lo, hi, len(parts))) for lo, hi in parts]


class _Buffers:
    """Workspace reused by every chunk of one call, sized by the first (largest) chunk
    (and kept by :mod:`npconv._scratch` for the next call)."""

    def __init__(self, spec: ConvSpec, lay: Layout, dtype, nb: int, rows: int):
        wp = spec.wp
        columns = nb * rows * lay.width
        self.cols = scratch("im2col cols", (spec.c_in * spec.kh * spec.kw * columns,), dtype)
        self.out = scratch("im2col out", (spec.c_out * columns,), dtype)  # y' or dZ'
        self.xp = scratch("im2col padded input",
                          (nb * spec.c_in * _input_rows(spec, lay, rows) * wp
                           if lay.copy_input else 0,), dtype)


def _padded_input(x, spec: ConvSpec, lay: Layout, n0, n1, i0, i1, buf: _Buffers):
    """The padded input rows that output rows i0:i1 of samples n0:n1 read.

    Returns
    -------
    ndarray of shape (nb, C_in, rows_in, Wp): row r is padded row ``i0*S_h + r``; a view
    of x when there is nothing to pad.
    """
    top, _, left, _ = spec.padding
    r0 = i0 * spec.stride[0]
    rows_in = _input_rows(spec, lay, i1 - i0)
    if not lay.copy_input:
        return x[n0:n1, :, r0:r0 + rows_in]  # (nb, C_in, rows_in, W), a view
    wp = spec.wp
    xp = buf.xp[:(n1 - n0) * spec.c_in * rows_in * wp].reshape(n1 - n0, spec.c_in, rows_in, wp)
    lo = min(rows_in, max(0, top - r0))  # xp rows lo:hi hold x rows r0+lo-top ...
    hi = max(lo, min(rows_in, top + spec.h - r0))
    xp[:, :, :lo] = 0
    xp[:, :, hi:] = 0
    xp[:, :, lo:hi, :left] = 0
    xp[:, :, lo:hi, left + spec.w:] = 0
    xp[:, :, lo:hi, left:left + spec.w] = x[n0:n1, :, r0 + lo - top:r0 + hi - top]
    return xp


def im2col(x, spec: ConvSpec, lay: Layout, n0, n1, i0, i1, buf: _Buffers,
           zero_junk: bool = False, parallel: bool = True) -> np.ndarray:
    """Column matrix of samples ``n0:n1`` and output rows ``i0:i1`` of x (14.4).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), C-contiguous

    Returns
    -------
    ndarray of shape (C_in*KH*KW, nb * rows * JW), rows ordered (c, u, v) and columns
    (sample, output row, output column); in ``buf``. (Pointwise layers never come here:
    :func:`_pointwise_forward` and :func:`_pointwise_backward` use x itself.) Wide rows
    are packed on all threads with ``parallel``, else on the calling one.
    """
    nb, rows, jw = n1 - n0, i1 - i0, lay.width
    k = spec.c_in * spec.kh * spec.kw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    if lay.wide:
        cols = buf.cols[:k * nb * rows * jw].reshape(k, nb * rows * jw)
        _PACK_WIDE[parallel](x, cols, n0, nb, i0, rows, spec.padding[0], spec.padding[2],
                             spec.kh, spec.kw, dh, dw, jw, spec.ow, zero_junk)
        return cols  # (C_in*KH*KW, nb*rows*Wp)
    xp = _padded_input(x, spec, lay, n0, n1, i0, i1, buf)  # (nb, C_in, rows_in, Wp)
    s_n, s_c, s_r, s_q = xp.strides
    # every tap's window, a view (wide rows run on past Wp into the next padded row)
    windows = as_strided(xp, (spec.c_in, spec.kh, spec.kw, nb, rows, jw),
                         (s_c, dh * s_r, dw * s_q, s_n, sh * s_r, sw * s_q), writeable=False)
    cols = buf.cols[:k * nb * rows * jw].reshape(spec.c_in, spec.kh, spec.kw, nb, rows, jw)
    cols[...] = windows  # the one copy
    return cols.reshape(k, nb * rows * jw)  # (C_in*KH*KW, nb*rows*JW)


def col2im(dcols, dx, spec: ConvSpec, lay: Layout, n0, n1, i0, i1,
           parallel: bool = True) -> None:
    """Add the column-matrix gradient ``dcols`` back onto ``dx`` in place (14.5).

    Parameters
    ----------
    dcols : ndarray of shape (C_in*KH*KW, nb * rows * JW)
    dx : ndarray of shape (N, C_in, H, W), C-contiguous; samples ``n0:n1`` receive it.
    parallel : bool
        Unpack on all threads, else on the calling one.
    """
    if lay.wide:
        _UNPACK_WIDE[parallel](dcols, dx, n0, n1 - n0, i0, i1 - i0, spec.padding[0],
                               spec.padding[2], spec.kh, spec.kw, *spec.dilation, lay.width,
                               spec.ow)
        return
    _UNPACK[parallel](dcols, dx, n0, n1 - n0, i0, i1 - i0, lay.width, spec.ow, spec.kh,
                      spec.kw, *spec.stride, *spec.dilation, spec.padding[0], spec.padding[2])


def _contiguous(a: np.ndarray) -> np.ndarray:
    return np.require(a, requirements=("C", "W"))


def _is_pointwise(spec: ConvSpec) -> bool:
    """A 1x1 kernel with stride 1 and no padding reads every pixel once, in order."""
    return (spec.kh, spec.kw, *spec.stride, *spec.padding) == (1, 1, 1, 1, 0, 0, 0, 0)


def _group_rows(spec: ConvSpec, g: int) -> slice:
    """Rows of the column matrix (and of W's matrix) that belong to group ``g``."""
    k = spec.c_in_g * spec.kh * spec.kw
    return slice(g * k, (g + 1) * k)


def _channel_major_copy(batch, cm, n0, into):  # pragma: no cover - compiled
    """Between samples n0 .. n0+nb of ``batch`` (N, C, L) and ``cm`` (C, nb*L), each
    sample's pixels side by side: ``cm[c, b*L:(b+1)*L] = batch[n0 + b, c]`` when
    ``into``, the other way round otherwise. One task per (sample, channel), each one
    contiguous run."""
    c, width = cm.shape
    length = batch.shape[2]
    nb = width // length
    for task in prange(nb * c):
        b = task // c
        ch = task % c
        rows = batch[n0 + b, ch]
        run = cm[ch, b * length:(b + 1) * length]
        if into:
            for i in range(length):
                run[i] = rows[i]
        else:
            for i in range(length):
                rows[i] = run[i]


_CM_COPY = serial_and_parallel(_channel_major_copy, nogil=True)
# The channel-major copies run on the calling thread below this many elements per chunk
# (waking the OpenMP workers costs more than the copy saves).
CM_PARALLEL_MIN = 1 << 18


def _pointwise_chunks(spec: ConvSpec, itemsize: int, n_lo: int = 0, n_hi: int | None = None,
                      share: int = 1):
    """``(n0, n1)``: samples per chunk whose channel-major copies of the input and the
    output (or dZ) fit in ``min(CACHE_BYTES, workspace_limit())`` (one sample at least),
    over samples ``n_lo:n_hi`` (all by default). In a thread's share of a split call
    (``share`` > 1) every sample is a chunk of its own, multiplied in place without
    copies: the copies only pay for waking BLAS's threads once per chunk instead of once
    per sample, and single-threaded BLAS wakes none (the pointwise suite layer's
    forward pass: 1.6 ms against 1.9, its backward level)."""
    n_hi = spec.n if n_hi is None else n_hi
    per_sample = (spec.c_in + spec.c_out) * spec.oh * spec.ow * itemsize
    step = 1 if share > 1 else max(1, min(CACHE_BYTES, tuning.workspace_limit()) // per_sample)
    for n0 in range(n_lo, n_hi, step):
        yield n0, min(n_hi, n0 + step)


def _channel_major(a3, n0, n1, name: str, parallel: bool) -> np.ndarray:
    """Samples n0:n1 of ``a3`` (N, C, L) as (C, nb*L), in the scratch buffer ``name``."""
    c, length = a3.shape[1:]
    out = scratch(name, (c, (n1 - n0) * length), a3.dtype)
    _CM_COPY[parallel and out.size >= CM_PARALLEL_MIN](a3, out, n0, True)
    return out  # (C, nb*L)


def _pointwise_forward(x, w_mat, spec: ConvSpec) -> np.ndarray:
    """1x1, stride 1, no padding: x[n] (C_in, H*W) is its own column matrix. The
    chunk's samples are copied side by side, x' (C_in, nb*L), so each group's product
    is one long GEMM, y' = W @ x' (C_out, nb*L), copied back to y: one BLAS call per
    chunk instead of one short one per sample, each of which wakes BLAS's threads (the
    pointwise suite layer, with pauses between calls: 1.3-1.8 ms against 1.7-2.2; level
    in hot loops). Split between the threads by samples (:func:`npconv._workers.shares`)."""
    x3 = x.reshape(spec.n, spec.c_in, -1)  # (N, C_in, L)
    y = output(spec.y_shape, x.dtype)
    y3 = y.reshape(spec.n, spec.c_out, -1)  # (N, C_out, L)
    _workers.split(spec, _pointwise_forward_share, x3, w_mat, y3, spec)
    return y


def _pointwise_forward_share(x3, w_mat, y3, spec: ConvSpec, n_lo: int, n_hi: int,
                             share: int) -> None:
    """Samples n_lo:n_hi of :func:`_pointwise_forward`, on all threads when ``share`` is
    1, else on the calling thread alone."""
    cig, cog = spec.c_in_g, spec.c_out_g
    parallel = share == 1
    for n0, n1 in _pointwise_chunks(spec, x3.itemsize, n_lo, n_hi, share):
        one = n1 - n0 == 1  # the sample itself is the matrix, and y[n0] the product
        xt = (x3[n0] if one
              else _channel_major(x3, n0, n1, "pointwise x'", parallel))  # (C_in, nb*L)
        yt = y3[n0] if one else scratch("pointwise y'", (spec.c_out, xt.shape[1]), x3.dtype)
        for g in range(spec.groups):
            np.matmul(w_mat[g * cog:(g + 1) * cog], xt[g * cig:(g + 1) * cig],
                      out=yt[g * cog:(g + 1) * cog])  # (C_out/G, nb*L)
        if not one:
            _CM_COPY[parallel and yt.size >= CM_PARALLEL_MIN](y3, yt, n0, False)


def _pointwise_backward(x, w_mat, dz, spec: ConvSpec, need_input: bool, need_weight: bool):
    """dX' = W.T @ dZ' (no col2im: every pixel is read once) and dW = sum over chunks of
    dZ' @ x'.T, with x', dZ' and dX' the chunk's samples side by side (channel-major
    copies, as in :func:`_pointwise_forward`), split between the threads by samples."""
    dz3 = dz.reshape(spec.n, spec.c_out, -1)  # (N, C_out, L)
    dx = dx3 = x3 = None
    if need_input:
        dx = output(spec.x_shape, dz.dtype)
        dx3 = dx.reshape(spec.n, spec.c_in, -1)  # (N, C_in, L)
    if need_weight:
        x3 = x.reshape(spec.n, spec.c_in, -1)  # (N, C_in, L)
    partials = _workers.split(spec, _pointwise_backward_share, x3, w_mat, dz3, dx3, spec)
    dw = _workers.summed(partials).reshape(spec.weight_shape) if need_weight else None
    return dx, dw


def _pointwise_backward_share(x3, w_mat, dz3, dx3, spec: ConvSpec, n_lo: int, n_hi: int,
                              share: int):
    """Samples n_lo:n_hi of :func:`_pointwise_backward`: their dX into ``dx3`` (unless it
    is None) and their part of dW, returned (None when ``x3`` is None); on all threads
    when ``share`` is 1, else on the calling thread alone."""
    cig, cog = spec.c_in_g, spec.c_out_g
    parallel = share == 1
    dw = None if x3 is None else np.zeros((spec.c_out, cig), dtype=dz3.dtype)
    for n0, n1 in _pointwise_chunks(spec, dz3.itemsize, n_lo, n_hi, share):
        one = n1 - n0 == 1
        dzt = (dz3[n0] if one
               else _channel_major(dz3, n0, n1, "pointwise dz'", parallel))  # (C_out, nb*L)
        if dx3 is not None:
            dxt = (dx3[n0] if one
                   else scratch("pointwise dx'", (spec.c_in, dzt.shape[1]), dz3.dtype))
            for g in range(spec.groups):
                np.matmul(w_mat[g * cog:(g + 1) * cog].T, dzt[g * cog:(g + 1) * cog],
                          out=dxt[g * cig:(g + 1) * cig])  # (C_in/G, nb*L)
            if not one:
                _CM_COPY[parallel and dxt.size >= CM_PARALLEL_MIN](dx3, dxt, n0, False)
        if dw is not None:
            xt = (x3[n0] if one
                  else _channel_major(x3, n0, n1, "pointwise x'", parallel))  # (C_in, nb*L)
            for g in range(spec.groups):
                dw[g * cog:(g + 1) * cog] += (dzt[g * cog:(g + 1) * cog]
                                              @ xt[g * cig:(g + 1) * cig].T)  # (C_out/G, C_in/G)
    return dw


def _buffers(spec: ConvSpec, lay: Layout, dtype, parts: list) -> _Buffers:
    """The calling thread's buffers for the chunks ``parts`` (the first is the largest)."""
    n0, n1, i0, i1 = parts[0]
    return _Buffers(spec, lay, dtype, n1 - n0, i1 - i0)


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """y = W @ im2col(x), one GEMM per group and chunk, split between the threads by
    samples (:func:`npconv._workers.shares`).

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
    if _is_pointwise(spec):
        return _pointwise_forward(x, w_mat, spec)
    y = output(spec.y_shape, x.dtype)
    _workers.split(spec, _forward_share, x, w_mat, y, spec, layout(spec))
    return y


def _forward_share(x, w_mat, y, spec: ConvSpec, lay: Layout, n_lo: int, n_hi: int,
                   share: int) -> None:
    """Samples n_lo:n_hi of :func:`forward`, chunk by chunk: on all threads when
    ``share`` is 1, else on the calling thread alone, in its own buffers."""
    cog, ow = spec.c_out_g, spec.ow
    parallel = share == 1
    parts = list(chunks(spec, x.itemsize, n_lo, n_hi, share))
    buf = _buffers(spec, lay, x.dtype, parts)
    for n0, n1, i0, i1 in parts:
        nb, rows = n1 - n0, i1 - i0
        cols = im2col(x, spec, lay, n0, n1, i0, i1, buf,
                      parallel=parallel)  # (K_all, nb*rows*JW)
        direct = nb == 1 and lay.width == ow  # y[n0] rows i0:i1 is the GEMM's output
        if direct:
            out = y[n0, :, i0:i1].reshape(spec.c_out, rows * ow)  # (C_out, rows*OW), a view
        else:
            out = buf.out[:spec.c_out * cols.shape[1]].reshape(spec.c_out, -1)  # (C_out, *)
        for g in range(spec.groups):
            np.matmul(w_mat[g * cog:(g + 1) * cog], cols[_group_rows(spec, g)],
                      out=out[g * cog:(g + 1) * cog])
        if not direct:
            y[n0:n1, :, i0:i1] = out.reshape(spec.c_out, nb, rows, lay.width)[
                ..., :ow].transpose(1, 0, 2, 3)  # (nb, C_out, rows, OW)


def backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool,
             zero_junk: bool = False):
    """Both gradients in one pass over the chunks (dZ is rearranged once per chunk),
    split between the threads by samples (:func:`npconv._workers.shares`): each thread
    adds its own samples' dX into their rows of dX and returns its part of dW.

    With wide rows the junk columns of dZ' are zero, so dW is exact as long as the junk
    of the column matrix is finite: x * 0. Only an inf or NaN in x can turn that into a
    NaN the exact sum would not have, and only then is dW recomputed with the column
    matrix's junk zeroed as well (``zero_junk``; it costs a strided pass per chunk).

    Returns
    -------
    (dx of shape (N, C_in, H, W) or None, dw of shape (C_out, C_in/groups, KH, KW) or None)
    """
    dz_all = _contiguous(grad_output)  # (N, C_out, OH, OW)
    if _is_pointwise(spec):
        return _pointwise_backward(None if x is None else _contiguous(x),
                                   np.ascontiguousarray(weight).reshape(spec.c_out, -1)
                                   if need_input else None,
                                   dz_all, spec, need_input, need_weight)
    lay = layout(spec)
    w_mat = dx = None
    if need_input:
        w_mat = np.ascontiguousarray(weight).reshape(spec.c_out, -1)  # (C_out, K_g)
        dx = output(spec.x_shape, grad_output.dtype, zero=True)
    x = _contiguous(x) if need_weight else None
    partials = _workers.split(spec, _backward_share, x, w_mat, dz_all, dx, spec, lay,
                              zero_junk)
    dw = _workers.summed(partials) if need_weight else None
    if need_weight and lay.wide and not zero_junk and np.isnan(dw).any():
        return dx, backward(x, None, grad_output, spec, False, True, zero_junk=True)[1]
    return dx, dw.reshape(spec.weight_shape) if need_weight else None


def _backward_share(x, w_mat, dz_all, dx, spec: ConvSpec, lay: Layout, zero_junk: bool,
                    n_lo: int, n_hi: int, share: int):
    """Samples n_lo:n_hi of :func:`backward`, chunk by chunk: dX added into ``dx``
    (unless ``w_mat`` is None), dW's part returned (None when ``x`` is None). On all
    threads when ``share`` is 1, else on the calling thread alone, in its own buffers."""
    cog, ow, jw = spec.c_out_g, spec.ow, lay.width
    parallel = share == 1
    parts = list(chunks(spec, dz_all.itemsize, n_lo, n_hi, share))
    buf = _buffers(spec, lay, dz_all.dtype, parts)
    dw = dw_part = None
    if x is not None:
        dw = np.zeros((spec.c_out, spec.c_in_g * spec.kh * spec.kw), dtype=x.dtype)
        dw_part = np.empty_like(dw)
    for n0, n1, i0, i1 in parts:
        nb, rows = n1 - n0, i1 - i0
        if nb == 1 and jw == ow:
            dz = dz_all[n0, :, i0:i1].reshape(spec.c_out, rows * ow)  # (C_out, rows*OW)
        else:
            dz4 = buf.out[:spec.c_out * nb * rows * jw].reshape(spec.c_out, nb, rows, jw)
            dz4[..., :ow] = dz_all[n0:n1, :, i0:i1].transpose(1, 0, 2, 3)
            dz4[..., ow:] = 0  # wide rows: the junk columns carry no gradient
            dz = dz4.reshape(spec.c_out, -1)  # (C_out, nb*rows*JW)
        if dw is not None:
            cols = im2col(x, spec, lay, n0, n1, i0, i1, buf, zero_junk=zero_junk,
                          parallel=parallel)  # (K_all, nb*rows*JW)
            for g in range(spec.groups):
                rows_g, dw_g = _group_rows(spec, g), slice(g * cog, (g + 1) * cog)
                np.matmul(dz[dw_g], cols[rows_g].T, out=dw_part[dw_g])
            dw += dw_part
        if w_mat is not None:
            k = spec.c_in * spec.kh * spec.kw
            dcols = buf.cols[:k * dz.shape[1]].reshape(k, -1)  # (K_all, nb*rows*JW)
            for g in range(spec.groups):
                np.matmul(w_mat[g * cog:(g + 1) * cog].T, dz[g * cog:(g + 1) * cog],
                          out=dcols[_group_rows(spec, g)])
            col2im(dcols, dx, spec, lay, n0, n1, i0, i1, parallel=parallel)
    return dw


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
