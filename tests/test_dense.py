"""The jit algorithm's dense-matrix kernels (npconv.algorithms._dense): which layers take
them, that they give what the index-table kernels give (every register width, tile
tails, groups, strides, dilation, padding), and that a non-finite x or dZ falls back to
the index table, whose sums have no 0 * inf terms."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv.algorithms import _dense, _indexed, jit
from npconv.spec import plan_conv2d

from reference import assert_close

# (x shape, weight shape, kwargs): each with at least 8 samples, mostly taps and a small M
CASES = [
    ((8, 3, 7, 6), (2, 3, 4, 5), {}),  # the book's layer: R = 16, E = 126
    ((11, 2, 5, 6), (3, 2, 3, 3), dict(padding=1)),  # a short sample tile, R = 90
    ((9, 4, 4, 5), (6, 2, 3, 2), dict(groups=2, stride=(1, 2), padding=((1, 0), (0, 1)))),
    ((16, 2, 6, 5), (4, 2, 2, 3), dict(dilation=(2, 1), padding=(1, 2))),
    ((8, 1, 5, 5), (5, 1, 5, 5), dict(stride=2, padding=2)),
]


def _arrays(x_shape, w_shape, kwargs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    return spec, x, w, b, g


def test_which_layers_take_the_dense_matrix():
    book = plan_conv2d((8, 3, 7, 6), (2, 3, 4, 5)).spec
    assert jit.indexed(book) and _dense.applies(book, 4) and _dense.applies(book, 8)
    few = plan_conv2d((4, 3, 7, 6), (2, 3, 4, 5)).spec
    assert not _dense.applies(few, 4)  # fewer samples than a tile
    sparse = plan_conv2d((8, 1, 12, 12), (4, 1, 3, 3)).spec
    assert not _dense.applies(sparse, 4)  # 9 taps of 144 inputs
    one_row = plan_conv2d((32, 3, 8, 6), (1, 3, 5, 5), stride=2).spec
    assert not _dense.applies(one_row, 4)  # R = 2 output rows: one register, mostly padding


@pytest.mark.parametrize("vector_bytes", [32, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c[0]))
def test_dense_kernels_match_the_index_table(case, dtype, vector_bytes, monkeypatch):
    monkeypatch.setattr(_dense, "VECTOR_BYTES", vector_bytes)  # every width, any machine
    monkeypatch.setattr(_dense, "_ready", {})
    spec, x, w, b, g = _arrays(*case, dtype)
    y = _dense.forward(x, w, spec, b)
    assert y is not None and y.dtype == dtype
    assert_close(y, _indexed.forward(x, w, spec, b), "y")
    assert_close(_dense.forward(x, w, spec), _indexed.forward(x, w, spec), "y without bias")
    got = _dense.backward(x, w, g, spec, True, True, True)
    want = _indexed.backward(x, w, g, spec, True, True, True)
    for name, a, e in zip(("dX", "dW", "dB"), got, want, strict=True):
        assert a.dtype == dtype
        assert_close(a, e, name)
    for mask in ((True, False, False), (False, True, False), (False, False, True)):
        part = _dense.backward(x if mask[1] else None, w if mask[0] else None, g, spec, *mask)
        for a, asked in zip(part, mask, strict=True):
            assert (a is None) == (not asked)
            if asked:
                np.testing.assert_array_equal(a, got[mask.index(True)])


@pytest.mark.parametrize("where", ["x", "dZ", "weight"])
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_values_give_the_index_tables_exact_pattern(where, value):
    spec, x, w, b, g = _arrays(*CASES[1], np.float32)
    {"x": x, "dZ": g, "weight": w}[where].flat[7] = value
    if where == "x":
        assert _dense.forward(x, w, spec, b) is None  # nothing computed: not finite
    if where == "dZ":
        assert _dense.backward(x, w, g, spec, True, True, True) is None
        assert _dense.backward(x, None, g, spec, False, True, True) is not None  # dW: exact
    y = npconv.conv2d(x, w, b, padding=1, algorithm="jit")
    want = _indexed.forward(x, w, spec, b)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    got = npconv.conv2d_backward(x, w, g, padding=1, algorithm="jit")
    for a, e in zip(got, _indexed.backward(x, w, g, spec, True, True, True), strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(e))
        finite = np.isfinite(e)
        assert_close(a[finite], e[finite], "finite part")


def test_auto_runs_the_book_layer_on_the_dense_matrix_as_torch(torch):
    _, x, w, b, g = _arrays(*CASES[0], np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    tb = torch.from_numpy(b).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, tb)
    ty.backward(torch.from_numpy(g))
    assert_close(npconv.conv2d(x, w, b), ty.detach().numpy(), "y")
    for name, a, e in zip(("dX", "dW", "dB"), npconv.conv2d_backward(x, w, g),
                          (tx.grad, tw.grad, tb.grad), strict=True):
        assert_close(a, e.numpy(), name)
