"""``npconv explain``, ``npconv fit-kernel`` and ``npconv check``: the book, runnable.

Each command is a thin layer over :mod:`npconv.book`; the same functions work in a
notebook (``npconv.book.explain(...)``, ``fit_kernel(...)``, ``check(...)``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from ..fileio import json_text, write_text
from . import _options

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _console(width: int = 120):
    from rich.console import Console

    return Console(width=max(Console().width, width))  # the tables need the room


def _friendly(command: str):
    """Report a missing optional package or an unreadable file as one line, exit 2."""
    def wrap(handler):
        @functools.wraps(handler)
        def run(args) -> int:
            try:
                return handler(args)
            except (ImportError, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise  # npconv.cli reports it
                print(f"npconv {command}: error: {exc}", file=sys.stderr)
                return 2
        return run
    return wrap


# --------------------------------------------------------------------------- explain
EXPLAIN_EPILOG = """\
examples:
  npconv explain                                   # the book's X (8,3,7,6), W (2,3,4,5)
  npconv explain --stride 2 --padding 1            # zero insertion and 14.5.1 padding
  npconv explain --x 1,1,10,9 --weight 1,1,3,3 --stride 2    # asymmetric padding
  npconv explain --x 2,4,9,8 --weight 6,2,3,2 --groups 2 --padding same
  npconv explain --padding 2,1 --padding-mode reflect --dtype float64
  npconv explain --json > layer.json

padding: P, PH,PW, TOP,BOTTOM,LEFT,RIGHT, same or valid."""


@_friendly("explain")
def _explain(args) -> int:
    from .explain import explain, render

    report = explain(args.x, args.weight, args.stride, args.padding, args.dilation,
                     args.groups, args.padding_mode, args.dtype)
    if args.json:
        print(json_text(report))
    else:
        render(report, _console())
    return 0


# --------------------------------------------------------------------------- fit-kernel
FIT_EPILOG = """\
examples:
  npconv fit-kernel                                # the book: horizontal edge, lr 0.5
  npconv fit-kernel --kernel sobel-x --out sobel.png
  npconv fit-kernel --kernel "1,2,1; 0,0,0; -1,-2,-1" --seed 3
  npconv fit-kernel --source soft-disc --kernel sharpen     # ill-conditioned: no 1e-7
  npconv fit-kernel --image photo.jpg --lr 0.1 --stride 2 --padding 1
  npconv fit-kernel --algorithm transpose --json fit.json

kernels: {kernels}, or rows separated by ';'.
sources: shapes (the circle plus a square and dots; default), circle, soft-disc.
exit status: 0 when the loss fell below --tol and both allclose checks hold, else 1."""


def _check_out_path(path: str) -> None:
    """Fail before training, not after, when the figure cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such folder for --out: {directory}")
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        raise ValueError(f"--out must end in .png, .pdf, .svg or .jpg, got {path!r}")
    from .figure import _matplotlib

    _matplotlib()


@_friendly("fit-kernel")
def _fit_kernel(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..spec import plan_conv2d
    from .fit_kernel import describe_conditioning, fit_kernel, parse_kernel, render
    from .images import SIZE, load_image

    if args.out:
        _check_out_path(args.out)
    console = _console()
    name, w_true = parse_kernel(args.kernel)
    if args.image:
        load_image(args.image)  # a bad file fails here, before anything is printed
    where = args.image or f"the drawn picture '{args.source}'"
    plan = plan_conv2d((1, 1, SIZE, SIZE), (1, 1, *w_true.shape), args.stride, args.padding,
                       args.dilation, who="layer")
    console.print(f"[bold]npconv fit-kernel[/] (17.3.7): recover the {name} kernel "
                  f"{w_true.shape[0]}x{w_true.shape[1]} from {where}")
    console.print(f"x ({SIZE}, {SIZE}) -> y {plan.spec.y_shape[2:]} (stride {args.stride}, "
                  f"padding {args.padding}, dilation {args.dilation}); lr {args.lr}, seed "
                  f"{args.seed}, algorithm {args.algorithm}")
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.fields[text]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("fit", total=args.max_iter, text="")

        def progress(i, loss):
            bar.update(task, completed=i, text=f"iteration {i:>5}  loss {loss:.3e}")

        result = fit_kernel(args.kernel, image=args.image, source=args.source,
                            seed=args.seed, lr=args.lr, tol=args.tol,
                            max_iter=args.max_iter, stride=args.stride,
                            padding=args.padding, dilation=args.dilation,
                            algorithm=args.algorithm, atol=args.atol, progress=progress)
    render(result, console)
    for line in describe_conditioning(result):
        console.print(line)
    if args.out:
        from .figure import plot

        plot(result, args.out)
        console.print(f"figure written to {args.out}")
    if args.json:
        write_text(args.json, json_text(result.to_dict()))
        console.print(f"result written to {args.json}")
    return 0 if result.passed else 1


# --------------------------------------------------------------------------- check
CHECK_EPILOG = """\
examples:
  npconv check                                     # every algorithm, the whole grid
  npconv check --algorithm im2col --verbose        # after changing im2col
  npconv check --cases book,same,transposed --dtype float64
  npconv check --x 2,3,11,9 --weight 4,3,3,3 --stride 2 --padding same
  npconv check --x 2,4,5,5 --weight 4,2,3,3 --transposed --stride 2 --output-padding 1 \\
      --no-grid
  npconv check --no-torch --json rows.json

cases of the grid: {cases}.
exit status: 0 when every comparison passes, 1 otherwise."""


def _given_case(args):
    from .check import Case

    if (args.x is None) != (args.weight is None):
        raise ValueError("give both --x and --weight to check a layer of your own")
    if args.x is None:
        if args.no_grid:
            raise ValueError("--no-grid needs a layer: give --x and --weight")
        if args.transposed:
            raise ValueError("--transposed needs a layer: give --x and --weight")
        return None
    kwargs = dict(stride=args.stride, padding=args.padding, dilation=args.dilation,
                  groups=args.groups)
    if args.transposed:
        if args.padding_mode != "zeros":
            raise ValueError("--transposed supports only --padding-mode zeros")
        if isinstance(args.padding, str) or (isinstance(args.padding, tuple)
                                             and len(args.padding) == 4):
            raise ValueError("--transposed needs numeric padding P or PH,PW")
        return Case("given", args.x, args.weight,
                    dict(kwargs, output_padding=args.output_padding), "conv_transpose2d")
    if args.output_padding:
        raise ValueError("--output-padding applies to --transposed only")
    return Case("given", args.x, args.weight, dict(kwargs, padding_mode=args.padding_mode))


@_friendly("check")
def _check(args) -> int:
    from .check import (
        ALGORITHMS,
        DTYPES,
        FD_TOLERANCE,
        GRID,
        REFERENCES,
        TOLERANCES,
        check,
        exit_status,
        render,
        skipped,
    )

    cases = [] if args.no_grid else list(GRID)
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in {case.id for case in GRID}]
        if unknown:
            raise ValueError(f"unknown case(s) {', '.join(unknown)}; the grid has "
                             f"{', '.join(case.id for case in GRID)}")
        cases = [case for case in cases if case.id in wanted]
    given = _given_case(args)
    if given is not None:
        cases.append(given)
    algorithms = tuple(args.algorithm or ALGORITHMS)
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    torch_choice = False if args.no_torch else "auto"
    console = _console(124)
    with console.status("checking") as status:
        rows = check(algorithms, dtypes, cases, torch=torch_choice,
                        finite_differences=not args.no_fd, seed=args.seed,
                        progress=lambda case_id: status.update(f"checking case {case_id}"))
    references = sorted({r.reference for r in rows}, key=REFERENCES.index)
    console.print(f"[bold]npconv check[/]: {len(algorithms)} algorithm(s) x {len(cases)} "
                  f"case(s) x {', '.join(dtypes)}, against {', '.join(references)} "
                  f"(references in float64)")
    for name, ids in skipped(algorithms, cases).items():
        if ids:
            console.print(f"{name} cannot run {len(ids)} of the cases (left out for it): "
                          f"{', '.join(ids)}")
    if not args.no_torch and "torch" not in references:
        console.print("PyTorch is not installed: compared with the naive loops and finite "
                      "differences only.")
    render(rows, console, verbose=args.verbose)
    failed = sum(not r.passed for r in rows)
    tolerances = ", ".join(f"{k} rtol {v[0]:g}" for k, v in TOLERANCES.items())
    if failed:
        console.print(f"[red bold]FAIL[/]: {failed} of {len(rows)} comparisons failed "
                      f"({tolerances}; finite differences rtol {FD_TOLERANCE[0]:g})")
    else:
        console.print(f"[green bold]PASS[/]: all {len(rows)} comparisons within tolerance "
                      f"({tolerances}; finite differences rtol {FD_TOLERANCE[0]:g})")
    if args.json:
        write_text(args.json, json.dumps([r.to_dict() for r in rows], indent=1))
        console.print(f"rows written to {args.json}")
    return exit_status(rows)


# --------------------------------------------------------------------------- register
def _algorithms(text: str) -> list[str]:
    from ..algorithms import ALGORITHMS, SPECIALISED

    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in ALGORITHMS + SPECIALISED:
            raise argparse.ArgumentTypeError(
                f"unknown algorithm {name!r}; choose from "
                f"{', '.join(ALGORITHMS + SPECIALISED)}")
    return names


def register(subparsers) -> None:
    """Add ``explain``, ``fit-kernel`` and ``check`` to the ``npconv`` command."""
    from ..algorithms import ALGORITHMS
    from .check import GRID
    from .explain import __doc__ as explain_doc
    from .fit_kernel import KERNELS
    from .fit_kernel import __doc__ as fit_doc
    from .images import SOURCES

    p = subparsers.add_parser(
        "explain", help="the shapes, paddings and costs of tables 14.5.1-14.5.5 and 17.3 "
                        "for a layer", description=explain_doc, epilog=EXPLAIN_EPILOG,
        formatter_class=_FORMATTER)
    _options.add_layer_options(p, (8, 3, 7, 6), (2, 3, 4, 5))
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="for the memory figures (default float32, as the book's im2col)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead")
    p.set_defaults(handler=_explain, command="explain")

    p = subparsers.add_parser(
        "fit-kernel", help="the 17.3.7 experiment: recover a kernel by gradient descent",
        description=fit_doc, epilog=FIT_EPILOG.format(kernels=", ".join(KERNELS)),
        formatter_class=_FORMATTER)
    p.add_argument("--kernel", default="horizontal-edge",
                   help="a name or a matrix such as '0,-1,0; 0,2,0; 0,-1,0' "
                        "(default horizontal-edge, the book's)")
    p.add_argument("--image", metavar="FILE",
                   help="any picture (made grayscale, centre-cropped, resized to 80x80)")
    p.add_argument("--source", choices=SOURCES, default="shapes",
                   help="the drawn picture when no --image (default shapes)")
    p.add_argument("--seed", type=int, default=0, help="for w ~ Normal(0, 0.1) (default 0)")
    p.add_argument("--lr", type=_options.positive_float, default=0.5)
    p.add_argument("--tol", type=_options.positive_float, default=1e-7,
                   help="stop when the loss is below this (default 1e-7)")
    p.add_argument("--max-iter", type=_options.positive_int, default=10000)
    p.add_argument("--atol", type=_options.positive_float, default=1e-2,
                   help="of the two allclose checks (default 1e-2)")
    p.add_argument("--stride", type=_options.pair, default=1, metavar="S|SH,SW")
    p.add_argument("--padding", type=_options.padding, default=0,
                   metavar="P|PH,PW|T,B,L,R|same|valid")
    p.add_argument("--dilation", type=_options.pair, default=1, metavar="D|DH,DW")
    p.add_argument("--algorithm", choices=("auto", *ALGORITHMS), default="auto",
                   help="for the forward pass and dW (naive takes minutes)")
    p.add_argument("--out", metavar="FILE.png", help="save the figure (needs matplotlib)")
    p.add_argument("--json", metavar="FILE", help="write the result and loss history")
    p.set_defaults(handler=_fit_kernel, command="fit-kernel")

    from .check import __doc__ as check_doc

    p = subparsers.add_parser(
        "check", help="every algorithm against the naive loops, PyTorch and finite "
                      "differences", description=check_doc,
        epilog=CHECK_EPILOG.format(cases=", ".join(c.id for c in GRID)),
        formatter_class=_FORMATTER)
    p.add_argument("--algorithm", type=_algorithms, metavar="NAME[,NAME]",
                   help=f"algorithms to check (default all: {', '.join(ALGORITHMS)}; "
                        f"also winograd, on the cases it can run)")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--cases", metavar="ID[,ID]", help="only these cases of the grid")
    _options.add_layer_options(p)
    p.add_argument("--transposed", action="store_true",
                   help="the given layer is conv_transpose2d (weight C_in,C_out/G,KH,KW)")
    p.add_argument("--output-padding", type=_options.pair, default=0, metavar="OP|OPH,OPW")
    p.add_argument("--no-grid", action="store_true", help="check only the given layer")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-fd", action="store_true", help="skip the finite differences")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="also print every case")
    p.add_argument("--json", metavar="FILE", help="write every comparison row")
    p.set_defaults(handler=_check, command="check")
