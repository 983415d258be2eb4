"""The jit algorithm's index-table kernels (npconv.algorithms._indexed): when they run,
and that their fused passes (bias in the forward, dX + dW + dB in one backward) give
what the separate computations give."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv.algorithms import _indexed, jit
from npconv.spec import plan_conv2d

from reference import assert_close


def test_which_problems_take_the_index_table_path():
    book = plan_conv2d((8, 3, 7, 6), (2, 3, 4, 5)).spec
    assert jit.indexed(book)
    assert "dense matrix" in npconv.explain_choice(book).reason  # npconv.algorithms._dense
    two_samples = plan_conv2d((2, 3, 7, 6), (2, 3, 4, 5)).spec
    assert "index table" in npconv.explain_choice(two_samples).reason
    strided = plan_conv2d((2, 3, 32, 32), (8, 3, 3, 3), stride=2, padding=1).spec
    assert jit.indexed(strided)  # 16x16 output, but the plane kernels' strided loops are scalar
    wide_rows = plan_conv2d((1, 3, 20, 20), (4, 3, 3, 3), padding=1).spec
    assert not jit.indexed(wide_rows)  # 400-pixel planes: the plane kernels vectorise
    assert not jit.indexed(plan_conv2d((64, 3, 32, 32), (32, 3, 3, 3), padding=1).spec)
    huge_table = plan_conv2d((1, 256, 16, 16), (1, 256, 3, 3), stride=2).spec
    assert _indexed.table_size(huge_table) > _indexed.MAX_TABLE
    assert not jit._parallel(huge_table) and not jit.indexed(huge_table)


def test_table_is_cached_and_read_only():
    spec = plan_conv2d((2, 4, 7, 6), (4, 2, 3, 2), stride=(2, 1), padding=((1, 0), (2, 1)),
                       dilation=(1, 2), groups=2).spec
    table = _indexed.table(spec)
    assert table is _indexed.table(spec)
    assert table.shape == (spec.oh * spec.ow, spec.c_in_g * spec.kh * spec.kw)
    assert not table.flags.writeable
    padding_slot = spec.c_in_g * spec.h * spec.w
    assert table.min() >= 0 and table.max() == padding_slot  # this geometry reads padding


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1),
                                    dict(padding=((2, 0), (1, 3)), dilation=(2, 1), groups=3),
                                    dict(padding="same", padding_mode="reflect")],
                         ids=["book", "strided", "grouped", "reflect"])
def test_fused_passes_match_the_separate_ones(kwargs, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 3 // kwargs.get("groups", 1), 4, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    spec = plan_conv2d(x.shape, w.shape, **kwargs).spec
    assert jit.indexed(spec)
    y = npconv.conv2d(x, w, b, algorithm="jit", **kwargs)
    assert y.dtype == dtype
    assert_close(y, npconv.conv2d(x, w, b, algorithm="naive", **kwargs), "y")
    g = rng.standard_normal(y.shape).astype(dtype)
    full = npconv.conv2d_backward(x, w, g, algorithm="jit", **kwargs)
    ref = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    for name, got, want in zip(("dX", "dW", "dB"), full, ref, strict=True):
        assert got.dtype == dtype
        assert_close(got, want, name)
    for mask in [(True, False, False), (False, True, False), (False, False, True),
                 (True, False, True), (False, True, True)]:
        got = npconv.conv2d_backward(x, w, g, output_mask=mask, algorithm="jit", **kwargs)
        for have, want, asked in zip(got, full, mask, strict=True):
            if asked:
                np.testing.assert_array_equal(have, want)  # the same pass, the same bits
            else:
                assert have is None
