"""npconv.functional's remembered preparations: a repeated call skips validation, plan
and choice, and nothing that should change its outcome is missed by the key."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import functional, tuning
from npconv.spec import plan_conv2d

from reference import assert_close


@pytest.fixture
def layer():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 7, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    g = rng.standard_normal((8, 2, 4, 2)).astype(np.float32)
    return x, w, b, g


def test_a_repeated_call_is_prepared_once(layer):
    x, w, b, g = layer
    y = npconv.conv2d(x, w, b)
    assert len(functional._PREPARED) == 1
    np.testing.assert_array_equal(npconv.conv2d(x, w, b), y)
    npconv.conv2d_backward(x, w, g)
    npconv.conv2d_backward(x, w, g, output_mask=(False, True, False))
    assert len(functional._PREPARED) == 2  # the mask is an argument of the prepared call
    npconv.conv2d(x.astype(np.float64), w.astype(np.float64))  # another dtype, no bias
    npconv.conv2d(x[:5], w, b)  # another shape
    assert len(functional._PREPARED) == 4


def test_setting_changes_prepare_again(layer):
    x, w, b, _ = layer
    npconv.conv2d(x, w, b)
    tuning.set_workspace_limit(tuning.workspace_limit())
    npconv.conv2d(x, w, b)
    precision = tuning.get_float32_precision()
    tuning.set_float32_precision(precision)
    npconv.conv2d(x, w, b)
    assert len(functional._PREPARED) == 3


def test_the_key_tells_bool_and_float_arguments_from_ints(layer):
    x, w, b, _ = layer
    npconv.conv2d(x, w, b, stride=1, padding=1, dilation=1, groups=1)
    for bad in (dict(stride=True), dict(padding=1.0), dict(dilation=(1, True)),
                dict(groups=True)):
        kwargs = dict(stride=1, padding=1, dilation=1, groups=1) | bad
        with pytest.raises((TypeError, ValueError)):
            npconv.conv2d(x, w, b, **kwargs)


def test_calls_with_other_arrays_of_a_prepared_shape_are_validated_or_converted(layer):
    x, w, b, g = layer
    want = npconv.conv2d(x, w, b)
    with pytest.raises(TypeError, match="bias"):
        npconv.conv2d(x, w, b.astype(np.float64))
    with pytest.raises(TypeError):
        npconv.conv2d(x.astype(np.int64), w, b)
    listed = npconv.conv2d(x.tolist(), w.tolist(), b.tolist())  # float64, as np.array
    assert listed.dtype == np.float64
    assert_close(listed.astype(np.float32), want, "list input")
    frozen = x.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(npconv.conv2d(frozen, w, b), want)
    strided = np.zeros((8, 3, 7, 12), np.float32)
    strided[..., ::2] = x
    assert_close(npconv.conv2d(strided[..., ::2], w, b), want, "non-contiguous input")
    dw = npconv.conv2d_backward(x, w, g)[1]
    with pytest.raises(ValueError, match="grad_output"):
        npconv.conv2d_backward(x, w, g[:, :, :3])
    assert npconv.conv2d_backward(x, w, g, output_mask=(False, False, False)) == (
        None, None, None)
    np.testing.assert_array_equal(npconv.conv2d_backward(x, w, g.copy())[1], dw)


def test_padding_modes_and_unbatched_inputs_through_a_prepared_call(layer):
    x, w, b, _ = layer
    for _ in range(2):  # the second call runs the prepared one
        y = npconv.conv2d(x[0], w, b, padding=2, padding_mode="circular")
        assert_close(y, npconv.conv2d(x[:1], w, b, padding=2, padding_mode="circular",
                                      algorithm="naive")[0], "y")
        spec = plan_conv2d(x[0].shape, w.shape, padding=2).spec
        gy = np.ones(spec.y_shape[1:], np.float32)
        dx, dw, _ = npconv.conv2d_backward(x[0], w, gy, padding=2, padding_mode="circular")
        assert dx.shape == x[0].shape and dw.shape == w.shape
