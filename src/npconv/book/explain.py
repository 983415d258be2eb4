"""``explain``: what sections 14.5 and 17.3 show about one layer, computed for any layer.

For a layer ``X (N, C_in, H, W) * W (C_out, C_in/G, KH, KW)`` this collects:

* the shapes of X, W, Z, dZ, dW, dB, dX (tables 14.5.1 and 14.5.3);
* the transpose method for dW (tables 14.5.1 -> 14.5.2): X' and dZ' with their first two
  axes swapped, dW' = conv4d(X', dZ'), swapped back to dW;
* the transpose method for dX (tables 14.5.3 -> 14.5.5): dZ zero-inserted (17.3.2),
  padded by formula 14.5.1 (with the stride-remainder correction, which makes it
  asymmetric), correlated with W' (C_out and C_in swapped, every kernel rotated 180
  degrees as in the 4x5 example of 14.5.2);
* the im2col matrices and the three GEMMs (14.4, 14.5 ``*_col2im``), the FLOPs and the
  memory of the column matrix;
* what ``algorithm="auto"`` picks and why.

All shapes are computed from the size formulas; ``tests/test_book_explain.py`` checks
them against the arrays the transpose algorithm really builds. Nothing is allocated, so
any layer can be explained.
"""

from __future__ import annotations

import numpy as np

from .. import tuning
from ..spec import plan_conv2d

MAX_DRAWN = 16  # largest grid side drawn cell by cell (larger ones show the top-left corner)
BOOK_KERNEL = (4, 5)  # the 14.5.2 rot180 example: a 4x5 kernel holding 1..20


def _shape(*dims) -> list[int]:
    return [int(d) for d in dims]


def _step(shape, what: str) -> dict:
    return {"shape": _shape(*shape), "what": what}


def _axis_padding(size_p: int, out: int, k: int, stride: int, dilation: int) -> dict:
    """Formula 14.5.1 along one axis, as the book uses it and as it must be used.

    Parameters
    ----------
    size_p : int
        Length of the padded forward input (the dX that the backward pass builds).
    out, k, stride, dilation : int
        dZ's length and the forward kernel, stride and dilation along this axis.

    Returns
    -------
    dict
        ``inserted`` (dZ's length after 17.3.2 zero insertion), ``ke`` (effective
        kernel), ``formula`` (14.5.1 evaluated), ``total``, ``remainder``, ``before``,
        ``after``, ``asymmetric``, and the book's recipe (no zero insertion, floor,
        same both sides) with the length of dX it would give.
    """
    ke = dilation * (k - 1) + 1
    inserted = (out - 1) * stride + 1
    total = (size_p - 1) * 1 - inserted + ke  # 14.5.1 with dZ as "input", dX as "output"
    remainder = (size_p - ke) % stride
    before, after = ke - 1, ke - 1 + remainder
    book_p = max(((size_p - 1) - out + ke) // 2, 0)  # the book: no zero insertion, floor
    book_length = out + 2 * book_p - ke + 1  # what its stride-1 conv4d then returns
    return {
        "inserted": inserted, "ke": ke, "total": total, "remainder": remainder,
        "formula": f"(({size_p} - 1)*1 - {inserted} + {ke}) / 2 = {total}/2",
        "before": before, "after": after, "asymmetric": before != after,
        "book_padding": book_p, "book_dx_length": book_length,
        "book_correct": book_length == size_p and stride == 1,
    }


def _size_formula(size: int, before: int, after: int, k: int, s: int, d: int) -> dict:
    out = (size + before + after - d * (k - 1) - 1) // s + 1
    return {"formula": f"({size} + {before} + {after} - {d}*({k} - 1) - 1) // {s} + 1 = {out}",
            "value": out}


def _symbol(i: int, j: int, big: bool) -> str:
    return f"δ{i + 1},{j + 1}" if big else f"δ{i + 1}{j + 1}"


def draw_dz(oh: int, ow: int, stride=(1, 1), padding=(0, 0, 0, 0)) -> dict:
    """One channel of dZ drawn as in 17.3.2: δ entries, inserted zeros "0", padding "·".

    Parameters
    ----------
    oh, ow : int
        dZ's spatial size.
    stride : (int, int)
        Zeros inserted between entries: ``stride - 1`` (17.3.2).
    padding : (int, int, int, int)
        ``(top, bottom, left, right)`` padding drawn around the result (14.5.1).

    Returns
    -------
    dict
        ``grid`` (list of rows of strings, at most ``MAX_DRAWN`` x ``MAX_DRAWN``),
        ``shape`` (the full grid's size) and ``cropped`` (True when only the top-left
        corner is shown).
    """
    sh, sw = stride
    top, bottom, left, right = padding
    rows = top + (oh - 1) * sh + 1 + bottom
    cols = left + (ow - 1) * sw + 1 + right
    big = max(oh, ow) >= 10
    grid = []
    for r in range(min(rows, MAX_DRAWN)):
        line = []
        for c in range(min(cols, MAX_DRAWN)):
            i, j = r - top, c - left
            inside = 0 <= i <= (oh - 1) * sh and 0 <= j <= (ow - 1) * sw
            if not inside:
                line.append("·")
            elif i % sh == 0 and j % sw == 0:
                line.append(_symbol(i // sh, j // sw, big))
            else:
                line.append("0")
        grid.append(line)
    return {"grid": grid, "shape": [rows, cols], "cropped": rows > MAX_DRAWN or cols > MAX_DRAWN}


def rot180_example(kh: int, kw: int) -> dict:
    """The 14.5.2 drawing: a kernel holding 1..KH*KW and the same kernel rotated 180°.

    Kernels larger than 8x8 are drawn with the book's 4x5 example instead.
    """
    if kh * kw > 64 or kh > 8 or kw > 8:
        kh, kw = BOOK_KERNEL
    kernel = np.arange(1, kh * kw + 1).reshape(kh, kw)
    return {"kernel": kernel.tolist(), "rotated": kernel[::-1, ::-1].tolist()}


def _workspace_chunks(spec, itemsize: int) -> tuple[int, int, int, int]:
    """Pieces im2col splits the column matrix into under the current workspace limit,
    the threads that share them out by samples, the bytes each piece may take, and the
    GEMM columns a piece gets at least where the limit allows."""
    from ..algorithms import im2col  # the chunking rule lives with the algorithm

    shares = im2col.work(spec, itemsize)
    return (sum(len(share) for share in shares), len(shares),
            im2col.chunk_budget(spec, itemsize, len(shares)), im2col.MIN_GEMM_COLUMNS)


def explain(x_shape=(8, 3, 7, 6), weight_shape=(2, 3, 4, 5), stride=1, padding=0, dilation=1,
            groups=1, padding_mode="zeros", dtype="float32") -> dict:
    """Everything tables 14.5.1-14.5.5 and section 17.3 show, for one layer.

    Parameters
    ----------
    x_shape : tuple of 4 ints
        ``(N, C_in, H, W)``; a 3-tuple ``(C_in, H, W)`` is read as N = 1. Default: the
        book's 14.5.3 input (8, 3, 7, 6).
    weight_shape : tuple of 4 ints
        ``(C_out, C_in/groups, KH, KW)``; default the book's (2, 3, 4, 5).
    stride, padding, dilation, groups, padding_mode
        As in :func:`npconv.conv2d` (every form of padding, "same" included).
    dtype : {"float32", "float64"}
        Used for the memory figures only.

    Returns
    -------
    dict
        JSON-ready (lists, ints, strings): ``layer``, ``output_size``, ``tensors``,
        ``transpose_dw``, ``transpose_dx``, ``padding_14_5_1``, ``zero_insertion``,
        ``padded_dz``, ``rot180``, ``im2col``, ``flops``, ``auto``. Every step is
        ``{"shape": [...], "what": "..."}``.

    Raises
    ------
    ValueError, TypeError
        For an invalid layer, with the same messages as :func:`npconv.conv2d`.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"explain: dtype must be float32 or float64, got {dtype}")
    x_shape = tuple(x_shape)
    if len(x_shape) == 3:
        x_shape = (1, *x_shape)
    plan = plan_conv2d(x_shape, weight_shape, stride, padding, dilation, groups, padding_mode,
                       who="layer")
    s = plan.spec
    n, c_in, h, w = s.n, s.c_in, *plan.input_hw
    c_out, c_in_g, kh, kw = s.weight_shape
    c_out_g = s.c_out_g
    (sh, sw), (dh, dw), g = s.stride, s.dilation, s.groups
    pads = plan.mode_padding if plan.mode != "zeros" else s.padding  # (top, bottom, left, right)
    hp, wp = s.hp, s.wp
    oh, ow = s.oh, s.ow
    padded = any(pads)
    mode_word = "zeros" if plan.mode == "zeros" else f"{plan.mode} copies"

    layer = {
        "x": _shape(n, c_in, h, w), "weight": _shape(*s.weight_shape), "bias": [c_out],
        "y": _shape(*s.y_shape), "stride": [sh, sw], "padding": list(pads),
        "padding_given": padding if isinstance(padding, str) else repr(padding),
        "dilation": [dh, dw], "groups": g, "padding_mode": plan.mode,
        "padded_input": [hp, wp], "dtype": str(dtype),
    }
    output_size = {"H": _size_formula(h, pads[0], pads[1], kh, sh, dh),
                   "W": _size_formula(w, pads[2], pads[3], kw, sw, dw)}

    tensors = {
        "X": _step((n, c_in, h, w), "input"),
        "W": _step(s.weight_shape, f"{c_out} kernels of {c_in_g} channels"
                   + (f" ({g} groups)" if g > 1 else "")),
        "B": _step((c_out,), "one bias per output channel"),
        "Z": _step(s.y_shape, "output, formula 14.3.1"),
        "dZ": _step(s.y_shape, "gradient arriving from the next layer"),
        "dW": _step(s.weight_shape, "dW = X * dZ (17.3.5, formula 11)"),
        "dB": _step((c_out,), "dZ summed over N, OH, OW (17.3.6)"),
        "dX": _step((n, c_in, h, w), "dX = pad(dZ) * rot180(W) (17.3.1, formula 8)"),
    }

    # ---- dW by transposition (tables 14.5.1 -> 14.5.2)
    kh2 = (hp - sh * (oh - 1) - 1) // dh + 1  # conv4d output with stride/dilation exchanged
    kw2 = (wp - sw * (ow - 1) - 1) // dw + 1
    per_group = f"for each of the {g} groups, " if g > 1 else ""
    dw_steps = {}
    if padded:
        dw_steps["X padded"] = _step((n, c_in, hp, wp), f"X padded with {mode_word} {_fmt(pads)}")
    dw_steps["X'"] = _step((c_in, n, hp, wp), "X with N and C swapped")
    dw_steps["dZ'"] = _step((c_out, n, oh, ow), "dZ with N and C swapped, used as the kernel")
    dw_steps["dW'"] = _step(
        (c_in_g, c_out_g, kh2, kw2),
        f"{per_group}conv4d(X', dZ') with stride = dilation {_fmt((dh, dw))} and "
        f"dilation = stride {_fmt((sh, sw))}")
    if (kh2, kw2) != (kh, kw):
        dw_steps["dW' cropped"] = _step(
            (c_in_g, c_out_g, kh, kw),
            f"taps past {kh}x{kw} exist only because the stride left input unused")
    dw_steps["dW"] = _step(s.weight_shape, "dW' with its first two axes swapped back")
    transpose_dw = {"steps": dw_steps, "conv4d": {"stride": [dh, dw], "dilation": [sh, sw],
                                                  "groups": g}}

    # ---- dX by transposition (tables 14.5.3 -> 14.5.5, 17.3.1-17.3.4)
    pad_h = _axis_padding(hp, oh, kh, sh, dh)
    pad_w = _axis_padding(wp, ow, kw, sw, dw)
    back = (pad_h["before"], pad_h["after"], pad_w["before"], pad_w["after"])
    dx_steps = {"dZ": _step(s.y_shape, "gradient of the output")}
    if (sh, sw) != (1, 1):
        dx_steps["dZ zero-inserted"] = _step(
            (n, c_out, pad_h["inserted"], pad_w["inserted"]),
            f"17.3.2: S - 1 zeros between neighbours ({sh - 1} between rows, "
            f"{sw - 1} between columns)")
    dx_steps["dZ padded"] = _step(
        (n, c_out, pad_h["inserted"] + back[0] + back[1], pad_w["inserted"] + back[2] + back[3]),
        f"formula 14.5.1: (top, bottom, left, right) = {_fmt(back)}")
    dx_steps["W'"] = _step((c_in, c_out_g, kh, kw),
                           "W with C_out and C_in swapped" + (" within each group" if g > 1
                                                              else "")
                           + ", every kernel rotated 180° (14.5.2)")
    conv_what = f"conv4d(dZ padded, W', stride=1, dilation={_fmt((dh, dw))}" + (
        f", groups={g})" if g > 1 else ")")
    if padded:
        dx_steps["dX padded"] = _step((n, c_in, hp, wp), conv_what)
        undo = ("the padding cropped off" if plan.mode == "zeros" else
                f"the {plan.mode} copies added back onto the pixels they copy")
        dx_steps["dX"] = _step((n, c_in, h, w), undo)
    else:
        dx_steps["dX"] = _step((n, c_in, h, w), conv_what)
    transpose_dx = {"steps": dx_steps, "padding": list(back)}

    # ---- drawings
    zero_insertion = {"applies": (sh, sw) != (1, 1), "stride": [sh, sw],
                      **draw_dz(oh, ow, (sh, sw))}
    padded_dz = draw_dz(oh, ow, (sh, sw), back)

    # ---- im2col (14.4, 14.5 backward_*_col2im)
    k_g = c_in_g * kh * kw
    length = n * oh * ow
    gi = "[g]" if g > 1 else ""
    y_fmt, dw_fmt, x_fmt = _fmt(s.y_shape), _fmt(s.weight_shape), _fmt((n, c_in, h, w))
    k_all = c_in * kh * kw
    gemms = [
        {"name": "forward", "a": [f"W{gi}", [c_out_g, k_g]], "b": [f"cols{gi}", [k_g, length]],
         "c": [f"Z'{gi}", [c_out_g, length]], "count": g,
         "flops": 2 * c_out_g * k_g * length * g, "result": f"reshape -> Z {y_fmt}",
         "book": f"col_x ({length}, {k_all}) @ col_w ({k_all}, {c_out})"},
        {"name": "dW", "a": [f"dZ'{gi}", [c_out_g, length]],
         "b": [f"cols{gi}.T", [length, k_g]], "c": [f"dW{gi}", [c_out_g, k_g]], "count": g,
         "flops": 2 * c_out_g * k_g * length * g, "result": f"reshape -> dW {dw_fmt}",
         "book": f"col_x.T ({k_all}, {length}) @ col_dZ ({length}, {c_out})"},
        {"name": "dX", "a": [f"W{gi}.T", [k_g, c_out_g]], "b": [f"dZ'{gi}", [c_out_g, length]],
         "c": [f"dcols{gi}", [k_g, length]], "count": g,
         "flops": 2 * c_out_g * k_g * length * g, "result": f"col2im -> dX {x_fmt}",
         "book": f"col_dZ ({length}, {c_out}) @ col_w.T ({c_out}, {k_all})"},
    ]
    itemsize = dtype.itemsize
    pieces, threads, budget, least = _workspace_chunks(s, itemsize)
    cols_bytes = c_in * kh * kw * length * itemsize
    x_bytes = n * c_in * h * w * itemsize
    im2col = {
        "cols": _shape(c_in * kh * kw, length), "k_per_group": k_g, "gemms": gemms,
        "memory": {"dtype": str(dtype), "cols_bytes": cols_bytes, "x_bytes": x_bytes,
                   "ratio": cols_bytes / x_bytes,
                   "workspace_limit_bytes": tuning.workspace_limit(),
                   "chunk_bytes": budget, "min_gemm_columns": least,
                   "chunks": pieces, "threads": threads},
    }

    # ---- FLOPs: useful work, and what the transpose method spends on inserted zeros
    flops = {
        "forward": s.flops, "grad_input": s.flops, "grad_weight": s.flops,
        "total": 3 * s.flops,
        "transpose_grad_input": 2 * n * c_in * hp * wp * c_out_g * kh * kw,
        "transpose_grad_weight": 2 * g * c_in_g * c_out_g * kh2 * kw2 * n * oh * ow,
    }
    auto = {}
    for op in ("forward", "backward"):
        choice = tuning.explain_choice(s, dtype, op)
        auto[op] = {"algorithm": choice.algorithm, "reason": choice.reason}

    return {
        "layer": layer, "output_size": output_size, "tensors": tensors,
        "transpose_dw": transpose_dw, "transpose_dx": transpose_dx,
        "padding_14_5_1": {"H": pad_h, "W": pad_w}, "zero_insertion": zero_insertion,
        "padded_dz": padded_dz, "rot180": rot180_example(kh, kw), "im2col": im2col,
        "flops": flops, "auto": auto,
    }


# --------------------------------------------------------------------------- rendering
def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _grid_lines(grid, styles=None) -> list[str]:
    """Rows of a drawn matrix as rich markup, cells right-aligned to one width."""
    width = max((len(c) for row in grid for c in row), default=1)
    styles = styles or {}
    lines = []
    for row in grid:
        cells = []
        for c in row:
            text = c.rjust(width)
            style = styles.get("δ" if c.startswith("δ") else c)
            cells.append(f"[{style}]{text}[/]" if style else text)
        lines.append(" ".join(cells))
    return lines


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def render(report: dict, console) -> None:
    """Print an :func:`explain` report as tables and drawings (rich)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    def new_table(title):
        return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                     pad_edge=False)

    layer = report["layer"]
    console.print(f"[bold]npconv explain[/]: X {_fmt(layer['x'])} * W {_fmt(layer['weight'])} "
                  f"-> Z {_fmt(layer['y'])}")
    console.print(f"stride {_fmt(layer['stride'])}, padding {_fmt(layer['padding'])} "
                  f"(top, bottom, left, right; given {layer['padding_given']}), dilation "
                  f"{_fmt(layer['dilation'])}, groups {layer['groups']}, padding_mode "
                  f"{layer['padding_mode']}")
    for axis in ("H", "W"):
        console.print(f"  O{axis} = {report['output_size'][axis]['formula']}   (formula 14.3.1)")

    def steps_table(title, steps, first="tensor"):
        table = new_table(title)
        table.add_column(first)
        table.add_column("shape", justify="right")
        table.add_column("what")
        for name, step in steps.items():
            table.add_row(escape(name), _fmt(step["shape"]), escape(step["what"]))
        console.print(table)

    steps_table("Shapes (tables 14.5.1 and 14.5.3)", report["tensors"])
    steps_table("dW by transposition (tables 14.5.1 -> 14.5.2)",
                report["transpose_dw"]["steps"], "step")
    steps_table("dX by transposition (tables 14.5.3 -> 14.5.5)",
                report["transpose_dx"]["steps"], "step")

    console.print("[bold]Padding of dZ, formula 14.5.1[/]: "
                  "P = ((H_output - 1)*Stride - H_input + H_kernel) / 2,")
    console.print("  read with dZ (zero-inserted) as the input, dX as the output, stride 1:")
    for axis in ("H", "W"):
        p = report["padding_14_5_1"][axis]
        line = (f"  {axis}: {p['formula']} -> {p['before']} before, {p['after']} after")
        console.print(line)
        if p["asymmetric"]:
            unit = "row" if axis == "H" else "column"
            console.print(f"     [yellow]asymmetric: the stride leaves {p['remainder']} input "
                          f"{unit}(s) unused at the end, so {p['remainder']} more zero(s) go "
                          f"after[/]")
        if not p["book_correct"]:
            size_p = layer["padded_input"][0 if axis == "H" else 1]
            verdict = (f"dX of length {p['book_dx_length']} instead of {size_p}"
                       if p["book_dx_length"] != size_p else
                       "the right length, but without zero insertion the dZ entries meet the "
                       "wrong kernel taps")
            console.print(
                f"     the book's recipe (no zero insertion, floor, same both sides): "
                f"(({size_p} - 1) - {layer['y'][2 if axis == 'H' else 3]} + {p['ke']}) // 2 "
                f"= {p['book_padding']}:")
            console.print(f"     [red]{verdict}[/]")
    styles = {"δ": "bold cyan", "0": "yellow", "·": "dim"}
    zi = report["zero_insertion"]
    if zi["applies"]:
        console.print(f"[bold]Zero insertion (17.3.2)[/]: one channel of dZ with stride "
                      f"{_fmt(zi['stride'])}, {_fmt(zi['shape'])}"
                      + (" (top-left corner)" if zi["cropped"] else "") + ":")
        for line in _grid_lines(zi["grid"], styles):
            console.print("    " + line)
    else:
        console.print("[bold]Zero insertion (17.3.2)[/]: not needed, the stride is 1.")
    pd = report["padded_dz"]
    console.print(f"[bold]dZ padded[/] (one channel, {_fmt(pd['shape'])}"
                  + (", top-left corner" if pd["cropped"] else "")
                  + "; δ: dZ, [yellow]0[/]: inserted zeros, [dim]·[/]: 14.5.1 padding):")
    for line in _grid_lines(pd["grid"], styles):
        console.print("    " + line)

    rot = report["rot180"]
    console.print("[bold]rot180 of a kernel (14.5.2)[/]: the order of the elements is "
                  "reversed, the shape is not transposed:")
    left = _grid_lines([[str(v) for v in row] for row in rot["kernel"]])
    right = _grid_lines([[str(v) for v in row] for row in rot["rotated"]])
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        arrow = "  ->  " if i == len(left) // 2 - (len(left) % 2 == 0) else "      "
        console.print(f"    {a}{arrow}{b}")

    im = report["im2col"]
    table = new_table(f"im2col: cols {_fmt(im['cols'])} = (C_in*KH*KW, N*OH*OW), one GEMM "
                      f"per group")
    for col in ("GEMM", "A", "@ B", "= C", "times", "FLOPs", "then"):
        table.add_column(col, justify="right" if col in ("times", "FLOPs") else "left")
    for gm in im["gemms"]:
        table.add_row(gm["name"], *(escape(f"{gm[k][0]} {_fmt(gm[k][1])}") for k in "abc"),
                      str(gm["count"]), f"{gm['flops']:,}", gm["result"])
    console.print(table)
    console.print("  the book's orientation (one row per output pixel, groups 1):")
    for gm in im["gemms"]:
        console.print(f"    {gm['name']:8} {gm['book']}")

    fl, mem = report["flops"], im["memory"]
    table = new_table("Cost")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row("FLOPs forward", f"{fl['forward']:,}", "2 * N*C_out*OH*OW * C_in/G*KH*KW")
    table.add_row("FLOPs dX", f"{fl['grad_input']:,}", "one multiply-add per forward one")
    table.add_row("FLOPs dW", f"{fl['grad_weight']:,}", "")
    table.add_row("FLOPs total", f"{fl['total']:,}", "forward + backward")
    ratio = fl["transpose_grad_input"] / fl["grad_input"]
    table.add_row("FLOPs dX, transpose method", f"{fl['transpose_grad_input']:,}",
                  f"{ratio:.2f}x: it also multiplies the inserted and padded zeros")
    table.add_row("im2col column matrix", _human_bytes(mem["cols_bytes"]),
                  f"{mem['dtype']}, {mem['ratio']:.1f}x the input ({_human_bytes(mem['x_bytes'])})")
    limit = mem["workspace_limit_bytes"]
    split = (f"; the samples split between {mem['threads']} threads, each with its own"
             if mem["threads"] > 1 else "")
    table.add_row("im2col workspace", f"{mem['chunks']} chunk(s)",
                  f"each within {_human_bytes(mem['chunk_bytes'])}"
                  f" (cache-sized, or {mem['min_gemm_columns']} GEMM columns; limit "
                  f"{_human_bytes(limit)}{split})")
    console.print(table)
    choices = report["auto"]
    if len({(c["algorithm"], c["reason"]) for c in choices.values()}) == 1:
        choice = next(iter(choices.values()))
        console.print(f"algorithm='auto' picks [bold]{choice['algorithm']}[/] for forward and "
                      f"backward:\n  {choice['reason']}")
    else:
        for op, choice in choices.items():
            console.print(f"algorithm='auto' picks [bold]{choice['algorithm']}[/] for {op}:\n"
                          f"  {choice['reason']}")
