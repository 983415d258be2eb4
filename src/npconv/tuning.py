"""How ``algorithm="auto"`` chooses an algorithm."""

from __future__ import annotations

import numpy as np

from .spec import ConvSpec

# Below this many multiply-adds a direct Numba kernel beats building im2col matrices.
SMALL_PROBLEM_MACS = 2_000_000


def choose(spec: ConvSpec, dtype: np.dtype, op: str) -> str:
    """The algorithm ``"auto"`` uses for ``op`` on ``spec``.

    Parameters
    ----------
    spec : ConvSpec
    dtype : numpy dtype
    op : {"forward", "backward", "grad_input", "grad_weight"}

    Returns
    -------
    str
        One of :data:`npconv.ALGORITHMS`.
    """
    if spec.flops // 2 <= SMALL_PROBLEM_MACS or spec.c_in_g == 1:
        return "jit"
    return "im2col"
