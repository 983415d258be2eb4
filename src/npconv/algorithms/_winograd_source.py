"""Source of the Winograd F(m x m, 3x3) tile transforms, generated from their matrices.

:mod:`npconv.algorithms.winograd` compiles these for its larger tile, F(4x4, 3x3), whose
6x6 transforms would be long to write out by hand. Each transform is two passes of
constant linear combinations (B^T d then (B^T d) B, and likewise for A), and every pass
is one loop per row or column of the tile over *all* the tiles of a plane, so that
LLVM vectorises it across tiles: a plane's tile rows are too short for that (14 tiles
on a 56x56 output), so the tiles of a plane are numbered on a grid ``th x (tw + 1)``
whose last column is junk (see :mod:`npconv.algorithms.winograd`), and each loop
touches at most a dozen arrays (more and the vectoriser gives up on its alias checks).

Planes are kept *phase-split*: ``plane[p, s, I * (tw + 1) + J]`` holds padded row
``m*I + s`` and column ``m*J + p``, so that the pixel of row ``r`` and column ``q`` of
tile ``f = i * (tw + 1) + j`` sits at ``plane[q % m, r % m, f + (r // m) * (tw + 1) +
q // m]``: every load and store of the passes is contiguous in ``f``.

Coefficients are written into the source (zeros dropped, ones without a product).
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


def _loop(loads, stores, indent="        ") -> list[str]:
    """One loop over the tiles ``f`` of a plane: ``loads`` [(name, expression)], then
    ``stores`` [(target, [(coefficient, name)])]."""
    lines = [f"{indent}for f in range(span):"]
    lines += [f"{indent}    {name} = {expr}" for name, expr in loads]
    lines += [f"{indent}    {target} = {_combination(terms)}" for target, terms in stores]
    return lines


def _at(base: str, rows: int, cols: int) -> str:
    """``f`` shifted by ``rows`` tile rows and ``cols`` tile columns."""
    shift = [f"{rows} * wq"] if rows else []
    shift += [str(cols)] if cols else []
    return " + ".join([base, *shift])


def _header(name: str, args: str, planes: str, shape: str) -> list[str]:
    return [f"def {name}({args}):",
            f"    n, {planes}, hh, ww = {shape}.shape",
            "    wq = tw + 1",
            "    span = th * wq",
            f"    for task in prange(n * {planes}):",
            f"        b = task // {planes}",
            f"        ch = task % {planes}",
            "        t0 = b * span"]


def _phases(plane: str, flat: str, left: str, into_plane: bool, m: int) -> list[str]:
    """Copy one row between a flat image row ``flat`` (x's, y's ...) and its phase-split
    plane row ``plane`` (``plane[p]``: the columns ``m*J + p`` of the padded row, whose
    first image column sits at ``left``), phase by phase: no division per element, and
    one side of each copy is contiguous."""
    copy = (f"dst[j0 + k] = {flat}[q0 + {m} * k]" if into_plane
            else f"{flat}[q0 + {m} * k] = dst[j0 + k]")
    return [f"            for p in range({m}):",
            f"                dst = {plane}[p]",
            f"                q0 = (p - {left}) % {m}  # the first image column in phase p",
            f"                j0 = base + (q0 + {left}) // {m}",
            f"                for k in range((ww - q0 + {m - 1}) // {m}):",
            f"                    {copy}"]


def _gather_rows(source: str, count: int) -> list[str]:
    """Copy this plane's ``count`` rows of the argument ``source`` (k, planes, tiles) into
    the local ``tiles`` (k, span), one loop per row. The transforms' loops then touch
    local arrays only: with an argument array's rows among their loads or stores, LLVM
    needs more run-time alias checks than it allows (8) and leaves the loop scalar."""
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
    lines = _header(name, "x, v, th, tw, top, left", "c", "x")
    lines += [f"        plane = np.zeros(({m}, {m}, (th + 2) * wq), dtype=x.dtype)",
              f"        rows = np.empty(({a}, {m}, span + 1), dtype=x.dtype)",
              f"        tiles = np.empty(({a * a}, span), dtype=x.dtype)",
              "        for r in range(hh):  # the padded plane, phase-split",
              "            src = x[b, ch, r]",
              "            row = r + top",
              f"            base = (row // {m}) * wq"]
    lines += _phases(f"plane[:, row % {m}]", "src", "left", True, m)
    for p in range(m):  # B^T d, one column phase at a time
        loads = [(f"d{r}", f"plane[{p}, {r % m}, {_at('f', r // m, 0)}]") for r in range(a)]
        stores = [(f"rows[{i}, {p}, f]", [(bt[i, r], f"d{r}") for r in range(a)])
                  for i in range(a)]
        lines += _loop(loads, stores)
    lines.append("        rows[:, :, span] = 0  # read by the junk column's last tile only")
    for i in range(a):  # (B^T d) B, one row at a time
        loads = [(f"s{q}", f"rows[{i}, {q % m}, {_at('f', 0, q // m)}]") for q in range(a)]
        stores = [(f"tiles[{i * a + e}, f]", [(bt[e, q], f"s{q}") for q in range(a)])
                  for e in range(a)]
        lines += _loop(loads, stores)
    lines += _scatter_rows("v", a * a)
    return "\n".join(lines) + "\n"


def output_tiles(name: str, at: np.ndarray) -> str:
    """``y``'s m x m blocks = A^T M A: mm (a*a, C_out, nb * th * (tw + 1)) -> y (nb,
    C_out, OH, OW); the junk column is dropped."""
    m, a = at.shape
    lines = _header(name, "mm, y, th, tw", "co", "y")
    lines += [f"        part = np.empty(({m}, {a}, span), dtype=y.dtype)",
              f"        out = np.empty(({m}, {m}, span), dtype=y.dtype)",
              f"        tiles = np.empty(({a * a}, span), dtype=y.dtype)"]
    lines += _gather_rows("mm", a * a)
    for e in range(a):  # A^T M, one column at a time
        loads = [(f"s{i}", f"tiles[{i * a + e}, f]") for i in range(a)]
        stores = [(f"part[{r}, {e}, f]", [(at[r, i], f"s{i}") for i in range(a)])
                  for r in range(m)]
        lines += _loop(loads, stores)
    for r in range(m):  # (A^T M) A, one output row at a time
        loads = [(f"s{e}", f"part[{r}, {e}, f]") for e in range(a)]
        stores = [(f"out[{r}, {q}, f]", [(at[q, e], f"s{e}") for e in range(a)])
                  for q in range(m)]
        lines += _loop(loads, stores)
    lines += ["        for r in range(hh):",
              "            yr = y[b, ch, r]",
              f"            base = (r // {m}) * wq"]
    lines += _phases(f"out[r % {m}]", "yr", "0", False, m)
    return "\n".join(lines) + "\n"


def grad_tiles(name: str, at: np.ndarray) -> str:
    """``z[k, o, t0 + f] = (A g A^T)[k]`` for the m x m blocks g of dz (zero past its
    edge and on the junk column): the adjoint of :func:`output_tiles`."""
    m, a = at.shape
    lines = _header(name, "dz, z, th, tw", "co", "dz")
    lines += [f"        g = np.zeros(({m}, {m}, span), dtype=dz.dtype)",
              f"        part = np.empty(({a}, {m}, span), dtype=dz.dtype)",
              f"        tiles = np.empty(({a * a}, span), dtype=dz.dtype)",
              "        for r in range(hh):",
              "            src = dz[b, ch, r]",
              f"            base = (r // {m}) * wq"]
    lines += _phases(f"g[r % {m}]", "src", "0", True, m)
    for q in range(m):  # A g, one column phase at a time
        loads = [(f"s{r}", f"g[{r}, {q}, f]") for r in range(m)]
        stores = [(f"part[{i}, {q}, f]", [(at[r, i], f"s{r}") for r in range(m)])
                  for i in range(a)]
        lines += _loop(loads, stores)
    for i in range(a):  # (A g) A^T, one row at a time
        loads = [(f"s{q}", f"part[{i}, {q}, f]") for q in range(m)]
        stores = [(f"tiles[{i * a + e}, f]", [(at[q, e], f"s{q}") for q in range(m)])
                  for e in range(a)]
        lines += _loop(loads, stores)
    lines += _scatter_rows("z", a * a)
    return "\n".join(lines) + "\n"


def input_grad_tiles(name: str, bt: np.ndarray) -> str:
    """dX = the sum over tiles of B dV B^T, each added at its a x a place in the padded
    plane, cropped to x: the adjoint of :func:`input_tiles`. dv's junk column must be
    zero (it is: dZ's junk column is).

    Each tile's a x a block is computed first (``block[r, q, pad + f]``, zero outside
    the plane's tiles); then every element of the phase-split plane is the sum of the
    (at most four) blocks' values that land on it, written once."""
    a, m = bt.shape[0], bt.shape[0] - 2
    lines = _header(name, "dv, dx, th, tw, top, left", "c", "dx")
    lines += ["        size = (th + 2) * wq",
              "        pad = wq + 1  # the largest shift of a block value: one row, one column",
              f"        plane = np.empty(({m}, {m}, size), dtype=dx.dtype)",
              f"        part = np.empty(({a}, {a}, span), dtype=dx.dtype)",
              f"        block = np.empty(({a}, {a}, pad + size), dtype=dx.dtype)",
              "        block[:, :, :pad] = 0  # zero outside the tiles, written below inside",
              "        block[:, :, pad + span:] = 0",
              f"        tiles = np.empty(({a * a}, span), dtype=dx.dtype)"]
    lines += _gather_rows("dv", a * a)
    for i in range(a):  # dV B^T, one row at a time
        loads = [(f"s{e}", f"tiles[{i * a + e}, f]") for e in range(a)]
        stores = [(f"part[{i}, {q}, f]", [(bt[e, q], f"s{e}") for e in range(a)])
                  for q in range(a)]
        lines += _loop(loads, stores)
    for q in range(a):  # B (dV B^T), one column at a time
        loads = [(f"s{i}", f"part[{i}, {q}, f]") for i in range(a)]
        stores = [(f"block[{r}, {q}, pad + f]", [(bt[i, r], f"s{i}") for i in range(a)])
                  for r in range(a)]
        lines += _loop(loads, stores)
    for p in range(m):  # the plane, phase by phase: the blocks' values that land there
        for s in range(m):
            terms = [(1, f"block[{r}, {q}, {_back(r // m, q // m)}]")
                     for r in range(s, a, m) for q in range(p, a, m)]
            lines += ["        for f in range(size):",
                      f"            plane[{p}, {s}, f] = " + _combination(terms)]
    lines += ["        for r in range(hh):",
              "            xr = dx[b, ch, r]",
              "            row = r + top",
              f"            base = (row // {m}) * wq"]
    lines += _phases(f"plane[:, row % {m}]", "xr", "left", False, m)
    return "\n".join(lines) + "\n"


def _back(rows: int, cols: int) -> str:
    """``f + pad`` moved back by ``rows`` tile rows and ``cols`` tile columns."""
    return " - ".join(["f + pad", *([f"{rows} * wq"] if rows else []),
                       *([str(cols)] if cols else [])])
