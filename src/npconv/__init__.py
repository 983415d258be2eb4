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

from . import grad
from .algorithms import ALGORITHMS
from .functional import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from .spec import ConvSpec, backward_padding, output_size, same_padding
from .tuning import (
    explain_choice,
    get_num_threads,
    set_autotune,
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
    "explain_choice",
    "get_num_threads",
    "grad",
    "output_size",
    "same_padding",
    "set_autotune",
    "set_num_threads",
    "set_workspace_limit",
    "workspace_limit",
]
