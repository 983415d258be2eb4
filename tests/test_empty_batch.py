"""A batch of no samples (N = 0) runs as in PyTorch: empty y and dX, zero dW and dB."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import grad, nn
from npconv.spec import plan_conv2d

ALL = ("auto", *npconv.ALGORITHMS, "winograd")
MODES = ("zeros", "reflect", "replicate", "circular")


@pytest.mark.parametrize("algorithm", ALL)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_on_an_empty_batch_matches_torch(torch, algorithm, mode, dtype):
    rng = np.random.default_rng(0)
    x = np.zeros((0, 4, 9, 8), dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kw = dict(padding=1, groups=2, dilation=(1, 2))
    y = npconv.conv2d(x, w, b, **kw, padding_mode=mode, algorithm=algorithm)
    conv = torch.nn.Conv2d(4, 6, 3, **kw, padding_mode=mode, dtype=torch.from_numpy(w).dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(b))
    tx = torch.from_numpy(x).requires_grad_()
    ty = conv(tx)
    assert y.shape == tuple(ty.shape) and y.dtype == dtype
    g = np.zeros(y.shape, dtype)
    ty.backward(torch.from_numpy(g))
    dx, dw, db = npconv.conv2d_backward(x, w, g, **kw, padding_mode=mode, algorithm=algorithm)
    for ours, ref in ((dx, tx.grad), (dw, conv.weight.grad), (db, conv.bias.grad)):
        assert ours.shape == tuple(ref.shape) and ours.dtype == dtype
        np.testing.assert_array_equal(ours, ref.numpy())


@pytest.mark.parametrize("algorithm", ("auto", *npconv.ALGORITHMS))
def test_conv_transpose2d_on_an_empty_batch_matches_torch(torch, algorithm):
    rng = np.random.default_rng(1)
    x = np.zeros((0, 4, 5, 6), np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    y = npconv.conv_transpose2d(x, w, b, **kw, algorithm=algorithm)
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    tb = torch.from_numpy(b).requires_grad_()
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, **kw)
    assert y.shape == tuple(ty.shape)
    ty.backward(torch.zeros_like(ty))
    dx, dw, db = npconv.conv_transpose2d_backward(x, w, np.zeros(y.shape, np.float32), **kw,
                                                  algorithm=algorithm)
    for ours, ref in ((dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        assert ours.shape == tuple(ref.shape)
        np.testing.assert_array_equal(ours, ref.numpy())


def test_the_gradients_one_at_a_time_on_an_empty_batch():
    w = np.ones((6, 4, 3, 3), np.float32)
    g = np.zeros((0, 6, 7, 7), np.float32)
    assert grad.conv2d_input((0, 4, 9, 9), w, g).shape == (0, 4, 9, 9)
    dw = grad.conv2d_weight(np.zeros((0, 4, 9, 9), np.float32), w.shape, g)
    assert dw.shape == w.shape and not dw.any()
    assert grad.conv2d_bias(g).shape == (6,)


def test_an_empty_batch_is_still_validated():
    x = np.zeros((0, 4, 9, 9), np.float32)
    with pytest.raises(ValueError, match=r"grad_output of size \[1, 6, 7, 7\] does not match "
                                         r"the output size \[0, 6, 7, 7\]"):
        npconv.conv2d_backward(x, np.zeros((6, 4, 3, 3), np.float32),
                               np.zeros((1, 6, 7, 7), np.float32))
    with pytest.raises(ValueError, match="Kernel size can't be greater"):
        npconv.conv2d(x[:, :, :2], np.zeros((6, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"winograd.*cannot run"):
        npconv.conv2d(x, np.zeros((6, 4, 5, 5), np.float32), algorithm="winograd")
    with pytest.raises(ValueError, match=r"must not have empty dimensions \(but for the batch"):
        npconv.conv2d(np.zeros((0, 0, 9, 9), np.float32), np.zeros((6, 0, 3, 3), np.float32))
    with pytest.raises(ValueError, match="must not have empty dimensions"):
        npconv.conv2d(np.zeros((4, 0, 9), np.float32), np.zeros((6, 4, 3, 3), np.float32))


def test_explain_choice_names_the_empty_batch():
    choice = npconv.explain_choice(plan_conv2d((0, 3, 8, 8), (4, 3, 3, 3)).spec)
    assert choice.algorithm == "none" and "empty batch" in choice.reason


def test_a_network_runs_an_empty_batch():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    y = model.forward(np.zeros((0, 1, 8, 8), np.float32))
    assert y.shape == (0, 3)
    dx = model.backward(np.zeros_like(y))
    assert dx.shape == (0, 1, 8, 8)
    assert all(not p.grad.any() for p in model.parameters())
