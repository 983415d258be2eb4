"""Winograd's minimal filtering F(2x2, 3x3): a specialised algorithm for 3x3 kernels.

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

Work is done in chunks of samples whose transformed tiles fit :data:`CHUNK_BYTES`
(and the workspace limit), reusing per-thread scratch buffers from chunk to chunk.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .. import tuning
from .._numba import serial_and_parallel
from .._scratch import output, scratch
from ..spec import ConvSpec

# F(2x2, 3x3): y = A^T [(G g G^T) * (B^T d B)] A
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

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
_INPUT = serial_and_parallel(_input_tiles, **_OPTIONS)
_OUTPUT = serial_and_parallel(_output_tiles, **_OPTIONS)
_GRAD = serial_and_parallel(_grad_tiles, **_OPTIONS)
_INPUT_GRAD = serial_and_parallel(_input_grad_tiles, **_OPTIONS)


# ------------------------------------------------------------------------------ drivers
def _tiles(spec: ConvSpec) -> tuple[int, int]:
    """(tile rows, tile columns): 2x2 output blocks covering (OH, OW)."""
    return -(-spec.oh // 2), -(-spec.ow // 2)


def _chunk(spec: ConvSpec, channels: int, itemsize: int) -> int:
    """Samples per chunk: each transformed buffer (16, channels, samples*tiles) fits."""
    th, tw = _tiles(spec)
    per_sample = 16 * channels * th * tw * itemsize
    budget = min(CHUNK_BYTES, tuning.workspace_limit() // 3)
    return max(1, min(spec.n, budget // per_sample))


def _parallel(spec: ConvSpec) -> bool:
    return spec.flops // 2 >= PARALLEL_MIN_MACS


def _transformed_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """U = G g G^T: (C_out, C_in/G, 3, 3) -> (16, G, C_out/G, C_in/G), in float64 first."""
    c_out, c_in_g = weight.shape[:2]
    # tensordot: two GEMMs, where a stack of (4x3)(3x3)(3x4) products would loop in Python's C
    u = np.tensordot(G, weight.astype(np.float64), axes=(1, 2))  # (4, C_out, C_in/G, 3)
    u = np.tensordot(u, G, axes=(3, 1)).transpose(0, 3, 1, 2)  # (4, 4, C_out, C_in/G)
    return np.ascontiguousarray(u, dtype=weight.dtype).reshape(16, groups, c_out // groups, c_in_g)


def _finite(spec: ConvSpec, *arrays) -> bool:
    return all(a is None or _NONFINITE[_parallel(spec)](a.reshape(-1)) == 0 for a in arrays)


def _direct():
    from . import im2col

    return im2col


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """y = x (*) W, shape (N, C_out, OH, OW), by F(2x2, 3x3) tiles (module docstring).

    An inf or NaN in x or W: the transforms mix the 16 values of a tile (inf - inf =
    NaN where a direct sum gives inf), so a result with any inf or NaN is recomputed
    by im2col, whose pattern of infs and NaNs is PyTorch's. A non-finite result always
    means a non-finite input tile, and the direct result has one too there.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # such a result is recomputed
        y = _forward(x, weight, spec)
    return y if _finite(spec, y) else _direct().forward(x, weight, spec)


def _forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    g, (th, tw), par = spec.groups, _tiles(spec), _parallel(spec)
    top, left = spec.padding[0], spec.padding[2]
    u = _transformed_weight(weight, g)  # (16, G, C_out/G, C_in/G)
    y = output(spec.y_shape, x.dtype)
    step = _chunk(spec, max(spec.c_in, spec.c_out), x.itemsize)
    for s in range(0, spec.n, step):
        nb = min(step, spec.n - s)
        t = nb * th * tw
        v = scratch("winograd v", (16, spec.c_in, t), x.dtype)
        _INPUT[par](x[s:s + nb], v, th, tw, top, left)
        m = scratch("winograd m", (16, g, spec.c_out_g, t), x.dtype)
        np.matmul(u, v.reshape(16, g, spec.c_in_g, t), out=m)
        _OUTPUT[par](m.reshape(16, spec.c_out, t), y[s:s + nb], th, tw)
    return y


def backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool):
    """(dX, dW) as the adjoints of the forward's maps, sharing the transformed dY (and
    the transformed x for dW) chunk by chunk; either may be skipped (None). Results
    with an inf or a NaN are recomputed by im2col, as in :func:`forward`."""
    with np.errstate(invalid="ignore", over="ignore"):  # such results are recomputed
        dx, dw = _backward(x, weight, grad_output, spec, need_input, need_weight)
    if _finite(spec, dx, dw):
        return dx, dw
    return _direct().backward(x, weight, grad_output, spec, need_input, need_weight)


def _backward(x, weight, grad_output, spec: ConvSpec, need_input: bool, need_weight: bool):
    grad_output = np.ascontiguousarray(grad_output)
    g, cig, cog = spec.groups, spec.c_in_g, spec.c_out_g
    (th, tw), par = _tiles(spec), _parallel(spec)
    top, left = spec.padding[0], spec.padding[2]
    u = _transformed_weight(weight, g) if need_input else None  # (16, G, C_out/G, C_in/G)
    dx = output((spec.n, spec.c_in, spec.h, spec.w), grad_output.dtype) if need_input else None
    if need_weight:  # dU summed over the chunks; each chunk's product goes through part
        du = scratch("winograd du", (16, g, cog, cig), grad_output.dtype)
        du[...] = 0
        part = scratch("winograd du part", (16, g, cog, cig), grad_output.dtype)
    if need_weight:
        x = np.ascontiguousarray(x)
    step = _chunk(spec, max(spec.c_in, spec.c_out), grad_output.itemsize)
    for s in range(0, spec.n, step):
        nb = min(step, spec.n - s)
        t = nb * th * tw
        z = scratch("winograd m", (16, g, cog, t), grad_output.dtype)
        _GRAD[par](grad_output[s:s + nb], z.reshape(16, spec.c_out, t), th, tw)
        if need_weight:
            v = scratch("winograd v", (16, g, cig, t), x.dtype)
            _INPUT[par](x[s:s + nb], v.reshape(16, spec.c_in, t), th, tw, top, left)
            np.matmul(z, v.transpose(0, 1, 3, 2), out=part)  # (16, G, C_out/G, C_in/G)
            du += part
        if need_input:
            dv = scratch("winograd v", (16, g, cig, t), grad_output.dtype)
            np.matmul(u.transpose(0, 1, 3, 2), z, out=dv)  # (16, G, C_in/G, tiles)
            _INPUT_GRAD[par](dv.reshape(16, spec.c_in, t), dx[s:s + nb], th, tw, top, left)
    dw = None
    if need_weight:
        # dW = G^T dU G per (o, c): (16, G, C_out/G, C_in/G) -> (C_out, C_in/G, 3, 3)
        du = du.reshape(4, 4, spec.c_out, cig).astype(np.float64)
        dw = np.tensordot(G, du, axes=(0, 0))  # (3, 4, C_out, C_in/G)
        dw = np.tensordot(dw, G, axes=(1, 0))  # (3, C_out, C_in/G, 3)
        dw = dw.transpose(1, 2, 0, 3).astype(grad_output.dtype)  # (C_out, C_in/G, 3, 3)
    return dx, dw


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dX, shape (N, C_in, H, W): the adjoint of :func:`forward` in x."""
    return backward(None, weight, grad_output, spec, True, False)[0]


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dW, shape (C_out, C_in/G, 3, 3): the adjoint of :func:`forward` in W."""
    return backward(x, None, grad_output, spec, False, True)[1]
