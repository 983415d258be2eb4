"""Register-blocked direct convolution with unit stride: the jit algorithm's fast path.

The plain loops of :mod:`npconv.algorithms.jit` add one tap at a time into an output
plane in memory, so every multiply-add also loads and stores the accumulator: they
are bound by the store port, not by arithmetic. Here a task computes a tile of PB
consecutive output pixels (:data:`TILE_PIXELS`: two vector registers, 16 float32 or 8
float64 with AVX2, twice that with AVX-512) for :data:`CB` output channels at once and
keeps those ``CB * PB`` sums in registers over every input channel and kernel tap;
each tap loads ``PB`` input pixels and ``CB`` weights for ``CB * PB`` multiply-adds.
That is how oneDNN's direct convolutions work, and it is what makes small layers (LeNet's,
CIFAR's) faster here than through im2col and a GEMM.

Layout (17.3's "wide planes"): with unit stride, tap (u, v) of output pixel (i, j)
reads padded pixel (i + u*D_h, j + v*D_w), which is flat position
``t + u*D_h*Wp + v*D_w`` of the padded plane stored with row pitch Wp, where
``t = i*Wp + j``. So output position t of every tap is one offset into the same flat
plane, a tile is PB consecutive positions, and columns OW .. Wp of each output row are
junk that is computed and never stored.

The kernel is one function written out for one (CB, PB): its ``CB * PB`` accumulators
are named locals, which LLVM's SLP vectoriser packs into vector registers (Numba turns
SLP off by default; :func:`_compile` turns it on while these kernels compile). The
source is generated once at import, below, rather than typed out by hand.

Used for all three passes of a unit-stride convolution:

* forward (:func:`correlate`): y = x (*) W;
* grad_input (:func:`scatter_input_grad`): each dZ position sends ``w * dz`` to the
  padded input positions its taps read (formulas 17.3 (5)-(9)), tiled over 4 (or 3,
  :func:`scatter_block`) input channels x 16 dZ positions and summed over output
  channels in registers. (The
  alternative, :func:`correlate` on dZ padded by the kernel's extent with W rotated by
  180 degrees, 17.3.2, also multiplies those zeros: up to 1.8x the work on LeNet's
  layers, and measured slower on every suite layer; the implicit GEMM's tiles run that
  correlation faster than this scatter, and take it wherever they apply:
  :func:`npconv.algorithms.jit.adjoint`.) The junk columns of dZ's wide rows
  are zero and meet W as ``0 * w``, NaN where w is inf: :mod:`npconv.algorithms.jit`
  uses this path only for finite weights.
* grad_weight (:func:`weight_grad`): formula 17.3 (11) as dot products over output
  positions, register-tiled over CB output channels x KB taps x LANES positions
  (:data:`WEIGHT_LANES`: one vector register).

Every output is summed in a fixed order whatever the thread count, so results do not
depend on it. Temporaries (padded planes, wide output rows) come from
:mod:`npconv._scratch`.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
from numba import prange
from numba.core import config
from numba.core.compiler_lock import global_compiler_lock

from .._numba import VECTOR_BYTES, generated, serial_and_parallel
from .._scratch import aligned_empty, output, scratch

CB = 4  # output channels per register tile
# Output positions per register tile of the forward and input-gradient kernels, by
# vector width (:data:`VECTOR_BYTES`) and itemsize: two vector registers either way
# (AVX2: 16 float32 or 8 float64; AVX-512: 32 or 16), so the CB x PB sums fill 8 of
# the registers. 16 float64 positions in AVX2 took all 16 registers and spilled:
# measured in float64, 8 against 16 positions, ms: the dilated suite layer forward 9.7
# against 11.1, dX 7.4 against 13.6; (16, 32, 32, 32) with 32 3x3 kernels 9.5 / 12.6
# and 10.3 / 14.9; 32 5x5 kernels on 16x16, 5.0 / 7.2 and 4.5 / 9.7. With AVX-512 in
# float32, 32 against 16 positions, forward / dX, ms: CIFAR's stem 1.0 / 1.1 against
# 1.24 / 1.29, the dilated layer 1.9 / 2.0 against 2.2 / 2.3, a 128-channel 3x3 layer
# 19 / 18 against 27 / 22.
TILE_PIXELS = {32: {4: 16, 8: 8}, 64: {4: 32, 8: 16}}


def tile_pixels(dtype) -> int:
    """PB, output positions per register tile, for ``dtype`` on this CPU."""
    return TILE_PIXELS[VECTOR_BYTES][np.dtype(dtype).itemsize]


def _kernel_source(cb: int, pb: int, name: str) -> str:
    """Source of the forward kernel ``name`` for a (cb, pb) register tile."""
    acc = [[f"a{c}_{p}" for p in range(pb)] for c in range(cb)]
    u = "np.uint64"
    lines = [
        f"def {name}(planes, wt, offs, out, c_in_g, groups, nblk, plane_len,",
        "        ntiles):  # pragma: no cover - compiled",
        "    n = out.shape[0]",
        "    c_src = c_in_g * groups",
        "    kk = offs.shape[0]",
        "    zero = out.dtype.type(0)",
        "    for task in prange(n * groups * nblk * ntiles):",
        "        tile = task % ntiles",
        "        blk = task // ntiles % nblk",
        "        g = task // (ntiles * nblk) % groups",
        "        b = task // (ntiles * nblk * groups)",
        f"        t0 = tile * {pb}",
    ]
    lines += [f"        {a} = zero" for row in acc for a in row]
    lines += [
        f"        wbase = (g * nblk + blk) * c_in_g * kk * {cb}",
        "        for ci in range(c_in_g):",
        "            base = (b * c_src + g * c_in_g + ci) * plane_len + t0",
        f"            wrow = wbase + ci * kk * {cb}",
        "            for k in range(kk):",
        f"                o = {u}(base + offs[k])",
        f"                w = {u}(wrow + k * {cb})",
    ]
    lines += [f"                x{p} = planes[o + {u}({p})]" for p in range(pb)]
    lines += [f"                w{c} = wt[w + {u}({c})]" for c in range(cb)]
    lines += [f"                {acc[c][p]} += w{c} * x{p}" for c in range(cb) for p in range(pb)]
    lines += [
        f"        row = (g * nblk + blk) * {cb}",
    ]
    # plain stores at constant offsets: a branch per pixel here would stop LLVM from
    # vectorising the loop above (the junk and the padding channels are cropped later)
    lines += [f"        out[b, row + {c}, t0 + {p}] = {acc[c][p]}"
              for c in range(cb) for p in range(pb)]
    return "\n".join(lines) + "\n"


def _weight_kernel_source(cb: int, kb: int, lanes: int, name: str) -> str:
    """Source of the weight-gradient kernel ``name`` for (cb output channels) x (kb
    taps) x lanes.

    Each accumulator is one lane of a partial sum over output positions, so a step of
    ``lanes`` positions loads ``lanes`` dZ values per channel and ``lanes`` input values
    per tap, and makes ``cb * kb * lanes`` multiply-adds from registers.
    """
    acc = [[[f"a{c}_{k}_{q}" for q in range(lanes)] for k in range(kb)] for c in range(cb)]
    u = "np.uint64"
    lines = [
        f"def {name}(xplanes, dzplanes, offs, acc, c_in_g, groups, nblk,",
        "        plane_len, dz_len, n):  # pragma: no cover - compiled",
        "    c_src = c_in_g * groups",
        f"    npairs = offs.shape[0] // {kb}",
        "    for task in prange(groups * nblk * c_in_g):",
        "        ci = task % c_in_g",
        "        blk = task // c_in_g % nblk",
        "        g = task // (c_in_g * nblk)",
        "        part = acc[task]",
        "        for b in range(n):",
        "            xbase = (b * c_src + g * c_in_g + ci) * plane_len",
        f"            dbase = ((b * groups + g) * nblk + blk) * {cb} * dz_len",
        "            for kp in range(npairs):",
        "                mine = part[kp]",
    ]
    lines += [f"                o{k} = xbase + offs[kp * {kb} + {k}]" for k in range(kb)]
    lines += [f"                {acc[c][k][q]} = mine[{(c * kb + k) * lanes + q}]"
              for c in range(cb) for k in range(kb) for q in range(lanes)]
    lines += [f"                for t in range(0, dz_len, {lanes}):"]
    lines += [f"                    d{c}_{q} = dzplanes[{u}(dbase + {c} * dz_len + t + {q})]"
              for c in range(cb) for q in range(lanes)]
    lines += [f"                    x{k}_{q} = xplanes[{u}(o{k} + t + {q})]"
              for k in range(kb) for q in range(lanes)]
    lines += [f"                    {acc[c][k][q]} += d{c}_{q} * x{k}_{q}"
              for c in range(cb) for k in range(kb) for q in range(lanes)]
    lines += [f"                mine[{(c * kb + k) * lanes + q}] = {acc[c][k][q]}"
              for c in range(cb) for k in range(kb) for q in range(lanes)]
    return "\n".join(lines) + "\n"


def _scatter_kernel_source(cb: int, pb: int, name: str) -> str:
    """Source of the input-gradient kernel ``name`` for a (cb input channels, pb
    positions) tile.

    The input gradient the way the forward pass made it: each dZ position t sends
    ``w[o, c, k] * dz[o, t]`` to padded input position ``t + offs[k]``. A tile of pb dZ
    positions and one tap k sums over the output channels o in registers, then adds its
    cb x pb results into the task's own padded dX planes, so no zero padding of dZ is
    ever multiplied (unlike the rotated correlation).
    """
    acc = [[f"a{c}_{p}" for p in range(pb)] for c in range(cb)]
    u = "np.uint64"
    lines = [
        f"def {name}(dzplanes, wt, offs, acc, c_out_g, groups, nblk, dz_len,",
        "        plane_len, ntiles, n):  # pragma: no cover - compiled",
        "    kk = offs.shape[0]",
        "    zero = acc.dtype.type(0)",
        "    for task in prange(n * groups * nblk):",
        "        blk = task % nblk",
        "        g = task // nblk % groups",
        "        b = task // (nblk * groups)",
        f"        abase = ((b * groups + g) * nblk + blk) * {cb} * plane_len",
        f"        for q in range({cb} * plane_len):",
        f"            acc[{u}(abase + q)] = zero",
        f"        wbase = (g * nblk + blk) * c_out_g * kk * {cb}",
        "        dbase = (b * groups + g) * c_out_g * dz_len",
        "        for tile in range(ntiles):",
        f"            t0 = tile * {pb}",
        "            for k in range(kk):",
    ]
    lines += [f"                {a} = zero" for row in acc for a in row]
    lines += [
        "                for o in range(c_out_g):",
        f"                    d = {u}(dbase + o * dz_len + t0)",
        f"                    w = {u}(wbase + (o * kk + k) * {cb})",
    ]
    lines += [f"                    d{p} = dzplanes[d + {u}({p})]" for p in range(pb)]
    lines += [f"                    w{c} = wt[w + {u}({c})]" for c in range(cb)]
    lines += [f"                    {acc[c][p]} += w{c} * d{p}"
              for c in range(cb) for p in range(pb)]
    lines += [f"                o0 = {u}(abase + t0 + offs[k])"]
    lines += [f"                acc[o0 + {u}({c} * plane_len + {p})] += {acc[c][p]}"
              for c in range(cb) for p in range(pb)]
    return "\n".join(lines) + "\n"


def _kernels(source, tiles: dict) -> dict:
    """{key: (serial, parallel)}: one generated kernel per tile, each its own function
    (and name, so each has its own entry in Numba's disk cache)."""
    return {key: serial_and_parallel(generated(source(*args, name), name, globals()),
                                     fastmath={"contract"})
            for key, (args, name) in tiles.items()}


# every tile of either width is defined (and compiled when used), so that the tests
# can run each on any machine
_PIXEL_TILES = sorted({pb for tiles in TILE_PIXELS.values() for pb in tiles.values()})
_KERNELS = _kernels(_kernel_source, {pb: ((CB, pb), f"blocked_correlate{pb}")
                                     for pb in _PIXEL_TILES})
KB = 2  # kernel taps per register tile of the weight gradient
# Output positions per step of the weight gradient, by vector width and itemsize: one
# vector register (the CB x KB x LANES sums in 8 registers). Measured in float64 with
# AVX2, 4 against 8 lanes, ms: the dilated suite layer 9.3 against 14.2; LeNet's second
# layer 1.6 / 2.9; 32 3x3 kernels on (16, 32, 32, 32) 10.3 / 16.2. With AVX-512 in
# float32, 16 against 8 lanes: the dilated layer 3.0 / 3.2, CIFAR's stem 1.4 / 1.5, a
# 128-channel 3x3 layer 31 / 33.
WEIGHT_LANES = {32: {4: 8, 8: 4}, 64: {4: 16, 8: 8}}
# The input gradient's tiles: CB input channels, or 3 where that pads fewer channels
# (6 input channels: two full blocks of 3 instead of two blocks of 4, a quarter of them
# zero; 10-25% faster on LeNet's second layer and CIFAR's stem). The forward kernel
# stays at 4: LLVM does not vectorise its 3-channel form. Each width is its own
# function (and name), so each has its own entry in Numba's disk cache.
SCATTER_BLOCKS = (CB, 3)
_SCATTER_KERNELS = _kernels(_scatter_kernel_source, {
    (cb, pb): ((cb, pb), f"blocked_scatter{cb}x{pb}")
    for cb in SCATTER_BLOCKS for pb in _PIXEL_TILES})
_LANE_TILES = sorted({lanes for by_size in WEIGHT_LANES.values() for lanes in by_size.values()})
_WEIGHT_KERNELS = _kernels(_weight_kernel_source, {
    lanes: ((CB, KB, lanes), f"blocked_weight_grad{lanes}") for lanes in _LANE_TILES})
_compiled: set = set()


def weight_lanes(dtype) -> int:
    """LANES, output positions per step of :func:`weight_grad`, for ``dtype`` on this CPU."""
    return WEIGHT_LANES[VECTOR_BYTES][np.dtype(dtype).itemsize]


@contextmanager
def _slp_vectorize():
    """Numba's SLP vectoriser switch, on for the compilations inside the block."""
    with global_compiler_lock:
        before = config.SLP_VECTORIZE
        config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            config.SLP_VECTORIZE = before


def _compile(kernel, args) -> None:
    """Compile (or load from the disk cache) ``kernel`` for ``args`` with SLP on, once
    per dtype (the other arguments are always C-contiguous arrays and integers)."""
    key = (id(kernel), args[0].dtype)
    if key not in _compiled:
        with _slp_vectorize():
            kernel.compile(tuple(numba.typeof(a) for a in args))
        _compiled.add(key)


def _place(src, planes, pitch, row_off, col_off, rows):  # pragma: no cover - compiled
    """planes[b, c] (flat, pitch ``pitch``, ``rows`` rows, zero elsewhere) gets
    src[b, c, r, q] at row r + row_off and column q + col_off, cropped to the plane."""
    n, c, h, w = src.shape
    for task in prange(n * c):
        b = task // c
        ch = task % c
        dst = planes[b, ch]
        for t in range(dst.shape[0]):
            dst[t] = 0
        q0 = max(0, -col_off)
        q1 = min(w, pitch - col_off)
        for r in range(max(0, -row_off), min(h, rows - row_off)):
            row = src[b, ch, r]
            out = dst[(r + row_off) * pitch + col_off + q0:(r + row_off) * pitch + col_off + q1]
            part = row[q0:q1]
            for q in range(q1 - q0):
                out[q] = part[q]


def _crop(out, y, start, wp, groups, rows_per_group, bias):  # pragma: no cover - compiled
    """y[b, o, i, j] = out[b, row of o, start + i*wp + j] (+ bias[o] when ``bias`` is not
    empty): drop the junk columns (and any padding), the tail of the last tile and the
    padding channels of each group's last block."""
    n, c_dst, oh, ow = y.shape
    c_dst_g = c_dst // groups
    for task in prange(n * c_dst):
        b = task // c_dst
        o = task % c_dst
        src = out[b, o // c_dst_g * rows_per_group + o % c_dst_g]
        for i in range(oh):
            row = src[start + i * wp:start + i * wp + ow]
            dst = y[b, o, i]
            if bias.shape[0]:
                add = bias[o]
                for j in range(ow):
                    dst[j] = row[j] + add
            else:
                for j in range(ow):
                    dst[j] = row[j]


_PLACE = serial_and_parallel(_place)
_CROP = serial_and_parallel(_crop)
# Copies of fewer elements than this run on the calling thread: waking the sleeping
# OpenMP workers for a parallel region costs more than the copy saves. (It was 2**20
# while idle workers went to sleep at once; since they spin briefly (npconv/__init__.py)
# a parallel copy pays from 2**16: forward + backward steps in a loop, ms, 2**20 /
# 2**16, median of six rounds, on an AVX-512 Xeon and, in brackets, with AVX-512 off
# everywhere: the dilated suite layer 5.00 / 4.06 [8.01 / 7.27], LeNet's second layer
# 0.85 / 0.73 [0.93 / 0.82], its first 0.76 / 0.68 [0.94 / 0.84], CIFAR's stem 3.94 /
# 3.77 [4.94 / 4.70]; the depthwise layer, whose kernels copy nothing here, level.)
COPY_PARALLEL_MIN = 1 << 16


def _copy_parallel(parallel: bool, buffer: np.ndarray) -> bool:
    return parallel and buffer.size >= COPY_PARALLEL_MIN


def _pack(weight, packed):  # pragma: no cover - compiled
    """packed[g, blk, c, u, v, lane] = weight[g*C_dst/G + blk*cb + lane, c, u, v], 0 for
    the lanes past C_dst/G; ``weight`` (C_dst, C_src/G, KH, KW) of any strides, one task
    per (g, blk, c): its rows of ``packed`` written in order."""
    groups, nblk, c_src_g, kh, kw, cb = packed.shape
    c_dst_g = weight.shape[0] // groups
    for task in prange(groups * nblk * c_src_g):
        g = task // (nblk * c_src_g)
        blk = task // c_src_g % nblk
        c = task % c_src_g
        lanes = min(cb, c_dst_g - blk * cb)
        o = g * c_dst_g + blk * cb
        for u in range(kh):
            for v in range(kw):
                row = packed[g, blk, c, u, v]
                for lane in range(lanes):
                    row[lane] = weight[o + lane, c, u, v]
                for lane in range(lanes, cb):
                    row[lane] = 0


_PACK = serial_and_parallel(_pack)


def _weight_tiles(weight: np.ndarray, groups: int, cb: int = CB) -> tuple[np.ndarray, int]:
    """weight (C_dst, C_src/G, KH, KW), of any strides (a transposed or rotated view is
    read as it lies), as (G, blocks, C_src/G, KH*KW, cb), flattened and starting on a
    cache line, zero for the channels past C_dst/G; and the number of blocks per group.
    A copy like the others: on two threads from :data:`COPY_PARALLEL_MIN` elements. (On
    one thread, NumPy's zero-fill and transposing copy took 0.05 ms for Inception's
    (128, 128, 1, 7), 0.49 ms for (256, 256, 3, 3) and 1.9 ms for ResNet's (512, 512,
    3, 3); the adjoint's rotated, channel-swapped W' copied first as much again.)"""
    c_dst, c_src_g, kh, kw = weight.shape
    nblk = -(-(c_dst // groups) // cb)
    packed = aligned_empty((groups, nblk, c_src_g, kh, kw, cb), weight.dtype)
    _PACK[_copy_parallel(True, weight)](weight, packed)
    return packed.reshape(-1), nblk  # (G*blocks*C_src/G*KH*KW*cb,)


def scatter_block(channels: int) -> int:
    """Input channels per tile of :func:`scatter_input_grad` for ``channels`` per group:
    the width of :data:`SCATTER_BLOCKS` that pads the fewest (ties: the wider)."""
    return min(SCATTER_BLOCKS, key=lambda cb: (-(-channels // cb) * cb, -cb))


def correlate(src, weight, out_shape, pad_top, pad_left, dilation, groups,
              parallel: bool, bias=None) -> np.ndarray:
    """Unit-stride cross-correlation of ``src`` placed in a zero plane with ``weight``,
    plus ``bias`` (added as the result is copied out of the wide rows).

    Parameters
    ----------
    src : ndarray of shape (N, C_src, h, w)
    weight : ndarray of shape (C_dst, C_src/groups, KH, KW)
    out_shape : (OH, OW)
    pad_top, pad_left : int
        Where src's pixel (0, 0) sits in the plane (negative: src is cropped).
    bias : ndarray of shape (C_dst,), optional

    Returns
    -------
    ndarray of shape (N, C_dst, OH, OW):
    ``out[b, o, i, j] = sum_{c, u, v} weight[o, c, u, v] * plane[b, c, i + u*D_h, j + v*D_w]``
    (channels within a group).
    """
    n, c_src = src.shape[:2]
    c_dst, _, kh, kw = weight.shape
    (oh, ow), (dh, dw) = out_shape, dilation
    wp = ow + dw * (kw - 1)  # pitch: the plane's width
    hp = oh + dh * (kh - 1)
    pb = tile_pixels(src.dtype)
    ntiles = -(-oh * wp // pb)
    offs = np.array([u * dh * wp + v * dw for u in range(kh) for v in range(kw)],
                    dtype=np.int64)  # (KH*KW,)
    plane_len = max(hp * wp, ntiles * pb + int(offs[-1]))  # the last tile reads this far
    planes = scratch("tiled planes", (n, c_src, plane_len), src.dtype)
    _PLACE[_copy_parallel(parallel, planes)](src, planes, wp, pad_top, pad_left, hp)
    wt, nblk = _weight_tiles(weight, groups)
    out = scratch("tiled out", (n, groups * nblk * CB, ntiles * pb), src.dtype)  # wide rows
    args = (planes.reshape(-1), wt, offs, out, c_src // groups, groups, nblk, plane_len,
            ntiles)
    kernel = _KERNELS[pb][parallel]
    _compile(kernel, args)
    kernel(*args)
    y = output((n, c_dst, oh, ow), src.dtype)
    bias = np.empty(0, dtype=src.dtype) if bias is None else bias
    _CROP[_copy_parallel(parallel, out)](out, y, 0, wp, groups, nblk * CB, bias)
    return y


def weight_grad(x, dz, kernel_size, pad_top, pad_left, dilation, groups,
                parallel: bool) -> np.ndarray:
    """Weight gradient of a unit-stride convolution, register-tiled.

    ``dW[o, c, u, v] = sum_{b, i, j} dz[b, o, i, j] * plane[b, c, i + u*D_h, j + v*D_w]``
    (formula 17.3 (11)), where plane is x zero-padded (pad_top, pad_left, and whatever
    the output size needs on the far sides). Partial sums are kept per lane of
    LANES output positions (:data:`WEIGHT_LANES`) and added up (in float64) at the end.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    dz : ndarray of shape (N, C_out, OH, OW)
    kernel_size : (KH, KW)

    Returns
    -------
    ndarray of shape (C_out, C_in/groups, KH, KW)
    """
    n, c_in = x.shape[:2]
    _, c_out, oh, ow = dz.shape
    (kh, kw), (dh, dw) = kernel_size, dilation
    c_out_g, c_in_g = c_out // groups, c_in // groups
    nblk = -(-c_out_g // CB)
    wp = ow + dw * (kw - 1)
    hp = oh + dh * (kh - 1)
    lanes = weight_lanes(x.dtype)
    dz_len = -(-oh * wp // lanes) * lanes
    taps = [u * dh * wp + v * dw for u in range(kh) for v in range(kw)]
    pairs = -(-len(taps) // KB)
    # (pairs*KB,): spare taps repeat the last one, and their sums are dropped
    offs = np.array(taps + [taps[-1]] * (pairs * KB - len(taps)), dtype=np.int64)
    plane_len = max(hp * wp, dz_len + int(offs[-1]))
    xplanes = scratch("tiled planes", (n, c_in, plane_len), x.dtype)
    _PLACE[_copy_parallel(parallel, xplanes)](x, xplanes, wp, pad_top, pad_left, hp)
    if c_out_g % CB:  # pad each group to whole blocks of zero dZ planes
        padded = np.zeros((n, groups, nblk * CB, oh, ow), dtype=dz.dtype)
        padded[:, :, :c_out_g] = dz.reshape(n, groups, c_out_g, oh, ow)
        dz = padded.reshape(n, groups * nblk * CB, oh, ow)
    dzplanes = scratch("tiled dz planes", (n, groups * nblk * CB, dz_len), dz.dtype)
    # junk columns and tail are 0
    _PLACE[_copy_parallel(parallel, dzplanes)](dz, dzplanes, wp, 0, 0, oh)
    acc = np.zeros((groups * nblk * c_in_g, pairs, CB * KB * lanes), dtype=x.dtype)
    args = (xplanes.reshape(-1), dzplanes.reshape(-1), offs, acc, c_in_g, groups, nblk,
            plane_len, dz_len, n)
    kernel = _WEIGHT_KERNELS[lanes][parallel]
    _compile(kernel, args)
    kernel(*args)
    sums = acc.reshape(groups, nblk, c_in_g, pairs, CB, KB, lanes).sum(axis=-1, dtype=np.float64)
    sums = sums.transpose(0, 1, 4, 2, 3, 5).reshape(groups, nblk * CB, c_in_g, pairs * KB)
    return sums[:, :c_out_g, :, :kh * kw].reshape(c_out, c_in_g, kh, kw).astype(x.dtype)


def scatter_input_grad(dz, weight, input_size, padding, dilation, groups,
                       parallel: bool) -> np.ndarray:
    """Input gradient of a unit-stride convolution by scattering, register-tiled.

    ``dX`` padded = sum over taps k of ``W[:, :, k].T @ dZ`` shifted by the tap's offset
    (formulas 17.3 (5)-(9)): every multiply-add meets a real dZ value, where the
    rotated correlation (:func:`correlate` on padded dZ) also multiplies the zeros
    around dZ. Worth it when that padding is wide relative to dZ (LeNet's 5x5 layers).
    The junk columns of dZ's wide rows are zero and meet W as ``0 * w``: finite
    weights only.

    Parameters
    ----------
    dz : ndarray of shape (N, C_out, OH, OW)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)
    input_size : (H, W)
    padding : (top, bottom, left, right)

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    n, c_out, oh, _ = dz.shape
    _, c_in_g, kh, kw = weight.shape
    (h, w), (top, bottom, left, right), (dh, dw) = input_size, padding, dilation
    c_out_g = c_out // groups
    wp, hp = w + left + right, h + top + bottom
    pb = tile_pixels(dz.dtype)
    ntiles = -(-oh * wp // pb)
    dz_len = ntiles * pb
    offs = np.array([u * dh * wp + v * dw for u in range(kh) for v in range(kw)],
                    dtype=np.int64)  # (KH*KW,)
    plane_len = max(hp * wp, dz_len + int(offs[-1]))  # the last tile writes this far
    dzplanes = scratch("tiled dz planes", (n, c_out, dz_len), dz.dtype)
    _PLACE[_copy_parallel(parallel, dzplanes)](dz, dzplanes, wp, 0, 0, oh)  # junk is 0
    # the forward's tiles of W with input and output channels swapped in each group:
    # (G*C_in/G, C_out/G, KH, KW) -> (G*blocks*C_out/G*KH*KW*CB,), blocks of input channels
    swapped = weight.reshape(groups, c_out_g, c_in_g, kh, kw).transpose(0, 2, 1, 3, 4)
    cb = scatter_block(c_in_g)
    wt, nblk = _weight_tiles(swapped.reshape(groups * c_in_g, c_out_g, kh, kw), groups, cb)
    acc = scratch("tiled out", (n, groups * nblk * cb, plane_len), dz.dtype)  # padded dX
    args = (dzplanes.reshape(-1), wt, offs, acc.reshape(-1), c_out_g, groups, nblk, dz_len,
            plane_len, ntiles, n)
    kernel = _SCATTER_KERNELS[cb, pb][parallel]
    _compile(kernel, args)
    kernel(*args)
    dx = output((n, groups * c_in_g, h, w), dz.dtype)
    _CROP[_copy_parallel(parallel, acc)](acc, dx, top * wp + left, wp, groups, nblk * cb,
                                         np.empty(0, dtype=dz.dtype))
    return dx
