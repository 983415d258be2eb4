"""The functional API and the one place that dispatches to an algorithm.

``conv2d``, ``conv2d_backward``, ``conv_transpose2d`` and
``conv_transpose2d_backward`` follow PyTorch's names and semantics
(``torch.nn.functional.conv2d`` and friends). Each call is validated once by
:mod:`npconv.spec`, padding modes are applied here (:mod:`npconv.padding`), and the
chosen algorithm (:mod:`npconv.algorithms`) sees zero padding only.

Gradients are exact, as PyTorch's autograd gives them: nothing is divided by the
batch size. The book's layers divide dW and dB by N (14.5.1 ``backward_dw_simple``);
to get the book's numbers, divide the returned ``grad_weight`` and ``grad_bias`` by
``x.shape[0]`` (or let the loss put ``1/N`` into dZ, as PyTorch's mean reduction does).
"""

from __future__ import annotations

import numpy as np

from . import algorithms, tuning
from .padding import pad, pad_adjoint
from .spec import (
    Conv2dPlan,
    as_float_array,
    check_grad_output,
    check_same_dtype,
    plan_conv2d,
    plan_conv_transpose2d,
)


def resolve_algorithm(algorithm: str, spec, dtype, op: str):
    """The algorithm module for ``algorithm`` (``"auto"`` asks :mod:`npconv.tuning`);
    for an empty batch (N = 0) the module that returns empty and zero arrays."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a string, got {algorithm!r}")
    if algorithm == "auto":
        if spec.n == 0:
            return algorithms.get_empty_batch()
        algorithm = tuning.choose(spec, dtype, op)
        if "+" in algorithm:  # dX and dW on two algorithms (npconv.algorithms._split)
            return algorithms.get_pair(algorithm)
    impl = algorithms.get(algorithm)
    reason = algorithms.unsupported(impl, spec)
    if reason is not None:
        raise ValueError(f"algorithm={algorithm!r} cannot run this convolution (weight "
                         f"{list(spec.weight_shape)}, stride {spec.stride}, dilation "
                         f"{spec.dilation}): {reason}; use 'auto' or one of "
                         f"{algorithms.ALGORITHMS}")
    # an empty batch: nothing to compute, once the algorithm asked for is known to fit
    return algorithms.get_empty_batch() if spec.n == 0 else impl


def _batched_input(x: np.ndarray, plan: Conv2dPlan) -> np.ndarray:
    """x as the algorithm wants it: (N, C_in, H, W), padded already for non-zero modes."""
    xb = x if plan.batched else x[None]
    if plan.mode != "zeros":
        xb = pad(xb, plan.mode_padding, plan.mode)  # (N, C_in, H + pt + pb, W + pl + pr)
    return xb


def _check_bias(bias, c_out: int, who: str):
    if bias is None:
        return None
    bias = as_float_array(bias, "bias", who)
    if bias.shape != (c_out,):
        raise ValueError(f"{who}: bias of size {list(bias.shape)} does not match the "
                         f"{c_out} output channels (expected [{c_out}])")
    return bias


_BOOLS = (bool, np.bool_)
_ALL = (True, True, True)


def _check_mask(output_mask, who: str) -> tuple[bool, bool, bool]:
    if output_mask is _ALL:  # the default
        return _ALL
    if (not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3
            or not all(isinstance(m, _BOOLS) for m in output_mask)):
        raise TypeError(f"{who}: output_mask must be a tuple of 3 bools "
                        f"(grad_input, grad_weight, grad_bias), got {output_mask!r}")
    return tuple(bool(m) for m in output_mask)


# A training loop calls each layer again and again with the same shapes, dtypes and
# settings, and everything conv2d and conv2d_backward work out before computing is then
# the same: the validation, the plan, the algorithm (with ``auto``, the rule) and the
# algorithm's own choice of path (:func:`npconv.algorithms.bind_forward`). Each call
# whose arguments are plain (NumPy arrays, ints, strings, pairs of ints) is prepared
# once, under a key of everything the preparation reads: the shapes, the dtypes, the
# arguments and :func:`npconv.tuning.settings_key`. On the book's layer that
# preparation took 3 us of a 6 us forward call and 5 of a 10 us backward call (forward
# 5.9 -> 3.1 us, backward 10.4 -> 5.5, in a hot loop).
_PREPARED: dict = {}
MAX_PREPARED = 256


def _call_key(op: str, x, weight, third, stride, padding, dilation, groups, padding_mode,
              algorithm):
    """The key a call's preparation is remembered under, or None for a call whose
    arguments are not plain (array-likes, subclasses, tuples of numpy ints: prepared
    every time, as bool and int, or 1 and 1.0, would otherwise share a key)."""
    if (type(x) is _ARRAY and type(weight) is _ARRAY
            and (third is None or type(third) is _ARRAY)
            and type(groups) is int and type(padding_mode) is str and type(algorithm) is str
            and (type(stride) is int or _plain(stride))
            and (type(padding) is int or _plain(padding))
            and (type(dilation) is int or _plain(dilation))):
        return (op, x.shape, x.dtype, weight.shape, weight.dtype,
                None if third is None else (third.shape, third.dtype), stride, padding,
                dilation, groups, padding_mode, algorithm, tuning.settings_key())
    return None


_ARRAY = np.ndarray


def _plain(v) -> bool:
    """An int, a string, or a pair of ints (exactly those types)."""
    t = type(v)
    return (t is int or t is str
            or (t is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int))


def forget_prepared() -> None:
    """Forget every remembered preparation (the next call of each kind prepares again)."""
    _PREPARED.clear()


def _remember(key, prepared):
    if key is not None:
        if len(_PREPARED) >= MAX_PREPARED:
            _PREPARED.clear()
        _PREPARED[key] = prepared
    return prepared


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto"):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W) or (C_in, H, W)
        float32 or float64.
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)
        Same dtype as ``x``.
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), ((top, bottom), (left, right)), "valid" or "same"
        ``"same"`` with stride > 1 follows TensorFlow/JAX (output ``ceil(H / S)``).
    groups : int
        ``C_in`` and ``C_out`` must both be divisible by it.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    algorithm : {"auto", "naive", "transpose", "im2col", "jit", "winograd"}
        ``"winograd"`` runs only 3x3 kernels with stride 1 (any dilation).

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW) (or (C_out, OH, OW)), the dtype of ``x``, with
    ``OH = (H + P_top + P_bottom - D*(KH-1) - 1) // S + 1`` (formula 14.3.1).
    """
    key = _call_key("conv2d", x, weight, bias, stride, padding, dilation, groups,
                    padding_mode, algorithm)
    run = _PREPARED.get(key) if key is not None else None
    if run is None:
        who = "conv2d"
        x = as_float_array(x, "input", who)
        weight = as_float_array(weight, "weight", who)
        plan = plan_conv2d(x.shape, weight.shape, stride, padding, dilation, groups,
                           padding_mode, who)
        bias = _check_bias(bias, plan.spec.c_out, who)
        if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
            check_same_dtype(who, input=x, weight=weight, bias=bias)  # raises, naming them
        impl = resolve_algorithm(algorithm, plan.spec, x.dtype, "forward")
        run = _remember(key, _prepared_forward(plan, impl, x.dtype))
    return run(x, weight, bias)


def _prepared_forward(plan: Conv2dPlan, impl, dtype):
    """``run(x, weight, bias) -> y`` for validated arrays of ``plan``."""
    forward = algorithms.bind_forward(impl, plan.spec, dtype)
    if plan.batched and plan.mode == "zeros":
        return forward

    def run(x, weight, bias):
        y = forward(_batched_input(x, plan), weight, bias)  # (N, C_out, OH, OW)
        return y if plan.batched else y[0]

    return run


def conv2d_backward(x, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                    padding_mode="zeros", output_mask=_ALL, algorithm="auto"):
    """Gradients of :func:`conv2d` with respect to input, weight and bias.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W) or (C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)
    grad_output : ndarray of shape (N, C_out, OH, OW) or (C_out, OH, OW)
        dZ, the gradient of the loss with respect to the output.
    stride, padding, dilation, groups, padding_mode, algorithm
        As in :func:`conv2d`.
    output_mask : (bool, bool, bool)
        Which of (grad_input, grad_weight, grad_bias) to compute; the others are None.

    Returns
    -------
    (grad_input, grad_weight, grad_bias)
        Of shapes x.shape, weight.shape and (C_out,); exact (not divided by N).
    """
    who = "conv2d_backward"
    need_dx, need_dw, need_db = _check_mask(output_mask, who)
    key = _call_key("conv2d_backward", x, weight, grad_output, stride, padding, dilation,
                    groups, padding_mode, algorithm)
    run = _PREPARED.get(key) if key is not None else None
    if run is None:
        x = as_float_array(x, "input", who)
        weight = as_float_array(weight, "weight", who)
        grad_output = as_float_array(grad_output, "grad_output", who)
        if weight.dtype != x.dtype or grad_output.dtype != x.dtype:
            check_same_dtype(who, input=x, weight=weight, grad_output=grad_output)  # raises
        plan = plan_conv2d(x.shape, weight.shape, stride, padding, dilation, groups,
                           padding_mode, who)
        check_grad_output(grad_output, plan, who)
        if not (need_dx or need_dw or need_db):
            return None, None, None  # validated; nothing to compute, no algorithm to pick
        impl = resolve_algorithm(algorithm, plan.spec, x.dtype, "backward")
        run = _remember(key, _prepared_backward(plan, impl, x.dtype))
    if not (need_dx or need_dw or need_db):
        return None, None, None
    return run(x, weight, grad_output, need_dx, need_dw, need_db)


def _prepared_backward(plan: Conv2dPlan, impl, dtype):
    """``run(x, weight, grad_output, need_dx, need_dw, need_db) -> (dx, dw, db)`` for
    validated arrays of ``plan``."""
    backward = algorithms.bind_backward(impl, plan.spec, dtype)
    if plan.batched and plan.mode == "zeros":
        return backward

    def run(x, weight, grad_output, need_dx, need_dw, need_db):
        gb = grad_output if plan.batched else grad_output[None]  # (N, C_out, OH, OW)
        dx, dw, db = backward(_batched_input(x, plan), weight, gb, need_dx, need_dw,
                              need_db)  # dB alone too, so it is summed the same way
        if dx is not None:
            if plan.mode != "zeros":
                dx = pad_adjoint(dx, plan.mode_padding, plan.mode)  # (N, C_in, H, W)
            dx = dx if plan.batched else dx[0]
        return dx, dw, db

    return run


# --------------------------------------------------------------------------- transposed
def _padded_to_plan(x: np.ndarray, plan: Conv2dPlan) -> np.ndarray:
    """x as (N, C, OH, OW) of the plan: zero rows/cols appended when output_padding >= S."""
    xb = x if plan.batched else x[None]
    extra_h, extra_w = plan.spec.oh - xb.shape[2], plan.spec.ow - xb.shape[3]
    if extra_h or extra_w:
        xb = pad(xb, (0, extra_h, 0, extra_w), "zeros")  # (N, C, OH, OW)
    return xb


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    It is the adjoint of :func:`conv2d`: its forward pass is conv2d's input gradient
    and its gradients are conv2d's forward pass and weight gradient (see
    :func:`conv_transpose2d_backward`).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W) or (C_in, H, W)
    weight : ndarray of shape (C_in, C_out/groups, KH, KW)
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int) or ((top, bottom), (left, right))
    output_padding : int or (int, int)
        Extra rows/columns on the bottom/right; smaller than stride or dilation.
    groups : int
    algorithm : {"auto", "naive", "transpose", "im2col", "jit", "winograd"}
        ``"winograd"`` runs only 3x3 kernels with stride 1 (any dilation).

    Returns
    -------
    ndarray of shape (N, C_out, H_out, W_out) with
    ``H_out = (H - 1)*S - P_top - P_bottom + D*(KH - 1) + output_padding + 1``.
    """
    who = "conv_transpose2d"
    x = as_float_array(x, "input", who)
    weight = as_float_array(weight, "weight", who)
    plan = plan_conv_transpose2d(x.shape, weight.shape, stride, padding, output_padding, groups,
                                 dilation, who)
    bias = _check_bias(bias, plan.spec.c_in, who)
    check_same_dtype(who, input=x, weight=weight, bias=bias)
    impl = resolve_algorithm(algorithm, plan.spec, x.dtype, "grad_input")
    y = impl.grad_input(_padded_to_plan(x, plan), weight, plan.spec)  # (N, C_out, H_out, W_out)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y if plan.batched else y[0]


def conv_transpose2d_backward(x, weight, grad_output, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, output_mask=(True, True, True),
                              algorithm="auto"):
    """Gradients of :func:`conv_transpose2d` with respect to input, weight and bias.

    grad_input is conv2d(grad_output, weight) and grad_weight is conv2d's weight
    gradient with the roles of input and output gradient swapped.

    Returns
    -------
    (grad_input, grad_weight, grad_bias)
        Of shapes x.shape, weight.shape and (C_out,).
    """
    who = "conv_transpose2d_backward"
    need_dx, need_dw, need_db = _check_mask(output_mask, who)
    x = as_float_array(x, "input", who)
    weight = as_float_array(weight, "weight", who)
    grad_output = as_float_array(grad_output, "grad_output", who)
    check_same_dtype(who, input=x, weight=weight, grad_output=grad_output)
    plan = plan_conv_transpose2d(x.shape, weight.shape, stride, padding, output_padding, groups,
                                 dilation, who)
    s = plan.spec
    expected = (s.n, s.c_in, s.h, s.w) if plan.batched else (s.c_in, s.h, s.w)
    if grad_output.shape != expected:
        raise ValueError(f"{who}: grad_output of size {list(grad_output.shape)} does not match "
                         f"the output size {list(expected)} of the transposed convolution")
    gb = grad_output if plan.batched else grad_output[None]  # (N, C_out, H_out, W_out)
    dx = dw = db = None
    if need_dx:
        impl = resolve_algorithm(algorithm, s, x.dtype, "forward")
        dx = impl.forward(gb, weight, s)[:, :, :x.shape[-2], :x.shape[-1]]  # (N, C_in, H, W)
        dx = dx if plan.batched else dx[0]
    if need_dw:
        impl = resolve_algorithm(algorithm, s, x.dtype, "grad_weight")
        dw = impl.grad_weight(gb, _padded_to_plan(x, plan), s)
    if need_db:
        db = algorithms.bias_grad(gb)
    return dx, dw, db
