"""npconv: exact, complete and fast 2-D convolution in NumPy and Numba.

The functional API follows PyTorch (``torch.nn.functional.conv2d``,
``torch.nn.grad.conv2d_input`` ...); every call can run on any of the four
algorithms of :data:`ALGORITHMS` and gives the same answer.
"""

import os as _os
import sys as _sys

# NumPy imported before npconv has loaded its BLAS library already (see below)
_NUMPY_FIRST = "numpy" in _sys.modules

# Numba's OpenMP threads and the BLAS library's threads take turns on the same cores.
# An idle OpenMP thread spins for a while before it sleeps. GNU OpenMP's default spin
# (300,000 rounds, "about 3 ms" by its own estimate) slows the BLAS calls that follow a
# parallel kernel (200,000 rounds made one- and two-sample layers 1.2-2.1x slower here); no
# spin at all (OMP_WAIT_POLICY=PASSIVE) makes every parallel kernel wake sleeping
# threads, 10-100 us each, a large part of a small layer's pass (LeNet's second layer:
# forward + backward 1.7-2.3x slower than with the spin below). npconv asks for a short
# spin, enough to carry the threads from one kernel of a call to the next and from one
# call to the next: 25,000 rounds of GOMP_SPINCOUNT for GNU OpenMP (the runtime of
# Numba's Linux wheels), 1 ms of KMP_BLOCKTIME for LLVM's and Intel's. It must be set
# before Numba starts its thread pool. Only what the user left unset is set: GNU OpenMP
# lets a spin count override the wait policy, so a user's OMP_WAIT_POLICY gets none.
_THREAD_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OPENBLAS_THREAD_TIMEOUT")
_FROM_USER = {name for name in _THREAD_VARS if name in _os.environ}
OMP_SPIN_ROUNDS = 25_000
if "OMP_WAIT_POLICY" not in _FROM_USER:
    _os.environ.setdefault("GOMP_SPINCOUNT", str(OMP_SPIN_ROUNDS))
    _os.environ.setdefault("KMP_BLOCKTIME", "1")
# The same the other way round: OpenBLAS's threads spin for about 0.1 s after every
# BLAS call (2**28 cycles), halving the speed of the Numba kernels that follow (col2im,
# the jit algorithm). 2**4 cycles lets them sleep at once. OpenBLAS reads this when it
# loads, with NumPy: where NumPy came first, the OpenBLAS it loaded reads it again and
# restarts its threads (:func:`._openblas.settle`).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
_DEFAULTED = [name for name in _THREAD_VARS if name in _os.environ and name not in _FROM_USER]
if _NUMPY_FIRST and "OPENBLAS_THREAD_TIMEOUT" in _DEFAULTED:
    from ._openblas import settle

    _SETTLED = settle()  # the OpenBLAS libraries restarted with the short timeout
else:
    _SETTLED = []


def _undo_thread_defaults(env=_os.environ) -> None:
    """Drop from ``env`` the thread-pool settings npconv chose (not those the user set),
    so that another library loaded afterwards (PyTorch, for a fair benchmark) or started
    with ``env`` keeps its own defaults."""
    for name in _DEFAULTED:
        env.pop(name, None)


from . import grad
from ._scratch import release as empty_cache
from .algorithms import ALGORITHMS
from .functional import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from .spec import ConvSpec, backward_padding, output_size, same_padding
from .tuning import (
    explain_choice,
    get_float32_precision,
    get_num_threads,
    set_autotune,
    set_float32_precision,
    set_num_threads,
    set_workspace_limit,
    workspace_limit,
)

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "ConvSpec",
    "__version__",
    "backward_padding",
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "empty_cache",
    "explain_choice",
    "get_float32_precision",
    "get_num_threads",
    "grad",
    "output_size",
    "same_padding",
    "set_autotune",
    "set_float32_precision",
    "set_num_threads",
    "set_workspace_limit",
    "workspace_limit",
]
