"""Weight initialisation as PyTorch does it by default, from a seedable generator.

PyTorch's ``Conv2d`` and ``Linear`` call ``kaiming_uniform_(weight, a=sqrt(5))``, which
draws from ``U(-bound, bound)`` with::

    gain  = sqrt(2 / (1 + a**2)) = sqrt(1/3)
    bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)

and draw the bias from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, where ``fan_in`` is
``C_in/groups * KH * KW`` for a convolution and ``in_features`` for a linear layer.
The distributions are PyTorch's; the random numbers are NumPy's (``np.random.Generator``).
"""

from __future__ import annotations

import math

import numpy as np


def as_generator(rng) -> np.random.Generator:
    """A ``np.random.Generator`` from a generator, an integer seed or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int | np.integer) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output of a weight (C_out, C_in/g, ...): C_in/g * prod(kernel)."""
    if len(shape) < 2:
        raise ValueError(f"fan_in needs a weight of at least 2 dimensions, got shape {shape}")
    return int(shape[1] * math.prod(shape[2:]))


def uniform(shape, bound: float, dtype, rng: np.random.Generator) -> np.ndarray:
    """``U(-bound, bound)`` of ``shape``, drawn in float64 and cast to ``dtype``."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype, copy=False)


def kaiming_uniform(shape, dtype=np.float32, rng=None, a: float = math.sqrt(5)) -> np.ndarray:
    """PyTorch's ``kaiming_uniform_`` (leaky-ReLU gain with slope ``a``, fan-in mode).

    Parameters
    ----------
    shape : tuple of int
        (C_out, C_in/groups, KH, KW) or (out_features, in_features).
    dtype : numpy dtype
    rng : Generator, int or None
    a : float
        Negative slope; PyTorch's layers use sqrt(5), giving ``bound = 1/sqrt(fan_in)``.

    Returns
    -------
    ndarray of ``shape`` and ``dtype``
    """
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in(shape))
    return uniform(shape, bound, dtype, as_generator(rng))


def default_bias(weight_shape, dtype=np.float32, rng=None) -> np.ndarray:
    """PyTorch's default bias: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` of shape (C_out,)."""
    bound = 1.0 / math.sqrt(fan_in(weight_shape))
    return uniform((weight_shape[0],), bound, dtype, as_generator(rng))
