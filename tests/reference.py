"""The comparison helper, the dtype-keyed tolerance table and the PyTorch reference."""

from __future__ import annotations

import numpy as np

# One tolerance table keyed by dtype: (rtol, atol) relative to the reference's scale.
TOLERANCES = {
    np.dtype(np.float64): (1e-10, 1e-11),
    np.dtype(np.float32): (2e-5, 2e-5),
}


def assert_close(actual, expected, quantity: str, context: str = "") -> None:
    """Compare one quantity; a failure says which quantity diverged and by how much."""
    assert actual is not None, f"{quantity} is None ({context})"
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{quantity}: shape {actual.shape} != expected {expected.shape} ({context})")
    assert actual.dtype == expected.dtype, (
        f"{quantity}: dtype {actual.dtype} != expected {expected.dtype} ({context})")
    rtol, atol = TOLERANCES[actual.dtype]
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1.0)
    err = float(np.max(np.abs(actual - expected), initial=0.0))
    assert err <= atol * scale + rtol * scale, (
        f"{quantity} diverged: max abs error {err:.3e} (scale {scale:.3e}, "
        f"rtol {rtol}, atol {atol}) {context}")


def torch_conv2d(torch, x, w, b, g, stride, pads, dilation, groups, mode):
    """PyTorch's y, dx, dw, db for the same convolution.

    ``pads`` is (top, bottom, left, right); modes and asymmetric padding go through
    ``F.pad`` so that every npconv padding form has a PyTorch twin.
    """
    F = torch.nn.functional
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if b is not None else None
    t, bo, le, r = pads
    torch_mode = "constant" if mode == "zeros" else mode
    xp = F.pad(tx, (le, r, t, bo), mode=torch_mode) if any(pads) else tx
    ty = F.conv2d(xp, tw, tb, stride=stride, padding=0, dilation=dilation, groups=groups)
    ty.backward(torch.tensor(g))
    return (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(),
            tb.grad.numpy() if tb is not None else None)


# Every algorithm, plus the jit algorithm's other paths forced on: the test shapes are
# small, so "jit" alone runs mostly its index-table kernels (npconv.algorithms._indexed);
# "jit-planes" turns those off, so its serial plane kernels run, and "jit-parallel"
# forces the parallel ones, including the register-tiled kernels
# (npconv.algorithms._blocked) that real layers use; "jit-implicit" sends every forward
# and weight gradient through the implicit-GEMM kernels (npconv.algorithms._implicit).
VARIANTS = ["naive", "transpose", "im2col", "jit", "jit-planes", "jit-parallel", "jit-implicit"]


def _patches(variant: str) -> tuple[str, dict]:
    """(algorithm name, {attribute of npconv.algorithms.jit: value}) for ``variant``."""
    if variant == "jit-parallel":
        return "jit", {"PARALLEL_MIN_MACS": 0}
    if variant == "jit-implicit":  # every forward and dW through the implicit GEMMs
        return "jit", {"PARALLEL_MIN_MACS": 0, "IMPLICIT_MIN_CHANNELS": 1, "IMPLICIT_MIN_K": 1,
                       "IMPLICIT_MAX_K": 1 << 30, "IMPLICIT_FORWARD_MAX_K": 1 << 30,
                       "IMPLICIT_MIN_JUNK": 0,
                       "IMPLICIT_STRIDED_MIN_CHANNELS": {"forward": 1, "grad_weight": 1}}
    if variant == "jit-planes":
        return "jit", {"indexed": lambda spec: False}
    return variant, {}


def variant_patch(variant: str):
    """(algorithm name, context manager) for ``variant``, for tests that cannot take
    the monkeypatch fixture (hypothesis-driven ones)."""
    from contextlib import ExitStack
    from unittest import mock

    from npconv.algorithms import jit

    algorithm, patches = _patches(variant)
    stack = ExitStack()
    for name, value in patches.items():
        stack.enter_context(mock.patch.object(jit, name, value))
    return algorithm, stack


def use_variant(variant: str, monkeypatch) -> str:
    """The algorithm name for ``variant``, with ``monkeypatch`` set up for it."""
    from npconv.algorithms import jit

    algorithm, patches = _patches(variant)
    for name, value in patches.items():
        monkeypatch.setattr(jit, name, value)
    return algorithm
