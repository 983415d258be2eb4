"""Gradients of conv2d one at a time, as ``torch.nn.grad``.

``conv2d_input`` and ``conv2d_weight`` take the shape of what they compute explicitly:
with stride > 1 several input sizes give the same output size (the stride remainder),
so it cannot be recovered from ``grad_output``.
"""

from __future__ import annotations

from .functional import _batched_input, resolve_algorithm
from .padding import pad_adjoint
from .spec import (
    Conv2dPlan,
    as_float_array,
    check_grad_output,
    check_same_dtype,
    plan_conv2d,
    size_tuple,
)

__all__ = ["conv2d_bias", "conv2d_input", "conv2d_weight"]


def _check_input_size(input_size, grad_output, who):
    """``input_size`` as a tuple, batched exactly when ``grad_output`` is."""
    size = size_tuple(input_size, "input_size", who)
    if len(size) not in (3, 4):
        raise ValueError(f"{who}: input_size must have 4 entries (N, C_in, H, W) or 3 "
                         f"(C_in, H, W), got {list(size)}")
    if grad_output.ndim != len(size):
        raise ValueError(f"{who}: grad_output of size {list(grad_output.shape)} and input_size "
                         f"{list(size)} must both be batched (4-D) or both unbatched (3-D)")
    return size


def _check_input_range(plan: Conv2dPlan, grad_output, who: str) -> None:
    """With stride S, S input sizes share one output size: name the range, as PyTorch does."""
    s = plan.spec
    pads = tuple(a + b for a, b in zip(plan.mode_padding, s.padding, strict=True))
    for axis, (k, stride, dil) in enumerate(((s.kh, s.stride[0], s.dilation[0]),
                                             (s.kw, s.stride[1], s.dilation[1]))):
        out = grad_output.shape[-2 + axis]
        low = (out - 1) * stride + dil * (k - 1) + 1 - pads[2 * axis] - pads[2 * axis + 1]
        if not low <= plan.input_hw[axis] <= low + stride - 1:
            raise ValueError(
                f"{who}: requested an input grad size of {list(plan.input_hw)}, but valid "
                f"sizes along {'HW'[axis]} range from {max(low, 1)} to {low + stride - 1} "
                f"(for a grad_output of {list(grad_output.shape)})")


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 padding_mode="zeros", algorithm="auto"):
    """Gradient of conv2d with respect to its input (dX), as ``torch.nn.grad.conv2d_input``.

    Mathematically dZ zero-inserted (17.3.2), padded (formula 14.5.1) and correlated
    with rot180 of the transposed kernels (14.5.2, 17.3.3/17.3.4); each algorithm
    computes it its own way.

    Parameters
    ----------
    input_size : tuple of int
        (N, C_in, H, W) or (C_in, H, W), the shape of x.
    weight : ndarray of shape (C_out, C_in/groups, KH, KW)
    grad_output : ndarray of shape (N, C_out, OH, OW) or (C_out, OH, OW)

    Returns
    -------
    ndarray of shape ``input_size``, the dtype of ``grad_output``.
    """
    who = "conv2d_input"
    weight = as_float_array(weight, "weight", who)
    grad_output = as_float_array(grad_output, "grad_output", who)
    check_same_dtype(who, grad_output=grad_output, weight=weight)
    size = _check_input_size(input_size, grad_output, who)
    plan = plan_conv2d(size, weight.shape, stride, padding, dilation, groups, padding_mode, who)
    if grad_output.shape[:-2] == ((size[0],) if plan.batched else ()) + (plan.spec.c_out,):
        _check_input_range(plan, grad_output, who)
    check_grad_output(grad_output, plan, who)
    gb = grad_output if plan.batched else grad_output[None]  # (N, C_out, OH, OW)
    impl = resolve_algorithm(algorithm, plan.spec, grad_output.dtype, "grad_input")
    dx = impl.grad_input(gb, weight, plan.spec)  # (N, C_in, H', W') in the padded frame
    if plan.mode != "zeros":
        dx = pad_adjoint(dx, plan.mode_padding, plan.mode)  # (N, C_in, H, W)
    return dx if plan.batched else dx[0]


def conv2d_weight(x, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  padding_mode="zeros", algorithm="auto"):
    """Gradient of conv2d with respect to its weight (dW), as ``torch.nn.grad.conv2d_weight``.

    Formula 17.3 (11), ``dW = X * dZ``: the input correlated with dZ used as the kernel.
    Exact: not divided by the batch size (the book's layer divides by N).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W) or (C_in, H, W)
    weight_size : tuple of int
        (C_out, C_in/groups, KH, KW).
    grad_output : ndarray of shape (N, C_out, OH, OW) or (C_out, OH, OW)

    Returns
    -------
    ndarray of shape ``weight_size``, the dtype of ``x``.
    """
    who = "conv2d_weight"
    x = as_float_array(x, "input", who)
    grad_output = as_float_array(grad_output, "grad_output", who)
    check_same_dtype(who, input=x, grad_output=grad_output)
    wsize = size_tuple(weight_size, "weight_size", who)
    plan = plan_conv2d(x.shape, wsize, stride, padding, dilation, groups, padding_mode, who)
    check_grad_output(grad_output, plan, who)
    gb = grad_output if plan.batched else grad_output[None]  # (N, C_out, OH, OW)
    impl = resolve_algorithm(algorithm, plan.spec, x.dtype, "grad_weight")
    return impl.grad_weight(_batched_input(x, plan), gb, plan.spec)


def conv2d_bias(grad_output):
    """Gradient of conv2d with respect to its bias: dZ summed over N, OH, OW (17.3.6).

    Parameters
    ----------
    grad_output : ndarray of shape (N, C_out, OH, OW) or (C_out, OH, OW)

    Returns
    -------
    ndarray of shape (C_out,)
    """
    grad_output = as_float_array(grad_output, "grad_output", "conv2d_bias")
    if grad_output.ndim not in (3, 4):
        raise ValueError(f"conv2d_bias: Expected 3D (unbatched) or 4D (batched) grad_output, "
                         f"but got grad_output of size: {list(grad_output.shape)}")
    axes = (0, 2, 3) if grad_output.ndim == 4 else (1, 2)
    return grad_output.sum(axis=axes, dtype=grad_output.dtype)
