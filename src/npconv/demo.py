"""``npconv demo``: all four algorithms on the book's shapes, and how well they agree.

The book's 14.5.3 example: X (8, 3, 7, 6), W (2, 3, 4, 5), stride 1, padding 0,
Z (8, 2, 4, 2). Each algorithm computes y, dX, dW and dB; the table gives the largest
absolute difference from the naive loops and, when PyTorch is installed, from
PyTorch's autograd.
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

from .algorithms import ALGORITHMS
from .functional import conv2d, conv2d_backward


def _torch_reference(x, w, b, g, kwargs):
    try:
        import torch
    except ImportError:
        return None
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    ty.backward(torch.tensor(g))
    return tuple(t.detach().numpy() for t in (ty, tx.grad, tw.grad, tb.grad))


def run(x_shape=(8, 3, 7, 6), weight_shape=(2, 3, 4, 5), stride=1, padding=0, dilation=1,
        groups=1, dtype=np.float64, seed=0):
    """Every algorithm's (y, dX, dW, dB) and its max abs difference from the references.

    Returns
    -------
    dict
        ``{"shapes": {...}, "rows": [{"algorithm", "reference", "y", "dx", "dw", "db"}]}``.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    b = rng.standard_normal(weight_shape[0]).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y_shape = conv2d(x, w, b, algorithm="naive", **kwargs).shape
    g = rng.standard_normal(y_shape).astype(dtype)
    results = {}
    for name in ALGORITHMS:
        y = conv2d(x, w, b, algorithm=name, **kwargs)
        results[name] = (y, *conv2d_backward(x, w, g, algorithm=name, **kwargs))
    references = {"naive": results["naive"]}
    torch_result = _torch_reference(x, w, b, g, kwargs)
    if torch_result is not None:
        references["torch"] = torch_result
    rows = []
    for ref_name, ref in references.items():
        for name in ALGORITHMS:
            diffs = [float(np.max(np.abs(a - r))) for a, r in zip(results[name], ref, strict=True)]
            rows.append({"algorithm": name, "reference": ref_name,
                         **dict(zip(("y", "dx", "dw", "db"), diffs, strict=True))})
    shapes = {"x": x_shape, "weight": weight_shape, "y": y_shape}
    return {"shapes": shapes, "rows": rows, "torch": torch_result is not None}


def handle(args: argparse.Namespace) -> int:
    dtype = np.dtype(args.dtype)
    report = run(dtype=dtype, seed=args.seed)
    console = Console()
    s = report["shapes"]
    console.print(f"npconv demo: the book's 14.5.3 layer, X {s['x']} * W {s['weight']} -> "
                  f"Z {s['y']}, {dtype}")
    table = Table(title="max |difference| of y, dX, dW, dB")
    for col in ("algorithm", "vs", "y", "dX", "dW", "dB"):
        table.add_column(col, justify="left" if col in ("algorithm", "vs") else "right")
    for row in report["rows"]:
        table.add_row(row["algorithm"], row["reference"],
                      *(f"{row[k]:.1e}" for k in ("y", "dx", "dw", "db")))
    console.print(table)
    if not report["torch"]:
        console.print("PyTorch is not installed: compared with the naive loops only.")
    tol = 1e-4 if dtype == np.float32 else 1e-10
    worst = max(max(r[k] for k in ("y", "dx", "dw", "db")) for r in report["rows"])
    verdict = "all algorithms agree" if worst <= tol else "DISAGREEMENT"
    console.print(f"{verdict}: largest difference {worst:.1e} (tolerance {tol:.0e})")
    return 0 if worst <= tol else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run all four algorithms on the book's shapes and compare them",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=handle, command="demo")
