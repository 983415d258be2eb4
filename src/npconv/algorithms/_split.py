"""The backward pass split between two algorithms: dX by one, dW by another.

Only ``algorithm="auto"`` uses it (:mod:`npconv.tuning`'s "split_backward" case), where
each gradient alone is faster on a different algorithm and the pair shares no work that
one algorithm would share (im2col, say, packs the column matrix once for dX and dW
only where it computes dW: its dX is a GEMM and col2im). Its name is the two
algorithms' names joined by ``+``, dX's first: ``"im2col+jit"``.
"""

from __future__ import annotations

import functools
import types

from . import get, unsupported

SEPARATOR = "+"


@functools.cache
def pair(name: str) -> types.ModuleType:
    """The module (:mod:`npconv.algorithms`' interface, without a forward pass) that
    computes dX with the first algorithm of ``name`` ("dx+dw") and dW with the second."""
    dx_name, dw_name = name.split(SEPARATOR)
    dx_impl, dw_impl = get(dx_name), get(dw_name)
    module = types.ModuleType(f"{__name__}.{name}", f"dX by {dx_name}, dW by {dw_name}")

    def _unsupported(spec):
        return unsupported(dx_impl, spec) or unsupported(dw_impl, spec)

    def grad_input(grad_output, weight, spec):
        return dx_impl.grad_input(grad_output, weight, spec)

    def grad_weight(x, grad_output, spec):
        return dw_impl.grad_weight(x, grad_output, spec)

    def backward(x, weight, grad_output, spec, need_input, need_weight):
        return (grad_input(grad_output, weight, spec) if need_input else None,
                grad_weight(x, grad_output, spec) if need_weight else None)

    module.unsupported = _unsupported
    module.grad_input = grad_input
    module.grad_weight = grad_weight
    module.backward = backward
    return module
