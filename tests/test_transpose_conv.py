"""conv_transpose2d against torch.nn.functional.conv_transpose2d, forward and backward."""

from __future__ import annotations

import numpy as np
import pytest

import npconv

from reference import assert_close

CASES = {
    "plain": ((2, 3, 5, 4), (3, 2, 3, 3), dict()),
    "stride": ((2, 3, 5, 4), (3, 2, 3, 2), dict(stride=2)),
    "stride-padding-output-padding": ((2, 2, 4, 5), (2, 3, 3, 4),
                                      dict(stride=(2, 3), padding=(1, 2), output_padding=(1, 2))),
    "groups-dilation": ((1, 4, 5, 5), (4, 3, 3, 2), dict(groups=2, dilation=(2, 3))),
    "output-padding-below-dilation": ((2, 2, 4, 4), (2, 2, 3, 3),
                                      dict(stride=1, dilation=3, output_padding=2)),
    "depthwise": ((2, 3, 6, 5), (3, 1, 2, 2), dict(groups=3, stride=2, padding=1)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("algorithm", npconv.ALGORITHMS)
def test_conv_transpose2d_matches_torch(torch, algorithm, name, dtype):
    x_shape, w_shape, kwargs = CASES[name]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    c_out = w_shape[1] * kwargs.get("groups", 1)
    b = rng.standard_normal(c_out).astype(dtype)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, **kwargs)
    g = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(g))
    ctx = f"[{algorithm} {name}]"
    assert_close(npconv.conv_transpose2d(x, w, b, algorithm=algorithm, **kwargs),
                 ty.detach().numpy(), "y", ctx)
    dx, dw, db = npconv.conv_transpose2d_backward(x, w, g, algorithm=algorithm, **kwargs)
    assert_close(dx, tx.grad.numpy(), "dX", ctx)
    assert_close(dw, tw.grad.numpy(), "dW", ctx)
    assert_close(db, tb.grad.numpy(), "dB", ctx)


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 2))
    kwargs = dict(stride=2, padding=1, dilation=2)
    y = npconv.conv2d(x, w, **kwargs)
    z = rng.standard_normal(y.shape)
    op = (x.shape[2] + 2 - 2 * 2 - 1) % 2, (x.shape[3] + 2 - 2 - 1) % 2  # stride remainder
    xt = npconv.conv_transpose2d(z, w, output_padding=op, **kwargs)
    assert xt.shape == x.shape
    assert np.vdot(y, z) == pytest.approx(np.vdot(x, xt), rel=1e-12)


def test_conv_transpose2d_unbatched(torch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 4))
    w = rng.standard_normal((3, 2, 3, 3))
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), stride=2)
    assert_close(npconv.conv_transpose2d(x, w, stride=2), want.numpy(), "y")
