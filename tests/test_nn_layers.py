"""Every layer's forward and backward against PyTorch, in float64 and float32.

Each test builds the npconv layer and its torch twin with the same parameters, runs
forward on the same input and backward with the same upstream gradient, and compares
output, input gradient and parameter gradients (forward first, gradients second).
"""

from __future__ import annotations

import numpy as np
import pytest

import npconv.nn as nn

from reference import assert_close

DTYPES = [np.float64, np.float32]


def _t(torch, a, grad=False):
    return torch.tensor(a, requires_grad=grad)


def _compare(torch, layer, twin, x, dtype, context, input_grad=True):
    """Forward and backward of ``layer`` vs ``twin`` (which already has the same weights)."""
    rng = np.random.default_rng(1)
    y = layer.forward(x)
    tx = _t(torch, x, grad=True)
    ty = twin(tx)
    assert_close(y, ty.detach().numpy(), "y", context)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(g, input_grad=input_grad)
    ty.backward(torch.tensor(g))
    if input_grad:
        assert_close(dx, tx.grad.numpy(), "dx", context)
    else:
        assert dx is None
    for name, p in layer.named_parameters():
        assert_close(p.grad, getattr(twin, name).grad.numpy(), f"d{name}", context)


def _load_twin(torch, layer, twin):
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.state_dict().items()})
    return twin


CONV_CASES = {
    "3x3": dict(in_channels=3, out_channels=4, kernel_size=3),
    "stride2-pad1": dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
    "groups-dilation": dict(in_channels=4, out_channels=6, kernel_size=(2, 3), dilation=2,
                            groups=2),
    "same-reflect": dict(in_channels=1, out_channels=2, kernel_size=5, padding="same",
                         padding_mode="reflect"),
    "no-bias": dict(in_channels=2, out_channels=2, kernel_size=1, bias=False),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ["naive", "auto"])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_torch(torch, case, algorithm, dtype):
    kw = CONV_CASES[case]
    layer = nn.Conv2d(**kw, algorithm=algorithm, dtype=dtype, rng=0)
    tdtype = getattr(torch, np.dtype(dtype).name)
    twin = _load_twin(torch, layer, torch.nn.Conv2d(**kw, dtype=tdtype))
    x = np.random.default_rng(0).standard_normal((2, kw["in_channels"], 9, 8)).astype(dtype)
    _compare(torch, layer, twin, x, dtype, f"{case} {algorithm}")


def test_conv2d_skips_the_input_gradient(torch):
    layer = nn.Conv2d(1, 2, 3, rng=0, algorithm="naive")
    twin = _load_twin(torch, layer, torch.nn.Conv2d(1, 2, 3))
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    _compare(torch, layer, twin, x, np.float32, "first layer", input_grad=False)


def test_conv2d_book_convention_divides_by_n():
    """Book layer + sum-reduced loss == PyTorch layer + mean-reduced loss."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 6, 6))
    targets = rng.integers(0, 4, 5)
    grads = {}
    for convention, reduction in (("pytorch", "mean"), ("book", "sum")):
        conv = nn.Conv2d(2, 4, 3, grad_convention=convention, dtype=np.float64, rng=3,
                         algorithm="naive")
        model = nn.Sequential(conv, nn.Flatten(), nn.Linear(64, 4, dtype=np.float64, rng=4))
        loss = nn.SoftmaxCrossEntropy(reduction)
        loss(model(x), targets)
        model.backward(loss.backward())  # the Linear layer's gradients differ by N
        grads[convention] = (conv.weight.grad, conv.bias.grad)
    np.testing.assert_allclose(grads["book"][0], grads["pytorch"][0], rtol=1e-12)
    np.testing.assert_allclose(grads["book"][1], grads["pytorch"][1], rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_linear_relu_flatten_match_torch(torch, dtype):
    tdtype = getattr(torch, np.dtype(dtype).name)
    rng = np.random.default_rng(0)
    layer = nn.Linear(12, 5, dtype=dtype, rng=0)
    twin = _load_twin(torch, layer, torch.nn.Linear(12, 5, dtype=tdtype))
    _compare(torch, layer, twin, rng.standard_normal((7, 12)).astype(dtype), dtype, "linear")
    x = rng.standard_normal((3, 2, 4, 5)).astype(dtype)
    x[0, 0, 0, :2] = 0.0  # ReLU's gradient at exactly zero is zero, as in PyTorch
    _compare(torch, nn.ReLU(), torch.nn.ReLU(), x, dtype, "relu")
    _compare(torch, nn.Flatten(), torch.nn.Flatten(), x, dtype, "flatten")


def test_relu_nan_as_torch(torch):
    x = np.array([[np.nan, -1.0, 0.0, 2.0, -np.inf, np.inf]], np.float32)
    tx = _t(torch, x, grad=True)
    ty = torch.relu(tx)
    ty.backward(torch.ones_like(ty))
    layer = nn.ReLU()
    np.testing.assert_array_equal(layer(x), ty.detach().numpy())
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), tx.grad.numpy())


@pytest.mark.parametrize("threshold", ["default", 0], ids=["one-thread", "threads"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_relu_kernels_serial_and_parallel(threshold, dtype, monkeypatch):
    """Both kernel variants (:data:`PARALLEL_MIN`), against NumPy."""
    from npconv.nn import kernels

    if threshold != "default":
        monkeypatch.setattr(kernels, "PARALLEL_MIN", threshold)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    x[0, 0, :4] = [np.nan, -np.inf, np.inf, 0.0]
    g = rng.standard_normal(x.shape).astype(dtype)
    g[0, 1, 0] = np.inf  # where y <= 0 the gradient is 0, even an infinite one
    x[0, 1, 0] = -1.0
    expected_y = np.where(np.isnan(x) | (x > 0), x, 0).astype(dtype)
    expected_dx = np.where(expected_y <= 0, 0, g).astype(dtype)
    y = kernels.relu(x)
    assert y.dtype == dtype and y is not x
    np.testing.assert_array_equal(y, expected_y)
    dx = kernels.relu_backward(g, y)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, expected_dx)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("kind,shape", [("1d", (6, 5)), ("1d", (4, 3, 7)), ("2d", (3, 4, 5, 6))],
                         ids=["1d-NC", "1d-NCL", "2d"])
def test_batchnorm_matches_torch(torch, kind, shape, momentum, dtype):
    tdtype = getattr(torch, np.dtype(dtype).name)
    cls, tcls = ((nn.BatchNorm1d, torch.nn.BatchNorm1d) if kind == "1d"
                 else (nn.BatchNorm2d, torch.nn.BatchNorm2d))
    layer = cls(shape[1], momentum=momentum, dtype=dtype)
    twin = tcls(shape[1], momentum=momentum, dtype=tdtype)
    rng = np.random.default_rng(0)
    layer.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    layer.bias.data[...] = rng.standard_normal(shape[1])
    _load_twin(torch, layer, twin)
    for step in range(3):  # training: batch statistics, running statistics updated
        x = (3 * rng.standard_normal(shape) + 2).astype(dtype)
        twin.zero_grad()
        _compare(torch, layer, twin, x, dtype, f"train step {step}")
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert_close(getattr(layer, name).astype(dtype),
                     getattr(twin, name).numpy().astype(dtype), name)
    assert int(layer.num_batches_tracked) == 3
    layer.eval()
    twin.eval()
    twin.zero_grad()
    _compare(torch, layer, twin, rng.standard_normal(shape).astype(dtype), dtype, "eval")


def test_batchnorm_refuses_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_batchnorm1d_kernels_match_the_numpy_lines(dtype):
    """(N, C) C-contiguous input takes the Numba kernels; a Fortran-ordered copy of the
    same input takes the NumPy lines: outputs, gradients and running statistics agree,
    in training and in eval mode, and stay in the input's dtype."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 37)) * 3 + 1).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    layers = [nn.BatchNorm1d(37, dtype=dtype) for _ in range(2)]
    gamma, beta = rng.uniform(0.5, 1.5, 37), rng.standard_normal(37)
    for layer in layers:
        layer.weight.data[...], layer.bias.data[...] = gamma, beta
    inputs = (x, np.asfortranarray(x))  # kernels, NumPy
    assert layers[0]._fused(inputs[0]) and not layers[1]._fused(inputs[1])
    for training in (True, False):
        results = []
        for layer, xi in zip(layers, inputs, strict=True):
            layer.train(training)
            y = layer(xi)
            dx = layer.backward(np.asarray(g, order="F" if xi is inputs[1] else "C"))
            results.append((y, dx, layer.weight.grad, layer.bias.grad, layer.running_mean,
                            layer.running_var))
        for name, fused, plain in zip(("y", "dx", "dgamma", "dbeta", "running_mean",
                                       "running_var"), *results, strict=True):
            assert fused.dtype == dtype, name
            tol = 2e-5 if dtype == np.float32 else 1e-12  # sums in another order
            np.testing.assert_allclose(fused, plain, rtol=tol, atol=tol,
                                       err_msg=f"{name} {training}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_cross_entropy_matches_torch(torch, reduction, dtype):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((6, 4)) * 3).astype(dtype)
    logits[0] = [1000.0, -1000.0, 0.0, 999.0]  # would overflow a naive exp()
    logits[1] = [-1e4, -1e4, -1e4, -1e4]
    targets = np.array([1, 0, 3, 2, 2, 0])
    loss_fn = nn.SoftmaxCrossEntropy(reduction)
    loss = loss_fn(logits, targets)
    tl = _t(torch, logits, grad=True)
    tloss = torch.nn.functional.cross_entropy(tl, torch.tensor(targets), reduction=reduction)
    tloss.backward()
    assert loss.dtype == dtype and np.isfinite(loss)
    assert_close(np.asarray(loss), tloss.detach().numpy(), "loss")
    assert_close(loss_fn.backward(), tl.grad.numpy(), "dlogits")


def test_softmax_cross_entropy_rejects_bad_targets():
    loss = nn.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        loss(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match="integers of shape"):
        loss(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        nn.SoftmaxCrossEntropy("none")


def test_dropout_train_and_eval():
    x = np.ones((200, 50), np.float32)
    layer = nn.Dropout(0.3, rng=0)
    y = layer(x)
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    g = np.full_like(x, 2.0)
    np.testing.assert_array_equal(layer.backward(g), np.where(kept, 2 / 0.7, 0).astype(
        np.float32))
    again = nn.Dropout(0.3, rng=0)(x)
    np.testing.assert_array_equal(again, y)  # seeded: the same mask
    layer.eval()
    assert layer(x) is x and layer.backward(g) is g
    assert not nn.Dropout(1.0, rng=0)(x).any()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nn.Dropout(1.5)


def test_kaiming_uniform_bounds_and_seed():
    conv = nn.Conv2d(3, 8, 5, rng=7)
    bound = 1 / np.sqrt(3 * 25)
    assert conv.weight.data.dtype == np.float32
    assert np.abs(conv.weight.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.9 * bound  # fills the range
    assert np.abs(conv.bias.data).max() <= bound
    np.testing.assert_array_equal(nn.Conv2d(3, 8, 5, rng=7).weight.data, conv.weight.data)
    assert not np.array_equal(nn.Conv2d(3, 8, 5, rng=8).weight.data, conv.weight.data)
    lin = nn.Linear(100, 10, dtype=np.float64, rng=0)
    assert lin.weight.data.dtype == np.float64 and np.abs(lin.weight.data).max() <= 0.1


def test_model_gradient_along_a_random_direction():
    """Finite differences of the whole book model in float64 (training mode)."""
    rng = np.random.default_rng(0)
    model = nn.book_model(1, 12, 3, dtype=np.float64, rng=0, algorithm="naive")
    x, t = rng.standard_normal((4, 1, 12, 12)), rng.integers(0, 3, 4)
    loss = nn.SoftmaxCrossEntropy()
    loss(model(x), t)
    model.backward(loss.backward())
    params = model.parameters()
    direction = [rng.standard_normal(p.data.shape) for p in params]
    analytic = sum(float(np.sum(p.grad * d)) for p, d in zip(params, direction, strict=True))
    eps, values = 1e-6, []
    for sign in (1, -1):
        for p, d in zip(params, direction, strict=True):
            p.data += sign * eps * d
        values.append(float(loss(model(x), t)))
        for p, d in zip(params, direction, strict=True):
            p.data -= sign * eps * d
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic))


def test_layer_input_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(7, 3\).*\(N, 12\)"):
        nn.Linear(12, 5)(np.zeros((7, 3), np.float32))
    with pytest.raises(TypeError, match=r"float64 does not match.*float32"):
        nn.Linear(3, 5)(np.zeros((7, 3)))
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Conv2d(1, 1, 3)(np.zeros((1, 1, 5, 5), np.int32))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="grad_convention"):
        nn.Conv2d(1, 1, 3, grad_convention="tensorflow")
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.ReLU(), np.zeros(3))


def test_sequential_names_and_modes():
    model = nn.book_model(rng=0)
    names = list(model.state_dict())
    assert names == ["0.weight", "0.bias", "4.weight", "4.bias", "4.running_mean",
                     "4.running_var", "4.num_batches_tracked", "5.weight", "5.bias"]
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "4.weight", "4.bias", "5.weight", "5.bias"]
    model.eval()
    assert not any(m.training for _, m in model.named_modules())
    model.train()
    assert all(m.training for _, m in model.named_modules())
    assert model.dtype == np.float32 and len(model) == 6
