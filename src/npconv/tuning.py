"""How ``algorithm="auto"`` chooses, the im2col workspace limit, and thread control.

* :func:`choose` is a cheap rule measured on this kind of machine (2 AVX2 cores):
  Numba's direct kernels win when there is little arithmetic per output pixel (one
  input channel per group, i.e. depthwise, or tiny layers like the book's); im2col
  with BLAS GEMMs wins everywhere else, a single input channel included (LeNet's
  first layer runs 2.5x faster as one K = 25 GEMM than in the direct kernel).
  :func:`explain_choice` says why.
* :func:`set_workspace_limit` bounds the column matrix im2col may allocate (default
  256 MiB, or ``NPCONV_WORKSPACE_BYTES``); larger problems run in batch or row chunks
  with the same results.
* :func:`set_num_threads` sets Numba's and the BLAS library's thread counts together
  (``NPCONV_NUM_THREADS`` at import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .spec import ConvSpec

# Below this many multiply-adds per call a direct Numba kernel beats building im2col
# matrices and calling BLAS (measured with `npconv bench suite` on the book's layer
# and LeNet-sized layers).
SMALL_PROBLEM_MACS = 3_000_000
DEFAULT_WORKSPACE_BYTES = 256 * 2**20

_workspace_limit = int(os.environ.get("NPCONV_WORKSPACE_BYTES", DEFAULT_WORKSPACE_BYTES))


@dataclass(frozen=True)
class Choice:
    """What ``auto`` picked and the rule that picked it."""

    algorithm: str
    reason: str


def _rule(spec: ConvSpec) -> str:
    """Which case of the rule ``spec`` falls in (cheap: runs on every ``auto`` call)."""
    if spec.groups > 1 and spec.c_in_g == 1:
        return "depthwise"
    if spec.flops // 2 <= SMALL_PROBLEM_MACS:
        return "small"
    return "gemm"


_ALGORITHM = {"depthwise": "jit", "small": "jit", "gemm": "im2col"}


def choose(spec: ConvSpec, dtype, op: str) -> str:
    """The algorithm name ``"auto"`` uses for ``op`` on ``spec`` (see :func:`explain_choice`)."""
    return _ALGORITHM[_rule(spec)]


def explain_choice(spec: ConvSpec, dtype=np.float32, op: str = "forward") -> Choice:
    """The algorithm ``"auto"`` uses for ``op`` on ``spec``, with the reason.

    Parameters
    ----------
    spec : ConvSpec
        From :func:`npconv.spec.plan_conv2d` (``plan.spec``).
    dtype : numpy dtype
    op : {"forward", "backward", "grad_input", "grad_weight"}
    """
    case, macs = _rule(spec), spec.flops // 2
    k = spec.c_in_g * spec.kh * spec.kw
    reason = {
        "depthwise": f"one input channel per group (groups={spec.groups}): a GEMM would have "
                     f"K = {k}, too thin for BLAS, so the direct Numba kernel wins",
        "small": f"{macs:,} multiply-adds <= {SMALL_PROBLEM_MACS:,}: too small for im2col + "
                 f"BLAS to pay for their set-up",
        "gemm": f"{macs:,} multiply-adds with GEMMs of K = {k}: im2col + BLAS",
    }[case]
    return Choice(_ALGORITHM[case], reason)


def workspace_limit() -> int:
    """The most bytes im2col allocates for one column matrix."""
    return _workspace_limit


def set_workspace_limit(nbytes: int) -> None:
    """Bound im2col's column matrix to ``nbytes`` (larger problems are chunked).

    Raises
    ------
    ValueError
        If ``nbytes`` is not a positive integer.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int | np.integer) or nbytes < 1:
        raise ValueError(f"workspace limit must be a positive number of bytes, got {nbytes!r}")
    global _workspace_limit
    _workspace_limit = int(nbytes)


_blas_limiter = None


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in Numba's kernels and in the BLAS library (via threadpoolctl)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"number of threads must be a positive integer, got {n!r}")
    import numba
    from threadpoolctl import threadpool_limits

    n = min(int(n), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    global _blas_limiter
    _blas_limiter = threadpool_limits(limits=n, user_api="blas")


def get_num_threads() -> int:
    """Threads Numba's kernels use now."""
    import numba

    return numba.get_num_threads()


if os.environ.get("NPCONV_NUM_THREADS"):
    set_num_threads(int(os.environ["NPCONV_NUM_THREADS"]))
