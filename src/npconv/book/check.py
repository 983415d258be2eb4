"""``check``: every algorithm against three independent references, on a grid of layers.

What a learner runs after changing an algorithm. For every case of :data:`GRID` (and
any layer given), every algorithm computes y, dX, dW and dB in float32 and float64 and
is compared with

* ``naive``: the loops of :mod:`npconv.algorithms.naive`, run in float64 (for float64,
  the naive algorithm is not compared with itself);
* ``torch``: PyTorch's autograd in float64, when PyTorch is installed;
* ``finite-diff``: directional central differences of the algorithm's own forward pass,
  in float64. With L(x, w, b) = <conv(x, w, b), g> and a random direction v,
  ``(L(x + eps v) - L(x - eps v)) / (2 eps)`` must equal ``<dX, v>`` (and likewise for
  w and b). Convolution is linear in each argument, so the difference is exact up to
  rounding and the tolerance can be tight; it checks that the backward pass is the
  derivative of the forward pass, whatever both compute.

Inputs are drawn once per case as float32 numbers, so the float64 references are exact
for both dtypes and a float32 error measures only npconv's own rounding. An error is
``max |actual - reference|``, its relative form that divided by ``max |reference|``; a
comparison passes when ``abs <= atol + rtol * max |reference|`` (:data:`TOLERANCES`).
A wrong shape or dtype, a missing gradient or an exception fails the comparison.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import algorithms as _algorithms
from ..algorithms import ALGORITHMS, SPECIALISED
from ..functional import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from ..spec import plan_conv2d, plan_conv_transpose2d

QUANTITIES = ("y", "dX", "dW", "dB")
DTYPES = ("float32", "float64")
REFERENCES = ("naive", "torch", "finite-diff")
# (rtol, atol), both relative to max |reference| and its floor; keyed by dtype.
TOLERANCES = {"float64": (1e-10, 1e-12), "float32": (1e-5, 1e-6)}
FD_TOLERANCE = (1e-6, 1e-9)  # directional differences in float64
FD_STEP = 1e-3


@dataclass(frozen=True)
class Case:
    """One layer: shapes, keyword arguments and the operation (readable ``id``)."""

    id: str
    x: tuple
    weight: tuple
    kwargs: dict = field(default_factory=dict)
    op: str = "conv2d"  # or "conv_transpose2d" (weight (C_in, C_out/groups, KH, KW))


GRID = (
    Case("book", (8, 3, 7, 6), (2, 3, 4, 5)),
    Case("1x1", (2, 4, 5, 5), (3, 4, 1, 1)),
    Case("stride-2", (2, 3, 8, 8), (4, 3, 3, 3), dict(stride=2)),
    Case("stride-remainder", (2, 3, 10, 9), (4, 3, 3, 2), dict(stride=(2, 3))),
    Case("padding-1", (2, 2, 5, 6), (3, 2, 3, 3), dict(padding=1)),
    Case("same", (2, 2, 6, 5), (3, 2, 3, 3), dict(padding="same")),
    Case("same-even-kernel", (2, 2, 6, 5), (3, 2, 4, 2), dict(padding="same")),
    Case("same-stride-2", (2, 2, 7, 8), (3, 2, 3, 3), dict(padding="same", stride=2)),
    Case("asymmetric", (2, 2, 5, 6), (3, 2, 3, 3), dict(padding=((0, 2), (3, 1)))),
    Case("dilation", (2, 3, 9, 10), (2, 3, 3, 3), dict(dilation=(2, 3), padding=1)),
    Case("groups", (2, 6, 7, 7), (4, 3, 3, 3), dict(groups=2)),
    Case("depthwise", (2, 4, 7, 6), (4, 1, 3, 3), dict(groups=4, padding=1)),
    Case("reflect", (2, 2, 6, 5), (3, 2, 3, 3), dict(padding=(2, 1), padding_mode="reflect")),
    Case("replicate", (2, 2, 6, 5), (3, 2, 3, 3),
         dict(padding=(2, 3), padding_mode="replicate")),
    Case("circular", (2, 2, 6, 5), (3, 2, 3, 3), dict(padding=(2, 1), padding_mode="circular")),
    Case("everything", (2, 4, 11, 10), (6, 2, 3, 2),
         dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=2,
              padding_mode="reflect")),
    Case("transposed", (2, 3, 4, 5), (3, 2, 3, 3),
         dict(stride=2, padding=1, output_padding=1), op="conv_transpose2d"),
    Case("transposed-groups", (2, 4, 5, 4), (4, 1, 3, 2),
         dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
         op="conv_transpose2d"),
)


@dataclass(frozen=True)
class CheckRow:
    """One comparison: one quantity of one algorithm on one case against one reference."""

    op: str
    case: str
    algorithm: str
    reference: str
    dtype: str
    quantity: str
    max_abs: float
    max_rel: float
    rtol: float
    passed: bool
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- running
def _forward(case: Case, x, w, b, algorithm: str):
    fn = conv2d if case.op == "conv2d" else conv_transpose2d
    return fn(x, w, b, algorithm=algorithm, **case.kwargs)


def _run(case: Case, algorithm: str, x, w, b, g) -> dict:
    """y, dX, dW, dB of one algorithm through the public functional API."""
    backward = conv2d_backward if case.op == "conv2d" else conv_transpose2d_backward
    y = _forward(case, x, w, b, algorithm)
    dx, dw, db = backward(x, w, g, algorithm=algorithm, **case.kwargs)
    return {"y": y, "dX": dx, "dW": dw, "dB": db}


def _torch_run(torch, case: Case, x, w, b, g) -> dict:
    """PyTorch's y, dX, dW, dB in float64 (asymmetric and mode padding through F.pad)."""
    F = torch.nn.functional
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    kw = dict(case.kwargs)
    if case.op == "conv2d":
        plan = plan_conv2d(x.shape, w.shape, **kw)
        pads = plan.mode_padding if plan.mode != "zeros" else plan.spec.padding
        top, bottom, left, right = pads
        mode = "constant" if plan.mode == "zeros" else plan.mode
        xp = F.pad(tx, (left, right, top, bottom), mode=mode) if any(pads) else tx
        ty = F.conv2d(xp, tw, tb, stride=plan.spec.stride, padding=0,
                      dilation=plan.spec.dilation, groups=plan.spec.groups)
    else:
        ty = F.conv_transpose2d(tx, tw, tb, **kw)
    ty.backward(torch.tensor(g))
    return {"y": ty.detach().numpy(), "dX": tx.grad.numpy(), "dW": tw.grad.numpy(),
            "dB": tb.grad.numpy()}


def _compare(actual, expected, dtype: str, tolerance) -> tuple[float, float, bool, str]:
    """(max abs error, relative error, passed, note) of one array against its reference."""
    if actual is None:
        return np.inf, np.inf, False, "not computed"
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return np.inf, np.inf, False, f"shape {actual.shape} != {expected.shape}"
    scale = float(np.max(np.abs(expected), initial=0.0))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    if not np.isfinite(err):
        err = np.inf
    rtol, atol = tolerance
    rel = err / scale if scale > 0 else err
    passed = err <= atol + rtol * scale
    note = ""
    if actual.dtype != np.dtype(dtype):
        passed, note = False, f"dtype {actual.dtype}, expected {dtype}"
    return err, rel, bool(passed), note


def _finite_differences(case: Case, algorithm: str, x, w, b, g, grads: dict, rng):
    """[(quantity, abs, rel, passed)] for dX, dW, dB along one random direction each."""
    def loss(xa, wa, ba):
        return float(np.sum(_forward(case, xa, wa, ba, algorithm) * g))

    out = []
    args = [x, w, b]
    for index, quantity in enumerate(("dX", "dW", "dB")):
        v = rng.standard_normal(args[index].shape)
        plus, minus = list(args), list(args)
        plus[index] = args[index] + FD_STEP * v
        minus[index] = args[index] - FD_STEP * v
        numeric = (loss(*plus) - loss(*minus)) / (2 * FD_STEP)
        grad = grads.get(quantity)
        if grad is None or np.shape(grad) != v.shape:
            out.append((quantity, np.inf, np.inf, False))
            continue
        analytic = float(np.sum(grad * v))
        err = abs(numeric - analytic)
        scale = max(abs(analytic), abs(numeric))
        rtol, atol = FD_TOLERANCE
        out.append((quantity, err, err / scale if scale > 0 else err,
                    bool(err <= atol + rtol * scale)))
    return out


def _import_torch(use_torch):
    if use_torch is False:
        return None
    try:
        import torch
    except ImportError:
        if use_torch is True:
            raise ImportError("check: PyTorch was asked for but is not installed "
                              "(pip install torch)") from None
        return None
    return torch


def validate(case: Case) -> tuple[int, int, int, int]:
    """Check that a case is a valid layer and return its output shape.

    Raises
    ------
    ValueError, TypeError
        As :func:`npconv.conv2d` / :func:`npconv.conv_transpose2d` would.
    """
    s = _spec(case)
    return s.y_shape if case.op == "conv2d" else (s.n, s.c_in, s.h, s.w)


def _spec(case: Case):
    """The conv2d a case computes (for a transposed convolution: the conv2d whose input
    gradient it is)."""
    who = f"case {case.id!r}"
    if case.op == "conv2d":
        return plan_conv2d(case.x, case.weight, **case.kwargs, who=who).spec
    if case.op != "conv_transpose2d":
        raise ValueError(f"{who}: unknown op {case.op!r}")
    kw = case.kwargs
    return plan_conv_transpose2d(case.x, case.weight, kw.get("stride", 1), kw.get("padding", 0),
                                 kw.get("output_padding", 0), kw.get("groups", 1),
                                 kw.get("dilation", 1), who).spec


def skipped(algorithms, cases) -> dict[str, list[str]]:
    """The cases each specialised algorithm (:data:`npconv.algorithms.SPECIALISED`) of
    ``algorithms`` cannot run, by id: :func:`check` leaves them out for it."""
    return {name: [case.id for case in cases
                   if _algorithms.unsupported(_algorithms.get(name), _spec(case)) is not None]
            for name in algorithms if name in SPECIALISED}


def _case_inputs(case: Case, y_shape, rng):
    """x, w, b, g as float32 numbers held in float64 (exact in both dtypes)."""
    c_out = case.weight[0] if case.op == "conv2d" else (
        case.weight[1] * case.kwargs.get("groups", 1))
    return tuple(rng.standard_normal(shape).astype(np.float32).astype(np.float64)
                 for shape in (case.x, case.weight, (c_out,), y_shape))


def _error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _check_case(case: Case, y_shape, algorithms, dtypes, torch_module, finite_differences,
                rng) -> list[CheckRow]:
    """All comparisons of one case (see :func:`check`) by ``algorithms``, those that can
    run it."""
    rows = []

    def add(algorithm, reference, dtype, quantity, err, rel, rtol, passed, note=""):
        rows.append(CheckRow(case.op, case.id, algorithm, reference, dtype, quantity,
                             float(err), float(rel), rtol, bool(passed), note))

    x, w, b, g = _case_inputs(case, y_shape, rng)
    references = {}
    try:
        references["naive"] = _run(case, "naive", x, w, b, g)
    except Exception as exc:  # a broken naive algorithm: say so, check against the rest
        for algorithm in algorithms:
            for dtype in dtypes:
                add(algorithm, "naive", dtype, "y", np.inf, np.inf, TOLERANCES[dtype][0],
                    False, f"the naive reference failed: {_error_text(exc)}")
    if torch_module is not None:
        try:
            references["torch"] = _torch_run(torch_module, case, x, w, b, g)
        except Exception as exc:  # a layer PyTorch cannot express: say so (--no-torch)
            for algorithm in algorithms:
                add(algorithm, "torch", "float64", "y", np.inf, np.inf, TOLERANCES["float64"][0],
                    False, f"PyTorch could not run this case (use --no-torch): "
                           f"{_error_text(exc)}")

    for algorithm in algorithms:
        for dtype in dtypes:
            rtol = TOLERANCES[dtype][0]
            try:
                result = _run(case, algorithm, *(a.astype(dtype) for a in (x, w, b, g)))
                error = ""
            except Exception as exc:  # a learner's broken algorithm must not stop the check
                result, error = None, _error_text(exc)
            for reference, expected in references.items():
                if reference == algorithm == "naive" and dtype == "float64":
                    continue  # the reference itself
                for quantity in QUANTITIES:
                    if result is None:
                        add(algorithm, reference, dtype, quantity, np.inf, np.inf, rtol, False,
                            error)
                    else:
                        err, rel, ok, note = _compare(result[quantity], expected[quantity],
                                                      dtype, TOLERANCES[dtype])
                        add(algorithm, reference, dtype, quantity, err, rel, rtol, ok, note)
            if not finite_differences or dtype != "float64":
                continue
            if result is not None:
                try:
                    diffs = _finite_differences(case, algorithm, x, w, b, g, result, rng)
                except Exception as exc:
                    result, error = None, _error_text(exc)
            if result is None:
                diffs = [(q, np.inf, np.inf, False) for q in ("dX", "dW", "dB")]
            for quantity, err, rel, ok in diffs:
                add(algorithm, "finite-diff", dtype, quantity, err, rel, FD_TOLERANCE[0], ok,
                    error)
    return rows


def check(algorithms=ALGORITHMS, dtypes=DTYPES, cases=GRID, *, torch="auto",
          finite_differences=True, seed=0, progress=None) -> list[CheckRow]:
    """Compare algorithms with the naive loops, PyTorch and finite differences.

    Parameters
    ----------
    algorithms : sequence of str
        Which of :data:`npconv.ALGORITHMS` to check (default all), or of the specialised
        ones (``"winograd"``), which are checked on the cases they can run
        (:func:`skipped` names the others).
    dtypes : sequence of {"float32", "float64"}
    cases : sequence of Case
        Default :data:`GRID`: stride (with remainder), every padding form ("same" and
        asymmetric included), dilation, groups, depthwise, padding modes and
        conv_transpose2d.
    torch : "auto", True or False
        Use PyTorch when installed ("auto"), require it, or skip it.
    finite_differences : bool
    seed : int
    progress : callable (case_id) -> None, optional
        Called before each case.

    Returns
    -------
    list of CheckRow
        One row per (case, algorithm, reference, dtype, quantity). Finite differences
        run in float64 only and check dX, dW and dB.

    Raises
    ------
    ValueError, TypeError
        For an unknown algorithm or dtype or an invalid case (before anything runs).
    ImportError
        If ``torch=True`` and PyTorch is not installed.
    """
    algorithms, dtypes, cases = tuple(algorithms), tuple(dtypes), tuple(cases)
    for name in algorithms:
        if name not in ALGORITHMS + SPECIALISED:
            raise ValueError(f"check: unknown algorithm {name!r}; choose from "
                             f"{', '.join(ALGORITHMS + SPECIALISED)}")
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"check: dtype must be float32 or float64, got {dtype!r}")
    if not algorithms or not dtypes or not cases:
        raise ValueError("check: nothing to check (no algorithm, dtype or case)")
    shapes = [validate(case) for case in cases]
    refused = skipped(algorithms, cases)
    if all(len(refused.get(name, ())) == len(cases) for name in algorithms):
        raise ValueError(f"check: nothing to check: {', '.join(algorithms)} cannot run "
                         f"any of the cases ({', '.join(case.id for case in cases)})")
    torch_module = _import_torch(torch)
    rng = np.random.default_rng(seed)
    rows: list[CheckRow] = []
    for case, y_shape in zip(cases, shapes, strict=True):
        if progress is not None:
            progress(case.id)
        runs = [name for name in algorithms if case.id not in refused.get(name, ())]
        rows += _check_case(case, y_shape, runs, dtypes, torch_module, finite_differences,
                            rng)
    return rows


# --------------------------------------------------------------------------- summaries
def summarize(rows) -> list[dict]:
    """Worst errors per (algorithm, reference, dtype): the table ``npconv check`` prints.

    Returns
    -------
    list of dict
        ``{"algorithm", "reference", "dtype", "passed", "total", "failed",
        "errors": {quantity: (max_abs, max_rel)}}`` in algorithm, reference, dtype order.
    """
    groups = defaultdict(list)
    for row in rows:
        groups[(row.algorithm, row.reference, row.dtype)].append(row)

    def order(key):
        algorithm, reference, dtype = key
        a = ALGORITHMS.index(algorithm) if algorithm in ALGORITHMS else len(ALGORITHMS)
        return (a, REFERENCES.index(reference), DTYPES.index(dtype))

    summary = []
    for key in sorted(groups, key=order):
        members = groups[key]
        errors = {}
        for quantity in QUANTITIES:
            chosen = [r for r in members if r.quantity == quantity]
            if chosen:
                errors[quantity] = (max(r.max_abs for r in chosen),
                                    max(r.max_rel for r in chosen))
        failed = sum(not r.passed for r in members)
        summary.append({"algorithm": key[0], "reference": key[1], "dtype": key[2],
                        "total": len(members), "failed": failed,
                        "passed": failed == 0, "errors": errors})
    return summary


def exit_status(rows) -> int:
    """0 when every comparison passed, 1 otherwise."""
    return 0 if rows and all(r.passed for r in rows) else 1


# --------------------------------------------------------------------------- rendering
def _short(value: float) -> str:
    """``2.6e-06`` -> ``2.6e-6`` (the table has eight columns to fit)."""
    if not np.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _cell(pair) -> str:
    if pair is None:
        return "-"
    err, rel = pair
    return f"{_short(err)}/{_short(rel)}"


def render(rows, console, verbose: bool = False, max_failures: int = 40) -> None:
    """Print the summary table, the failures, and (``verbose``) every case."""
    from rich import box
    from rich.table import Table

    table = Table(title="max abs / max rel error per quantity (worst over all cases)",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("algorithm", "vs", "dtype", *QUANTITIES, "result"):
        table.add_column(col, justify="left" if col in ("algorithm", "vs", "dtype") else "right",
                         no_wrap=True)
    previous = None
    for s in summarize(rows):
        if previous is not None and s["algorithm"] != previous:
            table.add_section()
        previous = s["algorithm"]
        result = (f"[green]pass {s['total']}[/]" if s["passed"] else
                  f"[red]FAIL {s['failed']}/{s['total']}[/]")
        table.add_row(s["algorithm"], s["reference"], s["dtype"],
                      *(_cell(s["errors"].get(q)) for q in QUANTITIES), result)
    console.print(table)
    failures = [r for r in rows if not r.passed]
    if verbose:
        detail = Table(title="every case", title_justify="left", box=box.SIMPLE_HEAD,
                       pad_edge=False)
        for col in ("case", "algorithm", "vs", "dtype", *QUANTITIES, "result"):
            detail.add_column(col)
        cells = defaultdict(dict)
        for r in rows:
            cells[(r.op, r.case, r.algorithm, r.reference, r.dtype)][r.quantity] = r
        for (_op, case, algorithm, reference, dtype), by_q in cells.items():
            ok = all(r.passed for r in by_q.values())
            detail.add_row(case, algorithm, reference, dtype,
                           *(_cell((by_q[q].max_abs, by_q[q].max_rel)) if q in by_q else "-"
                             for q in QUANTITIES),
                           "[green]pass[/]" if ok else "[red]FAIL[/]")
        console.print(detail)
    if failures:
        from rich.markup import escape

        shown = failures[:max_failures]
        table = Table(title=f"failures ({len(failures)}"
                            + (f", first {max_failures}" if len(failures) > max_failures
                               else "") + ")", title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        columns = ["op", "case", "algorithm", "vs", "dtype", "quantity", "max abs", "max rel",
                   "rtol"]
        notes = any(r.note for r in shown)
        for col in columns + (["note"] if notes else []):
            table.add_column(col, justify="right" if col in ("max abs", "max rel", "rtol")
                             else "left")
        for r in shown:
            table.add_row(r.op, r.case, r.algorithm, r.reference, r.dtype, r.quantity,
                          _short(r.max_abs), _short(r.max_rel), f"{r.rtol:g}",
                          *([escape(r.note[:100])] if notes else []))
        console.print(table)
