"""npconv: exact, complete and fast 2-D convolution in NumPy and Numba.

The functional API follows PyTorch (``torch.nn.functional.conv2d``,
``torch.nn.grad.conv2d_input`` ...); every call can run on any of the four
algorithms of :data:`ALGORITHMS` and gives the same answer.
"""

import os

# Numba's OpenMP threads and the BLAS library's threads take turns on the same cores;
# spinning OpenMP workers slow every BLAS call that follows a parallel kernel (measured:
# im2col fwd+bwd of a ResNet layer 20-30% slower). Ask OpenMP to sleep when idle unless
# the user chose otherwise; it must be set before Numba starts its thread pool.
_OMP_WAIT_POLICY_FROM_USER = "OMP_WAIT_POLICY" in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The same the other way round: OpenBLAS's threads spin for about 0.1 s after every
# BLAS call (2**28 cycles), halving the speed of the Numba kernels that follow (col2im,
# the jit algorithm). 2**4 cycles lets them sleep at once. OpenBLAS reads this when it
# loads, with NumPy: it takes effect when npconv is imported before NumPy (as the
# ``npconv`` command does), or when set in the environment.
_OPENBLAS_THREAD_TIMEOUT_FROM_USER = "OPENBLAS_THREAD_TIMEOUT" in os.environ
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
_DEFAULTED = [name for name, from_user in (("OMP_WAIT_POLICY", _OMP_WAIT_POLICY_FROM_USER),
                                           ("OPENBLAS_THREAD_TIMEOUT",
                                            _OPENBLAS_THREAD_TIMEOUT_FROM_USER))
              if not from_user]


def _undo_thread_defaults(env=os.environ) -> None:
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
