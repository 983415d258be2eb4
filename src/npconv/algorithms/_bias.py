"""The bias's two passes for the algorithms that do not fuse them into their kernels:
dB (formula 17.3.6, dZ summed over samples and pixels) and y + bias, each one parallel
Numba kernel. (numpy's sum and in-place add run on one thread: ResNet's 56x56 layer,
dZ and y of (16, 64, 56, 56), ms, numpy / these kernels on two threads, on an AVX-512
Xeon: dB 0.55 / 0.23, y + bias 0.72 / 0.22; its 28x28 layer 0.29 / 0.11 and 0.38 /
0.10.)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._numba import serial_and_parallel

# Arrays of at least this many elements run on all threads (the parallel variant
# whatever the thread count, so that the results do not depend on it).
PARALLEL_MIN = 1 << 16


@njit(inline="always")
def plane_sum(plane):  # pragma: no cover - compiled
    """The sum of a C-contiguous plane (OH, OW) of dZ, in float64 (the jit algorithm's
    plane kernels sum dB with it too)."""
    flat = plane.reshape(-1)
    total = 0.0
    for t in range(flat.shape[0]):
        total += flat[t]
    return total


def _sums(dz, out):  # pragma: no cover - compiled
    """out[c] = dZ[:, c] summed in float64, one task per channel: each sample's plane
    summed, then the samples in order (the same bits on any number of threads)."""
    n, c = dz.shape[:2]
    for co in prange(c):
        total = 0.0
        for b in range(n):
            total += plane_sum(dz[b, co])
        out[co] = total


def _add(y, bias):  # pragma: no cover - compiled
    """y[b, c] += bias[c], one task per plane."""
    n, c = y.shape[:2]
    for task in prange(n * c):
        plane = y[task // c, task % c].reshape(-1)
        value = bias[task % c]
        for t in range(plane.shape[0]):
            plane[t] += value


_SUMS = serial_and_parallel(_sums, fastmath={"reassoc"})  # vector partial sums
_ADD = serial_and_parallel(_add)


def bias_grad(grad_output: np.ndarray) -> np.ndarray:
    """dB (C_out,) from dZ (N, C_out, OH, OW), summed in float64, in dZ's dtype."""
    dz = np.ascontiguousarray(grad_output)
    sums = np.empty(dz.shape[1], dtype=np.float64)
    _SUMS[dz.size >= PARALLEL_MIN](dz, sums)
    return sums.astype(dz.dtype)


def add_bias(y: np.ndarray, bias: np.ndarray) -> None:
    """y (N, C_out, OH, OW) += bias (C_out,), in place (y as the algorithm returned it)."""
    if not y.flags.c_contiguous or not y.flags.writeable:
        y += bias.reshape(1, -1, 1, 1)
        return
    _ADD[y.size >= PARALLEL_MIN](y, np.ascontiguousarray(bias, dtype=y.dtype))
