"""The four interchangeable convolution algorithms, the specialised one, and their registry.

Each algorithm is one module exposing the same three functions, all on validated,
batched arrays and a resolved :class:`~npconv.spec.ConvSpec` (zero padding only;
padding modes are applied before and undone after, in :mod:`npconv.functional`)::

    forward(x, weight, spec)               -> y   (N, C_out, OH, OW)
    grad_input(grad_output, weight, spec)  -> dx  (N, C_in, H, W)
    grad_weight(x, grad_output, spec)      -> dw  (C_out, C_in/groups, KH, KW)

and optionally ``backward(x, weight, grad_output, spec, need_input, need_weight)``
when computing both gradients together can share work, and ``bind_forward(spec,
dtype)`` / ``bind_backward(spec, dtype)`` when it has choices to make per geometry that
are worth making once (:func:`bind_forward`, :func:`bind_backward`). A module that sets
``FUSES_BIAS = True`` also takes the bias: ``forward(x, weight, spec, bias)`` adds it,
and ``backward(..., need_input, need_weight, need_bias)`` returns ``(dx, dw, db)``
(the book's layer is small enough that a separate pass over y or dZ shows).
:func:`forward` and :func:`backward` here are how callers reach either kind.

Outputs have the dtype of the inputs. Only :mod:`npconv.functional` calls these.

The four of :data:`ALGORITHMS` run every configuration. :data:`SPECIALISED` ones run
only some (``winograd``: 3x3 kernels, stride 1); each has
``unsupported(spec)`` returning the reason it cannot run a configuration (or None),
checked by :func:`npconv.functional.resolve_algorithm` before any work is done.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

ALGORITHMS = ("naive", "transpose", "im2col", "jit")
SPECIALISED = ("winograd",)


_MODULES: dict[str, ModuleType] = {}


def get(name: str) -> ModuleType:
    """The module implementing algorithm ``name`` (of :data:`ALGORITHMS` or
    :data:`SPECIALISED`)."""
    module = _MODULES.get(name)
    if module is None:
        if name not in ALGORITHMS + SPECIALISED:
            raise ValueError(f"unknown algorithm {name!r}, expected 'auto' or one of "
                             f"{ALGORITHMS + SPECIALISED}")
        module = _MODULES[name] = importlib.import_module(f"{__name__}.{name}")
    return module


def get_pair(name: str) -> ModuleType:
    """The backward pass split between two algorithms, ``"dx+dw"``
    (:mod:`npconv.algorithms._split`; ``algorithm="auto"`` only)."""
    return importlib.import_module(f"{__name__}._split").pair(name)


def get_empty_batch() -> ModuleType:
    """The stand-in for every algorithm on a batch of no samples
    (:mod:`npconv.algorithms._empty_batch`)."""
    return importlib.import_module(f"{__name__}._empty_batch")


def unsupported(impl: ModuleType, spec) -> str | None:
    """Why algorithm ``impl`` cannot run ``spec`` (None when it can: always, for the
    general algorithms of :data:`ALGORITHMS`)."""
    check = impl.__dict__.get("unsupported")
    return None if check is None else check(spec)


def bias_grad(grad_output):
    """dB (C_out,) from dZ (N, C_out, OH, OW): dZ summed over samples and pixels
    (formula 17.3.6) in float64, in dZ's dtype."""
    from . import _bias  # Numba, imported with the first convolution that needs it

    return _bias.bias_grad(grad_output)


def add_bias(y, bias) -> None:
    """y (N, C_out, OH, OW) += bias (C_out,), in place."""
    from . import _bias

    _bias.add_bias(y, bias)


def forward(impl: ModuleType, x, weight, bias, spec):
    """y (N, C_out, OH, OW) = x (*) weight + bias (bias may be None)."""
    if bias is not None and impl.__dict__.get("FUSES_BIAS"):
        return impl.forward(x, weight, spec, bias)
    y = impl.forward(x, weight, spec)
    if bias is not None:
        add_bias(y, bias)
    return y


def backward(impl: ModuleType, x, weight, grad_output, spec, need_input: bool,
             need_weight: bool, need_bias: bool = False):
    """``(dx or None, dw or None, db or None)`` through the algorithm's shared path when
    it has one; dB (formula 17.3.6: dZ summed over samples and pixels) is computed
    here unless the algorithm fuses it."""
    if impl.__dict__.get("FUSES_BIAS"):
        return impl.backward(x, weight, grad_output, spec, need_input, need_weight, need_bias)
    if not (need_input or need_weight):
        dx = dw = None
    elif "backward" in impl.__dict__:
        dx, dw = impl.backward(x, weight, grad_output, spec, need_input, need_weight)
    else:
        dx = impl.grad_input(grad_output, weight, spec) if need_input else None
        dw = impl.grad_weight(x, grad_output, spec) if need_weight else None
    return dx, dw, bias_grad(grad_output) if need_bias else None


def bind_forward(impl: ModuleType, spec, dtype):
    """``run(x, weight, bias) -> y`` for batched arrays of ``spec`` and ``dtype`` (bias may
    be None): the module's own ``bind_forward`` where it has one, its paths chosen once
    for every later call with the same geometry, else :func:`forward` on each call."""
    bind = impl.__dict__.get("bind_forward")
    if bind is not None:
        return bind(spec, np.dtype(dtype))
    return lambda x, weight, bias: forward(impl, x, weight, bias, spec)


def bind_backward(impl: ModuleType, spec, dtype):
    """``run(x, weight, grad_output, need_input, need_weight, need_bias) -> (dx, dw,
    db)`` for batched arrays of ``spec`` and ``dtype``, as :func:`bind_forward`
    (:func:`backward` on each call where the module has no ``bind_backward``)."""
    bind = impl.__dict__.get("bind_backward")
    if bind is not None:
        return bind(spec, np.dtype(dtype))
    return lambda x, weight, grad_output, need_input, need_weight, need_bias: backward(
        impl, x, weight, grad_output, spec, need_input, need_weight, need_bias)
