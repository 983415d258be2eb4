"""Max and average pooling: the three forms against each other and against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv.nn as nn
from npconv.nn.pooling import plan_pool

from reference import assert_close

DTYPES = [np.float64, np.float32]
FORMS = nn.POOL_ALGORITHMS

# (x shape, kernel, stride, padding)
CASES = {
    "2x2-stride2": ((2, 3, 8, 6), 2, None, 0),
    "2x2-odd-input": ((2, 2, 7, 5), 2, 2, 0),
    "2x2-odd-height": ((2, 2, 7, 6), 2, 2, 0),
    "3x3-stride2-pad1": ((2, 3, 7, 6), 3, 2, 1),
    "overlapping-stride1": ((1, 2, 5, 5), 3, 1, 0),
    "rect-kernel-pad": ((1, 2, 6, 7), (3, 2), (1, 2), (1, 1)),
    "kernel-as-input": ((3, 1, 4, 4), 4, 1, 2),
    "N1-C1": ((1, 1, 6, 6), 2, 2, 1),
}


def _torch_max(torch, x, g, k, s, p):
    tx = torch.tensor(x, requires_grad=True)
    ty, ti = torch.nn.functional.max_pool2d(tx, k, s, p, return_indices=True)
    ty.backward(torch.tensor(g))
    return ty.detach().numpy(), ti.numpy(), tx.grad.numpy()


def _arrays(shape, k, s, p, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    oh, ow = plan_pool(shape, k, s, p, "test").y_shape[2:]
    g = rng.standard_normal((*shape[:2], oh, ow)).astype(dtype)
    return x, g


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_max_pool_matches_torch(torch, case, form, dtype):
    shape, k, s, p = CASES[case]
    x, g = _arrays(shape, k, s, p, dtype)
    y, idx = nn.max_pool2d(x, k, s, p, return_indices=True, algorithm=form)
    ty, tidx, tdx = _torch_max(torch, x, g, k, s, p)
    assert_close(y, ty, "y", case)
    np.testing.assert_array_equal(idx, tidx, err_msg=f"indices {case}")
    dx = nn.max_pool2d_backward(g, idx, shape, k, s, p, algorithm=form)
    assert_close(dx, tdx, "dx", case)
    layer = nn.MaxPool2d(k, s, p, algorithm=form)
    assert_close(layer(x), ty, "layer y", case)
    assert_close(layer.backward(g), tdx, "layer dx", case)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("include_pad", [True, False], ids=["count-pad", "exclude-pad"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_avg_pool_matches_torch(torch, case, form, include_pad, dtype):
    shape, k, s, p = CASES[case]
    x, g = _arrays(shape, k, s, p, dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.avg_pool2d(tx, k, s, p, count_include_pad=include_pad)
    ty.backward(torch.tensor(g))
    layer = nn.AvgPool2d(k, s, p, include_pad, algorithm=form)
    assert_close(layer(x), ty.detach().numpy(), "y", case)
    assert_close(layer.backward(g), tx.grad.numpy(), "dx", case)


def test_ties_take_the_first_maximum_and_nan_wins(torch):
    """After ReLU, windows of zeros tie: the gradient goes to the first, as in PyTorch."""
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 0, 1, 1] = 1.0
    x[0, 1, 0, 1] = x[0, 1, 1, 0] = np.nan  # the last NaN of a window wins (PyTorch's rule)
    x[0, 1, 2, 2] = -np.inf
    g = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2) + 1
    ty, tidx, tdx = _torch_max(torch, x, g, 2, 2, 0)
    for form in FORMS:
        y, idx = nn.max_pool2d(x, 2, return_indices=True, algorithm=form)
        np.testing.assert_array_equal(y, ty, err_msg=form)
        np.testing.assert_array_equal(idx, tidx, err_msg=form)
        np.testing.assert_array_equal(nn.max_pool2d_backward(g, idx, x.shape, 2, algorithm=form),
                                      tdx, err_msg=form)


def test_all_minus_inf_window_with_padding(torch):
    x = np.full((1, 1, 3, 3), -np.inf, np.float32)
    g = np.ones((1, 1, 2, 2), np.float32)
    _, tidx, tdx = _torch_max(torch, x, g, 3, 2, 1)
    for form in FORMS:
        _, idx = nn.max_pool2d(x, 3, 2, 1, return_indices=True, algorithm=form)
        np.testing.assert_array_equal(idx, tidx, err_msg=form)
        np.testing.assert_array_equal(nn.max_pool2d_backward(g, idx, x.shape, 3, 2, 1,
                                                             algorithm=form), tdx)


def test_non_contiguous_input():
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 12)).astype(np.float32)[..., ::2]
    assert not x.flags.c_contiguous
    ref = nn.max_pool2d(np.ascontiguousarray(x), 2, algorithm="naive")
    for form in FORMS:
        np.testing.assert_array_equal(nn.max_pool2d(x, 2, algorithm=form), ref)
        np.testing.assert_allclose(nn.avg_pool2d(x, 3, 1, 1, algorithm=form),
                                   nn.avg_pool2d(x, 3, 1, 1, algorithm="naive"), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 2), pw=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_forms_agree_on_random_geometry(n, c, h, w, kh, kw, sh, sw, ph, pw, seed):
    ph, pw = min(ph, kh // 2), min(pw, kw // 2)
    if h + 2 * ph < kh or w + 2 * pw < kw:
        return
    shape = (n, c, h, w)
    x, g = _arrays(shape, (kh, kw), (sh, sw), (ph, pw), np.float64, seed)
    args = ((kh, kw), (sh, sw), (ph, pw))
    y0, i0 = nn.max_pool2d(x, *args, return_indices=True, algorithm="naive")
    d0 = nn.max_pool2d_backward(g, i0, shape, *args, algorithm="naive")
    a0 = nn.avg_pool2d(x, *args, algorithm="naive")
    ad0 = nn.avg_pool2d_backward(g, shape, *args, algorithm="naive")
    for form in ("im2col", "jit"):
        y, i = nn.max_pool2d(x, *args, return_indices=True, algorithm=form)
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(i, i0)
        np.testing.assert_allclose(nn.max_pool2d_backward(g, i, shape, *args, algorithm=form),
                                   d0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(nn.avg_pool2d(x, *args, algorithm=form), a0, rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(nn.avg_pool2d_backward(g, shape, *args, algorithm=form),
                                   ad0, rtol=1e-12, atol=1e-12)


def test_pooling_errors():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="at most half of kernel size"):
        nn.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"too small.*\(0, 0\)"):
        nn.max_pool2d(np.zeros((1, 1, 2, 2), np.float32), 3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        nn.avg_pool2d(np.zeros((4, 4), np.float32), 2)
    with pytest.raises(ValueError, match="algorithm"):
        nn.MaxPool2d(2, algorithm="fft")
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.max_pool2d(np.zeros((1, 1, 4, 4), np.int64), 2)
    y, idx = nn.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match="inside their pooling windows"):
        nn.max_pool2d_backward(np.ones_like(y), np.full_like(idx, 15), x.shape, 2)
    with pytest.raises(ValueError, match=r"grad_output of shape \(1, 1, 3, 3\)"):
        nn.max_pool2d_backward(np.ones((1, 1, 3, 3), np.float32), idx, x.shape, 2)


def test_auto_picks_jit():
    from npconv.nn.pooling import choose

    assert choose(plan_pool((8, 3, 7, 6), 2, None, 0, "test")) == "jit"  # the book's
    assert choose(plan_pool((64, 6, 28, 28), 2, None, 0, "test")) == "jit"  # LeNet-5's


def test_every_2x2_window_of_special_values_as_torch(torch):
    """The branch-free 2x2 kernel: each of 7^4 windows over {NaN, +-inf, -1, 0, 1 (twice)}."""
    values = np.array([np.nan, -np.inf, np.inf, -1.0, 0.0, 1.0, 1.0], np.float32)
    windows = np.stack(np.meshgrid(values, values, values, values, indexing="ij"), -1)
    windows = windows.reshape(-1, 2, 2)  # (2401, 2, 2): a, b / c, d
    x = np.ascontiguousarray(windows.reshape(7, 343, 2, 2).transpose(0, 2, 1, 3)).reshape(
        1, 7, 2, 686)  # (N=1, C=7, 2, 2*343): 343 windows side by side per channel
    g = np.random.default_rng(0).standard_normal((1, 7, 1, 343)).astype(np.float32)
    ty, tidx, tdx = _torch_max(torch, x, g, 2, 2, 0)
    y, idx = nn.max_pool2d(x, 2, return_indices=True, algorithm="jit")
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(idx, tidx)
    np.testing.assert_array_equal(nn.max_pool2d_backward(g, idx, x.shape, 2, algorithm="jit"),
                                  tdx)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_jit_on_threads_matches_one_thread(case, monkeypatch):
    """The serial and the parallel kernels (:data:`npconv.nn.kernels.PARALLEL_MIN`)."""
    from npconv.nn import kernels

    shape, k, s, p = CASES[case]
    x, g = _arrays(shape, k, s, p, np.float32)
    results = []
    for threshold in (kernels.PARALLEL_MIN, 0):
        monkeypatch.setattr(kernels, "PARALLEL_MIN", threshold)
        y, idx = nn.max_pool2d(x, k, s, p, return_indices=True, algorithm="jit")
        results.append((y, idx, nn.max_pool2d_backward(g, idx, shape, k, s, p, algorithm="jit"),
                        nn.avg_pool2d(x, k, s, p, algorithm="jit"),
                        nn.avg_pool2d_backward(g, shape, k, s, p, algorithm="jit")))
    for name, one, many in zip(("y", "indices", "dx", "avg y", "avg dx"), *results,
                               strict=True):
        np.testing.assert_array_equal(many, one, err_msg=f"{name} {case}")


def test_max_pool_layer_replans_when_the_input_shape_changes():
    """The layer plans once per input shape (training batch, evaluation batch, ...)."""
    rng = np.random.default_rng(0)
    layer = nn.MaxPool2d(2)
    for shape in ((4, 2, 8, 8), (3, 2, 6, 10), (4, 2, 8, 8)):
        x = rng.standard_normal(shape).astype(np.float32)
        y, idx = nn.max_pool2d(x, 2, return_indices=True, algorithm="naive")
        np.testing.assert_array_equal(layer(x), y)
        g = rng.standard_normal(y.shape).astype(np.float32)
        np.testing.assert_array_equal(
            layer.backward(g), nn.max_pool2d_backward(g, idx, shape, 2, algorithm="naive"))
    with pytest.raises(ValueError, match="too small"):
        layer(np.zeros((1, 1, 1, 1), np.float32))
    layer.kernel_size = 4  # changing the geometry plans again, too
    assert layer(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 1, 2, 2)
