"""The book made runnable: sections 14.5 and 17.3 as functions and commands.

* :func:`explain` — the shapes, paddings, drawings, GEMMs and costs that tables
  14.5.1-14.5.5 and section 17.3 show, for any layer (``npconv explain``);
* :func:`fit_kernel` — the 17.3.7 experiment: recover a kernel by gradient descent
  (``npconv fit-kernel``);
* :func:`check` — every algorithm against the naive loops, PyTorch and finite
  differences on a grid of layers (``npconv check``).

The functions shadow their modules as attributes of this package
(``npconv.book.explain`` is the function); import helpers from the modules directly,
e.g. ``from npconv.book.explain import render``.
"""

from .check import GRID, Case, CheckRow, check, exit_status, summarize
from .explain import explain
from .fit_kernel import KERNELS, FitResult, fit_kernel
from .images import SOURCES, load_image, make_source

__all__ = [
    "GRID",
    "KERNELS",
    "SOURCES",
    "Case",
    "CheckRow",
    "FitResult",
    "check",
    "exit_status",
    "explain",
    "fit_kernel",
    "load_image",
    "make_source",
    "summarize",
]
