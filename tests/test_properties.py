"""Random configurations against PyTorch, the adjoint identity and finite differences.

The number of Hypothesis examples is ``NPCONV_HYPOTHESIS_EXAMPLES`` (default 300).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npconv
from npconv.spec import PADDING_MODES, plan_conv2d

from reference import VARIANTS, assert_close, torch_conv2d, variant_patch

EXAMPLES = int(os.environ.get("NPCONV_HYPOTHESIS_EXAMPLES", "300"))


@st.composite
def configurations(draw):
    """A valid conv2d configuration: shapes, parameters and a seed."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(PADDING_MODES))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    padding_kind = draw(st.sampled_from(["int", "pair", "explicit", "same", "valid"]))
    if padding_kind == "int":
        padding = draw(st.integers(0, 3))
    elif padding_kind == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    elif padding_kind == "explicit":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    else:
        padding = padding_kind
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=mode)
    x_shape = (draw(st.integers(1, 3)), c_in, h, w)
    w_shape = (c_out, c_in // groups, kh, kw)
    try:
        plan_conv2d(x_shape, w_shape, **kwargs)
    except ValueError:
        from hypothesis import assume
        assume(False)
    return x_shape, w_shape, kwargs, draw(st.integers(0, 2**31 - 1))


def arrays(x_shape, w_shape, kwargs, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    plan = plan_conv2d(x_shape, w_shape, **kwargs)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    g = rng.standard_normal(plan.spec.y_shape).astype(dtype)
    return x, w, b, g, plan


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SETTINGS
@given(configurations())
def test_random_configurations_match_torch(torch, config):
    x_shape, w_shape, kwargs, seed = config
    x, w, b, g, plan = arrays(x_shape, w_shape, kwargs, seed)
    pads = tuple(a + p for a, p in zip(plan.mode_padding, plan.spec.padding, strict=True))
    s = plan.spec
    ref = torch_conv2d(torch, x, w, b, g, s.stride, pads, s.dilation, s.groups, plan.mode)
    for variant in VARIANTS:
        algorithm, patch = variant_patch(variant)
        ctx = f"[{variant} x{x_shape} w{w_shape} {kwargs}]"
        with patch:
            y = npconv.conv2d(x, w, b, algorithm=algorithm, **kwargs)
            got = npconv.conv2d_backward(x, w, g, algorithm=algorithm, **kwargs)
        assert_close(y, ref[0], "y", ctx)
        for name, have, want in zip(("dX", "dW", "dB"), got, ref[1:], strict=True):
            assert_close(have, want, name, ctx)


@SETTINGS
@given(configurations())
def test_adjoint_identity(config):
    """<conv(x, w), g> == <x, dX(g)> == <w, dW(g)> for a bias-free convolution.

    conv2d is linear in x and in w, so both inner products equal the same number.
    With a non-zero padding mode the identity holds for x through the mode's adjoint.
    """
    x_shape, w_shape, kwargs, seed = config
    x, w, _, g, _ = arrays(x_shape, w_shape, kwargs, seed)
    for variant in VARIANTS:
        algorithm, patch = variant_patch(variant)
        with patch:
            lhs = np.vdot(npconv.conv2d(x, w, algorithm=algorithm, **kwargs), g)
            dx, dw, _ = npconv.conv2d_backward(x, w, g, algorithm=algorithm, **kwargs)
        scale = max(1.0, abs(lhs), float(np.sum(np.abs(x)) * np.sum(np.abs(w))))
        assert abs(np.vdot(x, dx) - lhs) <= 1e-11 * scale, f"<x, dX> [{variant}]"
        assert abs(np.vdot(w, dw) - lhs) <= 1e-11 * scale, f"<w, dW> [{variant}]"


@pytest.mark.parametrize("algorithm", npconv.ALGORITHMS)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(stride=2, padding=1, dilation=2),
    dict(stride=(1, 2), padding=((0, 2), (1, 1)), groups=2, padding_mode="reflect"),
    dict(padding="same", padding_mode="circular"),
    dict(stride=3, padding=2, padding_mode="replicate"),
], ids=["plain", "strided-dilated", "groups-reflect", "same-circular", "replicate"])
def test_directional_finite_difference(algorithm, kwargs):
    """d/dt L(x + t*vx, w + t*vw, b + t*vb) at t=0 equals <grads, v> (central difference).

    L = <conv2d(x, w, b), g> is linear in each argument, so the central difference is
    exact up to rounding; the check differentiates along one random direction only.
    """
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 8, 7))
    w = rng.standard_normal((4, 4 // kwargs.get("groups", 1), 3, 2))
    b = rng.standard_normal(4)
    g = rng.standard_normal(npconv.conv2d(x, w, b, algorithm="naive", **kwargs).shape)
    vx, vw, vb = (rng.standard_normal(a.shape) for a in (x, w, b))

    def loss(t):
        y = npconv.conv2d(x + t * vx, w + t * vw, b + t * vb, algorithm=algorithm, **kwargs)
        return float(np.sum(y * g))

    eps = 1e-3
    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    dx, dw, db = npconv.conv2d_backward(x, w, g, algorithm=algorithm, **kwargs)
    analytic = np.vdot(dx, vx) + np.vdot(dw, vw) + np.vdot(db, vb)
    assert numeric == pytest.approx(analytic, rel=1e-7, abs=1e-7)
