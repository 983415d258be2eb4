"""Bad input gets a clear ValueError/TypeError naming the shapes, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import grad

from reference import VARIANTS, use_variant

X = np.zeros((8, 3, 7, 6), dtype=np.float32)
W = np.zeros((2, 3, 4, 5), dtype=np.float32)
G = np.zeros((8, 2, 4, 2), dtype=np.float32)


@pytest.mark.parametrize("x, w, kwargs, error, match", [
    (X[0, 0], W, {}, ValueError, r"Expected 3D \(unbatched\) or 4D \(batched\) input to "
                                 r"conv2d, but got input of size: \[7, 6\]"),
    (X[None], W, {}, ValueError, r"input of size: \[1, 8, 3, 7, 6\]"),
    (X, W[0], {}, ValueError, r"Expected 4D weight .* \[3, 4, 5\]"),
    (X[:, :2], W, {}, ValueError,
     r"Given groups=1, weight of size \[2, 3, 4, 5\], expected input\[8, 2, 7, 6\] to have 3 "
     r"channels, but got 2 channels instead"),
    (np.zeros((1, 4, 7, 6), np.float32), np.zeros((3, 2, 3, 3), np.float32), dict(groups=2),
     ValueError, r"out_channels must be divisible by groups.*\[3, 2, 3, 3\]"),
    (np.zeros((1, 5, 7, 6), np.float32), np.zeros((4, 2, 3, 3), np.float32), dict(groups=2),
     ValueError, r"Given groups=2, weight of size \[4, 2, 3, 3\], expected input\[1, 5, 7, 6\] "
                 r"to have 4 channels, but got 5"),
    (X, np.zeros((2, 3, 8, 5), np.float32), {}, ValueError,
     r"Calculated padded input size per channel: \(7 x 6\). Kernel size: \(8 x 5\). Kernel size "
     r"can't be greater than actual input size"),
    (X, W, dict(dilation=3), ValueError, r"Kernel size: \(10 x 13\)"),
    (X, W, dict(padding=-1), ValueError, r"negative padding is not supported"),
    (X, W, dict(padding=((0, -1), (0, 0))), ValueError, r"negative padding"),
    (X, W, dict(stride=0), ValueError, r"non-positive stride is not supported"),
    (X, W, dict(dilation=(1, 0)), ValueError, r"non-positive dilation"),
    (X, W, dict(groups=0), ValueError, r"non-positive groups"),
    (X, W, dict(stride=1.5), TypeError, r"stride must be an int or a tuple of 2 ints, got 1.5"),
    (X, W, dict(stride=True), TypeError, r"stride must be an int"),
    (X, W, dict(dilation=(1, 2, 3)), TypeError, r"dilation must be an int or a tuple of 2"),
    (X, W, dict(padding=0.5), TypeError, r"padding must be an int, a pair of ints"),
    (X, W, dict(groups=1.0), TypeError, r"groups must be an int"),
    (X, W, dict(padding="full"), ValueError,
     r"Invalid padding string 'full', should be one of \{'valid', 'same'\}"),
    (X, W, dict(padding_mode="mirror"), ValueError,
     r"padding_mode must be one of \('zeros', 'reflect', 'replicate', 'circular'\), got 'mirror'"),
    (X, W, dict(padding_mode=["zeros"]), ValueError,
     r"padding_mode must be one of .*, got \['zeros'\]"),
    (np.zeros((1, 1, 2, 3), np.float32), np.zeros((1, 1, 5, 3), np.float32),
     dict(padding="same", padding_mode="reflect"), ValueError,
     r"Padding size should be less than the corresponding input dimension for "
     r"padding_mode='reflect', but got: padding \(2, 2\) at dimension 2 of input \[1, 1, 2, 3\]"),
    (np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 3, 3), np.float32),
     dict(padding=3, padding_mode="circular"), ValueError, r"wrapping around more than once"),
    (X.astype(np.int64), W, {}, TypeError, r"input must be float32 or float64, got integer "
                                           r"dtype int64"),
    (X.astype(np.complex64), W, {}, TypeError, r"got complex dtype complex64"),
    (X.astype(np.float16), W, {}, TypeError, r"float16"),
    (X, W.astype(np.float64), {}, TypeError,
     r"input type \(float32\) and weight type \(float64\) should be the same"),
    (X, W, dict(algorithm="fft"), ValueError, r"unknown algorithm 'fft'"),
    ("abc", W, {}, TypeError, r"input must be an array"),
])
def test_conv2d_rejects(x, w, kwargs, error, match):
    with pytest.raises(error, match=match):
        npconv.conv2d(x, w, **kwargs)


def test_bias_checked():
    with pytest.raises(ValueError, match=r"bias of size \[3\] does not match the 2 output"):
        npconv.conv2d(X, W, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match=r"bias type \(float64\)"):
        npconv.conv2d(X, W, np.zeros(2))


def test_backward_rejects_wrong_grad_output():
    with pytest.raises(ValueError, match=r"grad_output of size \[8, 2, 4, 3\] does not match the "
                                         r"output size \[8, 2, 4, 2\]"):
        npconv.conv2d_backward(X, W, np.zeros((8, 2, 4, 3), np.float32))
    with pytest.raises(TypeError, match=r"grad_output type \(float64\)"):
        npconv.conv2d_backward(X, W, G.astype(np.float64))
    with pytest.raises(TypeError, match=r"output_mask must be a tuple of 3 bools"):
        npconv.conv2d_backward(X, W, G, output_mask=(1, 1, 1))


def test_conv2d_input_rejects_inconsistent_input_size():
    w = np.zeros((2, 3, 3, 3), np.float32)
    g = np.zeros((1, 2, 4, 4), np.float32)
    # stride 2, kernel 3: output 4 comes from inputs 9 or 10 only
    grad.conv2d_input((1, 3, 9, 10), w, g, stride=2)
    with pytest.raises(ValueError, match=r"requested an input grad size of \[11, 10\], but valid "
                                         r"sizes along H range from 9 to 10 \(for a grad_output "
                                         r"of \[1, 2, 4, 4\]\)"):
        grad.conv2d_input((1, 3, 11, 10), w, g, stride=2)
    with pytest.raises(ValueError, match=r"input_size must have 4 entries"):
        grad.conv2d_input((9, 10), w, g, stride=2)
    with pytest.raises(ValueError, match=r"both be batched"):
        grad.conv2d_input((3, 9, 10), w, g, stride=2)
    with pytest.raises(TypeError, match=r"input_size must be a tuple of ints"):
        grad.conv2d_input((1, 3, 9.5, 10), w, g, stride=2)
    with pytest.raises(ValueError, match=r"expected input\[1, 4, 9, 10\] to have 3 channels"):
        grad.conv2d_input((1, 4, 9, 10), w, g, stride=2)


def test_conv2d_weight_rejects_inconsistent_weight_size():
    with pytest.raises(ValueError, match=r"grad_output of size \[8, 2, 4, 2\] does not match the "
                                         r"output size \[8, 2, 5, 3\]"):
        grad.conv2d_weight(X, (2, 3, 3, 4), G)
    with pytest.raises(ValueError, match=r"Expected 4D weight"):
        grad.conv2d_weight(X, (2, 3, 4), G)


def test_conv_transpose2d_rejects():
    x = np.zeros((1, 4, 3, 3), np.float32)
    w = np.zeros((4, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"output padding must be smaller than either stride or "
                                         r"dilation"):
        npconv.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"Given transposed=1, weight of size \[4, 2, 3, 3\], "
                                         r"expected input\[1, 3, 3, 3\] to have 4 channels"):
        npconv.conv_transpose2d(x[:, :3], w)
    with pytest.raises(ValueError, match=r"calculated output size \(-3 x -3\) is too small"):
        npconv.conv_transpose2d(x, w, padding=4)
    with pytest.raises(ValueError, match=r"padding must be numeric"):
        npconv.conv_transpose2d(x, w, padding="same")
    with pytest.raises(ValueError, match=r"in_channels must be divisible by groups"):
        npconv.conv_transpose2d(np.zeros((1, 3, 3, 3), np.float32),
                                np.zeros((3, 2, 3, 3), np.float32), groups=2)


@pytest.mark.parametrize("algorithm", npconv.ALGORITHMS)
def test_nan_and_inf_propagate_like_torch(torch, algorithm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((2, 2, 3, 3))
    x[0, 0, 2, 3] = np.nan
    x[0, 1, 5, 5] = np.inf
    g = np.ones((1, 2, 4, 4))
    y = npconv.conv2d(x, w, algorithm=algorithm)
    ty = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w)).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ty))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ty))
    _, dw, _ = npconv.conv2d_backward(x, w, g, algorithm=algorithm)
    assert np.isnan(dw).any()  # no exception, the NaN flows through


def _assert_same_inf_and_nan(got, torch_ref) -> None:
    """y, dX, dW have torch's NaN and inf where torch has them, and its values elsewhere."""
    for name, a, b in zip(("y", "dX", "dW"), got, torch_ref, strict=True):
        b = b.numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN")
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=f"{name}: inf")
        finite = np.isfinite(b)
        np.testing.assert_allclose(a[finite], b[finite], rtol=1e-10, atol=1e-10,
                                   err_msg=name)


@pytest.mark.parametrize("variant", [*VARIANTS, "winograd"])
@pytest.mark.parametrize("where", ["input", "weight"])
def test_an_inf_gives_the_same_inf_and_nan_pattern_as_torch(torch, variant, where, monkeypatch):
    algorithm = use_variant(variant, monkeypatch)
    # stride 1 with padding: the fast paths lay rows out Wp wide and carry junk columns;
    # an inf must never meet a junk zero there (inf * 0 = NaN where torch has inf)
    if algorithm == "transpose" and where == "weight":
        pytest.skip("17.3's dX multiplies W by the zeros padded around dZ: inf * 0 = NaN "
                    "(documented in npconv.algorithms.transpose)")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    if where == "input":
        x[1, 2, 3, 5] = np.inf  # last column: read by the junk of the next row
    else:
        w[2, 1, 0, 2] = -np.inf
    g = np.abs(rng.standard_normal((2, 4, 7, 6))) + 0.5  # dZ > 0: no 0 * inf in torch
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, padding=1)
    ty.backward(torch.tensor(g))
    got = (npconv.conv2d(x, w, padding=1, algorithm=algorithm),
           *npconv.conv2d_backward(x, w, g, padding=1, algorithm=algorithm)[:2])
    _assert_same_inf_and_nan(got, (ty.detach(), tx.grad, tw.grad))


@pytest.mark.parametrize("variant", ["jit-planes", "jit-parallel"])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("column", [0, 4, 5, 6])
def test_an_inf_in_a_strided_layer_gives_the_torch_pattern(torch, variant, groups, column,
                                                           monkeypatch):
    # stride 2: the phase kernels read each tap's plane as one run, whose junk columns
    # meet dZ's zeros; an inf of x there must not turn dW into NaN where torch has none,
    # and an inf weight must reach dX only through real dZ values
    algorithm = use_variant(variant, monkeypatch)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 7))
    w = rng.standard_normal((3, 3 // groups, 3, 3))
    x[1, 1, 4, column] = np.inf
    w[1, 0, column % 3, 2] = -np.inf
    kwargs = dict(stride=2, padding=(1, 0), groups=groups)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, **kwargs)
    g = np.abs(rng.standard_normal(tuple(ty.shape))) + 0.5
    ty.backward(torch.tensor(g))
    got = (npconv.conv2d(x, w, **kwargs, algorithm=algorithm),
           *npconv.conv2d_backward(x, w, g, **kwargs, algorithm=algorithm)[:2])
    _assert_same_inf_and_nan(got, (ty.detach(), tx.grad, tw.grad))


def test_remembered_plans_never_let_bad_arguments_through():
    # plans of recent calls are reused; an argument equal to a valid one but of another
    # type (True == 1, 1.0 == 1) must still be rejected
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    npconv.conv2d(x, w, stride=1, padding=(1, 1))
    for bad in (dict(stride=True), dict(stride=1.0), dict(padding=(1, True))):
        with pytest.raises(TypeError):
            npconv.conv2d(x, w, **{**dict(stride=1, padding=(1, 1)), **bad})
    assert npconv.conv2d(x, w, stride=1, padding=(1, 1)).shape == (1, 3, 5, 5)
