"""The convolution as one matrix: the jit algorithm's path for the smallest layers.

A convolution is linear in its input. Per group, one sample's output (R = C_out/G *
OH*OW values, in y's order) is a matrix product with its input (E = C_in/G * H*W
values, in x's order)::

    y[b] (R,) = M (R, E) @ x[b] (E,),    M[co*P + p, table[p, k]] = W[co, k]

where ``table`` is :func:`._indexed.table` (the input pixel that output pixel p reads at
(channel, tap) k) and M is zero wherever no tap connects an output to an input. The
backward pass needs the same matrix, transposed (14.5's "transposition": the input
gradient is the forward convolution with the kernel's roles swapped; here literally M's
transpose) and summed over the samples:

* input gradient: ``dX[b] (E,) = M.T @ dZ[b] (R,)``;
* weight gradient (formula 17.3 (11)): with ``G (R, E) = sum_b dZ[b] x[b].T`` (float64),
  ``dW[co, k] = sum_p G[co*P + p, table[p, k]]``: only the pairs a tap connects are read,
  so dW is the direct sum itself, in another order;
* dB (17.3.6): dZ summed over samples and pixels.

On the book's layer (X (8, 3, 7, 6), W (2, 3, 4, 5)) M is 16 x 126, and 48% of it is
taps: the dense products do about twice the multiply-adds of :mod:`._indexed`'s gathered
ones, but as whole vector registers with no gather or scatter per sample, which is
where :mod:`._indexed` spends its time on such shapes. Only layers whose M is small and
mostly taps come here (:func:`applies`).

The zeros of M meet every input outside an output's window: exact while x (forward) and
dZ (input gradient) are finite, and 0 * inf is NaN otherwise. The kernels check those
first and return False without writing anything if one is not; the caller then runs
:mod:`._indexed`, whose sums have no such terms. The weight gradient reads only real
pairs and needs no check.

The kernels are register-tiled, generated and compiled with LLVM's SLP vectoriser on
(as :mod:`._blocked` and :mod:`._implicit`): a tile is :data:`SAMPLES` samples x one
vector of outputs (forward) or inputs (input gradient), and :data:`ROWS` rows of G x
two vectors of float64 (weight gradient). They run on one thread.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._numba import VECTOR_BYTES, generated
from ..spec import ConvSpec
from . import _indexed
from ._blocked import _compile

SAMPLES = 8  # samples per forward / input-gradient tile: 8 independent vector sums
# rows of G per weight-gradient tile, each two vector registers of float64: 16
# accumulators of AVX-512's 32 registers, 8 of AVX2's 16. Measured on an AVX-512 Xeon,
# backward kernel, 8 rows of one register / of two, us: the book's layer 3.8 / 3.3;
# (32, 1, 8, 6) with six 5x5 kernels 33 / 10 (LLVM left the narrow tile partly scalar);
# (16, 4, 5, 6) with five 5x5 kernels 48 / 33.
ROWS = 8 if VECTOR_BYTES >= 64 else 4
# The dense products do E/K times the multiply-adds of the gathered ones, and building M
# costs C_out/G * P * K stores per call. Measured against :mod:`._indexed` on 70 random
# layers of its domain (forward + backward, float32, AVX-512): 1.2-2.1x faster with 8 or
# more samples, at least 40% taps, M of at most 8192 entries and R filling at least 80% of
# its vector registers (the book's layer 1.2x; 32 samples of 1x8x6 with six 5x5 kernels
# 1.7x); 0.55-0.9x with 4 samples (a tile of 8 computes duplicates), with sparser M
# (0.6-0.9x at 15-33% taps) or with a few output rows padded to a whole register (R = 2
# or 3: 0.9-1.0x).
MIN_SAMPLES = 8
MIN_DENSITY = 0.4
MAX_ENTRIES = 8192
MIN_LANE_USE = 0.8


def applies(spec: ConvSpec, itemsize: int) -> bool:
    """Whether ``spec`` runs on the dense matrix (when its x and dZ are finite)."""
    rows = spec.c_out_g * spec.oh * spec.ow  # R
    cols = spec.c_in_g * spec.h * spec.w  # E
    width = lanes(itemsize)
    return (spec.n >= MIN_SAMPLES and rows * cols <= MAX_ENTRIES
            and spec.c_in_g * spec.kh * spec.kw >= MIN_DENSITY * cols
            and rows >= MIN_LANE_USE * (-(-rows // width) * width))


def lanes(itemsize: int) -> int:
    """Elements of one vector register on this CPU."""
    return VECTOR_BYTES // itemsize


@njit(cache=True, fastmath={"reassoc"})
def _finite(a):  # pragma: no cover - compiled
    """Whether every element of the flat array ``a`` is finite (v - v is 0 for finite v,
    NaN for inf and NaN; the sum is vectorised, and NaN survives any order)."""
    check = a.dtype.type(0)
    for i in range(a.shape[0]):
        check += a[i] - a[i]
    return check == 0


def _build(target: str, indent: str) -> list[str]:
    """Source lines storing each tap's weight at its place in M (``target``: the
    element of M, or of its transpose, for group g, channel c, pixel p and pair k)."""
    return [f"{indent}{line}" for line in (
        "for g in range(groups):",
        "    for c in range(cog):",
        "        for p in range(p_count):",
        "            for k in range(kk):",
        f"                {target} = wf[g * cog + c, k]")]


# the kernels' geometry, from x (N, C_in, H, W), weight (C_out, ...) and the table
_GEOMETRY = (
    "    c_out = weight.shape[0]",
    "    p_count, kk = idx.shape",
    "    size = x.shape[1] // groups * x.shape[2] * x.shape[3]  # E",
    "    cog = c_out // groups",
    "    rows = cog * p_count  # R",
)


def _sample_tile(indent: str, acc: list, tiles: str, loop: str, row: str, name: str,
                 scalar: str) -> list[str]:
    """Source lines of a tile of SAMPLES samples (``acc``: their sums, one list per
    sample) x one vector of M: for each tile of ``tiles`` the sums start at zero, and each
    step of ``loop`` loads the vector ``row`` of M and one value ``scalar`` per sample
    (named ``name`` + sample; ``{t}`` in ``scalar`` stands for the sample) and adds their
    products. The tile's samples b0, b1, ... are set for each group of SAMPLES."""
    tb, lanes = len(acc), len(acc[0])
    inner, body = indent + " " * 8, indent + " " * 12
    # a short last tile computes the last sample again in its spare slots
    lines = [f"{indent}for first in range(0, n, {tb}):"]
    lines += [f"{indent}    b{t} = min(first + {t}, n - 1)" for t in range(tb)]
    lines += [f"{indent}    for {tiles}:"]
    lines += [f"{inner}{a} = zero" for sums in acc for a in sums]
    lines += [f"{inner}for {loop}:", f"{body}row = {row}"]
    lines += [f"{body}w{j} = row[{j}]" for j in range(lanes)]
    lines += [f"{body}{name}{t} = {scalar.format(t=t)}" for t in range(tb)]
    lines += [f"{body}{acc[t][j]} += {name}{t} * w{j}" for t in range(tb) for j in range(lanes)]
    return lines


def _forward_source(lanes: int, name: str) -> str:
    """Source of the forward kernel ``name``: tiles of SAMPLES samples x ``lanes`` rows of
    M, summed over E with M laid out transposed, (G, E + 1, R rounded up to lanes)."""
    tb, i4, i5 = SAMPLES, " " * 16, " " * 20
    acc = [[f"a{t}_{j}" for j in range(lanes)] for t in range(tb)]
    lines = [
        f"def {name}(x, weight, bias, y, idx, groups):  # pragma: no cover - compiled",
        "    n = x.shape[0]",
        *_GEOMETRY,
        "    if not _finite(x.reshape(-1)):",
        "        return False",
        "    xf = x.reshape(n, groups, size)",
        "    wf = weight.reshape(c_out, kk)",
        "    yf = y.reshape(n, groups, rows)",
        f"    mt = np.zeros((groups, size + 1, (rows + {lanes - 1}) // {lanes} * {lanes}),",
        "                  dtype=x.dtype)  # M.T; row E: the padding slot, never read",
        *_build("mt[g, idx[p, k], c * p_count + p]", "    "),
        "    zero = y.dtype.type(0)",
        "    for g in range(groups):",
        "        m = mt[g]",
    ]
    lines += _sample_tile(" " * 8, acc, f"r0 in range(0, rows, {lanes})", "e in range(size)",
                          f"m[e, r0:r0 + {lanes}]", "x", "xf[b{t}, g, e]")
    # lane by lane (vector stores of whole tiles measured 6-15% slower on the forward
    # pass); the duplicate samples of a short tile write the last sample's values
    # again: the same values
    lines += [f"{i4}bias_row = bias[g * cog:(g + 1) * cog]"]
    for j in range(lanes):
        lines += [f"{i4}if r0 + {j} < rows:",
                  f"{i5}v = bias_row[(r0 + {j}) // p_count]"]
        lines += [f"{i5}yf[b{t}, g, r0 + {j}] = {acc[t][j]} + v" for t in range(tb)]
    lines += ["    return True"]
    return "\n".join(lines) + "\n"


def _backward_source(lanes: int, lanes64: int, name: str) -> str:
    """Source of the backward kernel ``name``: dX in tiles of SAMPLES samples x ``lanes``
    inputs (summed over R), G in tiles of ROWS rows x ``lanes64`` float64 inputs (summed
    over the samples), then dW gathered from G and dB summed."""
    tb, tr, i5 = SAMPLES, ROWS, " " * 20
    acc = [[f"a{t}_{j}" for j in range(lanes)] for t in range(tb)]
    gacc = [[f"c{t}_{j}" for j in range(lanes64)] for t in range(tr)]
    lines = [
        f"def {name}(x, weight, dz, dx, dw, db, idx, groups, need_dx, need_dw,",
        "        need_db):  # pragma: no cover - compiled",
        "    n = dz.shape[0]",
        *_GEOMETRY,
        "    if need_dx and not _finite(dz.reshape(-1)):",
        "        return False",
        "    dzf = dz.reshape(n, groups, rows)",
        "    wf = weight.reshape(c_out, kk)",
        # dB channel by channel, each sum in the same order as before (samples, then
        # pixels): no division per element of dZ, no buffer (dB alone, with the call:
        # 0.92 -> 0.75 us on the book's layer)
        "    if need_db:",
        "        for g in range(groups):",
        "            for c in range(cog):",
        "                total = 0.0",
        "                for b in range(n):",
        "                    for p in range(c * p_count, (c + 1) * p_count):",
        "                        total += dzf[b, g, p]",
        "                db[g * cog + c] = total",
        "    if need_dx:",
        "        dxf = dx.reshape(n, groups, size)",
        f"        m = np.zeros((groups, rows, (size + {lanes}) // {lanes} * {lanes}),",
        "                     dtype=dz.dtype)  # M; column E: the padding slot",
        *_build("m[g, c * p_count + p, idx[p, k]]", "        "),
        "        zero = dz.dtype.type(0)",
        "        for g in range(groups):",
    ]
    lines += _sample_tile(" " * 12, acc, f"e0 in range(0, size, {lanes})", "r in range(rows)",
                          f"m[g, r, e0:e0 + {lanes}]", "d", "dzf[b{t}, g, r]")
    lines += [f"{i5}if e0 + {lanes} <= size:  # whole tiles store vectors"]
    for t in range(tb):
        lines += [f"{i5}    out = dxf[b{t}, g, e0:e0 + {lanes}]"]
        lines += [f"{i5}    out[{j}] = {acc[t][j]}" for j in range(lanes)]
    lines += [f"{i5}else:"]
    for j in range(lanes):
        lines += [f"{i5}    if e0 + {j} < size:"]
        lines += [f"{i5}        dxf[b{t}, g, e0 + {j}] = {acc[t][j]}" for t in range(tb)]
    lines += [
        "    if need_dw:",
        "        xf = x.reshape(n, groups, size)",
        f"        width = (size + {lanes64}) // {lanes64} * {lanes64}",
        "        xp = np.zeros((n, groups, width))  # x in float64, zero past E",
        "        for b in range(n):",
        "            for g in range(groups):",
        "                for e in range(size):",
        "                    xp[b, g, e] = xf[b, g, e]",
        "        gm = np.empty((rows, width))  # G of one group (column E: dZ * 0)",
        "        dzt = np.empty((groups, rows, n))  # dZ in float64, (group, row, sample)",
        "        for b in range(n):",
        "            for g in range(groups):",
        "                for r in range(rows):",
        "                    dzt[g, r, b] = dzf[b, g, r]",
        "        dwf = dw.reshape(c_out, kk)",
        "        sums = np.empty(kk)",
        "        for g in range(groups):",
        f"            for r0 in range(0, rows, {tr}):",
    ]
    lines += [f"                r{t} = min(r0 + {t}, rows - 1)" for t in range(tr)]
    lines += [f"                for e0 in range(0, width, {lanes64}):"]
    lines += [f"{i5}{a} = 0.0" for row in gacc for a in row]
    lines += [f"{i5}for b in range(n):",
              f"{i5}    row = xp[b, g, e0:e0 + {lanes64}]"]
    lines += [f"{i5}    v{j} = row[{j}]" for j in range(lanes64)]
    lines += [f"{i5}    d{t} = dzt[g, r{t}, b]" for t in range(tr)]
    lines += [f"{i5}    {gacc[t][j]} += d{t} * v{j}" for t in range(tr) for j in range(lanes64)]
    for t in range(tr):  # a short last tile stores row rows - 1 again: the same sums
        lines += [f"{i5}q = gm[r{t}, e0:e0 + {lanes64}]"]
        lines += [f"{i5}q[{j}] = {gacc[t][j]}" for j in range(lanes64)]
    lines += [
        "            for c in range(cog):",
        "                sums[:] = 0",
        "                for p in range(p_count):",
        "                    grow = gm[c * p_count + p]",
        "                    for k in range(kk):",
        "                        sums[k] += grow[idx[p, k]]",
        "                for k in range(kk):",
        "                    dwf[g * cog + c, k] = sums[k]",
        "    return True",
    ]
    return "\n".join(lines) + "\n"


def _lanes64() -> int:
    """float64 lanes of a weight-gradient tile row: two vector registers."""
    return VECTOR_BYTES // 4


# one kernel per register width of float32 and float64 on AVX2 and AVX-512 (so that
# the tests run each on any machine); each compiles on first use
_FORWARD = {n: njit(cache=True, fastmath={"contract"})(
    generated(_forward_source(n, f"dense_forward{n}"), f"dense_forward{n}", globals()))
    for n in (4, 8, 16)}
_BACKWARD = {n: njit(cache=True, fastmath={"contract"})(
    generated(_backward_source(n, _lanes64(), f"dense_backward{n}"), f"dense_backward{n}",
              globals()))
    for n in (4, 8, 16)}


_ready: dict = {}  # (kernels, itemsize) -> the compiled kernel


def _kernel(kernels: dict, args: tuple):
    """The kernel of ``kernels`` (by lanes) for ``args``' dtype, compiled with SLP on
    (:func:`._blocked._compile`) on first use."""
    key = (id(kernels), args[0].itemsize)
    kernel = _ready.get(key)
    if kernel is None:
        kernel = kernels[lanes(args[0].itemsize)]
        _compile(kernel, args)
        _ready[key] = kernel
    return kernel


def bind_forward(spec: ConvSpec, dtype):
    """``run(x, weight, bias) -> y``, or None (nothing computed) when x is not finite:
    :func:`._indexed.bind_forward` with this module's kernel."""
    return _indexed.bind_forward(spec, dtype, lambda args: _kernel(_FORWARD, args))


def bind_backward(spec: ConvSpec, dtype):
    """``run(x, weight, grad_output, need_input, need_weight, need_bias) -> (dx, dw,
    db)``, or None (nothing computed) when dX is asked for and dZ is not finite."""
    return _indexed.bind_backward(spec, dtype, lambda args: _kernel(_BACKWARD, args))


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec,
            bias: np.ndarray | None = None) -> np.ndarray | None:
    """y (N, C_out, OH, OW) from C-contiguous x (N, C_in, H, W) and weight, plus bias;
    None (nothing computed) when x is not finite."""
    return bind_forward(spec, x.dtype)(x, weight, bias)


def backward(x: np.ndarray | None, weight: np.ndarray | None, grad_output: np.ndarray,
             spec: ConvSpec, need_input: bool, need_weight: bool, need_bias: bool = False):
    """``(dx, dw, db)``, each None unless asked for, from C-contiguous arrays (``x`` is
    read only for dW and ``weight`` only for dX); None (nothing computed) when dX is
    asked for and dZ is not finite."""
    return bind_backward(spec, grad_output.dtype)(x, weight, grad_output, need_input,
                                                  need_weight, need_bias)
