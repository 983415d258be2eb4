"""Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3): a specialised algorithm
for 3x3 kernels.

Not one of the book's methods and not general: it covers 3x3 kernels with stride 1 (any
dilation, zero padding and groups, float32/float64; padding modes are applied before it
like for every algorithm; a dilated layer runs as an undilated one on its phase
sub-images, below). :func:`unsupported` says why a configuration is refused,
and ``algorithm="winograd"`` on one raises a ``ValueError`` with that reason;
``algorithm="auto"`` uses it only where it is faster (:mod:`npconv.tuning`).

The idea (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
a 2x2 block of outputs of a 3x3 correlation reads a 4x4 tile d of the padded input,
and equals ::

    y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, 4x4)

with the constant matrices below. Summed over input channels, the elementwise product
at each of the 16 tile positions xi is a matrix product over channels::

    M[xi] (C_out, tiles) = U[xi] (C_out, C_in) @ V[xi] (C_in, tiles)

so a layer's multiply-adds go to 16 GEMMs with 16 / 36 = 4 / 9 of a direct
convolution's (2.25x fewer), plus cheap, memory-bound transforms of the input tiles
(V) and the output tiles (M to y).

The backward pass is the exact adjoint of those linear maps, so it needs no second
derivation (the same pattern as the book's 17.3: dX and dW are the transposes of the
forward's matrices). With Z[xi] = A dY_tile A^T::

    dV[xi] = U[xi]^T @ Z[xi]     dX tile = B dV B^T, overlapping tiles added
    dU[xi] = Z[xi] @ V[xi]^T     dW = G^T dU G

Z and V are computed once and shared by both gradients. Numerically, the transforms
add and subtract at most 9 terms with coefficients 1 and 1/2: measured errors are of
the same order as im2col's (relative 2e-7 to 8e-7 in float32 on ResNet layers).

F(4x4, 3x3) is the same with 6x6 tiles d, 4x4 output blocks and the matrices BT4, G4
and AT4 below (the Toom-Cook construction, :func:`toom_cook`): 36 GEMMs doing 36 / 144
= 1/4 of a direct convolution's multiply-adds. Its transforms multiply by up to 8 and
divide by 15, so its rounding error is several times F(2x2)'s (measured in float32:
0.7e-6 to 3e-6 of the largest output, against 2e-7 to 8e-7), and it runs only on
float32 where :func:`npconv.set_float32_precision` allows it (the default, "high";
:func:`tile_size`).

The four transforms of each tile size (x's, y's, dY's and dX's) are generated from its
matrices (:mod:`._winograd_source`) and run over all the tiles of a plane at once,
numbered on a grid with one junk column per tile row (zero in dY's transform, so it
adds nothing to dX or dW).

Work is done in chunks of samples whose transformed tiles fit the core's cache
(:func:`_chunk`; and the workspace limit), reusing per-thread scratch buffers from
chunk to chunk. A call large enough, with at least one sample per thread, is split
between the threads by samples (:func:`npconv._workers.shares`): each thread
transforms, multiplies (single-threaded BLAS) and transforms back its own samples'
chunks, with the serial kernels and its share of the budget, and returns its part of
dU. A call that is not split (one sample, or a smaller call) splits each chunk's
batch of GEMMs instead, by the transform index xi (:func:`_matmul`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
from fractions import Fraction

import numpy as np
from numba import njit, prange

from .. import _workers, tuning
from .._numba import VECTOR_BYTES, generated, serial_and_parallel
from .._scratch import output, scratch
from ..spec import ConvSpec
from . import _winograd_source as source

# F(2x2, 3x3): y = A^T [(G g G^T) * (B^T d B)] A
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def toom_cook(m: int, r: int, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of Winograd's F(m, r) from its m + r - 2 finite interpolation points
    (and infinity), computed exactly in fractions, as float64 (Lavin and Gray, section 4;
    the construction of the Toom-Cook method).

    With n = m + r - 1: ``A^T[i, j] = a_j^i`` (the outputs as the product polynomial's
    values), ``G[j, k] = a_j^k / prod_{l != j} (a_j - a_l)`` (the filter polynomial's
    values, with Lagrange's denominators), and row j of ``B^T`` the coefficients of
    ``prod_{l != j} (x - a_l)``; the point at infinity adds the leading coefficients
    (the last row and column). Then ``y = A^T [(G g) * (B^T d)]`` is the correlation of
    d (length n) with g (length r)."""
    n = m + r - 1
    a = [Fraction(p) for p in points]
    if len(a) != n - 1 or len(set(a)) != len(a):
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points, got {points}")

    def product(roots):  # coefficients, lowest first, of prod (x - root)
        poly = [Fraction(1)]
        for root in roots:
            poly = [(poly[i - 1] if i else 0) - root * (poly[i] if i < len(poly) else 0)
                    for i in range(len(poly) + 1)]
        return poly

    at = [[a[j] ** i for j in range(n - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    g, bt = [], []
    for j in range(n - 1):
        others = a[:j] + a[j + 1:]
        denominator = np.prod([a[j] - o for o in others])
        g.append([a[j] ** k / denominator for k in range(r)])
        bt.append([*product(others), Fraction(0)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt.append(product(a))
    return tuple(np.array(x, dtype=np.float64) for x in (bt, g, at))


# F(4x4, 3x3): 4x4 outputs from 6x6 tiles, 36 products per 16 outputs (4x fewer than a
# direct convolution, against 2.25x). The points 0, 1, -1, -1/2, 2 make every entry of
# B^T and A^T a power of two times a small integer (exact), and gave 2.1e-6 to 2.3e-6
# float32 error (of the largest output) on random 64-channel tiles, against 5.6e-6 to
# 6e-6 for the usual 0, 1, -1, 2, -2 and 9e-6 with Lavin and Gray's scaling of those.
BT4, G4, AT4 = toom_cook(4, 3, (0, 1, -1, Fraction(-1, 2), 2))
G_OF = {2: G, 4: G4}

# Samples per chunk: enough that each thread's transformed tiles (each buffer) reach
# CHUNK_MIN_BYTES or the transformed weights' size, whichever is larger, and at most
# CHUNK_BYTES. Small chunks keep a chunk's tiles in the core's L2 cache between the
# transforms and the GEMMs (K is the channel count, so the GEMMs read their tiles only
# C_out or C_in times: from memory they run at half speed); the weights' size is the
# floor because each chunk's GEMMs read U (and dW's add their product into dU) whole.
# Forward / backward, ms, on an AVX-512 Xeon, chunks of all samples (32 MiB) against
# these: res56 15.9 / 28.2 against 12.4 / 25.2; res28 14.2 / 27.9 against 12.7 / 25.9;
# (32, 96, 28, 28) with 96 kernels 18.9 / 33.1 against 13.0 / 27.3; (8, 128, 56, 56)
# 20.6 / 39.0 against 18.7 / 35.0; level with 256 and 512 channels on 14x14 and 24x24
# outputs (16.2-69.7 / 36.7-145.4), where chunks of one sample were 1.1-1.3x slower
# backward.
CHUNK_MIN_BYTES = 1 << 20
CHUNK_BYTES = 32 << 20
PARALLEL_MIN_MACS = 200_000


def unsupported(spec: ConvSpec) -> str | None:
    """Why this algorithm cannot run ``spec``, or None when it can."""
    if (spec.kh, spec.kw) != (3, 3):
        return f"it needs a 3x3 kernel, got {spec.kh}x{spec.kw}"
    if spec.stride != (1, 1):
        return f"it needs stride 1, got stride {spec.stride}"
    return None


# ------------------------------------------------------------------------------ kernels
def _nonfinite(a):  # pragma: no cover - compiled
    """How many elements of the flat array ``a`` are inf or NaN."""
    count = 0
    for i in prange(a.shape[0]):
        if not np.isfinite(a[i]):
            count += 1
    return count


# nogil: the serial variants run side by side in the threads' shares (npconv._workers)
_OPTIONS = {"fastmath": {"contract"}, "nogil": True}
_NONFINITE = serial_and_parallel(_nonfinite)


def _generated(make, name: str, matrix: np.ndarray, plane: bool = True):
    """(serial, parallel) dispatchers of the generated kernel ``name``; with ``plane``,
    its plane function, ``{name}_plane``, is compiled once for both and stays a module
    global (the kernels call it by that name, also when loaded from Numba's cache).

    The names carry a digest of the generated source. Numba's disk cache is checked
    against this file's time stamp and the function's bytecode, which a change of the
    generator (another module) or of a coefficient (a constant, not bytecode) leaves
    alone, and a kernel's cache entry holds the plane function it calls: without the
    digest a stale kernel could be loaded."""
    digest = hashlib.sha256(make(name, matrix).encode()).hexdigest()[:12]
    name = f"{name}_{digest}"
    kernel = generated(make(name, matrix), name, globals())
    if plane:
        globals()[f"{name}_plane"] = njit(cache=True, **_OPTIONS)(globals()[f"{name}_plane"])
    return serial_and_parallel(kernel, **_OPTIONS)


# The transforms of each tile size, each a (serial, parallel) pair, generated from the
# matrices (:mod:`._winograd_source`): they number a plane's tiles on a th x (tw + 1)
# grid whose last column is junk, so that every pass runs over all of a plane's tiles.
# Against the hand-written F(2x2) transforms they replaced (one tile row at a time),
# measured in one process, taking turns (res56 / res28, ms): x's 8.7 -> 6.5 / 5.5 ->
# 3.5, y's 9.4 -> 5.3 / 5.2 -> 3.6, dY's 5.7 -> 5.8 / 4.3 -> 3.2, dX's 9.3 -> 7.1 /
# 7.6 -> 4.6; the junk column adds 3.6% / 7% to the GEMMs.
_KERNELS = {
    m: dict(input=_generated(source.input_tiles, f"winograd{m}_input_tiles", bt),
            output=_generated(source.output_tiles, f"winograd{m}_output_tiles", at),
            grad=_generated(source.grad_tiles, f"winograd{m}_grad_tiles", at),
            input_grad=_generated(source.input_grad_tiles, f"winograd{m}_input_grad_tiles",
                                  bt))
    for m, bt, at in ((2, BT, AT), (4, BT4, AT4))
}

# F(4x4, 3x3) only pays where a plane has enough tiles: measured against F(2x2) (both on
# the generated transforms), forward / backward, 1.2x / 1.3x faster on a 56x56 output
# with 64 channels, 1.1x / 1.06x on 28x28 with 128 (7 x 8 tiles a plane, 14% junk).
F4_MIN_SIZE = 24


def tile_size(spec: ConvSpec, dtype) -> int:
    """m of the F(m x m, 3x3) that runs ``spec`` in ``dtype``: 4 for float32 where
    :func:`npconv.set_float32_precision` allows it and the output (of each phase
    sub-image, for a dilated layer: :func:`phase_size`) is at least :data:`F4_MIN_SIZE`
    pixels a side, else 2 (float64 always)."""
    if (np.dtype(dtype) == np.float32 and tuning.get_float32_precision() == "high"
            and min(phase_size(spec)) >= F4_MIN_SIZE):
        return 4
    return 2


# ------------------------------------------------------------------------------ dilation
# A dilated 3x3 correlation is an undilated one on each phase sub-image: output pixel
# (a + D_h*i, b + D_w*j) reads padded pixels (a + D_h*(i + u), b + D_w*(j + v)), so the
# outputs of phase (a, b) (their row mod D_h, column mod D_w) are the undilated
# correlation of the padded input's phase (a, b), x_pad[a::D_h, b::D_w], with the same
# 3x3 kernel. The D_h*D_w phases are stacked along the batch, run as one undilated
# layer (no padding: each phase carries its own zeros) and put back; the phases of the
# padded input are disjoint, so dX needs no overlap-add, and dW, the undilated layer's,
# is already summed over phases and samples. Every phase has the output size of the
# largest one (phase (0, 0)); the others' extra outputs are junk, cropped (and their dY
# is zero, so they add nothing to dX or dW). The stacked copies of x and dY are about
# their size (:func:`phase_bytes`); ``auto`` runs a dilated layer here only when they
# fit the workspace limit.
def phase_size(spec: ConvSpec) -> tuple[int, int]:
    """(OH', OW'): the output size of each phase sub-image, ceil(OH / D_h) x ceil(OW /
    D_w) (the output size itself without dilation)."""
    (dh, dw) = spec.dilation
    return -(-spec.oh // dh), -(-spec.ow // dw)


def phase_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes of the stacked phases of x and dY that a dilated layer copies (0 without
    dilation)."""
    if spec.dilation == (1, 1):
        return 0
    sub = _phase_spec(spec)
    return sub.n * (sub.c_in * sub.h * sub.w + sub.c_out * sub.oh * sub.ow) * itemsize


def gemm_width(spec: ConvSpec, dtype) -> int:
    """Columns of each of the (m+2)^2 GEMMs over channels, unchunked: the tiles of all
    the samples (of all the phases, for a dilated layer), junk column included."""
    sub = _phase_spec(spec) if spec.dilation != (1, 1) else spec
    return sub.n * _tiles(sub, tile_size(spec, dtype))[2]


def _phase_spec(spec: ConvSpec) -> ConvSpec:
    """The undilated layer that runs every phase of ``spec``: batch D_h*D_w*N, inputs
    (OH' + 2) x (OW' + 2), no padding, outputs OH' x OW'."""
    (dh, dw), (ohp, owp) = spec.dilation, phase_size(spec)
    return dataclasses.replace(spec, n=dh * dw * spec.n, h=ohp + 2, w=owp + 2,
                               padding=(0, 0, 0, 0), dilation=(1, 1))


def _phase_ranges(size: int, before: int, d: int, count: int) -> list:
    """Along one axis, per phase a < d: ``(r0, r1, src)`` where phase positions r0 <= r
    < r1 hold the positions ``src`` (a slice) of an axis of ``size`` placed after
    ``before`` zeros (position a + d*r of the placed axis), or None when none does."""
    ranges = []
    for a in range(d):
        r0 = max(0, -(-(before - a) // d))  # first phase position inside the axis
        r1 = min(count, -(-(size + before - a) // d))
        start = a + d * r0 - before
        ranges.append((r0, r1, slice(start, start + d * (r1 - r0 - 1) + 1, d))
                      if r1 > r0 else None)
    return ranges


def _phase_maps(spec: ConvSpec, sub: ConvSpec, image: str) -> tuple[list, list]:
    """Row and column ranges (:func:`_phase_ranges`) between ``spec``'s x (``image`` =
    "x", placed after its padding) or y (``image`` = "y") and the phases of ``sub``."""
    (dh, dw), top, left = spec.dilation, spec.padding[0], spec.padding[2]
    if image == "x":
        return (_phase_ranges(spec.h, top, dh, sub.h), _phase_ranges(spec.w, left, dw, sub.w))
    return (_phase_ranges(spec.oh, 0, dh, sub.oh), _phase_ranges(spec.ow, 0, dw, sub.ow))


def _split(a: np.ndarray, spec: ConvSpec, sub: ConvSpec, image: str, name: str) -> np.ndarray:
    """``a`` (x (N, C_in, H, W) or dY (N, C_out, OH, OW)) as its phases stacked along the
    batch, (D_h*D_w*N, C, rows, columns) of ``sub``, zero where no pixel of ``a`` lies."""
    (dh, dw), (rows, cols) = spec.dilation, _phase_maps(spec, sub, image)
    h, w = (sub.h, sub.w) if image == "x" else (sub.oh, sub.ow)
    out = scratch(name, (dh, dw, *a.shape[:2], h, w), a.dtype)
    out[...] = 0
    for i, r in enumerate(rows):
        for j, q in enumerate(cols):
            if r is not None and q is not None:
                out[i, j, :, :, r[0]:r[1], q[0]:q[1]] = a[:, :, r[2], q[2]]
    return out.reshape(dh * dw * a.shape[0], a.shape[1], h, w)  # (D_h*D_w*N, C, h, w)


def _merge(phases: np.ndarray, spec: ConvSpec, sub: ConvSpec, image: str,
           shape: tuple) -> np.ndarray:
    """The inverse of :func:`_split`: y (``image`` "y") or dX ("x") of ``shape`` from its
    stacked phases (D_h*D_w*N, C, rows, columns); junk positions are dropped."""
    (dh, dw), (rows, cols) = spec.dilation, _phase_maps(spec, sub, image)
    phases = phases.reshape(dh, dw, shape[0], *phases.shape[1:])  # (D_h, D_w, N, C, h, w)
    out = output(shape, phases.dtype)
    for i, r in enumerate(rows):
        for j, q in enumerate(cols):
            if r is not None and q is not None:
                out[:, :, r[2], q[2]] = phases[i, j, :, :, r[0]:r[1], q[0]:q[1]]
    return out


# ------------------------------------------------------------------------------ drivers
def _tiles(spec: ConvSpec, m: int) -> tuple[int, int, int]:
    """(tile rows th, tile columns tw, tiles per sample on the grid, with its junk
    column): m x m output blocks covering (OH, OW)."""
    th, tw = -(-spec.oh // m), -(-spec.ow // m)
    return th, tw, th * (tw + 1)


def _chunk(spec: ConvSpec, channels: int, itemsize: int, m: int, share: int = 1) -> int:
    """Samples per chunk: each transformed buffer ((m+2)^2, channels, samples*tiles)
    holds about max(:data:`CHUNK_MIN_BYTES`, the transformed weights' bytes), at most
    :data:`CHUNK_BYTES`, within the workspace limit (which ``share`` threads, each
    chunking its own samples, divide)."""
    per_sample = (m + 2) ** 2 * channels * _tiles(spec, m)[2] * itemsize
    weights = (m + 2) ** 2 * spec.c_out * spec.c_in_g * itemsize  # U, and dU
    budget = min(max(CHUNK_MIN_BYTES, weights), CHUNK_BYTES,
                 tuning.workspace_limit() // 3 // share)
    return max(1, min(spec.n, budget // per_sample))


def _parallel(spec: ConvSpec) -> bool:
    return spec.flops // 2 >= PARALLEL_MIN_MACS


# The weight transforms, U = G g G^T for every 3x3 kernel g and dW = G^T dU G back, are
# generated kernels (:func:`._winograd_source.weight_tiles`) working in float64 on blocks
# of kernels. As one float64 GEMM each, (G (x) G) @ (kernels, 9)^T and its transpose,
# they took 0.75-0.9 ms each on res28's 16,384 kernels (most of it converting and
# transposing 4.7 MB of float64), against 0.15-0.25 ms; numpy's tensordot, two per
# transform, had been slower still.
_WEIGHT_KERNELS = {
    m: dict(weight=_generated(source.weight_tiles, f"winograd{m}_weight_tiles", g, False),
            weight_grad=_generated(source.weight_grad_tiles, f"winograd{m}_weight_grad_tiles",
                                   g, False))
    for m, g in G_OF.items()
}


def _transformed_weight(weight: np.ndarray, groups: int, m: int) -> np.ndarray:
    """U = G g G^T: (C_out, C_in/G, 3, 3) -> ((m+2)^2, G, C_out/G, C_in/G), in float64
    and rounded once."""
    c_out, c_in_g = weight.shape[:2]
    w = np.ascontiguousarray(weight).reshape(-1, 9)  # (pairs, 9)
    u = np.empty(((m + 2) ** 2, w.shape[0]), dtype=weight.dtype)  # ((m+2)^2, pairs)
    _WEIGHT_KERNELS[m]["weight"][_blocks_parallel(w.shape[0])](w, u)
    return u.reshape((m + 2) ** 2, groups, c_out // groups, c_in_g)


def _weight_grad(du: np.ndarray, spec: ConvSpec, m: int) -> np.ndarray:
    """dW = G^T dU G: ((m+2)^2, G, C_out/G, C_in/G) -> (C_out, C_in/G, 3, 3), in float64
    and rounded once."""
    du = np.ascontiguousarray(du).reshape((m + 2) ** 2, -1)  # ((m+2)^2, pairs)
    dw = np.empty((spec.c_out, spec.c_in_g, 3, 3), dtype=du.dtype)
    _WEIGHT_KERNELS[m]["weight_grad"][_blocks_parallel(du.shape[1])](du, dw.reshape(-1, 9))
    return dw


def _blocks_parallel(pairs: int) -> bool:
    return pairs > source.WEIGHT_BLOCK


def _finite(spec: ConvSpec, *arrays) -> bool:
    return all(a is None or _NONFINITE[_parallel(spec)](a.reshape(-1)) == 0 for a in arrays)


def _direct():
    from . import im2col

    return im2col


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """y = x (*) W, shape (N, C_out, OH, OW), by F(m x m, 3x3) tiles (module docstring;
    m from :func:`tile_size`).

    An inf or NaN in x or W: the transforms mix the values of a tile (inf - inf =
    NaN where a direct sum gives inf), so a result with any inf or NaN is recomputed
    by im2col, whose pattern of infs and NaNs is PyTorch's. A non-finite result always
    means a non-finite input tile, and the direct result has one too there.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # such a result is recomputed
        m = tile_size(spec, x.dtype)
        if spec.dilation == (1, 1):
            y = _forward(x, weight, spec, m)
        else:  # the phase sub-images as one undilated layer
            sub = _phase_spec(spec)
            y = _forward(_split(x, spec, sub, "x", "winograd phases x"), weight, sub, m)
            y = _merge(y, spec, sub, "y", spec.y_shape)
    return y if _finite(spec, y) else _direct().forward(x, weight, spec)


# A chunk's (m + 2)^2 GEMMs, one per transform index xi, are small: (C_out, C_in) @ (C_in,
# tiles of the chunk). Given all the threads, OpenBLAS splits each of them between the
# threads and makes them meet after it, (m + 2)^2 times a chunk; where the call is not
# split by samples, _matmul gives each thread its own run of xi instead, each GEMM on
# one thread (npconv._workers.run). Measured on 16 GEMMs (64, 64) @ (64, t) of float32,
# np.matmul / split by xi, ms, on an AVX-512 Xeon: t = 98 0.071 / 0.133 (BLAS on one
# thread already), 196 0.144 / 0.180, 392 0.691 / 0.314, 784 1.08 / 0.52; (128, 128) @
# (128, 196) 0.87 / 0.47, (256, 256) @ (256, 64) 1.00 / 0.62, (512, 512) @ (512, 64) 2.43
# / 2.01; OpenBLAS as Haswell (AVX2): t = 196 0.49 / 0.23, 784 1.08 / 0.70, (256, 256) @
# (256, 256) 3.32 / 2.59. So from MATMUL_SPLIT_MIN_MACS multiply-adds in a chunk's GEMMs,
# by the vector width (OpenBLAS's Haswell kernels split smaller GEMMs between threads
# than its SkylakeX ones): whole forward passes, ms, with AVX2 tiles and OpenBLAS as
# Haswell, unsplit / split from 16 / 8 million: (4, 64, 14, 14) with 64 kernels 1.13 /
# 1.12 / 0.54, (4, 48, 16, 16) 1.04 / 1.04 / 0.47, (8, 48, 10, 10) 1.01 / 1.02 / 0.45;
# on the AVX-512 Xeon from 8 million they were 12-17% slower (0.48 -> 0.54 ms).
MATMUL_SPLIT_MIN_MACS = {32: 8_000_000, 64: 16_000_000}  # by the kernels' vector bytes


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, par: bool) -> None:
    """``out = a @ b`` over the leading axis (xi) and the groups: with ``par`` and at
    least :data:`MATMUL_SPLIT_MIN_MACS` multiply-adds (for this machine's vector width),
    each thread takes a run of xi, its GEMMs on single-threaded BLAS
    (:func:`npconv._workers.run`); else one ``np.matmul``. Each GEMM is one BLAS call
    either way."""
    k = a.shape[0]
    parts = min(k, _workers.threads()) if par else 1
    least = MATMUL_SPLIT_MIN_MACS[64 if VECTOR_BYTES >= 64 else 32]
    if parts <= 1 or out.size * a.shape[-1] < least:
        np.matmul(a, b, out=out)
        return
    bounds = [k * i // parts for i in range(parts + 1)]
    _workers.run([functools.partial(np.matmul, a[lo:hi], b[lo:hi], out=out[lo:hi])
                  for lo, hi in itertools.pairwise(bounds)])


def _forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec, m: int) -> np.ndarray:
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    u = _transformed_weight(weight, spec.groups, m)  # (k, G, C_out/G, C_in/G)
    y = output(spec.y_shape, x.dtype)
    _workers.split(spec, _forward_share, x, u, y, spec, m)
    return y


def _forward_share(x, u, y, spec: ConvSpec, m: int, n_lo: int, n_hi: int, share: int):
    """Samples n_lo:n_hi of y, chunk by chunk: on all threads when ``share`` is 1, else
    on the calling thread alone (serial transforms, single-threaded BLAS)."""
    g, kernels, k = spec.groups, _KERNELS[m], (m + 2) ** 2
    par = share == 1 and _parallel(spec)
    th, tw, per_sample = _tiles(spec, m)
    top, left = spec.padding[0], spec.padding[2]
    step = _chunk(spec, max(spec.c_in, spec.c_out), x.itemsize, m, share)
    for s in range(n_lo, n_hi, step):
        nb = min(step, n_hi - s)
        t = nb * per_sample
        v = scratch("winograd v", (k, spec.c_in, t), x.dtype)
        kernels["input"][par](x[s:s + nb], v, th, tw, top, left)
        mm = scratch("winograd m", (k, g, spec.c_out_g, t), x.dtype)
        _matmul(u, v.reshape(k, g, spec.c_in_g, t), mm, par)
        kernels["output"][par](mm.reshape(k, spec.c_out, t), y[s:s + nb], th, tw)


def backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool):
    """(dX, dW) as the adjoints of the forward's maps, sharing the transformed dY (and
    the transformed x for dW) chunk by chunk; either may be skipped (None). Results
    with an inf or a NaN are recomputed by im2col, as in :func:`forward`."""
    with np.errstate(invalid="ignore", over="ignore"):  # such results are recomputed
        m = tile_size(spec, grad_output.dtype)
        if spec.dilation == (1, 1):
            dx, dw = _backward(x, weight, grad_output, spec, need_input, need_weight, m)
        else:  # the phase sub-images as one undilated layer
            sub = _phase_spec(spec)
            xs = _split(x, spec, sub, "x", "winograd phases x") if need_weight else None
            dzs = _split(grad_output, spec, sub, "y", "winograd phases dy")
            dx, dw = _backward(xs, weight, dzs, sub, need_input, need_weight, m)
            if need_input:
                dx = _merge(dx, spec, sub, "x", spec.x_shape)
    if _finite(spec, dx, dw):
        return dx, dw
    return _direct().backward(x, weight, grad_output, spec, need_input, need_weight)


def _backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool,
              m: int):
    grad_output = np.ascontiguousarray(grad_output)
    u = (_transformed_weight(weight, spec.groups, m)
         if need_input else None)  # (k, G, C_out/G, C_in/G)
    dx = output((spec.n, spec.c_in, spec.h, spec.w), grad_output.dtype) if need_input else None
    x = np.ascontiguousarray(x) if need_weight else None
    partials = _workers.split(spec, _backward_share, x, u, grad_output, dx, spec, m)
    dw = None
    if need_weight:
        du = _workers.summed(partials)  # (k, G, C_out/G, C_in/G)
        dw = _weight_grad(du, spec, m)  # (C_out, C_in/G, 3, 3)
    return dx, dw


def _backward_share(x, u, grad_output, dx, spec: ConvSpec, m: int, n_lo: int, n_hi: int,
                    share: int):
    """Samples n_lo:n_hi, chunk by chunk: their dX into ``dx`` (unless ``u`` is None) and
    their dU, returned (None when ``x`` is None: no dW). On all threads when ``share``
    is 1, else on the calling thread alone (serial transforms, single-threaded BLAS)."""
    g, cig, cog = spec.groups, spec.c_in_g, spec.c_out_g
    kernels, k = _KERNELS[m], (m + 2) ** 2
    par = share == 1 and _parallel(spec)
    th, tw, per_sample = _tiles(spec, m)
    top, left = spec.padding[0], spec.padding[2]
    du = None
    if x is not None:  # dU summed over the chunks; the first chunk's product goes straight
        # into it, the others' through part
        du = scratch("winograd du", (k, g, cog, cig), grad_output.dtype)
        part = scratch("winograd du part", (k, g, cog, cig), grad_output.dtype)
    step = _chunk(spec, max(spec.c_in, spec.c_out), grad_output.itemsize, m, share)
    for s in range(n_lo, n_hi, step):
        nb = min(step, n_hi - s)
        t = nb * per_sample
        # z is zero on the junk tiles, so they add nothing to dU or dV
        z = scratch("winograd m", (k, g, cog, t), grad_output.dtype)
        kernels["grad"][par](grad_output[s:s + nb], z.reshape(k, spec.c_out, t), th, tw)
        if du is not None:
            v = scratch("winograd v", (k, g, cig, t), x.dtype)
            kernels["input"][par](x[s:s + nb], v.reshape(k, spec.c_in, t), th, tw, top, left)
            first = s == n_lo
            _matmul(z, v.transpose(0, 1, 3, 2), du if first else part, par)  # (k, G, O/G, C/G)
            if not first:
                du += part
        if u is not None:
            dv = scratch("winograd v", (k, g, cig, t), grad_output.dtype)
            _matmul(u.transpose(0, 1, 3, 2), z, dv, par)  # (k, G, C_in/G, tiles)
            kernels["input_grad"][par](dv.reshape(k, spec.c_in, t), dx[s:s + nb], th, tw,
                                       top, left)
    return du


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dX, shape (N, C_in, H, W): the adjoint of :func:`forward` in x."""
    return backward(None, weight, grad_output, spec, True, False)[0]


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dW, shape (C_out, C_in/G, 3, 3): the adjoint of :func:`forward` in W."""
    return backward(x, None, grad_output, spec, False, True)[1]
