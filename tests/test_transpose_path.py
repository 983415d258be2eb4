"""The intermediate steps of the transpose method, on the book's shapes (14.5, 17.3.2)."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv.algorithms import transpose
from npconv.padding import pad
from npconv.spec import backward_padding, output_size, plan_conv2d


def test_book_tables_14_5_shapes():
    """BOOK-NOTES: X' (3,8,7,6), dZ' (2,8,4,2), dW' (3,2,4,5), dZ0 (8,2,10,10), W' (3,2,4,5)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 7, 6))
    w = rng.standard_normal((2, 3, 4, 5))
    spec = plan_conv2d(x.shape, w.shape).spec
    assert spec.y_shape == (8, 2, 4, 2)
    dz = rng.standard_normal(spec.y_shape)
    x_t, dz_t = x.transpose(1, 0, 2, 3), dz.transpose(1, 0, 2, 3)
    assert x_t.shape == (3, 8, 7, 6) and dz_t.shape == (2, 8, 4, 2)
    dw_t = transpose._conv4d(x_t, dz_t)
    assert dw_t.shape == (3, 2, 4, 5)
    np.testing.assert_allclose(dw_t.transpose(1, 0, 2, 3),
                               npconv.grad.conv2d_weight(x, w.shape, dz, algorithm="naive"))
    top, bottom = backward_padding(7, 4, 4)
    left, right = backward_padding(6, 2, 5)
    assert (top, bottom, left, right) == (3, 3, 4, 4)  # formula 14.5.1: 3 rows, 4 columns
    dz_pad = pad(dz, (top, bottom, left, right), "zeros")
    assert dz_pad.shape == (8, 2, 10, 10)
    w_t = transpose.transposed_kernel(w, groups=1)
    assert w_t.shape == (3, 2, 4, 5)
    dx = transpose._conv4d(dz_pad, w_t)
    assert dx.shape == (8, 3, 7, 6)
    np.testing.assert_allclose(dx, npconv.grad.conv2d_input(x.shape, w, dz, algorithm="naive"))


def test_rot180_is_the_book_example():
    """14.5.2: the 4x5 kernel 1..20 rotated by 180 degrees reads 20..1."""
    w = np.arange(1, 21, dtype=np.float64).reshape(1, 1, 4, 5)
    rotated = transpose.transposed_kernel(w, groups=1)[0, 0]
    np.testing.assert_array_equal(rotated, np.arange(20, 0, -1).reshape(4, 5))


def test_zero_insertion_is_17_3_2():
    """Stride 2 puts one zero between entries, stride 3 two (the book's crosses)."""
    dz = np.arange(1, 7, dtype=np.float64).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(transpose.zero_insert(dz, (2, 2))[0, 0],
                                  [[1, 0, 2, 0, 3], [0, 0, 0, 0, 0], [4, 0, 5, 0, 6]])
    assert transpose.zero_insert(dz, (3, 3)).shape == (1, 1, 4, 7)


@pytest.mark.parametrize("size, kernel, stride, dilation", [
    (7, 4, 1, 1), (9, 3, 2, 1), (10, 3, 2, 1), (11, 3, 3, 1), (13, 3, 3, 2), (8, 1, 4, 1),
])
def test_backward_padding_fixes_the_books_formula(size, kernel, stride, dilation):
    """14.5.1 is exact at stride 1; with a stride remainder the padding is asymmetric."""
    out = output_size(size, kernel, stride, 0, dilation)
    before, after = backward_padding(size, out, kernel, stride, dilation)
    dilated = (out - 1) * stride + 1
    ke = dilation * (kernel - 1) + 1
    assert dilated + before + after - ke + 1 == size  # a stride-1 "valid" conv gives dX's size
    book = ((size - 1) * 1 - dilated + ke) / 2  # formula 14.5.1 on the zero-inserted dZ
    remainder = (size - ke) % stride
    if remainder == 0:
        assert before == after == book
    else:
        assert after - before == remainder


def test_backward_padding_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="is not the output of input size 9"):
        backward_padding(9, 5, 3, 2)
