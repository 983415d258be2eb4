"""Source of the Winograd F(m x m, 3x3) tile transforms, generated from their matrices.

:mod:`npconv.algorithms.winograd` compiles these for both its tiles, F(2x2, 3x3) and
F(4x4, 3x3) (whose 6x6 transforms would be long to write out by hand; the generated
ones also beat F(2x2)'s hand-written kernels they replaced). Each transform is two passes of
constant linear combinations (B^T d then (B^T d) B, and likewise for A), and every pass
is one loop per row or column of the tile over *all* the tiles of a plane, so that
LLVM vectorises it across tiles: a plane's tile rows are too short for that (14 tiles
on a 56x56 output), so the tiles of a plane are numbered on a grid ``th x (tw + 1)``
whose last column is junk (see :mod:`npconv.algorithms.winograd`).

What LLVM needs to vectorise a loop, learnt the hard way (a loop that misses one of
these runs scalar, 2-3x slower):

* at most a few arrays that might overlap: the loops work on arrays allocated in the
  kernel, and an argument's rows are copied in or out by loops of their own
  (:func:`_gather_rows`, :func:`_scatter_rows`); a loop reading 6 rows of an argument
  and writing 6 rows of a local array needs 36 run-time alias checks, more than the 8
  LLVM allows;
* indices Numba knows are non-negative: every shifted access goes through a view made
  before the loop (``block[r, q, pad:][f]``, not ``block[r, q, pad + f]``), else each
  access carries a negative-index test.

Planes are kept *phase-split*: ``plane[p, s, I * (tw + 1) + J]`` holds padded row
``m*I + s`` and column ``m*J + p``, so that the pixel of row ``r`` and column ``q`` of
tile ``f = i * (tw + 1) + j`` sits at ``plane[q % m, r % m, f + (r // m) * (tw + 1) +
q // m]``: every load and store of the passes is contiguous in ``f``.

Coefficients are written into the source (zeros dropped, ones without a product).

The weights' transforms (:func:`weight_tiles`, :func:`weight_grad_tiles`) are generated
the same way, over blocks of kernels instead of tiles, in float64.
"""

from __future__ import annotations

import numpy as np


def _combination(terms) -> str:
    """``"2.0 * a - b"`` for the linear combination ``[(2, "a"), (-1, "b")]`` (zeros dropped)."""
    out = []
    for coef, name in terms:
        c = float(coef)
        if c == 0:
            continue
        sign, mag = ("-", -c) if c < 0 else ("+", c)
        out.append(f"{sign} {name}" if mag == 1 else f"{sign} {mag!r} * {name}")
    if not out:
        return "0.0"
    text = " ".join(out)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def _loop(loads, stores, count: str = "span", temps=()) -> list[str]:
    """One loop over the tiles ``f`` of a plane. ``loads`` [(name, view)]: ``name =
    view[f]``; ``temps`` [(name, [(coefficient, name)])]: ``name = ...``; ``stores``
    [(view, [(coefficient, name)])]: ``view[f] = ...``; each view (a 1-D slice
    expression) is made once, before the loop."""
    lines, views = [], {}

    def view(expr: str) -> str:
        if expr not in views:
            views[expr] = f"w{len(views)}"
            lines.append(f"        {views[expr]} = {expr}")
        return views[expr]

    loaded = [(name, view(expr)) for name, expr in loads]
    stored = [(view(expr), terms) for expr, terms in stores]
    lines.append(f"        for f in range({count}):")
    lines += [f"            {name} = {v}[f]" for name, v in loaded]
    lines += [f"            {name} = {_combination(terms)}" for name, terms in temps]
    lines += [f"            {v}[f] = {_combination(terms)}" for v, terms in stored]
    return lines


def _shift(rows: int, cols: int) -> str:
    """The source of ``rows`` tile rows plus ``cols`` tile columns (``"0"`` for none)."""
    parts = ([f"{rows} * wq"] if rows else []) + ([str(cols)] if cols else [])
    return " + ".join(parts) or "0"


# Planes per task of the generated kernels' parallel loop (fewer where there would be
# fewer than as many tasks, for the threads): each task allocates its working arrays
# once for all its planes. With one task per plane, the allocations had taken 8-19% of
# each transform's time on 28x28 planes (x's 38.9 -> 35.7 ns a tile, y's 29.3 -> 23.6,
# dY's 35.1 -> 30.8, dX's 43.6 -> 36.1), up to a third on 14x14 ones.
PLANES_PER_TASK = 16


def _kernel(name: str, image: str, args: str, plane_args: str, buffers, body: list[str],
            scalars=()) -> str:
    """Source of ``{name}_plane`` (the work on one plane: ``body``, written at the
    indentation of a loop body) and of ``{name}`` (a parallel loop over tasks of
    :data:`PLANES_PER_TASK` planes of ``image``, (N, C, H, W), calling it). Keeping the
    parallel loop's body to a call keeps Numba's compile time down (the two variants
    share the plane function).

    ``buffers`` [(name, shape, zeroed)]: the plane function's working arrays, allocated
    once per task (zeroed there when ``zeroed``: every plane of a call writes the same
    elements of such an array, so the rest stays zero); ``scalars``: the lines (like
    ``"size = (th + 2) * wq"``) their shapes need, run in both functions."""
    names = "".join(f", {b}" for b, _, _ in buffers)
    prelude = ["    wq = tw + 1", "    span = th * wq", *(f"    {line}" for line in scalars)]
    inner = [f"def {name}_plane({plane_args}, ch, t0, th, tw{_extra(args)}{names}):",
             *prelude]
    inner += [line[4:] for line in body]
    call = ", ".join(a if a != image else f"{a}[b, ch]" for a in args.split(", ")[:2])
    outer = [f"def {name}({args}):",
             f"    n, planes, hh, ww = {image}.shape",
             *prelude,
             "    count = n * planes",
             f"    per = max(1, min({PLANES_PER_TASK}, count // {PLANES_PER_TASK}))",
             "    for task in prange((count + per - 1) // per):"]
    outer += [f"        {b} = np.{'zeros' if zeroed else 'empty'}({shape}, dtype={image}.dtype)"
              for b, shape, zeroed in buffers]
    outer += ["        for index in range(task * per, min(count, task * per + per)):",
              "            b = index // planes",
              "            ch = index % planes",
              f"            {name}_plane({call}, ch, b * span, th, tw{_extra(args)}{names})"]
    return "\n".join([*inner, "", *outer]) + "\n"


def _extra(args: str) -> str:
    """The arguments after (array, array, th, tw): the padding, for x's and dX's."""
    rest = args.split(", ")[4:]
    return "".join(f", {a}" for a in rest)


def _phases(plane: str, flat: str, left: str, into_plane: bool, m: int) -> list[str]:
    """Copy one row between a flat image row ``flat`` (x's, y's ...) and its phase-split
    plane row ``plane`` (a template in ``{p}``: the columns ``m*J + p`` of the padded
    row, whose first image column sits at ``left``).

    Into the plane, phase by phase: no division per element, and one side of each copy
    is contiguous. Out of it, all the phases in one loop over the row's whole groups of
    m columns (then the columns left over at either end): LLVM vectorises the group's
    interleaved stores, and y's transform took 18-27% less time than phase by phase, dX's
    5-19% (on 14x14 to 56x56 planes). The same loop into the plane was no faster."""
    if into_plane:
        at = plane.format(p="p")
        return [f"            for p in range({m}):",
                f"                q0 = (p - {left}) % {m}  # the first image column in phase p",
                f"                d = {at}[base + (q0 + {left}) // {m}:]",
                f"                s = {flat}[q0:]",
                f"                for k in range((ww - q0 + {m - 1}) // {m}):",
                f"                    d[k] = s[{m} * k]"]
    lines = [f"            p0 = min((-{left}) % {m}, ww)  # the first image column of phase 0",
             f"            nk = (ww - p0) // {m}  # whole groups from there",
             f"            k0 = base + (p0 + {left}) // {m}",
             f"            s = {flat}[p0:]"]
    lines += [f"            d{p} = {plane.format(p=p)}[k0:]" for p in range(m)]
    lines.append("            for k in range(nk):")
    lines += [f"                s[{m} * k + {p}] = d{p}[k]" for p in range(m)]
    for columns in ("p0", f"p0 + {m} * nk, ww"):
        lines += [f"            for q in range({columns}):",
                  f"                c = q + {left}",
                  f"                {flat}[q] = {plane.format(p=f'c % {m}')}[base + c // {m}]"]
    return lines


def _gather_rows(source: str, count: int) -> list[str]:
    """Copy this plane's ``count`` rows of the argument ``source`` (k, planes, tiles) into
    the local ``tiles`` (k, span), one loop per row."""
    return [f"        for k in range({count}):",
            f"            src = {source}[k, ch, t0:t0 + span]",
            "            dst = tiles[k]",
            "            for f in range(span):",
            "                dst[f] = src[f]"]


def _scatter_rows(target: str, count: int) -> list[str]:
    """The way back: ``tiles`` (k, span) into this plane's rows of ``target``."""
    return [f"        for k in range({count}):",
            "            src = tiles[k]",
            f"            dst = {target}[k, ch, t0:t0 + span]",
            "            for f in range(span):",
            "                dst[f] = src[f]"]


def input_tiles(name: str, bt: np.ndarray) -> str:
    """``v[k, c, t0 + f] = (B^T d B)[k]`` for the tiles d of x's zero-padded planes:
    x (nb, C, H, W) -> v (a*a, C, nb * th * (tw + 1)), with ``top`` and ``left`` padding."""
    a, m = bt.shape[0], bt.shape[0] - 2
    buffers = [("plane", f"({m}, {m}, (th + 2) * wq)", True),
               ("rows", f"({a}, {m}, span + 1)", False), ("tiles", f"({a * a}, span)", False)]
    lines = ["        hh, ww = xp.shape",
              "        for r in range(hh):  # the padded plane, phase-split",
              "            row = r + top",
              f"            base = (row // {m}) * wq"]
    lines += _phases(f"plane[{{p}}, row % {m}]", "xp[r]", "left", True, m)
    for p in range(m):  # B^T d, one column phase at a time
        loads = [(f"d{r}", f"plane[{p}, {r % m}, {_shift(r // m, 0)}:]") for r in range(a)]
        stores = [(f"rows[{i}, {p}]", [(bt[i, r], f"d{r}") for r in range(a)])
                  for i in range(a)]
        lines += _loop(loads, stores)
    lines.append("        rows[:, :, span] = 0  # read by the junk column's last tile only")
    for i in range(a):  # (B^T d) B, one row at a time
        loads = [(f"s{q}", f"rows[{i}, {q % m}, {q // m}:]") for q in range(a)]
        stores = [(f"tiles[{i * a + e}]", [(bt[e, q], f"s{q}") for q in range(a)])
                  for e in range(a)]
        lines += _loop(loads, stores)
    lines += _scatter_rows("v", a * a)
    return _kernel(name, "x", "x, v, th, tw, top, left", "xp, v", buffers, lines)


def output_tiles(name: str, at: np.ndarray) -> str:
    """``y``'s m x m blocks = A^T M A: mm (a*a, C_out, nb * th * (tw + 1)) -> y (nb,
    C_out, OH, OW); the junk column is dropped."""
    m, a = at.shape
    buffers = [("part", f"({m}, {a}, span)", False), ("out", f"({m}, {m}, span)", False),
               ("tiles", f"({a * a}, span)", False)]
    lines = ["        hh, ww = yp.shape"]
    lines += _gather_rows("mm", a * a)
    for e in range(a):  # A^T M, one column at a time
        loads = [(f"s{i}", f"tiles[{i * a + e}]") for i in range(a)]
        stores = [(f"part[{r}, {e}]", [(at[r, i], f"s{i}") for i in range(a)])
                  for r in range(m)]
        lines += _loop(loads, stores)
    for r in range(m):  # (A^T M) A, one output row at a time
        loads = [(f"s{e}", f"part[{r}, {e}]") for e in range(a)]
        stores = [(f"out[{r}, {q}]", [(at[q, e], f"s{e}") for e in range(a)])
                  for q in range(m)]
        lines += _loop(loads, stores)
    lines += ["        for r in range(hh):",
              f"            base = (r // {m}) * wq"]
    lines += _phases(f"out[r % {m}, {{p}}]", "yp[r]", "0", False, m)
    return _kernel(name, "y", "mm, y, th, tw", "mm, yp", buffers, lines)


def grad_tiles(name: str, at: np.ndarray) -> str:
    """``z[k, o, t0 + f] = (A g A^T)[k]`` for the m x m blocks g of dz (zero past its
    edge and on the junk column): the adjoint of :func:`output_tiles`."""
    m, a = at.shape
    buffers = [("g", f"({m}, {m}, span)", True), ("part", f"({a}, {m}, span)", False),
               ("tiles", f"({a * a}, span)", False)]
    lines = ["        hh, ww = dzp.shape",
              "        for r in range(hh):",
              f"            base = (r // {m}) * wq"]
    lines += _phases(f"g[r % {m}, {{p}}]", "dzp[r]", "0", True, m)
    for q in range(m):  # A g, one column phase at a time
        loads = [(f"s{r}", f"g[{r}, {q}]") for r in range(m)]
        stores = [(f"part[{i}, {q}]", [(at[r, i], f"s{r}") for r in range(m)])
                  for i in range(a)]
        lines += _loop(loads, stores)
    for i in range(a):  # (A g) A^T, one row at a time
        loads = [(f"s{q}", f"part[{i}, {q}]") for q in range(m)]
        stores = [(f"tiles[{i * a + e}]", [(at[q, e], f"s{q}") for q in range(m)])
                  for e in range(a)]
        lines += _loop(loads, stores)
    lines += _scatter_rows("z", a * a)
    return _kernel(name, "dz", "dz, z, th, tw", "dzp, z", buffers, lines)


def input_grad_tiles(name: str, bt: np.ndarray) -> str:
    """dX = the sum over tiles of B dV B^T, each added at its a x a place in the padded
    plane, cropped to x: the adjoint of :func:`input_tiles`. dv's junk column must be
    zero (it is: dZ's junk column is).

    Each tile's a x a block is computed first (``block[r, q, pad + f]``, zero outside
    the plane's tiles); then every element of the phase-split plane is the sum of the
    (at most four) blocks' values that land on it, written once."""
    a, m = bt.shape[0], bt.shape[0] - 2
    scalars = ["size = (th + 2) * wq",
               "pad = wq + 1  # the largest shift of a block value: one row, one column"]
    buffers = [("plane", f"({m}, {m}, size)", False), ("part", f"({a}, {a}, span)", False),
               ("block", f"({a}, {a}, pad + size)", False), ("tiles", f"({a * a}, span)", False)]
    lines = ["        hh, ww = dxp.shape",
              "        block[:, :, :pad] = 0  # zero outside the tiles, written below inside",
              "        block[:, :, pad + span:] = 0"]
    lines += _gather_rows("dv", a * a)
    for i in range(a):  # dV B^T, one row at a time
        loads = [(f"s{e}", f"tiles[{i * a + e}]") for e in range(a)]
        stores = [(f"part[{i}, {q}]", [(bt[e, q], f"s{e}") for e in range(a)])
                  for q in range(a)]
        lines += _loop(loads, stores)
    for q in range(a):  # B (dV B^T), one column at a time
        loads = [(f"s{i}", f"part[{i}, {q}]") for i in range(a)]
        stores = [(f"block[{r}, {q}, pad:]", [(bt[i, r], f"s{i}") for i in range(a)])
                  for r in range(a)]
        lines += _loop(loads, stores)
    for p in range(m):  # the plane, phase by phase: the blocks' values that land there
        for s in range(m):
            loads = [(f"s{r}_{q}", f"block[{r}, {q}, pad - ({_shift(r // m, q // m)}):]")
                     for r in range(s, a, m) for q in range(p, a, m)]
            stores = [(f"plane[{p}, {s}]", [(1, name) for name, _ in loads])]
            lines += _loop(loads, stores, "size")
    lines += ["        for r in range(hh):",
              "            row = r + top",
              f"            base = (row // {m}) * wq"]
    lines += _phases(f"plane[{{p}}, row % {m}]", "dxp[r]", "left", False, m)
    return _kernel(name, "dx", "dv, dx, th, tw, top, left", "dv, dxp", buffers, lines,
                   scalars)


# The weight transforms run on blocks of (output, input channel) pairs: each block's
# values are copied into local float64 rows, combined by loops over the block (local
# arrays only, so LLVM vectorises them), and copied out rounded to the weights' dtype.
WEIGHT_BLOCK = 256


def _block_kernel(name: str, args: str, pairs: str, body: list[str]) -> str:
    """Source of ``name``: a parallel loop over blocks of :data:`WEIGHT_BLOCK` pairs
    (``lo:hi``, ``nb`` of them), running ``body`` (at the indentation of a loop body)."""
    b = WEIGHT_BLOCK
    return "\n".join([f"def {name}({args}):",
                      f"    pairs = {pairs}",
                      f"    for block in prange((pairs + {b - 1}) // {b}):",
                      f"        lo = block * {b}",
                      f"        hi = min(lo + {b}, pairs)",
                      "        nb = hi - lo",
                      *body]) + "\n"


def weight_tiles(name: str, g: np.ndarray) -> str:
    """``u[a*x + y, p] = (G g_p G^T)[x, y]`` for every pair p: w (pairs, 9) -> u (a*a,
    pairs), in float64 (G's 1/3 and 1/15 are not exact in binary), rounded once."""
    a = g.shape[0]
    lines = [f"        local = np.empty((9, {WEIGHT_BLOCK}), dtype=np.float64)",
             f"        out = np.empty(({a * a}, {WEIGHT_BLOCK}), dtype=u.dtype)",
             "        for k in range(9):",
             "            dst = local[k]",
             "            for f in range(nb):",
             "                dst[f] = w[lo + f, k]"]
    # G g, then (G g) G^T, in registers
    loads = [(f"g{k}", f"local[{k}]") for k in range(9)]
    temps = [(f"t{x}_{j}", [(g[x, i], f"g{3 * i + j}") for i in range(3)])
             for x in range(a) for j in range(3)]
    stores = [(f"out[{a * x + y}]", [(g[y, j], f"t{x}_{j}") for j in range(3)])
              for x in range(a) for y in range(a)]
    lines += _loop(loads, stores, "nb", temps)
    lines += [f"        for k in range({a * a}):",
              "            src = out[k]",
              "            dst = u[k, lo:hi]",
              "            for f in range(nb):",
              "                dst[f] = src[f]"]
    return _block_kernel(name, "w, u", "w.shape[0]", lines)


def weight_grad_tiles(name: str, g: np.ndarray) -> str:
    """``dw[p] = G^T dU_p G`` for every pair p, the adjoint of :func:`weight_tiles`: du
    (a*a, pairs) -> dw (pairs, 9), in float64, rounded once."""
    a = g.shape[0]
    lines = [f"        local = np.empty(({a * a}, {WEIGHT_BLOCK}), dtype=np.float64)",
             f"        out = np.empty((9, {WEIGHT_BLOCK}), dtype=dw.dtype)",
             f"        for k in range({a * a}):",
             "            src = du[k, lo:hi]",
             "            dst = local[k]",
             "            for f in range(nb):",
             "                dst[f] = src[f]"]
    # G^T dU, then (G^T dU) G, in registers
    loads = [(f"d{k}", f"local[{k}]") for k in range(a * a)]
    temps = [(f"t{i}_{y}", [(g[x, i], f"d{a * x + y}") for x in range(a)])
             for i in range(3) for y in range(a)]
    stores = [(f"out[{3 * i + j}]", [(g[y, j], f"t{i}_{y}") for y in range(a)])
              for i in range(3) for j in range(3)]
    lines += _loop(loads, stores, "nb", temps)
    lines += ["        for k in range(9):",
              "            src = out[k]",
              "            for f in range(nb):",
              "                dw[lo + f, k] = src[f]"]
    return _block_kernel(name, "du, dw", "du.shape[1]", lines)
