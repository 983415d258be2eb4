"""A batch of no samples (N = 0), as PyTorch runs it: empty y and dX, zero dW and dB.

:func:`npconv.functional.resolve_algorithm` hands this module out for every call whose
batch is empty (after checking that the algorithm asked for could run the same
convolution on one sample), so no algorithm ever sees N = 0. The weight gradient is a
sum over no samples, so it is zeros; dB (:func:`npconv.algorithms.bias_grad`) sums an
empty dZ to zeros by itself.
"""

from __future__ import annotations

import numpy as np

from ..spec import ConvSpec


def forward(x: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """y (0, C_out, OH, OW)."""
    return np.zeros(spec.y_shape, dtype=x.dtype)


def grad_input(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dX (0, C_in, H, W)."""
    return np.zeros(spec.x_shape, dtype=grad_output.dtype)


def grad_weight(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dW (C_out, C_in/groups, KH, KW): a sum over no samples."""
    return np.zeros(spec.weight_shape, dtype=x.dtype)
