"""Implicit GEMM: im2col's products with the column matrix never built (the jit
algorithm's path, in float32, for strided or junk-heavy layers with 16 or more output
channels per group, and strided ones from 4: :func:`npconv.algorithms.jit.implicit`).

14.4 writes the forward pass as one GEMM, ``Y (C_out, P) = W (C_out, K) @ cols (K, P)``
over the P = N*OH*OW output pixels and the K = C_in/G*KH*KW (channel, tap) pairs;
:mod:`npconv.algorithms.im2col` copies ``cols`` out of x first and hands the product to
BLAS. Here the product reads ``cols`` where it lies: column p, row k of ``cols`` is the
padded input at ``pbase[p] + offs[k]``, with

* ``pbase[p]``: where output pixel p = (b, i, j) starts in the padded input,
  ``b*C_in*Hp*Wp + i*S_h*Wp + j*S_w`` (a table of P entries, cached per geometry);
* ``offs[k]``: the (channel, tap) k = (c, u, v) relative to it, ``c*Hp*Wp + u*D_h*Wp +
  v*D_w`` (K entries).

So stride, dilation and padding are all in two small tables, and every output pixel is
a real one: unlike the wide rows of :mod:`._blocked` nothing is computed and thrown
away, which is what 10x10 outputs (LeNet's second layer: 29% junk there) and strided
layers need.

The kernels are register-tiled the other way round from :mod:`._blocked`: a vector
register holds consecutive *output channels* (loaded from the weights, laid out
(blocks, K, CO)), and each input value is broadcast to it.

* forward (:func:`correlate`): a tile is CO output channels x PX output pixels
  (:data:`FORWARD_TILES`: 16 x 4 or 8 x 8 with AVX2; 32 x 8, 16 x 16 or 8 x 8 with
  AVX-512; the one that pads the layer's channels least, weighed by its speed),
  ``CO*PX`` sums in registers over all K; each k loads CO weights and PX inputs for
  ``CO*PX`` multiply-adds. A task walks K in blocks (:data:`FORWARD_K_BLOCK`) over
  several tiles in turn, so that a block's weights and inputs stay in the L1 cache.
  Where K has one tap per input channel, each k also prefetches the next tile's input
  (:data:`PREFETCH_MAX_TAPS`).
  Results go straight into y (N, C_out, OH, OW): a whole tile within one sample as PX
  consecutive pixels of each of its CO planes, transposed in registers and stored as
  vectors (:func:`npconv._numba.store_transposed`).
* grad_weight (:func:`weight_grad`): formula 17.3 (11), ``dW (C_out, K) = dZ (C_out, P)
  @ cols.T``, a GEMM whose long dimension is the pixels. A tile is :data:`WCO` output
  channels (:data:`WIDE_WCO` with AVX-512) x :data:`WKT` (channel, tap) pairs
  (:func:`weight_tile_pairs`); each pixel loads WCO values of dZ (laid out pixel-major,
  (P, C_out), one copy) and WKT inputs. The pixels are cut into
  :data:`SLICES` fixed slices (partial sums, added up in float64 in a fixed order, so
  the result does not depend on the thread count), and each slice walks them in chunks
  whose dZ (:data:`CHUNK_BYTES`) stays in the L1 cache while every tile passes over
  them.

Both run a chunk of samples at a time (:func:`sample_chunk`): their copies (the padded
input, dZ pixel-major) and results then stay in the L2 cache between the copy and the
kernel.

The input gradient is not this GEMM but a correlation of dZ with W rotated by 180
degrees, its channel axes swapped (17.3.2), which the forward tiles run: for dilated and
1x1 layers as one correlation (:func:`npconv.algorithms.jit.adjoint`), for strided ones
phase by phase (:func:`input_grad_phases`: each stride phase of dX meets only some taps,
so the zero-inserted dZ of 17.3.2 is never built). The sources are generated, as in
:mod:`._blocked`, and compiled with LLVM's SLP vectoriser on, which packs the named
accumulators into vector registers.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import prange  # also the generated kernels' loops

from .. import tuning

# prefetch and store_transposed: called by the generated forward kernels
from .._numba import VECTOR_BYTES, generated, prefetch, serial_and_parallel, store_transposed  # noqa: F401
from .._scratch import aligned_empty, output, scratch
from ..spec import ConvSpec
from ._blocked import _CROP, _PLACE, _compile, _copy_parallel, _weight_tiles

# Forward tiles (output channels, pixels) by vector width (:data:`VECTOR_BYTES`), each with
# its speed relative to the widest (multiply-adds per second, measured): a layer gets
# the tile with the least time for its channels padded to whole tiles, the wider on a
# tie (:func:`forward_tile`).
# * AVX2 (32 bytes): 16 x 4 (two registers of float32 channels, 4 broadcast inputs: 8
#   multiply-adds per 6 loads), or 8 x 8 (8 per 9 loads). Measured in one process,
#   16 x 4 against 8 x 8, ms: the stride-2 ResNet layer 17-20 against 25, LeNet's
#   second layer 0.53 against 0.62-0.69, a 5x5 stride-2 layer 8.3-8.6 against
#   11-12.4, a 128-channel 3x3 layer 30 against 37. (16 x 3 and 8 x 12: LLVM's SLP
#   vectoriser left them scalar, 4-10x slower; 16 x 6 and 24 x 4 lost to register
#   allocation.)
# * AVX-512 (64 bytes, 32 registers): 32 x 8 (16 accumulators, 16 multiply-adds per 10
#   loads), 16 x 16 or 8 x 8. Measured on an AVX-512 Xeon, 32 x 8 / 16 x 16 / 8 x 8 /
#   the AVX2 16 x 4, ms: the stride-2 ResNet layer 8.1 / 10.5 / 17.6 / 11.9; the
#   dilated suite layer 2.0 / 2.2 / 2.3 / 2.1; LeNet's second layer (16 channels)
#   0.28 / 0.13 / 0.21 / 0.18; 8 channels, stride 2: 1.24 / 1.09 / 0.47 / 0.78; 24
#   channels, 5x5: 0.72 / 0.81 / 0.96 / 0.97. (32 x 12, 32 x 6 and 64 x 6: scalar,
#   30x slower.)
FORWARD_TILES = {32: {(16, 4): 1.0, (8, 8): 0.8},
                 64: {(32, 8): 1.0, (16, 16): 0.85, (8, 8): 0.5}}
WCO = 16  # weight-gradient tile: output channels x weight_tile_pairs() (channel, tap) pairs
# WKT pairs, or WIDE_WKT with AVX-512 where the tile's channels fill at most two vector
# registers (16 accumulators of 32): float32 dW 1.03-1.06x faster than with 6 on eight
# of nine layers measured on an AVX-512 Xeon (the suite's dilated, stride-2, res28 and
# LeNet layers, a 7x7 stem; the pointwise layer level), float64 LeNet's second layer
# 1.04x; but float64 tiles of 32 channels (four registers: 32 accumulators) 0.72x
WKT, WIDE_WKT = 6, 8
SLICES = 8  # fixed partial sums of the weight gradient (independent of the threads)
# A weight-gradient slice walks its pixels in chunks of dZ of about CHUNK_BYTES (every
# tile of pairs reads the chunk's dZ again, so it should stay in the L1 cache): rows of
# C_out padded to whole tiles, so 48 pixels at 128 channels in float32, 192 at 32. It
# was 128 pixels whatever the channels. dW, ms, on an AVX-512 Xeon (48 KiB of L1 data
# cache), chunks of 16 / 24 / 32 / 48 KiB: the stride-2 ResNet layer (128 channels)
# 6.9 / 6.6 / 6.5 / 7.4 (128 pixels: 7.6), res28 12.4 / 11.8 / 11.5 / 13.3 (13.8), (8,
# 64, 56, 56) with 64 3x3 kernels 6.0 / 5.8 / 5.75 / 6.8; the dilated suite layer (32
# channels) 1.07-1.09 from 12 to 32 KiB; the pointwise suite layer 0.44 from 16 to 32.
# 24 KiB keeps within 3% of the best there and leaves room in a 32 KiB L1 cache.
CHUNK_BYTES = 24 * 1024
# measured on LeNet's second layer, the stride-2 ResNet layer and a 1x1 layer: 16 x 6
# weight-gradient tiles at 65-105 GFLOP/s (16 x 4 and 8 x 8: 30-80). With AVX-512,
# layers of more than WCO output channels per group take WIDE_WCO x 6 tiles (two
# registers of channels: 12 multiply-adds per 8 loads, against 6 per 7). Measured on
# an AVX-512 Xeon, dW, 16 x 6 against 32 x 6, ms: the stride-2 ResNet layer 13.5 /
# 12.2, the dilated suite layer 2.2 / 2.05, a 7x7 stride-2 stem 3.9 / 3.7; (LeNet's
# second layer, 16 channels: 0.20 / 0.39, so it keeps 16).
WIDE_WCO = 32


# The forward kernels walk K in blocks of about FORWARD_K_BLOCK (channel, tap) pairs, each
# block over FORWARD_TILES_PER_TASK tiles in turn, their sums kept in the task's buffer
# between blocks: a block's weights (144 pairs x 32 channels: 18 KiB) and the inputs its
# tiles read stay in the L1 cache, where a tile walking all of K read both from L2 (its
# weights alone are K x 128 bytes, 72 KiB at K = 576). One thread, GFLOP/s, K walked
# whole / in blocks of 144, on an AVX-512 Xeon: (8, 64, 56, 56) with 128 3x3 kernels at
# stride 2, 144 / 186; (8, 128, 28, 28) with 128, 156 / 178; (8, 64, 56, 56) with 64,
# 158 / 189; K = 288 level (102 / 106). K below 1.5 blocks runs as one block.
FORWARD_K_BLOCK = 144
FORWARD_TILES_PER_TASK = 16
FORWARD_TASKS_PER_THREAD = 8  # fewer tiles per task where tasks would be fewer
# Where K has at most PREFETCH_MAX_TAPS taps per input channel (1x1 layers, and the
# phases of a strided layer's dX that meet one tap), every step of K reads another
# channel's plane: a block of K walks over as many pages as it has channels (128-144),
# more than the CPU's L2 streamer follows at once, so each tile's inputs came from
# further out than L2, one demand miss at a time. There the forward kernel prefetches,
# at each step of K, the input the next tile reads (3x3 kernels read 9 taps per page
# and lose 1-2% to it). Measured on an AVX-512 Xeon, ms, plain / prefetching, in one
# process: the pointwise suite layer's forward 0.395 / 0.335 and 0.431 / 0.358; the
# stride-2 ResNet layer's dX 7.23 / 6.89 (its 1-tap phase 0.26 ms a call, 198 GFLOP/s).
PREFETCH_MAX_TAPS = 1


def _forward_source(co: int, px: int, name: str, ahead: bool = False) -> str:
    """Source of the forward kernel ``name`` for a (co output channels, px pixels) tile:
    ``tpt`` tiles per task, K in blocks of ``kb`` pairs (the last block's sums go
    straight to ``out`` plus ``bias``, by ``out``'s channels; the others' to the task's
    buffer). With ``ahead``, each step of K also prefetches the input the next tile
    reads there (:data:`PREFETCH_MAX_TAPS`). The bias added as the tiles are stored,
    not to the sums in registers (that changed how LLVM's SLP vectoriser packed the
    whole tile: 3x slower on the stride-2 ResNet layer), nor afterwards, in a pass over
    y (ms, forward with a bias, in one process: the dilated suite layer 0.92-0.97
    against 1.04-1.08, the stride-2 ResNet layer 5.9 against 6.3-6.7, the pointwise
    layer 0.38-0.41 against 0.45-0.47)."""
    acc = [[f"a{c}_{p}" for p in range(px)] for c in range(co)]
    u = "np.uint64"
    size = co * px
    i4, i5 = " " * 16, " " * 20
    lines = [
        f"def {name}(planes, pbase, offs, wt, bias, out, npix, ohw, cy, gstride,",
        "        groups, nblk, kb, tpt):  # pragma: no cover - compiled",
        "    kk = offs.shape[0]",
        "    zero = out.dtype.type(0)",
        f"    ntiles = (npix + {px - 1}) // {px}",
        "    ntasks = (ntiles + tpt - 1) // tpt",
        "    for task in prange(ntasks * groups * nblk):",
        "        blk = task % nblk",
        "        g = task // nblk % groups",
        "        t0 = task // (nblk * groups) * tpt",
        "        t1 = min(ntiles, t0 + tpt)",
        "        goff = g * gstride",
        f"        wb = (g * nblk + blk) * kk * {co}",
        f"        row = (g * nblk + blk) * {co}",
        "        # the tiles' sums between blocks of K (none when K is one block)",
        f"        sums = np.empty(tpt * {size} if kk > kb else 1, dtype=out.dtype)",
        "        for k0 in range(0, kk, kb):",
        "            k1 = min(kk, k0 + kb)",
        "            for t in range(t0, t1):",
        f"                p0 = t * {px}",
        f"                part = sums[{u}((t - t0) * {size}) if kk > kb else {u}(0):]",
    ]
    # the last tile's spare pixels read the last pixel again; they are never stored
    lines += [f"{i4}b{p} = pbase[min(p0 + {p}, npix - 1)] + goff" for p in range(px)]
    if ahead:  # the next tile's last pixel (its first is in this tile's lines or that one's)
        lines += [f"{i4}bn = pbase[min(p0 + {2 * px - 1}, npix - 1)] + goff"]
    lines += [f"{i4}if k0 == 0:"]
    lines += [f"{i5}{acc[c][p]} = zero" for p in range(px) for c in range(co)]
    lines += [f"{i4}else:"]
    lines += [f"{i5}{acc[c][p]} = part[{p * co + c}]" for p in range(px) for c in range(co)]
    lines += [
        f"{i4}for k in range({u}(k0), {u}(k1)):",
        f"{i5}o = offs[k]",
        f"{i5}w = {u}(wb + k * {co})",
    ]
    lines += [f"{i5}x{p} = planes[{u}(b{p} + o)]" for p in range(px)]
    if ahead:
        lines += [f"{i5}prefetch(planes, {u}(bn + o))"]
    lines += [f"{i5}w{c} = wt[w + {u}({c})]" for c in range(co)]
    lines += [f"{i5}{acc[c][p]} += w{c} * x{p}" for p in range(px) for c in range(co)]
    lines += [f"{i4}if k1 < kk:"]
    lines += [f"{i5}part[{p * co + c}] = {acc[c][p]}" for p in range(px) for c in range(co)]
    lines += [f"{i5}continue",
              f"{i4}s = p0 // ohw  # sample and pixel of the tile's first pixel",
              f"{i4}r = p0 - s * ohw"]
    tile = ", ".join("(" + ", ".join(acc[c][p] for c in range(co)) + ",)" for p in range(px))
    lines += [
              # a whole tile in one sample: each plane's PX pixels side by side, stored
              # as vectors after a transpose in registers (:func:`store_transposed`).
              # Stored pixel by pixel, as below, they went out one float at a time:
              # forward 8% slower on the dilated suite layer and the stride-2 ResNet
              # layer, AVX-512 and AVX2 alike. Stored plane by plane, LLVM's SLP
              # vectoriser transposed them itself, with 264 shuffles for a 32 x 8 tile.
              f"{i4}if p0 + {px - 1} < npix and r + {px - 1} < ohw:",
              f"{i5}store_transposed(out, {u}((s * cy + row) * ohw + r), {u}(ohw), bias, row,",
              f"{i5}                 ({tile},))",
              f"{i5}continue"]
    lines += [f"{i4}c{c} = bias[row + {c}]" for c in range(co)]
    for p in range(px):
        lines += [f"{i4}if p0 + {p} < npix:",
                  f"{i5}o = {u}((s * cy + row) * ohw + r)"]
        lines += [f"{i5}out[o + {u}({c} * ohw)] = {acc[c][p]} + c{c}" for c in range(co)]
        lines += [f"{i4}r += 1",
                  f"{i4}if r == ohw:",
                  f"{i5}r = 0",
                  f"{i5}s += 1"]
    return "\n".join(lines) + "\n"


def forward_blocking(kk: int, tiles: int, threads: int) -> tuple[int, int]:
    """(pairs per block of K, tiles per task) for K = ``kk`` pairs and ``tiles`` tasks
    of one tile each (tiles x groups x channel blocks) on ``threads`` threads: blocks
    of about :data:`FORWARD_K_BLOCK` (K below 1.5 of them: one block), and up to
    :data:`FORWARD_TILES_PER_TASK` tiles per task, fewer where that would leave fewer
    than :data:`FORWARD_TASKS_PER_THREAD` tasks per thread."""
    blocks = max(1, int(kk / FORWARD_K_BLOCK + 0.5))
    kb = -(-kk // blocks)
    tpt = max(1, min(FORWARD_TILES_PER_TASK, tiles // (FORWARD_TASKS_PER_THREAD * threads)))
    return kb, tpt


def _weight_source(co: int, kt: int, name: str) -> str:
    """Source of the weight-gradient kernel ``name`` for a (co output channels, kt
    pairs) tile."""
    acc = [[f"a{c}_{j}" for j in range(kt)] for c in range(co)]
    u = "np.uint64"
    i4, i5, i6 = " " * 16, " " * 20, " " * 24
    lines = [
        f"def {name}(planes, pbase, offs, dzt, part, npix, per, chunk, gstride,",
        "        nblk, fresh):  # pragma: no cover - compiled",
        f"    nkt = offs.shape[0] // {kt}",
        "    cp = dzt.shape[0] // npix",
        "    zero = part.dtype.type(0)",
        "    for s in prange(part.shape[0]):",
        "        if fresh:  # the slice's sums start at zero, written here, by its task",
        "            part[s, :, :, :] = zero",
        "        p_hi = min(npix, (s + 1) * per)",
        "        for c0 in range(s * per, p_hi, chunk):",
        "            c1 = min(p_hi, c0 + chunk)",
        "            for gt in range(part.shape[1]):  # (group, block of pairs)",
        "                g = gt // nkt",
        "                t = gt - g * nkt",
    ]
    lines += [f"{i4}o{j} = offs[t * {kt} + {j}] + g * gstride" for j in range(kt)]
    lines += [f"{i4}for blk in range(nblk):"]
    lines += [f"{i5}{a} = zero" for row in acc for a in row]
    lines += [
        f"{i5}col = (g * nblk + blk) * {co}",
        # unsigned: a signed p made every pbase[p] test for a negative index (three
        # more instructions in the pixel loop; dW 3-8% slower with AVX-512, 1-5% AVX2)
        f"{i5}for p in range({u}(c0), {u}(c1)):",
        f"{i6}b = pbase[p]",
        f"{i6}d = p * {u}(cp) + {u}(col)",
    ]
    lines += [f"{i6}d{c} = dzt[d + {u}({c})]" for c in range(co)]
    lines += [f"{i6}x{j} = planes[{u}(b + o{j})]" for j in range(kt)]
    lines += [f"{i6}{acc[c][j]} += d{c} * x{j}" for j in range(kt) for c in range(co)]
    lines += [f"{i5}q = part[s, gt, blk]"]
    lines += [f"{i5}q[{j * co + c}] += {acc[c][j]}" for j in range(kt) for c in range(co)]
    return "\n".join(lines) + "\n"


# one (serial, parallel) pair per tile of either width (so that the tests run every
# tile on any machine), with and without the prefetches, each its own function (and
# Numba cache entry)
_FORWARD = {
    (co, px, ahead): serial_and_parallel(
        generated(_forward_source(co, px, name, ahead), name, globals()),
        fastmath={"contract"})
    for co, px in sorted({tile for tiles in FORWARD_TILES.values() for tile in tiles})
    for ahead in (False, True)
    for name in [f"implicit_correlate{co}x{px}" + ("_ahead" if ahead else "")]
}


def forward_kernel(co: int, px: int, taps: int, parallel: bool):
    """The compiled forward kernel of a (co, px) tile for K made of ``taps`` taps per
    input channel: the one that prefetches (:data:`PREFETCH_MAX_TAPS`) or the plain one."""
    return _FORWARD[co, px, taps <= PREFETCH_MAX_TAPS][parallel]


def forward_tile(c_out_g: int, vector_bytes: int | None = None) -> tuple[int, int]:
    """The forward tile (output channels, pixels) for ``c_out_g`` channels per group:
    the least time for the channels padded to whole tiles (:data:`FORWARD_TILES`), for
    ``vector_bytes`` (None: this CPU's)."""
    tiles = FORWARD_TILES[vector_bytes or VECTOR_BYTES]
    return min(tiles, key=lambda t: (-(-c_out_g // t[0]) * t[0] / tiles[t], -t[0]))


_WEIGHT = {
    (co, kt): serial_and_parallel(
        generated(_weight_source(co, kt, f"implicit_weight_grad{co}x{kt}"),
                  f"implicit_weight_grad{co}x{kt}", globals()), fastmath={"contract"})
    for co in (WCO, WIDE_WCO) for kt in (WKT, WIDE_WKT)
}


def weight_tile_pairs(wco: int, itemsize: int, vector_bytes: int | None = None) -> int:
    """(channel, tap) pairs per weight-gradient tile of ``wco`` channels of ``itemsize``
    bytes: :data:`WIDE_WKT` with AVX-512 where the channels fill at most two vector
    registers, else :data:`WKT`."""
    vector = vector_bytes or VECTOR_BYTES
    return WIDE_WKT if vector >= 64 and wco * itemsize <= 2 * vector else WKT


def weight_tile_channels(c_out_g: int, vector_bytes: int | None = None) -> int:
    """Output channels per weight-gradient tile for ``c_out_g`` channels per group:
    :data:`WCO`, or :data:`WIDE_WCO` with AVX-512 for more than WCO channels."""
    wide = (vector_bytes or VECTOR_BYTES) >= 64 and c_out_g > WCO
    return WIDE_WCO if wide else WCO


PIXEL_BLOCK = 64  # pixels per task of the pixel-major copy


def _pixel_major_source(lanes: int, name: str) -> str:
    """Source of ``name(dz, dzt, sums)``: dzt[b, t, g, c] = dz[b, g, c, t], and 0 for
    each group's padding channels c >= C_out/G: dZ (N, G, C_out/G, OH*OW) laid out
    pixel-major for the weight gradient, one task per :data:`PIXEL_BLOCK` pixels of a
    sample. Blocks of ``lanes`` channels x ``lanes`` pixels (a vector register's lanes)
    are loaded as rows of dZ and stored as rows of dzt through a transpose in registers
    (:func:`npconv._numba.store_transposed` without a bias); the channels and pixels past
    whole blocks are copied value by value. Copied value by value throughout, pixel by
    pixel, dZ's lines were read a value at a time: ms, on an AVX-512 Xeon, two threads,
    value by value / blocks, the dilated suite layer's dZ (16, 32, 32, 32) 0.12 / 0.05;
    the stride-2 ResNet layer's (16, 128, 28, 28) level (0.30 / 0.31: it waits on
    memory). With ``sums`` (tasks, G, C_out/G; else empty) each task also sums its
    pixels of dZ per channel, in float64, pixel by pixel: the bias gradient's parts
    (formula 17.3.6), read from the rows just written (in the cache), all of a row's
    channels at once. (Summed line by line from dZ, each sum a chain of dependent
    additions, they took as long as the copy: ms, copy + sums / copy alone, on an
    AVX-512 Xeon: 4 samples of the stride-2 ResNet layer's dZ 0.12 / 0.058, then 0.072;
    the dilated suite layer's 0.195 / 0.11, then 0.15.)"""
    u = "np.uint64"
    rows = ", ".join("(" + ", ".join(f"src[{u}(a + {i} * ohw + {t})]" for t in range(lanes))
                     + ",)" for i in range(lanes))
    return "\n".join([
        f"def {name}(dz, dzt, sums):  # pragma: no cover - compiled",
        "    n, groups, cog, ohw = dz.shape",
        "    cp = dzt.shape[3]",
        "    src = dz.reshape(-1)",
        "    dst = dzt.reshape(-1)",
        f"    whole = cog - cog % {lanes}  # channels in whole blocks",
        f"    nb = (ohw + {PIXEL_BLOCK - 1}) // {PIXEL_BLOCK}",
        "    for task in prange(n * nb):",
        "        b = task // nb",
        f"        t0 = task % nb * {PIXEL_BLOCK}",
        f"        t1 = min(ohw, t0 + {PIXEL_BLOCK})",
        f"        tv = t0 + (t1 - t0) // {lanes} * {lanes}  # pixels in whole blocks",
        "        for g in range(groups):",
        f"            for c0 in range(0, whole, {lanes}):",
        f"                for t in range(t0, tv, {lanes}):",
        "                    a = ((b * groups + g) * cog + c0) * ohw + t",
        f"                    store_transposed(dst, {u}(((b * ohw + t) * groups + g) * cp + c0),",
        f"                                     {u}(groups * cp), None, 0, ({rows},))",
        "            for t in range(t0, t1):",
        "                row = dzt[b, t, g]",
        "                for c in range(0 if t >= tv else whole, cog):",
        "                    row[c] = dz[b, g, c, t]",
        "                for c in range(cog, cp):",
        "                    row[c] = 0",
        "        if sums.shape[0]:",
        "            for g in range(groups):",
        "                total = np.zeros(cog)  # the same order as a line's sum: t ascending",
        "                for t in range(t0, t1):",
        "                    row = dzt[b, t, g]",
        "                    for c in range(cog):",
        "                        total[c] += row[c]",
        "                for c in range(cog):",
        "                    sums[task, g, c] = total[c]",
    ]) + "\n"


def _weight_sums(part, dw, wco, kt):  # pragma: no cover - compiled
    """dw[g, o, k] = the sum over the slices s of part[s, g*nkt + k // kt, o // wco,
    (k % kt)*wco + o % wco], in float64, s in order: the weight gradient's partial sums
    (slices, G*nkt, blocks, kt*wco) added up and laid out as (G, C_out/G, K), one task
    per block of kt pairs (its sums are contiguous in each slice). NumPy's float64 sum
    over the slices and the transposing copy after it took 0.33 ms of the stride-2
    ResNet layer's 6.9 ms dW, single-threaded."""
    slices, gt, nblk, width = part.shape
    groups, cog, kk = dw.shape
    nkt = gt // groups
    for task in prange(gt):
        g = task // nkt
        k0 = task % nkt * kt
        total = np.zeros((nblk, width), dtype=np.float64)
        for s in range(slices):
            src = part[s, task]
            for blk in range(nblk):
                for i in range(width):
                    total[blk, i] += src[blk, i]
        for blk in range(nblk):
            for lane in range(min(wco, cog - blk * wco)):
                row = dw[g, blk * wco + lane]
                for j in range(min(kt, kk - k0)):
                    row[k0 + j] = total[blk, j * wco + lane]


_WEIGHT_SUMS = serial_and_parallel(_weight_sums)
# numpy's transposing copy runs on one thread: it took 0.26 ms of the dilated suite
# layer's 1.76 ms dW (the pixel-major kernel, value by value: 0.15) and 0.63 of the
# stride-2 ResNet layer's 10.2 (0.28)
_PIXEL_MAJOR = {
    lanes: serial_and_parallel(generated(_pixel_major_source(lanes, name), name, globals()))
    for lanes in (4, 8, 16)  # every width on any machine, for the tests
    for name in [f"pixel_major{lanes}"]
}


def pixel_major_kernel(itemsize: int, parallel: bool):
    """The compiled pixel-major copy (:func:`_pixel_major_source`) whose blocks are one
    vector register of ``itemsize``-byte values (:data:`VECTOR_BYTES`) wide."""
    return _PIXEL_MAJOR[min(16, VECTOR_BYTES // itemsize)][parallel]


@functools.lru_cache(maxsize=32)
def pixel_table(spec: ConvSpec) -> np.ndarray:
    """``pbase`` (N*OH*OW,): where each output pixel's window starts in the padded
    input (N, C_in, Hp, Wp), flattened. Cached per geometry: never written to."""
    plane = spec.hp * spec.wp
    b = np.arange(spec.n, dtype=np.int64).reshape(-1, 1, 1) * (spec.c_in * plane)
    i = np.arange(spec.oh, dtype=np.int64).reshape(1, -1, 1) * (spec.stride[0] * spec.wp)
    j = np.arange(spec.ow, dtype=np.int64).reshape(1, 1, -1) * spec.stride[1]
    # left writeable: Numba compiles loads from a read-only array into slower code
    # (measured: the weight-gradient kernel 1.1-1.8x slower), and only this module uses it
    return (b + i + j).reshape(-1)  # (N*OH*OW,)


@functools.lru_cache(maxsize=32)
def _offsets(spec: ConvSpec, multiple: int = 1) -> np.ndarray:
    """``offs`` (K rounded up to ``multiple``,): each (channel, tap) of one group relative
    to a pixel's window, in the weight's (c, u, v) order; the spare entries repeat the
    last one (their sums are dropped). Cached per geometry (about 30 us to build, a
    tenth of LeNet's forward kernel) and, like :func:`pixel_table`, never written to."""
    plane = spec.hp * spec.wp
    (dh, dw) = spec.dilation
    c = np.arange(spec.c_in_g, dtype=np.int64).reshape(-1, 1, 1) * plane
    u = np.arange(spec.kh, dtype=np.int64).reshape(1, -1, 1) * (dh * spec.wp)
    v = np.arange(spec.kw, dtype=np.int64).reshape(1, 1, -1) * dw
    offs = (c + u + v).reshape(-1)  # (K,)
    spare = -len(offs) % multiple
    return np.concatenate([offs, np.full(spare, offs[-1], dtype=np.int64)])


def _planes(x: np.ndarray, spec: ConvSpec, parallel: bool) -> np.ndarray:
    """x (some samples of the layer's input) zero-padded to (samples, C_in, Hp, Wp),
    flattened (x itself when there is no padding)."""
    if not any(spec.padding):
        return x.reshape(-1)
    planes = scratch("implicit planes", (x.shape[0], spec.c_in, spec.hp * spec.wp), x.dtype)
    _PLACE[_copy_parallel(parallel, planes)](x, planes, spec.wp, spec.padding[0],
                                             spec.padding[2], spec.hp)
    return planes.reshape(-1)


def correlate(x: np.ndarray, weight: np.ndarray, spec: ConvSpec, parallel: bool,
              bias: np.ndarray | None = None) -> np.ndarray:
    """y = x (*) W + bias (14.4's im2col product, with the column matrix read in place).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), C-contiguous
    weight : ndarray of shape (C_out, C_in/groups, KH, KW), of any strides (packed into
        tiles: :func:`._blocked._weight_tiles`)
    bias : ndarray of shape (C_out,), optional

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW)
    """
    co, px = forward_tile(spec.c_out_g)
    wt, nblk = _weight_tiles(weight, spec.groups, co)  # (G*blocks*K*co,)
    ohw = spec.oh * spec.ow
    cy = spec.groups * nblk * co  # y's channels, each group's padded to whole tiles
    # the tiles are y's own channels: write y directly
    exact = spec.c_out_g % co == 0
    y = output(spec.y_shape, x.dtype)
    offs = _offsets(spec)
    kernel = forward_kernel(co, px, spec.kh * spec.kw, parallel)
    # the bias by y's channels (each group's padded to whole tiles), added as the tiles
    # are stored: zeros without one (the sums start from +0.0, so adding +0.0 changes
    # nothing, not even a zero's sign)
    tile_bias = aligned_empty((spec.groups, nblk * co), x.dtype, zero=True)
    if bias is not None:
        tile_bias[:, :spec.c_out_g] = bias.reshape(spec.groups, spec.c_out_g)
    threads = numba.get_num_threads() if parallel else 1
    per = sample_chunk(spec.n, sample_bytes(spec, "forward", x.itemsize),
                       SAMPLE_CHUNK_BYTES * threads)
    for s0 in range(0, spec.n, per):
        s1 = min(spec.n, s0 + per)
        npix = (s1 - s0) * ohw  # the chunk's pixels: pixel_table's first samples
        out = y[s0:s1] if exact else scratch("implicit out", (s1 - s0, cy, ohw), x.dtype)
        tasks = -(-npix // px) * spec.groups * nblk  # of one tile each
        kb, tpt = forward_blocking(len(offs), tasks, threads)
        args = (_planes(x[s0:s1], spec, parallel), pixel_table(spec), offs, wt,
                tile_bias.reshape(-1), out.reshape(-1), npix, ohw, cy,
                spec.c_in_g * spec.hp * spec.wp, spec.groups, nblk, kb, tpt)
        _compile(kernel, args)
        kernel(*args)
        if not exact:  # copy y out, without each group's padding channels
            _CROP[_copy_parallel(parallel, out)](out, y[s0:s1], 0, spec.ow, spec.groups,
                                                 nblk * co, np.empty(0, dtype=x.dtype))
    return y


def _dim_phases(size: int, out: int, stride: int, dilation: int, taps: int,
                pad: int) -> tuple[list, int, int]:
    """One axis of a strided layer's dX by stride phases: for each phase i0 < stride (the
    input positions i0, i0 + S, ...), its length and its taps ``(u, q)``: tap u meets the
    phase's m-th position at dZ position m + q. With the zeros dZ needs before and after
    (most taps' q reach past its ends)."""
    phases = []
    for i0 in range(min(stride, size)):
        length = -(-(size - i0) // stride)
        hits = [(u, (i0 + pad - u * dilation) // stride) for u in range(taps)
                if (i0 + pad - u * dilation) % stride == 0]
        phases.append((i0, length, hits))
    before = max([0] + [-q for _, _, hits in phases for _, q in hits])
    after = max([0] + [n - 1 + q - (out - 1) for _, n, hits in phases for _, q in hits])
    return phases, before, after


def _phase_axes(spec: ConvSpec) -> tuple[tuple, tuple]:
    """:func:`_dim_phases` of ``spec``'s rows and of its columns."""
    return (_dim_phases(spec.h, spec.oh, spec.stride[0], spec.dilation[0], spec.kh,
                        spec.padding[0]),
            _dim_phases(spec.w, spec.ow, spec.stride[1], spec.dilation[1], spec.kw,
                        spec.padding[2]))


def padded_grad_shape(spec: ConvSpec) -> tuple[int, int]:
    """(Hp, Wp): dZ with the zeros :func:`input_grad_phases` pads it with."""
    (_, top, bottom), (_, left, right) = _phase_axes(spec)
    return spec.oh + top + bottom, spec.ow + left + right


@functools.lru_cache(maxsize=32)
def _phase_tables(spec: ConvSpec) -> tuple:
    """The geometry of :func:`input_grad_phases` (cached per spec, never written to):
    dZ's padding (top, left, Hp, Wp); each stride phase as (i0, j0, its rows and columns
    m x mw, the kernel rows and columns it meets (none: its dX is zero), pbase (its
    pixels' windows in padded dZ, N*m*mw) and offs (each (channel, tap) relative to a
    window, in W's (o, u, v) order))."""
    (rows, top, _), (cols, left, _) = _phase_axes(spec)
    hp, wp = padded_grad_shape(spec)
    n = np.arange(spec.n, dtype=np.int64).reshape(-1, 1, 1) * (spec.c_out * hp * wp)
    c = np.arange(spec.c_out_g, dtype=np.int64).reshape(-1, 1, 1) * (hp * wp)
    phases = []
    for i0, m, row_hits in rows:
        for j0, mw, col_hits in cols:
            i = np.arange(m, dtype=np.int64).reshape(1, -1, 1) * wp
            j = np.arange(mw, dtype=np.int64).reshape(1, 1, -1)
            u = np.array([q + top for _, q in row_hits], dtype=np.int64).reshape(1, -1, 1)
            v = np.array([q + left for _, q in col_hits], dtype=np.int64).reshape(1, 1, -1)
            taps = [u for u, _ in row_hits], [v for v, _ in col_hits]
            phases.append((i0, j0, m, mw, *taps, (n + i + j).reshape(-1),
                           (c + u * wp + v).reshape(-1), _phase_weights(spec, *taps)))
    return (top, left, hp, wp), phases


def _phase_weights(spec: ConvSpec, rows: list, cols: list) -> np.ndarray:
    """Where each entry of a phase's packed weights (:func:`._blocked._weight_tiles` of
    W's taps ``rows`` x ``cols``, its channel axes swapped: (G, blocks, C_out/G * taps,
    co)) comes from in W flattened; W.size (a zero appended to W) for the padding
    channels of each group's last block."""
    groups, cog, cig = spec.groups, spec.c_out_g, spec.c_in_g
    co, _ = forward_tile(cig)
    nblk = -(-cig // co)
    g = np.arange(groups).reshape(-1, 1, 1, 1, 1, 1)
    ci = (np.arange(nblk).reshape(1, -1, 1, 1, 1, 1) * co
          + np.arange(co).reshape(1, 1, 1, 1, 1, -1))  # input channel of the tile's lane
    o = np.arange(cog).reshape(1, 1, -1, 1, 1, 1)
    u = np.array(rows).reshape(1, 1, 1, -1, 1, 1)
    v = np.array(cols).reshape(1, 1, 1, 1, -1, 1)
    index = (((g * cog + o) * cig + ci) * spec.kh + u) * spec.kw + v
    index = np.where(ci < cig, index, groups * cog * cig * spec.kh * spec.kw)
    return index.astype(np.int64).reshape(-1)  # (G*blocks*C_out/G*taps*co,)


def _interleave(buf, table, dx, c, h, w, cig, rpg, sh, sw):  # pragma: no cover - compiled
    """dx[b, ch, i0 + sh*m, j0 + sw*n] = phase (i0, j0)'s [b, row of ch, m, n], for the
    phases of ``table`` in (i0, j0) order: rows (offset of its (N, cy, m, mw) planes in
    ``buf``, their plane and row pitches; a phase that meets no tap points at zeros with
    pitches 0), cy = ``rpg`` planes per group. ``dx`` (N, C, h, w) is flat; one task per
    plane of it, written row by row in order (at stride 2 two phases at a time, as
    interleaved vectors)."""
    ncols = min(sw, w)
    cy = c // cig * rpg
    for task in prange(dx.shape[0] // (h * w)):
        b = task // c
        ch = task % c
        row = b * cy + ch // cig * rpg + ch % cig
        for i in range(h):
            f0 = i % sh * ncols
            m = i // sh
            d = task * h * w + i * w
            dst = dx[d:d + w]
            if ncols == 2 and sw == 2:
                sa = table[f0, 0] + row * table[f0, 1] + m * table[f0, 2]
                sb = table[f0 + 1, 0] + row * table[f0 + 1, 1] + m * table[f0 + 1, 2]
                half = w // 2
                a = buf[sa:sa + w - half]
                z = buf[sb:sb + half]
                for n in range(half):
                    dst[2 * n] = a[n]
                    dst[2 * n + 1] = z[n]
                if w % 2:
                    dst[w - 1] = a[half]
            else:
                for f in range(ncols):
                    src = table[f0 + f, 0] + row * table[f0 + f, 1] + m * table[f0 + f, 2]
                    part = buf[src:src + (w - f + sw - 1) // sw]
                    for n in range(part.shape[0]):
                        dst[f + sw * n] = part[n]


_INTERLEAVE = serial_and_parallel(_interleave)


# The forward pass and input_grad_phases run a chunk of samples at a time whose copies
# (the padded input or dZ) and results (y, or the phases' planes) come to about
# SAMPLE_CHUNK_BYTES per thread: the whole batch at once went through memory between
# the copy and the kernel (and input_grad_phases read its padded dZ once per phase and
# wrote and read back all the phases' planes). Measured on an AVX-512 Xeon (2 MiB of
# L2 cache per core), with two threads, ms, in a forward + backward step:
# * dX, whole batch / chunks of 3 / 6 / 12 MiB: the stride-2 ResNet layer (16, 64, 56,
#   56) 10.8 / 7.7 / 7.6 / 8.6; (16, 32, 112, 112) with 64 3x3 kernels 17.6 / 10.6 /
#   9.7 / 13.0; (16, 128, 28, 28) with 256 7.3 / 7.5 / 7.4 / 7.4; (32, 256, 14, 14)
#   with 128 5.4 / 5.3 / 5.4 / 5.3. One thread, 3 / 6 MiB: 15.9 / 18.1 (whole batch
#   24.4) and 18.9 / 25.3 (33.0).
# * forward and dW, whole batch / chunks of 1 / 2 / 4 / 8 samples: the stride-2 ResNet
#   layer (1.26 MB per sample) 7.0 / 7.5 / 6.9 / 6.7 / 6.8 and 9.2 / 8.2 / 7.6 / 7.8 /
#   8.7 (one thread: 13.1 / 12.3 / 12.3 / 12.6 / 12.8 and 17.4 / 14.9 / 14.7 / 15.5 /
#   17.0); (16, 32, 112, 112) (2.5 MB) 8.8 / 8.0 / 7.7 / 7.9 / 8.3 and 11.0 / 9.6 / 9.2
#   / 9.5 / 10.2; a 7x7 stride-2 stem on (8, 3, 224, 224) (3.8 MB) dW 10.4 / 9.3 / 9.5
#   / 10.3 / 10.3; the dilated suite layer (0.3 MB) 1.02 / 1.34 / 1.08 / 1.06 / 1.01
#   and 1.30 / 1.67 / 1.27 / 1.27 / 1.32.
# The forward pass and dX do not depend on the chunks (each pixel's sum runs over the
# same pairs in the same order); dW's partial sums do, so its chunks are of a fixed
# WEIGHT_SAMPLE_CHUNK_BYTES whatever the threads.
SAMPLE_CHUNK_BYTES = 3 * 2**20
WEIGHT_SAMPLE_CHUNK_BYTES = 6 * 2**20


def sample_chunk(n: int, per_sample: int, budget: int, limit: int | None = None) -> int:
    """Samples per chunk of ``n``: ``budget`` bytes of ``per_sample`` each, at most the
    workspace limit (``limit``; None: :func:`npconv.tuning.workspace_limit`), at least
    one sample; the chunks evened out."""
    limit = tuning.workspace_limit() if limit is None else limit
    per = max(1, min(budget, limit) // max(1, per_sample))
    chunks = -(-n // per)
    return -(-n // chunks)


def sample_bytes(spec: ConvSpec, op: str, itemsize: int) -> int:
    """Bytes per sample of the copies and results :func:`correlate` (``op`` "forward")
    or :func:`weight_grad` ("grad_weight") keeps while it runs a chunk: the padded
    input (none without padding), and y or dZ laid out pixel-major, their channels
    padded to whole tiles."""
    padded = spec.c_in * spec.hp * spec.wp if any(spec.padding) else 0
    if op == "forward":
        co, _ = forward_tile(spec.c_out_g)
        channels = spec.groups * -(-spec.c_out_g // co) * co
    else:
        wco = weight_tile_channels(spec.c_out_g)
        channels = spec.groups * -(-spec.c_out_g // wco) * wco
    return (padded + channels * spec.oh * spec.ow) * itemsize


def weight_sums_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes of :func:`weight_grad`'s partial sums: :data:`SLICES` of dW, its channels
    padded to whole tiles and its pairs to whole tiles of pairs."""
    wco = weight_tile_channels(spec.c_out_g)
    kt = weight_tile_pairs(wco, itemsize)
    pairs = -(-spec.c_in_g * spec.kh * spec.kw // kt) * kt
    return SLICES * spec.groups * pairs * -(-spec.c_out_g // wco) * wco * itemsize


def phase_sample_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes of :func:`input_grad_phases`'s copies per sample: the padded dZ, and the
    phases' planes (each group's input channels padded to whole forward tiles)."""
    hp, wp = padded_grad_shape(spec)
    co, _ = forward_tile(spec.c_in_g)
    cy = spec.groups * -(-spec.c_in_g // co) * co
    return (spec.c_out * hp * wp + cy * spec.h * spec.w) * itemsize


def phase_chunk(spec: ConvSpec, itemsize: int, threads: int, limit: int | None = None) -> int:
    """Samples per chunk of :func:`input_grad_phases`: :data:`SAMPLE_CHUNK_BYTES` per
    thread of :func:`phase_sample_bytes` (:func:`sample_chunk`)."""
    return sample_chunk(spec.n, phase_sample_bytes(spec, itemsize),
                        SAMPLE_CHUNK_BYTES * threads, limit)


def input_grad_phases(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec,
                      parallel: bool) -> np.ndarray:
    """dX of a strided layer, phase by phase: 17.3.2's correlation of the zero-inserted,
    padded dZ with W rotated by 180 degrees, without the zeros. The input positions of
    one stride phase (i0 + S_h*m, j0 + S_w*n) meet dZ only through the taps (u, v) with
    i0 + pad - u*D_h a multiple of S_h (and so for columns), each at a fixed shift of
    (m, n): so each phase is a unit-stride correlation of dZ with those taps of W (its
    channel axes swapped), which the forward tiles run on the implicit GEMM into the
    phase's own planes; one pass then interleaves the phases into dX. All of it runs a
    few samples at a time (:func:`phase_chunk`), so that the padded dZ and the phases'
    planes stay in the caches from one phase to the next and until the interleaving
    pass reads them. Finite weights only: the zeros around dZ meet W as 0 * w.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, OH, OW), C-contiguous
    weight : ndarray of shape (C_out, C_in/groups, KH, KW), C-contiguous

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
    """
    (top, left, hp, wp), phases = _phase_tables(spec)
    groups, cog, cig = spec.groups, spec.c_out_g, spec.c_in_g
    threads = numba.get_num_threads() if parallel else 1
    per = phase_chunk(spec, grad_output.itemsize, threads)
    co, px = forward_tile(cig)
    nblk = -(-cig // co)
    cy = groups * nblk * co  # each phase's planes per sample: each group's padded to tiles
    # each phase's (offset in buf, pitch of its planes, pitch of its rows) for one chunk;
    # the phases that meet no tap read zeros at the end of buf
    table = np.zeros((len(phases), 3), dtype=np.int64)
    total = 0
    for f, (_, _, m, mw, rows, cols, *_) in enumerate(phases):
        if rows and cols:
            table[f] = total, m * mw, mw
            total += per * cy * m * mw
    table[[not (rows and cols) for *_, rows, cols, _, _, _ in phases], 0] = total
    buf = scratch("implicit dx phases", (total + spec.w,), grad_output.dtype)
    buf[total:] = 0
    w = np.append(weight.reshape(-1), weight.dtype.type(0))  # W flattened, and a zero
    # each phase's taps, channel axes swapped, in tiles: (G*blocks*K*co,)
    packed = [np.take(w, index, out=aligned_empty(index.shape, w.dtype)) if rows and cols
              else None for *_, rows, cols, _, _, index in phases]
    zeros = aligned_empty((cy,), grad_output.dtype, zero=True)  # no bias
    dx = output(spec.x_shape, grad_output.dtype)
    for s0 in range(0, spec.n, per):
        s1 = min(spec.n, s0 + per)
        planes = scratch("implicit dz planes", (s1 - s0, spec.c_out, hp * wp),
                         grad_output.dtype)
        _PLACE[_copy_parallel(parallel, planes)](grad_output[s0:s1], planes, wp, top, left,
                                                 hp)
        for (_, _, m, mw, rows, cols, pbase, offs, _), off, wt in zip(
                phases, table[:, 0], packed, strict=True):
            if not rows or not cols:
                continue
            npix = (s1 - s0) * m * mw  # the chunk's pixels: pbase's first samples
            kb, tpt = forward_blocking(len(offs), -(-npix // px) * groups * nblk, threads)
            kernel = forward_kernel(co, px, len(rows) * len(cols), parallel)
            out = buf[off:off + npix * cy]  # (samples, cy, m*mw), flat
            args = (planes.reshape(-1), pbase, offs, wt, zeros, out, npix, m * mw, cy,
                    cog * hp * wp, groups, nblk, kb, tpt)
            _compile(kernel, args)
            kernel(*args)
        _INTERLEAVE[_copy_parallel(parallel, dx)](buf, table, dx[s0:s1].reshape(-1),
                                                  spec.c_in, spec.h, spec.w, cig, nblk * co,
                                                  *spec.stride)
    return dx


def weight_grad(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec,
                parallel: bool) -> np.ndarray:
    """dW = dZ @ cols.T (formula 17.3 (11)), with the column matrix read in place.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), C-contiguous
    grad_output : ndarray of shape (N, C_out, OH, OW)

    Returns
    -------
    ndarray of shape (C_out, C_in/groups, KH, KW)
    """
    return _weight_grad(x, grad_output, spec, parallel, False)[0]


def weight_bias_grad(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec,
                     parallel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(dW, dB): :func:`weight_grad`, and dB (formula 17.3.6) summed as dZ is laid out
    pixel-major for it, so that dZ is not read once more for the bias (in a forward +
    backward step of the stride-2 ResNet layer that read took 0.55-0.7 ms).

    Returns
    -------
    (ndarray of shape (C_out, C_in/groups, KH, KW), ndarray of shape (C_out,))
    """
    return _weight_grad(x, grad_output, spec, parallel, True)


def _slices(npix: int, chunk: int) -> int:
    """Slices of :func:`weight_grad`'s pixels (each its own partial sums) for ``npix``
    pixels walked in chunks of ``chunk``: :data:`SLICES`, fewer where the pixels make
    fewer chunks."""
    return max(1, min(SLICES, -(-npix // chunk)))


def _weight_grad(x, grad_output, spec: ConvSpec, parallel: bool, bias: bool) -> tuple:
    """(dW, dB or None) for :func:`weight_grad` and :func:`weight_bias_grad`."""
    groups, cog = spec.groups, spec.c_out_g
    ohw = spec.oh * spec.ow
    wco = weight_tile_channels(cog)
    nblk = -(-cog // wco)
    kt = weight_tile_pairs(wco, x.itemsize)
    offs = _offsets(spec, kt)
    nkt = len(offs) // kt
    chunk = max(kt, CHUNK_BYTES // (nblk * wco * x.itemsize))  # pixels (a group's dZ)
    kernel = _WEIGHT[wco, kt][parallel]
    grad_output = np.ascontiguousarray(grad_output)
    blocks = -(-ohw // PIXEL_BLOCK)  # the pixel-major copy's tasks per sample
    # dB's parts, one per task of the pixel-major copies, summed in a fixed order
    db_parts = np.empty((spec.n * blocks if bias else 0, groups, cog), dtype=np.float64)
    # samples per chunk: not by the threads, so that the sums do not depend on them
    per = sample_chunk(spec.n, sample_bytes(spec, "grad_weight", x.itemsize),
                       WEIGHT_SAMPLE_CHUNK_BYTES)
    # the slices' partial sums, as many as the first chunk (the largest) uses; the
    # kernel's tasks zero them on the first chunk (np.zeros here, on one thread, took
    # 0.05-0.09 ms of the stride-2 ResNet layer's 6.6 ms dW)
    part = scratch("implicit dw parts",
                   (_slices(per * ohw, chunk), groups * nkt, nblk, kt * wco), x.dtype)
    for s0 in range(0, spec.n, per):
        s1 = min(spec.n, s0 + per)
        npix = (s1 - s0) * ohw  # the chunk's pixels: pixel_table's first samples
        dzt = scratch("implicit dz", (s1 - s0, ohw, groups, nblk * wco), grad_output.dtype)
        pixel_major_kernel(dzt.itemsize, _copy_parallel(parallel, dzt))(
            grad_output[s0:s1].reshape(s1 - s0, groups, cog, ohw), dzt,
            db_parts[s0 * blocks:s1 * blocks])
        slices = _slices(npix, chunk)
        args = (_planes(x[s0:s1], spec, parallel), pixel_table(spec), offs,
                dzt.reshape(-1), part[:slices], npix, -(-npix // slices), chunk,
                spec.c_in_g * spec.hp * spec.wp, nblk, s0 == 0)
        _compile(kernel, args)
        kernel(*args)
    dw = np.empty(spec.weight_shape, dtype=x.dtype)
    _WEIGHT_SUMS[_copy_parallel(parallel, part)](
        part, dw.reshape(groups, cog, spec.c_in_g * spec.kh * spec.kw), wco, kt)
    return dw, db_parts.sum(axis=0).reshape(-1).astype(x.dtype) if bias else None
