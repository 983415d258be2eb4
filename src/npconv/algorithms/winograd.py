"""Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3): a specialised algorithm
for 3x3 kernels.

Not one of the book's methods and not general: it covers 3x3 kernels with stride 1 and
dilation 1 (any zero padding, groups, float32/float64; padding modes are applied before
it like for every algorithm). :func:`unsupported` says why a configuration is refused,
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
(:func:`_input_tiles`) and the output tiles (:func:`_output_tiles`).

The backward pass is the exact adjoint of those linear maps, so it needs no second
derivation (the same pattern as the book's 17.3: dX and dW are the transposes of the
forward's matrices). With Z[xi] = A dY_tile A^T (:func:`_grad_tiles`)::

    dV[xi] = U[xi]^T @ Z[xi]     dX tile = B dV B^T, overlapping tiles added
    dU[xi] = Z[xi] @ V[xi]^T     dW = G^T dU G

(:func:`_input_grad_tiles` does the overlap-add).

Z and V are computed once and shared by both gradients. Numerically, the transforms
add and subtract at most 9 terms with coefficients 1 and 1/2: measured errors are of
the same order as im2col's (relative 3e-7 to 9e-7 in float32 on ResNet layers).

F(4x4, 3x3) is the same with 6x6 tiles d, 4x4 output blocks and the matrices BT4, G4
and AT4 below: 36 GEMMs doing 36 / 144 = 1/4 of a direct convolution's multiply-adds.
Its transforms multiply by up to 8 and divide by 24, so its rounding error is 10-20x
F(2x2)'s (measured in float32: 3e-6 to 1.2e-5 of the largest output, against 3e-7 to
8e-7), and it runs only on float32 where :func:`npconv.set_float32_precision` allows
it (the default, "high"; :func:`tile_size`). Its transforms are generated from the matrices
(:mod:`._winograd_source`) and run over all the tiles of a plane at once, numbered on a
grid with one junk column (zero in dY's transform, so it adds nothing to dX or dW).

Work is done in chunks of samples whose transformed tiles fit :data:`CHUNK_BYTES`
(and the workspace limit), reusing per-thread scratch buffers from chunk to chunk.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from numba import prange

from .. import tuning
from .._numba import generated, serial_and_parallel
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

CHUNK_BYTES = 32 << 20  # transformed tiles per chunk of samples (each buffer)
PARALLEL_MIN_MACS = 200_000


def unsupported(spec: ConvSpec) -> str | None:
    """Why this algorithm cannot run ``spec``, or None when it can."""
    if (spec.kh, spec.kw) != (3, 3):
        return f"it needs a 3x3 kernel, got {spec.kh}x{spec.kw}"
    if spec.stride != (1, 1):
        return f"it needs stride 1, got stride {spec.stride}"
    if spec.dilation != (1, 1):
        return f"it needs dilation 1, got dilation {spec.dilation}"
    return None


# ------------------------------------------------------------------------------ kernels
def _input_tiles(x, v, th, tw, top, left):  # pragma: no cover - compiled
    """v[xi, c, t] = (B^T d B)[xi] for every 4x4 tile d of x's zero-padded planes.

    x (nb, C, H, W) -> v (16, C, nb*th*tw); tile t = (b*th + i)*tw + j reads the padded
    rows 2i..2i+3 and columns 2j..2j+3 (x sits at row ``top``, column ``left``).
    """
    n, c, h, w = x.shape
    hp, wp = 2 * th + 2, 2 * tw + 2
    for task in prange(n * c):
        b = task // c
        ch = task % c
        plane = np.zeros((hp, wp), dtype=x.dtype)  # (2*th + 2, 2*tw + 2), zero padded
        for r in range(h):
            src = x[b, ch, r]
            dst = plane[r + top]
            for q in range(w):
                dst[left + q] = src[q]
        ev = np.empty((4, tw + 1), dtype=x.dtype)  # B^T d on the even columns
        od = np.empty((4, tw + 1), dtype=x.dtype)  # and on the odd ones
        for i in range(th):
            r0 = plane[2 * i]
            r1 = plane[2 * i + 1]
            r2 = plane[2 * i + 2]
            r3 = plane[2 * i + 3]
            for j in range(tw + 1):  # rows of B^T d, column by column
                q = 2 * j
                ev[0, j] = r0[q] - r2[q]
                ev[1, j] = r1[q] + r2[q]
                ev[2, j] = r2[q] - r1[q]
                ev[3, j] = r1[q] - r3[q]
                q += 1
                od[0, j] = r0[q] - r2[q]
                od[1, j] = r1[q] + r2[q]
                od[2, j] = r2[q] - r1[q]
                od[3, j] = r1[q] - r3[q]
            t0 = (b * th + i) * tw
            for a in range(4):  # (B^T d) B: columns 2j..2j+3 = even j, odd j, even j+1, odd j+1
                e = ev[a]
                o = od[a]
                v0 = v[4 * a, ch, t0:t0 + tw]
                v1 = v[4 * a + 1, ch, t0:t0 + tw]
                v2 = v[4 * a + 2, ch, t0:t0 + tw]
                v3 = v[4 * a + 3, ch, t0:t0 + tw]
                for j in range(tw):
                    v0[j] = e[j] - e[j + 1]
                    v1[j] = o[j] + e[j + 1]
                    v2[j] = e[j + 1] - o[j]
                    v3[j] = o[j] - o[j + 1]


def _output_tiles(m, y, th, tw):  # pragma: no cover - compiled
    """y's 2x2 blocks = A^T M A: m (16, C_out, nb*th*tw) -> y (nb, C_out, OH, OW)."""
    n, co, oh, ow = y.shape
    for task in prange(n * co):
        b = task // co
        o = task % co
        rows = np.empty((2, 2 * tw), dtype=y.dtype)
        for i in range(th):
            t0 = (b * th + i) * tw
            t1 = t0 + tw
            m0, m1, m2, m3 = m[0, o, t0:t1], m[1, o, t0:t1], m[2, o, t0:t1], m[3, o, t0:t1]
            m4, m5, m6, m7 = m[4, o, t0:t1], m[5, o, t0:t1], m[6, o, t0:t1], m[7, o, t0:t1]
            m8, m9, m10, m11 = m[8, o, t0:t1], m[9, o, t0:t1], m[10, o, t0:t1], m[11, o, t0:t1]
            m12, m13, m14, m15 = (m[12, o, t0:t1], m[13, o, t0:t1], m[14, o, t0:t1],
                                  m[15, o, t0:t1])
            y0 = rows[0]
            y1 = rows[1]
            for j in range(tw):
                p0 = m0[j] + m4[j] + m8[j]  # A^T M: row 0
                p1 = m1[j] + m5[j] + m9[j]
                p2 = m2[j] + m6[j] + m10[j]
                p3 = m3[j] + m7[j] + m11[j]
                s0 = m4[j] - m8[j] - m12[j]  # row 1
                s1 = m5[j] - m9[j] - m13[j]
                s2 = m6[j] - m10[j] - m14[j]
                s3 = m7[j] - m11[j] - m15[j]
                y0[2 * j] = p0 + p1 + p2  # (A^T M) A
                y0[2 * j + 1] = p1 - p2 - p3
                y1[2 * j] = s0 + s1 + s2
                y1[2 * j + 1] = s1 - s2 - s3
            for par in range(2):  # the last tile row or column may stick out of y
                if 2 * i + par < oh:
                    dst = y[b, o, 2 * i + par]
                    src = rows[par]
                    for q in range(ow):
                        dst[q] = src[q]


def _grad_tiles(dz, z, th, tw):  # pragma: no cover - compiled
    """z[xi, o, t] = (A g A^T)[xi] for every 2x2 block g of dz (zero past its edge).

    dz (nb, C_out, OH, OW) -> z (16, C_out, nb*th*tw): the adjoint of
    :func:`_output_tiles`.
    """
    n, co, oh, ow = dz.shape
    for task in prange(n * co):
        b = task // co
        o = task % co
        rows = np.zeros((4, 2 * tw), dtype=dz.dtype)  # A g: rows g0, g0 + g1, g0 - g1, -g1
        for i in range(th):
            g0 = dz[b, o, 2 * i]
            if 2 * i + 1 < oh:
                g1 = dz[b, o, 2 * i + 1]
                for q in range(ow):
                    rows[0, q] = g0[q]
                    rows[1, q] = g0[q] + g1[q]
                    rows[2, q] = g0[q] - g1[q]
                    rows[3, q] = -g1[q]
            else:
                for q in range(ow):
                    rows[0, q] = g0[q]
                    rows[1, q] = g0[q]
                    rows[2, q] = g0[q]
                    rows[3, q] = 0
            t0 = (b * th + i) * tw
            for a in range(4):  # (A g) A^T: columns e, e + o, e - o, -o
                r = rows[a]
                z0 = z[4 * a, o, t0:t0 + tw]
                z1 = z[4 * a + 1, o, t0:t0 + tw]
                z2 = z[4 * a + 2, o, t0:t0 + tw]
                z3 = z[4 * a + 3, o, t0:t0 + tw]
                for j in range(tw):
                    e = r[2 * j]
                    od = r[2 * j + 1]
                    z0[j] = e
                    z1[j] = e + od
                    z2[j] = e - od
                    z3[j] = -od


def _input_grad_tiles(dv, dx, th, tw, top, left):  # pragma: no cover - compiled
    """dX = the sum over tiles of B dV B^T, each added at its 4x4 place in the padded
    plane (tiles overlap by 2), cropped to x: the adjoint of :func:`_input_tiles`.

    dv (16, C_in, nb*th*tw) -> dx (nb, C_in, H, W). The padded plane is kept as its
    even and its odd columns, so every loop below runs over contiguous memory.
    """
    n, ci, h, w = dx.shape
    for task in prange(n * ci):
        b = task // ci
        c = task % ci
        even = np.zeros((2 * th + 2, tw + 1), dtype=dx.dtype)  # padded columns 0, 2, 4..
        odd = np.zeros((2 * th + 2, tw + 1), dtype=dx.dtype)  # padded columns 1, 3, 5..
        e = np.empty((4, tw + 1), dtype=dx.dtype)
        o = np.empty((4, tw + 1), dtype=dx.dtype)
        for i in range(th):
            t0 = (b * th + i) * tw
            t1 = t0 + tw
            for k in range(4):  # row k of dV B^T: columns 2j..2j+3 of tile j are
                d0 = dv[4 * k, c, t0:t1]  # d0, d1 - d2 + d3, d1 + d2 - d0, -d3
                d1 = dv[4 * k + 1, c, t0:t1]
                d2 = dv[4 * k + 2, c, t0:t1]
                d3 = dv[4 * k + 3, c, t0:t1]
                ek = e[k]
                ok = o[k]
                ek[0] = d0[0]
                ok[0] = d1[0] - d2[0] + d3[0]
                for j in range(1, tw):  # tile j's first two plus tile j-1's last two
                    ek[j] = d0[j] + d1[j - 1] + d2[j - 1] - d0[j - 1]
                    ok[j] = d1[j] - d2[j] + d3[j] - d3[j - 1]
                ek[tw] = d1[tw - 1] + d2[tw - 1] - d0[tw - 1]
                ok[tw] = -d3[tw - 1]
            for half, part in ((even, e), (odd, o)):  # B (dV B^T): rows 2i..2i+3
                p0, p1, p2, p3 = part[0], part[1], part[2], part[3]
                q0, q1, q2, q3 = half[2 * i], half[2 * i + 1], half[2 * i + 2], half[2 * i + 3]
                for j in range(tw + 1):
                    q0[j] += p0[j]
                    q1[j] += p1[j] - p2[j] + p3[j]
                    q2[j] += p1[j] + p2[j] - p0[j]
                    q3[j] -= p3[j]
        for r in range(h):
            dst = dx[b, c, r]
            src_e = even[r + top]
            src_o = odd[r + top]
            for q in range(w):
                col = q + left
                dst[q] = src_e[col // 2] if col % 2 == 0 else src_o[col // 2]


def _nonfinite(a):  # pragma: no cover - compiled
    """How many elements of the flat array ``a`` are inf or NaN."""
    count = 0
    for i in prange(a.shape[0]):
        if not np.isfinite(a[i]):
            count += 1
    return count


_OPTIONS = {"fastmath": {"contract"}}
_NONFINITE = serial_and_parallel(_nonfinite)


def _generated(make, name: str, matrix: np.ndarray):
    return serial_and_parallel(generated(make(name, matrix), name, globals()), **_OPTIONS)


# The transforms of each tile size, each a (serial, parallel) pair. F(2x2, 3x3): the
# hand-written kernels above, on a th x tw grid of tiles per sample. F(4x4, 3x3):
# generated from the matrices (:mod:`._winograd_source`), on a th x (tw + 1) grid whose
# last column is junk (it lets every pass run over all of a plane's tiles at once).
_KERNELS = {
    2: dict(input=serial_and_parallel(_input_tiles, **_OPTIONS),
            output=serial_and_parallel(_output_tiles, **_OPTIONS),
            grad=serial_and_parallel(_grad_tiles, **_OPTIONS),
            input_grad=serial_and_parallel(_input_grad_tiles, **_OPTIONS)),
    4: dict(input=_generated(source.input_tiles, "winograd4_input_tiles", BT4),
            output=_generated(source.output_tiles, "winograd4_output_tiles", AT4),
            grad=_generated(source.grad_tiles, "winograd4_grad_tiles", AT4),
            input_grad=_generated(source.input_grad_tiles, "winograd4_input_grad_tiles", BT4)),
}
_JUNK_COLUMNS = {2: 0, 4: 1}

# F(4x4, 3x3) only pays where a plane has enough tiles: measured 1.3-1.6x faster
# forward than F(2x2) on 56x56 and 28x28 outputs with 64 and 128 channels.
F4_MIN_SIZE = 24


def tile_size(spec: ConvSpec, dtype) -> int:
    """m of the F(m x m, 3x3) that runs ``spec`` in ``dtype``: 4 for float32 where
    :func:`npconv.set_float32_precision` allows it and the output is at least
    :data:`F4_MIN_SIZE` pixels a side, else 2 (float64 always)."""
    if (np.dtype(dtype) == np.float32 and tuning.get_float32_precision() == "high"
            and min(spec.oh, spec.ow) >= F4_MIN_SIZE):
        return 4
    return 2


# ------------------------------------------------------------------------------ drivers
def _tiles(spec: ConvSpec, m: int) -> tuple[int, int, int]:
    """(tile rows th, tile columns tw, tiles per sample on the grid): m x m output
    blocks covering (OH, OW)."""
    th, tw = -(-spec.oh // m), -(-spec.ow // m)
    return th, tw, th * (tw + _JUNK_COLUMNS[m])


def _chunk(spec: ConvSpec, channels: int, itemsize: int, m: int) -> int:
    """Samples per chunk: each transformed buffer ((m+2)^2, channels, samples*tiles) fits."""
    per_sample = (m + 2) ** 2 * channels * _tiles(spec, m)[2] * itemsize
    budget = min(CHUNK_BYTES, tuning.workspace_limit() // 3)
    return max(1, min(spec.n, budget // per_sample))


def _parallel(spec: ConvSpec) -> bool:
    return spec.flops // 2 >= PARALLEL_MIN_MACS


def _transformed_weight(weight: np.ndarray, groups: int, m: int) -> np.ndarray:
    """U = G g G^T: (C_out, C_in/G, 3, 3) -> ((m+2)^2, G, C_out/G, C_in/G), in float64
    first."""
    c_out, c_in_g = weight.shape[:2]
    g = G_OF[m]
    # tensordot: two GEMMs, where a stack of (ax3)(3x3)(3xa) products would loop in Python's C
    u = np.tensordot(g, weight.astype(np.float64), axes=(1, 2))  # (a, C_out, C_in/G, 3)
    u = np.tensordot(u, g, axes=(3, 1)).transpose(0, 3, 1, 2)  # (a, a, C_out, C_in/G)
    return np.ascontiguousarray(u, dtype=weight.dtype).reshape(
        (m + 2) ** 2, groups, c_out // groups, c_in_g)


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
        y = _forward(x, weight, spec, tile_size(spec, x.dtype))
    return y if _finite(spec, y) else _direct().forward(x, weight, spec)


def _forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec, m: int) -> np.ndarray:
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    g, par, kernels, k = spec.groups, _parallel(spec), _KERNELS[m], (m + 2) ** 2
    th, tw, per_sample = _tiles(spec, m)
    top, left = spec.padding[0], spec.padding[2]
    u = _transformed_weight(weight, g, m)  # (k, G, C_out/G, C_in/G)
    y = output(spec.y_shape, x.dtype)
    step = _chunk(spec, max(spec.c_in, spec.c_out), x.itemsize, m)
    for s in range(0, spec.n, step):
        nb = min(step, spec.n - s)
        t = nb * per_sample
        v = scratch("winograd v", (k, spec.c_in, t), x.dtype)
        kernels["input"][par](x[s:s + nb], v, th, tw, top, left)
        mm = scratch("winograd m", (k, g, spec.c_out_g, t), x.dtype)
        np.matmul(u, v.reshape(k, g, spec.c_in_g, t), out=mm)
        kernels["output"][par](mm.reshape(k, spec.c_out, t), y[s:s + nb], th, tw)
    return y


def backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool):
    """(dX, dW) as the adjoints of the forward's maps, sharing the transformed dY (and
    the transformed x for dW) chunk by chunk; either may be skipped (None). Results
    with an inf or a NaN are recomputed by im2col, as in :func:`forward`."""
    with np.errstate(invalid="ignore", over="ignore"):  # such results are recomputed
        dx, dw = _backward(x, weight, grad_output, spec, need_input, need_weight,
                           tile_size(spec, grad_output.dtype))
    if _finite(spec, dx, dw):
        return dx, dw
    return _direct().backward(x, weight, grad_output, spec, need_input, need_weight)


def _backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool,
              m: int):
    grad_output = np.ascontiguousarray(grad_output)
    g, cig, cog = spec.groups, spec.c_in_g, spec.c_out_g
    par, kernels, k = _parallel(spec), _KERNELS[m], (m + 2) ** 2
    th, tw, per_sample = _tiles(spec, m)
    top, left = spec.padding[0], spec.padding[2]
    u = _transformed_weight(weight, g, m) if need_input else None  # (k, G, C_out/G, C_in/G)
    dx = output((spec.n, spec.c_in, spec.h, spec.w), grad_output.dtype) if need_input else None
    if need_weight:  # dU summed over the chunks; each chunk's product goes through part
        du = scratch("winograd du", (k, g, cog, cig), grad_output.dtype)
        du[...] = 0
        part = scratch("winograd du part", (k, g, cog, cig), grad_output.dtype)
        x = np.ascontiguousarray(x)
    step = _chunk(spec, max(spec.c_in, spec.c_out), grad_output.itemsize, m)
    for s in range(0, spec.n, step):
        nb = min(step, spec.n - s)
        t = nb * per_sample
        # z is zero on F(4x4)'s junk tiles, so they add nothing to dU or dV
        z = scratch("winograd m", (k, g, cog, t), grad_output.dtype)
        kernels["grad"][par](grad_output[s:s + nb], z.reshape(k, spec.c_out, t), th, tw)
        if need_weight:
            v = scratch("winograd v", (k, g, cig, t), x.dtype)
            kernels["input"][par](x[s:s + nb], v.reshape(k, spec.c_in, t), th, tw, top, left)
            np.matmul(z, v.transpose(0, 1, 3, 2), out=part)  # (k, G, C_out/G, C_in/G)
            du += part
        if need_input:
            dv = scratch("winograd v", (k, g, cig, t), grad_output.dtype)
            np.matmul(u.transpose(0, 1, 3, 2), z, out=dv)  # (k, G, C_in/G, tiles)
            kernels["input_grad"][par](dv.reshape(k, spec.c_in, t), dx[s:s + nb], th, tw,
                                       top, left)
    dw = None
    if need_weight:
        # dW = G^T dU G per (o, c): (k, G, C_out/G, C_in/G) -> (C_out, C_in/G, 3, 3)
        gm = G_OF[m]
        du = du.reshape(m + 2, m + 2, spec.c_out, cig).astype(np.float64)
        dw = np.tensordot(gm, du, axes=(0, 0))  # (3, a, C_out, C_in/G)
        dw = np.tensordot(dw, gm, axes=(1, 0))  # (3, C_out, C_in/G, 3)
        dw = dw.transpose(1, 2, 0, 3).astype(grad_output.dtype)  # (C_out, C_in/G, 3, 3)
    return dx, dw


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dX, shape (N, C_in, H, W): the adjoint of :func:`forward` in x."""
    return backward(None, weight, grad_output, spec, True, False)[0]


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dW, shape (C_out, C_in/G, 3, 3): the adjoint of :func:`forward` in W."""
    return backward(x, None, grad_output, spec, False, True)[1]
