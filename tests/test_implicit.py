"""The jit algorithm's implicit-GEMM kernels (npconv.algorithms._implicit): when they
run, and that they give the oracle's answers on the shapes their tiles find hardest
(pixel counts that are not a multiple of the tile, channel counts that are not a
multiple of the vector, groups, padding, stride, dilation), in both dtypes, serial and
parallel, whatever the thread count. The parity tests run them on every case through
the "jit-implicit" variant."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import npconv
from npconv import tuning
from npconv._numba import store_transposed
from npconv.algorithms import _implicit, jit, naive
from npconv.spec import plan_conv2d

from reference import assert_close

# the choices named here are AVX2's (conftest.avx2_rule); AVX-512's are tested apart
pytestmark = pytest.mark.usefixtures("avx2_rule")


def test_which_problems_take_the_implicit_path():
    f4 = np.dtype(np.float32).itemsize
    lenet2 = plan_conv2d((64, 6, 14, 14), (16, 6, 5, 5)).spec  # 10x10 outputs of 14-wide rows
    assert jit.implicit(lenet2, "forward", f4) and jit.implicit(lenet2, "grad_weight", f4)
    assert not jit.implicit(lenet2, "grad_input", f4)  # dX stays a scatter
    down = plan_conv2d((16, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1).spec
    assert jit.implicit(down, "forward", f4)
    wide = plan_conv2d((16, 32, 32, 32), (32, 32, 3, 3), padding=2, dilation=2).spec
    assert not jit.implicit(wide, "grad_weight", f4)  # 11% junk: the wide rows do as well
    assert jit.implicit(wide, "forward", f4)  # but a dilated forward pass is faster here
    undilated = plan_conv2d((16, 32, 32, 32), (32, 32, 3, 3), padding=1).spec
    assert not jit.implicit(undilated, "forward", f4)
    lenet1 = plan_conv2d((64, 1, 28, 28), (6, 1, 5, 5), padding=2).spec
    assert not jit.implicit(lenet1, "forward", f4)  # 6 output channels
    stem = plan_conv2d((64, 3, 32, 32), (32, 3, 3, 3), stride=2, padding=1).spec
    assert not jit.implicit(stem, "forward", f4)  # columns of K = 27
    deep = plan_conv2d((32, 256, 14, 14), (512, 256, 3, 3), stride=2, padding=1).spec
    assert not jit.implicit(deep, "forward", f4)  # K = 2304: BLAS's blocking wins
    book = plan_conv2d((8, 3, 7, 6), (2, 3, 4, 5)).spec
    assert not jit.implicit(book, "forward", f4)  # one thread's work: the index tables
    # 1x1 strided: the jit algorithm runs them implicitly (its plane kernels' strided
    # loops are scalar), but auto sends dW, and the forward pass above 192 input
    # channels, to im2col's GEMM on a strided sample of x
    shortcut = plan_conv2d((16, 128, 28, 28), (256, 128, 1, 1), stride=2).spec
    wide = plan_conv2d((16, 256, 28, 28), (512, 256, 1, 1), stride=2).spec
    assert all(jit.implicit(s, op, f4) for s in (shortcut, wide)
               for op in ("forward", "grad_weight"))
    assert tuning.choose(shortcut, np.float32, "forward") == "jit"
    assert tuning.choose(shortcut, np.float32, "grad_weight") == "im2col"
    assert tuning.choose(wide, np.float32, "forward") == "im2col"


def test_avx512_lifts_the_k_and_junk_limits_from_32_channels(monkeypatch):
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    f4 = np.dtype(np.float32).itemsize
    wide = plan_conv2d((16, 32, 32, 32), (32, 32, 3, 3), padding=2, dilation=2).spec
    assert jit.implicit(wide, "grad_weight", f4)  # 11% junk
    res28 = plan_conv2d((16, 128, 28, 28), (128, 128, 3, 3), padding=1).spec
    assert all(jit.implicit(res28, op, f4) for op in ("forward", "grad_weight"))  # K = 1152
    thin = plan_conv2d((32, 16, 32, 32), (16, 16, 3, 3), padding=1).spec
    assert not jit.implicit(thin, "forward", f4)  # 16 channels, 6% junk: the tiled kernels
    assert jit.implicit(thin, "grad_weight", f4)
    stem = plan_conv2d((64, 3, 32, 32), (32, 3, 3, 3), padding=1).spec
    assert not jit.implicit(stem, "forward", f4)  # columns of K = 27
    f8 = np.dtype(np.float64).itemsize
    assert not jit.implicit(res28, "forward", f8)  # the float64 forward tile runs scalar
    assert jit.implicit(res28, "grad_weight", f8)  # the float64 dW tile vectorises


def test_workspace_limit_sends_large_copies_elsewhere():
    down = plan_conv2d((16, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1).spec
    before = npconv.workspace_limit()
    try:
        npconv.set_workspace_limit(1 << 20)
        assert not jit.implicit(down, "forward", 4)
    finally:
        npconv.set_workspace_limit(before)


CASES = {
    # x shape, weight shape, conv kwargs
    "tail": ((3, 5, 9, 7), (16, 5, 3, 3), dict()),  # 3*7*5 = 105 pixels: a partial tile
    "channels": ((2, 6, 8, 8), (20, 6, 3, 3), dict(padding=1)),  # 20 = 2.5 vectors
    "strided": ((2, 8, 13, 11), (24, 8, 3, 5), dict(stride=(2, 3), padding=(1, 2))),
    "dilated": ((2, 4, 12, 12), (16, 4, 3, 3), dict(padding=((2, 0), (1, 3)),
                                                     dilation=(2, 1))),
    "grouped": ((2, 12, 9, 9), (36, 4, 3, 2), dict(groups=3, stride=2)),
    "pointwise": ((3, 24, 5, 5), (16, 24, 1, 1), dict()),
    # 16x32 outputs: every tile within one sample (stored as vectors); "tail" (35
    # pixels a sample) has tiles across two samples and a partial last one
    "whole tiles": ((2, 3, 18, 34), (16, 3, 3, 3), dict()),
}


FORWARD_TILES = sorted({(co, px) for co, px, _ in _implicit._FORWARD})


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
# the prefetching forward kernels in float32 only, the dtype npconv runs them in
@pytest.mark.parametrize(("dtype", "ahead"),
                         [(np.float32, False), (np.float32, True), (np.float64, False)],
                         ids=["float32", "float32-prefetching", "float64"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("tile", FORWARD_TILES, ids=lambda t: f"{t[0]}x{t[1]}")
def test_kernels_match_the_loops(case, dtype, ahead, parallel, tile, monkeypatch):
    monkeypatch.setattr(_implicit, "forward_tile", lambda c_out_g: tile)  # every tile, every case
    # and each tile's kernel with and without the prefetches, whatever the taps
    monkeypatch.setattr(_implicit, "PREFETCH_MAX_TAPS", 1 << 30 if ahead else 0)
    # and both weight-gradient tiles (AVX-512's wide one with the wide forward tiles)
    wco = _implicit.WIDE_WCO if tile[0] >= _implicit.WIDE_WCO else _implicit.WCO
    monkeypatch.setattr(_implicit, "weight_tile_channels", lambda c_out_g: wco)
    x_shape, w_shape, kwargs = CASES[case]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    y = _implicit.correlate(x, w, spec, parallel)
    assert y.dtype == dtype and y.shape == spec.y_shape
    assert_close(y, naive.forward(x, w, spec), "y")
    b = rng.standard_normal(spec.c_out).astype(dtype)  # added to the sums in registers
    yb = _implicit.correlate(x, w, spec, parallel, b)
    assert_close(yb, naive.forward(x, w, spec) + b.reshape(1, -1, 1, 1), "y + b")
    dw = _implicit.weight_grad(x, g, spec, parallel)
    assert dw.dtype == dtype and dw.shape == spec.weight_shape
    assert_close(dw, naive.grad_weight(x, g, spec), "dW")
    # dB summed as dZ is laid out for dW: dW bit for bit the same
    dw2, db = _implicit.weight_bias_grad(x, g, spec, parallel)
    np.testing.assert_array_equal(dw2, dw)
    assert db.dtype == dtype and db.shape == (spec.c_out,)
    assert_close(db, g.sum(axis=(0, 2, 3), dtype=np.float64).astype(dtype), "dB")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("tile", sorted(_implicit._WEIGHT), ids=lambda t: f"{t[0]}x{t[1]}")
def test_every_weight_gradient_tile_matches_the_loops(case, dtype, tile, monkeypatch):
    # every (channels, pairs) tile on any machine: AVX-512 takes 8 pairs where the
    # channels fill two vector registers, 6 elsewhere
    wco, kt = tile
    monkeypatch.setattr(_implicit, "weight_tile_channels", lambda c_out_g: wco)
    monkeypatch.setattr(_implicit, "weight_tile_pairs", lambda wco, itemsize: kt)
    x_shape, w_shape, kwargs = CASES[case]
    rng = np.random.default_rng(17)
    x = rng.standard_normal(x_shape).astype(dtype)
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    dw = _implicit.weight_grad(x, g, spec, True)
    assert dw.dtype == dtype and dw.shape == spec.weight_shape
    assert_close(dw, naive.grad_weight(x, g, spec), "dW")


def test_weight_gradient_tiles_take_eight_pairs_where_two_registers_hold_them():
    assert _implicit.weight_tile_pairs(32, 4, 64) == _implicit.WIDE_WKT == 8
    assert _implicit.weight_tile_pairs(16, 8, 64) == 8
    assert _implicit.weight_tile_pairs(32, 8, 64) == _implicit.WKT == 6  # four registers
    assert _implicit.weight_tile_pairs(16, 4, 32) == 6  # AVX2: 16 registers


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_of_k_and_tiles_per_task_do_not_change_the_forward(case, monkeypatch):
    """K walked in uneven blocks (sums kept between them), several tiles per task (a
    last task short of tiles): bit for bit K walked whole, one tile per task."""
    x_shape, w_shape, kwargs = CASES[case]
    rng = np.random.default_rng(8)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    monkeypatch.setattr(_implicit, "FORWARD_K_BLOCK", 10**6)
    monkeypatch.setattr(_implicit, "FORWARD_TILES_PER_TASK", 1)
    whole = _implicit.correlate(x, w, spec, True).copy()
    assert_close(whole, naive.forward(x, w, spec), "y")
    k = spec.c_in_g * spec.kh * spec.kw
    for block, tiles in ((7, 3), (max(1, k // 2), 5), (1, 16)):
        monkeypatch.setattr(_implicit, "FORWARD_K_BLOCK", block)
        monkeypatch.setattr(_implicit, "FORWARD_TILES_PER_TASK", tiles)
        monkeypatch.setattr(_implicit, "FORWARD_TASKS_PER_THREAD", 1)
        np.testing.assert_array_equal(_implicit.correlate(x, w, spec, True), whole)


@pytest.mark.parametrize("case", list(CASES))
def test_chunks_of_samples_keep_the_forward_and_agree_on_dw(case, monkeypatch):
    """A sample at a time, and two (a short last chunk where N is odd): the forward
    pass bit for bit the whole batch's (the bias and the cropped channels too), dW
    within rounding of it."""
    x_shape, w_shape, kwargs = CASES[case]
    rng = np.random.default_rng(9)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    b = rng.standard_normal(spec.c_out).astype(np.float32)
    g = rng.standard_normal(spec.y_shape).astype(np.float32)
    monkeypatch.setattr(_implicit, "SAMPLE_CHUNK_BYTES", 10**12)
    monkeypatch.setattr(_implicit, "WEIGHT_SAMPLE_CHUNK_BYTES", 10**12)
    y = _implicit.correlate(x, w, spec, True, b).copy()
    dw, db = _implicit.weight_bias_grad(x, g, spec, True)
    threads = numba.get_num_threads()  # the forward pass's budget is per thread
    for per in (1, 2):
        monkeypatch.setattr(_implicit, "SAMPLE_CHUNK_BYTES",
                            -(-per * _implicit.sample_bytes(spec, "forward", 4) // threads))
        assert _implicit.sample_chunk(spec.n, _implicit.sample_bytes(spec, "forward", 4),
                                      _implicit.SAMPLE_CHUNK_BYTES * threads) == per
        monkeypatch.setattr(_implicit, "WEIGHT_SAMPLE_CHUNK_BYTES",
                            per * _implicit.sample_bytes(spec, "grad_weight", 4))
        np.testing.assert_array_equal(_implicit.correlate(x, w, spec, True, b), y)
        dw_chunked, db_chunked = _implicit.weight_bias_grad(x, g, spec, True)
        assert_close(dw_chunked, dw, "dW")
        np.testing.assert_array_equal(db_chunked, db)  # the same parts, the same order
    assert_close(dw, naive.grad_weight(x, g, spec), "dW")
    assert_close(db, g.sum(axis=(0, 2, 3), dtype=np.float64).astype(np.float32), "dB")


def test_sample_chunks():
    down = plan_conv2d((16, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1).spec
    padded = 64 * 58 * 58
    assert _implicit.sample_bytes(down, "forward", 4) == (padded + 128 * 28 * 28) * 4
    assert _implicit.sample_bytes(down, "grad_weight", 4) == (padded + 128 * 28 * 28) * 4
    pointwise = plan_conv2d((16, 256, 14, 14), (20, 256, 1, 1)).spec  # nothing padded
    tile = _implicit.forward_tile(20)[0]
    assert _implicit.sample_bytes(pointwise, "forward", 8) == -(-20 // tile) * tile * 196 * 8
    assert _implicit.sample_chunk(16, 100, 450, limit=10**9) == 4
    assert _implicit.sample_chunk(16, 100, 550, limit=10**9) == 4  # 5, 5, 5, 1: evened out
    assert _implicit.sample_chunk(16, 100, 10**4, limit=10**9) == 16
    assert _implicit.sample_chunk(16, 100, 10**4, limit=250) == 2  # the workspace limit
    assert _implicit.sample_chunk(16, 100, 50, limit=10**9) == 1  # one sample at least
    assert _implicit.sample_chunk(3, 0, 50, limit=10**9) == 3


def test_forward_blocking():
    assert _implicit.forward_blocking(54, 10**4, 2) == (54, 16)  # one block
    assert _implicit.forward_blocking(216, 10**4, 2) == (108, 16)  # 1.5 blocks: two
    assert _implicit.forward_blocking(576, 10**4, 2) == (144, 16)
    assert _implicit.forward_blocking(580, 10**4, 2) == (145, 16)  # even blocks
    assert _implicit.forward_blocking(576, 64, 2) == (144, 4)  # 8 tasks per thread
    assert _implicit.forward_blocking(576, 3, 2) == (144, 1)


@pytest.mark.parametrize("chunked", [False, True])
def test_results_do_not_depend_on_the_thread_count(chunked, monkeypatch):
    if chunked:  # a sample at a time (dW's chunks are not by the threads)
        monkeypatch.setattr(_implicit, "SAMPLE_CHUNK_BYTES", 1)
        monkeypatch.setattr(_implicit, "WEIGHT_SAMPLE_CHUNK_BYTES", 1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8, 15, 15)).astype(np.float32)
    w = rng.standard_normal((32, 8, 3, 3)).astype(np.float32)
    spec = plan_conv2d(x.shape, w.shape, stride=2).spec
    g = rng.standard_normal(spec.y_shape).astype(np.float32)
    before = npconv.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            npconv.set_num_threads(threads)
            results.append((_implicit.correlate(x, w, spec, True).copy(),
                            *_implicit.weight_bias_grad(x, g, spec, True)))
    finally:
        npconv.set_num_threads(before)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pixel_table_is_cached():
    spec = plan_conv2d((2, 3, 9, 8), (16, 3, 3, 3), stride=2, padding=1).spec
    table = _implicit.pixel_table(spec)
    assert table is _implicit.pixel_table(spec)
    assert table.shape == (spec.n * spec.oh * spec.ow,)
    assert table[1] - table[0] == 2  # the stride, along a row of the padded input
    assert table[spec.ow] - table[0] == 2 * spec.wp


def test_every_tile_of_either_width_has_its_kernel():
    for tiles in _implicit.FORWARD_TILES.values():
        assert {(*t, ahead) for t in tiles for ahead in (False, True)} <= set(_implicit._FORWARD)
    assert _implicit.forward_tile(64) in _implicit.FORWARD_TILES[_implicit.VECTOR_BYTES]


def test_the_forward_tile_pads_few_channels():
    def avx2(c_out_g):
        return _implicit.forward_tile(c_out_g, 32)

    assert avx2(16) == (16, 4)  # LeNet's second layer, exact
    assert avx2(128) == (16, 4)
    assert avx2(12) == (16, 4)  # 16 channels either way
    assert avx2(24) == (8, 8)  # 32 against 24: too many
    assert avx2(8) == (8, 8)

    def avx512(c_out_g):
        return _implicit.forward_tile(c_out_g, 64)

    assert avx512(128) == (32, 8)
    assert avx512(24) == (32, 8)  # 32 at full speed beat 24 at half
    assert avx512(48) == (16, 16)  # 48 exact, against 64 in 32 x 8
    assert avx512(16) == (16, 16)
    assert avx512(8) == avx512(4) == (8, 8)


@pytest.fixture
def correlate_calls(monkeypatch) -> list:
    """The calls made to the implicit GEMM's correlation, recorded (and run)."""
    return _recorded(monkeypatch, "correlate")


def _recorded(monkeypatch, name: str) -> list:
    """The specs (third argument) of the calls made to ``_implicit.<name>``, recorded as
    they run."""
    calls = []
    real = getattr(_implicit, name)
    monkeypatch.setattr(_implicit, name, lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    return calls


def _implicit_dtype(dtype, monkeypatch):
    """The implicit kernels run float32 only (float64 runs them scalar); float64 is
    let through here, to check that the kernels themselves are exact in it too."""
    monkeypatch.setattr(jit, "IMPLICIT_ITEMSIZE", np.dtype(dtype).itemsize)


def test_float64_keeps_off_the_implicit_kernels():
    spec = plan_conv2d((2, 16, 14, 14), (16, 16, 3, 3), padding=2, dilation=2).spec
    down = plan_conv2d((16, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1).spec
    for s in (spec, down):
        assert jit.implicit(s, "forward", 4) and not jit.implicit(s, "forward", 8)
    assert jit.implicit(down, "grad_weight", 4) and not jit.implicit(down, "grad_weight", 8)
    assert jit.adjoint(spec, 4) is not None and jit.adjoint(spec, 8) is None
    for op in ("forward", "grad_weight"):
        assert npconv.explain_choice(down, np.float64, op).algorithm == "im2col"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_dilated_forward_takes_the_implicit_path_and_agrees(dtype, correlate_calls,
                                                              monkeypatch):
    _implicit_dtype(dtype, monkeypatch)
    x_shape, w_shape = (2, 16, 14, 14), (16, 16, 3, 3)
    kwargs = dict(padding=2, dilation=2)
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    assert jit.implicit(spec, "forward", np.dtype(dtype).itemsize)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    got = npconv.conv2d(x, w, b, algorithm="jit", **kwargs)
    want = npconv.conv2d(x, w, b, algorithm="naive", **kwargs)
    assert correlate_calls == [spec] and got.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


ADJOINT_CASES = {
    "dilated": ((2, 16, 14, 14), (16, 16, 3, 3), dict(padding=2, dilation=2)),
    "grouped": ((2, 32, 14, 14), (32, 16, 3, 3), dict(padding=2, dilation=2, groups=2)),
    "asymmetric": ((2, 16, 15, 13), (16, 16, 3, 5),
                   dict(padding=((3, 1), (2, 4)), dilation=(2, 1))),
    # undilated layers take it where the implicit GEMM runs the correlation: with AVX-512
    # from 32 channels (set below, so that any machine runs these)
    "undilated": ((2, 32, 14, 14), (32, 32, 3, 3), dict(padding=1)),
    "undilated grouped": ((2, 64, 9, 11), (64, 32, 3, 3), dict(padding=1, groups=2)),
    "1x7": ((2, 32, 9, 9), (48, 32, 1, 7), dict(padding=(0, 3))),
    "undilated asymmetric": ((3, 32, 12, 10), (40, 32, 5, 3),
                             dict(padding=((4, 0), (1, 2)))),
    "unpadded": ((2, 32, 10, 10), (32, 32, 3, 3), {}),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(ADJOINT_CASES))
def test_a_unit_stride_input_gradient_runs_as_the_adjoint_correlation(case, dtype,
                                                                     correlate_calls,
                                                                     monkeypatch):
    # 17.3.2: dZ padded by the kernel's extent less the padding, W rotated by 180 degrees
    _implicit_dtype(dtype, monkeypatch)
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    x_shape, w_shape, kwargs = ADJOINT_CASES[case]
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    adjoint = jit.adjoint(spec, np.dtype(dtype).itemsize)
    assert adjoint is not None and (adjoint.oh, adjoint.ow) == (spec.h, spec.w)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    got = npconv.conv2d_backward(x, w, g, algorithm="jit", output_mask=(True, False, False),
                                 **kwargs)[0]
    want = npconv.conv2d_backward(x, w, g, algorithm="naive", output_mask=(True, False, False),
                                  **kwargs)[0]
    assert correlate_calls == [adjoint] and got.dtype == dtype and got.shape == x.shape
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_the_adjoint_is_not_used_where_it_does_not_fit(monkeypatch):
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    padded_beyond = plan_conv2d((2, 16, 14, 14), (16, 16, 3, 3), padding=5, dilation=2).spec
    undilated_beyond = plan_conv2d((2, 32, 14, 14), (32, 32, 3, 3), padding=3).spec
    # 16 input channels and little junk: the implicit GEMM does not run the correlation
    undilated_narrow = plan_conv2d((2, 16, 14, 14), (16, 16, 3, 3), padding=1).spec
    narrow = plan_conv2d((2, 16, 14, 14), (32, 8, 3, 3), padding=2, dilation=2,
                         groups=2).spec  # 8 input channels per group: dX's tile too thin
    strided = plan_conv2d((2, 32, 14, 14), (32, 32, 3, 3), stride=2, padding=1).spec
    padded_1x1 = plan_conv2d((2, 32, 14, 14), (32, 32, 1, 1), padding=1).spec
    cases = (padded_beyond, undilated_beyond, undilated_narrow, narrow, strided, padded_1x1)
    assert all(jit.adjoint(s, 4) is None for s in cases)


@pytest.mark.parametrize("case", ["dilated", "undilated", "1x7"])
def test_an_inf_weight_keeps_the_input_gradient_exact(case, correlate_calls, monkeypatch):
    # the zeros around dZ would meet the inf as 0 * inf: the scatter path takes it
    _implicit_dtype(np.float64, monkeypatch)
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    x_shape, w_shape, kwargs = ADJOINT_CASES[case]
    assert jit.adjoint(plan_conv2d(x_shape, w_shape, **kwargs).spec, 8) is not None
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    w[3, 5, 0, 2] = np.inf
    g = rng.standard_normal(plan_conv2d(x_shape, w_shape, **kwargs).spec.y_shape)
    got = npconv.conv2d_backward(x, w, g, algorithm="jit", output_mask=(True, False, False),
                                 **kwargs)[0]
    want = npconv.conv2d_backward(x, w, g, algorithm="naive", output_mask=(True, False, False),
                                  **kwargs)[0]
    assert not correlate_calls  # the scatter ran
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10, atol=1e-10)


POINTWISE_CASES = {
    "plain": ((4, 32, 10, 11), (16, 32, 1, 1), {}),
    "grouped": ((4, 48, 10, 13), (48, 16, 1, 1), dict(groups=3)),
    "few channels": ((16, 4, 40, 40), (6, 4, 1, 1), {}),
    "dilated": ((4, 32, 10, 11), (16, 32, 1, 1), dict(dilation=3)),  # a 1x1: no effect
}


@pytest.fixture
def weight_grad_calls(monkeypatch) -> list:
    """The calls made to the implicit GEMM's weight gradient (alone or with dB),
    recorded (and run)."""
    return _recorded(monkeypatch, "_weight_grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(POINTWISE_CASES))
def test_a_pointwise_layer_runs_every_pass_on_the_implicit_gemm(case, dtype, correlate_calls,
                                                                weight_grad_calls,
                                                                monkeypatch):
    _implicit_dtype(dtype, monkeypatch)
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)  # the rule's AVX-512 case, on any machine
    x_shape, w_shape, kwargs = POINTWISE_CASES[case]
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    itemsize = np.dtype(dtype).itemsize
    assert jit.pointwise(spec, itemsize)
    adjoint = jit.adjoint(spec, itemsize)
    assert adjoint is not None and not any(adjoint.padding)
    assert (adjoint.c_out, adjoint.c_in_g) == (spec.c_in, spec.c_out_g)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    y = npconv.conv2d(x, w, b, algorithm="jit", **kwargs)
    grads = npconv.conv2d_backward(x, w, g, algorithm="jit", **kwargs)
    assert correlate_calls == [spec, adjoint] and weight_grad_calls == [spec]
    want_y = npconv.conv2d(x, w, b, algorithm="naive", **kwargs)
    want = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for got, expected in zip((y, *grads), (want_y, *want), strict=True):
        assert got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def test_a_pointwise_input_gradient_stays_exact_with_an_inf_weight(correlate_calls,
                                                                   monkeypatch):
    # nothing is padded around dZ, so no 0 * inf appears: the adjoint keeps the call
    _implicit_dtype(np.float64, monkeypatch)
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    x_shape, w_shape, kwargs = POINTWISE_CASES["plain"]
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    w[3, 5, 0, 0] = np.inf
    w[7, 2, 0, 0] = np.nan
    g = rng.standard_normal(spec.y_shape)
    mask = (True, False, False)
    got = npconv.conv2d_backward(x, w, g, algorithm="jit", output_mask=mask)[0]
    want = npconv.conv2d_backward(x, w, g, algorithm="naive", output_mask=mask)[0]
    assert correlate_calls == [jit.adjoint(spec, 8)]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10, atol=1e-10)


def test_pointwise_needs_an_unpadded_unit_stride_1x1_kernel_and_avx512(monkeypatch):
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    x_shape, w_shape, _ = POINTWISE_CASES["plain"]
    assert jit.pointwise(plan_conv2d(x_shape, w_shape).spec, 4)
    others = [plan_conv2d(x_shape, w_shape, padding=1).spec,
              plan_conv2d(x_shape, w_shape, stride=2).spec,
              plan_conv2d(x_shape, (16, 32, 3, 1)).spec,
              plan_conv2d((1, 32, 10, 11), w_shape).spec,  # too small for the threads
              plan_conv2d((16, 2, 40, 40), (6, 2, 1, 1)).spec]  # 2 input channels
    assert not any(jit.pointwise(s, 4) for s in others)
    assert not jit.pointwise(plan_conv2d(x_shape, w_shape).spec, 8)  # float64: scalar
    monkeypatch.setattr(jit, "VECTOR_BYTES", 32)
    assert not jit.pointwise(plan_conv2d(x_shape, w_shape).spec, 4)


PHASE_CASES = {
    # x shape, weight shape, conv kwargs
    "stride 2": ((3, 16, 13, 11), (24, 16, 3, 3), dict(stride=2, padding=1)),
    "mixed": ((4, 32, 17, 14), (20, 16, 3, 2),
              dict(stride=(2, 3), padding=((2, 0), (1, 1)), dilation=(2, 1), groups=2)),
    "empty phases": ((8, 32, 30, 30), (40, 32, 1, 1), dict(stride=3)),  # 8 of 9 zero
    "stride past the kernel": ((4, 16, 20, 19), (32, 16, 2, 2), dict(stride=3, padding=1)),
    "channel tail": ((4, 20, 15, 15), (24, 20, 3, 3), dict(stride=2, padding=1)),
}


@pytest.fixture
def phase_calls(monkeypatch) -> list:
    """The calls made to the phase-by-phase input gradient, recorded (and run)."""
    return _recorded(monkeypatch, "input_grad_phases")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(PHASE_CASES))
def test_a_strided_input_gradient_runs_phase_by_phase_and_agrees(case, dtype, phase_calls,
                                                                monkeypatch):
    # 17.3.2's zero insertion without the zeros: each stride phase of dX a unit-stride
    # correlation of dZ with the taps of W that reach it
    _implicit_dtype(dtype, monkeypatch)
    x_shape, w_shape, kwargs = PHASE_CASES[case]
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    assert jit.phases(spec, np.dtype(dtype).itemsize)
    rng = np.random.default_rng(8)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    mask = (True, False, False)
    dx = npconv.conv2d_backward(x, w, g, algorithm="jit", output_mask=mask, **kwargs)[0]
    want = npconv.conv2d_backward(x, w, g, algorithm="naive", output_mask=mask, **kwargs)[0]
    assert phase_calls == [spec] and dx.dtype == dtype and dx.shape == x.shape
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dx, want, rtol=tol, atol=tol)
    # a second call reuses the buffers: nothing of the first may leak into it
    g2 = rng.standard_normal(spec.y_shape).astype(dtype)
    dx2 = npconv.conv2d_backward(x, w, g2, algorithm="jit", output_mask=mask, **kwargs)[0]
    want2 = npconv.conv2d_backward(x, w, g2, algorithm="naive", output_mask=mask, **kwargs)[0]
    np.testing.assert_allclose(dx2, want2, rtol=tol, atol=tol)


LONG_K_CASES = {
    "5x5": ((2, 64, 9, 9), (32, 64, 5, 5), dict(padding=2)),  # K = 1600
    "strided 7x7": ((2, 32, 15, 15), (48, 32, 7, 7), dict(stride=2, padding=3)),  # 1568
    "grouped": ((2, 96, 8, 8), (64, 48, 5, 5), dict(padding=1, groups=2)),  # 1200
}


@pytest.mark.parametrize("case", list(LONG_K_CASES))
def test_few_output_channels_take_the_implicit_weight_gradient_at_any_k(case,
                                                                       weight_grad_calls,
                                                                       monkeypatch):
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    x_shape, w_shape, kwargs = LONG_K_CASES[case]
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    assert spec.c_in_g * spec.kh * spec.kw > jit.IMPLICIT_ANY_SHAPE_MAX_K
    assert jit.implicit(spec, "grad_weight", 4)
    rng = np.random.default_rng(12)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    g = rng.standard_normal(spec.y_shape).astype(np.float32)
    mask = (False, True, False)
    got = npconv.conv2d_backward(x, w, g, algorithm="jit", output_mask=mask, **kwargs)[1]
    want = npconv.conv2d_backward(x.astype(np.float64), w.astype(np.float64),
                                  g.astype(np.float64), algorithm="naive", output_mask=mask,
                                  **kwargs)[1]
    assert weight_grad_calls == [spec] and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    # not past the output channels where im2col's GEMM wins, nor in float64, nor where the
    # partial sums would not fit the workspace
    wide = plan_conv2d(x_shape, ((jit.IMPLICIT_WEIGHT_ANY_K_MAX_CHANNELS + 32) * spec.groups,
                                 *w_shape[1:]), **kwargs).spec
    assert not jit.implicit(wide, "grad_weight", 4) and not jit.implicit(spec, "grad_weight", 8)
    before = npconv.workspace_limit()
    try:
        npconv.set_workspace_limit(_implicit.weight_sums_bytes(spec, 4) - 1)
        assert not jit.implicit(spec, "grad_weight", 4)
    finally:
        npconv.set_workspace_limit(before)


def test_auto_runs_the_phases_paired_with_im2col_and_agrees(phase_calls, monkeypatch):
    # dX phase by phase on jit, dW on im2col (columns past 1024 pairs, the implicit dW's
    # partial sums past the workspace limit): the "jit+im2col" pair of the rule, through
    # the functional API
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    monkeypatch.setattr(_implicit, "VECTOR_BYTES", 64)
    x_shape, w_shape, kwargs = (3, 48, 31, 31), (64, 48, 5, 5), dict(stride=2, padding=2)
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    before = npconv.workspace_limit()
    npconv.set_workspace_limit(_implicit.weight_sums_bytes(spec, 4) - 1)
    try:
        assert npconv.explain_choice(spec, np.float32, "backward").algorithm == "jit+im2col"
        rng = np.random.default_rng(10)
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        g = rng.standard_normal(spec.y_shape).astype(np.float32)
        got = npconv.conv2d_backward(x, w, g, **kwargs)
        want = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    finally:
        npconv.set_workspace_limit(before)
    assert phase_calls == [spec]
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, "auto")


def test_the_phase_geometry_covers_every_input_position_once():
    for x_shape, w_shape, kwargs in PHASE_CASES.values():
        spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
        _, phases = _implicit._phase_tables(spec)
        seen = np.zeros((spec.h, spec.w), dtype=int)
        for i0, j0, m, mw, rows, cols, pbase, offs, _ in phases:
            seen[i0::spec.stride[0], j0::spec.stride[1]] += 1
            assert seen[i0::spec.stride[0], j0::spec.stride[1]].shape == (m, mw)
            assert len(pbase) == spec.n * m * mw
            assert len(offs) == spec.c_out_g * len(rows) * len(cols)
        assert (seen == 1).all()


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("case", list(PHASE_CASES))
def test_the_phases_give_the_same_dx_a_chunk_of_samples_at_a_time(case, parallel,
                                                                  monkeypatch):
    # chunks of 1, 2 and 3 samples (a short last chunk where 3 does not divide N) against
    # the whole batch at once: bit for bit, each pixel's sum is the same sum
    x_shape, w_shape, kwargs = PHASE_CASES[case]
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    rng = np.random.default_rng(11)
    w = rng.standard_normal(w_shape).astype(np.float32)
    g = rng.standard_normal(spec.y_shape).astype(np.float32)
    sample = _implicit.phase_sample_bytes(spec, 4)
    threads = numba.get_num_threads() if parallel else 1
    monkeypatch.setattr(_implicit, "SAMPLE_CHUNK_BYTES", spec.n * sample)
    assert _implicit.phase_chunk(spec, 4, threads) == spec.n
    whole = _implicit.input_grad_phases(g, w, spec, parallel).copy()
    for per in (1, 2, 3):
        monkeypatch.setattr(_implicit, "SAMPLE_CHUNK_BYTES", per * sample // threads + 1)
        chunk = _implicit.phase_chunk(spec, 4, threads)
        assert chunk <= per and -(-spec.n // chunk) == -(-spec.n // per)  # evened out
        np.testing.assert_array_equal(_implicit.input_grad_phases(g, w, spec, parallel),
                                      whole)


def test_kernels_with_few_taps_per_channel_prefetch_and_agree_bit_for_bit(monkeypatch):
    # 1x1 layers and the 1-tap phases of a strided dX take the prefetching kernel, 3x3
    # layers the plain one; prefetching changes no result
    co, px = _implicit.forward_tile(32)
    for parallel in (False, True):
        kernels = {ahead: _implicit._FORWARD[co, px, ahead][parallel] for ahead in (0, 1)}
        assert _implicit.forward_kernel(co, px, 1, parallel) is kernels[True]
        assert _implicit.forward_kernel(co, px, 9, parallel) is kernels[False]
    rng = np.random.default_rng(12)
    pointwise = plan_conv2d((3, 40, 9, 7), (32, 40, 1, 1)).spec
    x = rng.standard_normal(pointwise.x_shape).astype(np.float32)
    w = rng.standard_normal(pointwise.weight_shape).astype(np.float32)
    strided = plan_conv2d((3, 32, 13, 11), (24, 32, 3, 3), stride=2, padding=1).spec
    w2 = rng.standard_normal(strided.weight_shape).astype(np.float32)
    g = rng.standard_normal(strided.y_shape).astype(np.float32)
    runs = []
    for taps in (0, 1, 1 << 30):  # none, the 1-tap ones, all
        monkeypatch.setattr(_implicit, "PREFETCH_MAX_TAPS", taps)
        runs.append((_implicit.correlate(x, w, pointwise, True).copy(),
                     _implicit.input_grad_phases(g, w2, strided, True).copy()))
    assert_close(runs[0][0], naive.forward(x, w, pointwise), "y")
    for y, dx in runs[1:]:
        np.testing.assert_array_equal(y, runs[0][0])
        np.testing.assert_array_equal(dx, runs[0][1])


def test_the_phase_chunks_keep_within_the_workspace_limit():
    x_shape, w_shape, kwargs = PHASE_CASES["stride 2"]
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    sample = _implicit.phase_sample_bytes(spec, 4)
    hp, wp = _implicit.padded_grad_shape(spec)
    # 16 input channels: whole forward tiles at either vector width
    assert sample == (spec.c_out * hp * wp + spec.c_in * spec.h * spec.w) * 4
    assert _implicit.phase_chunk(spec, 4, 2, limit=2 * sample) == 2
    assert _implicit.phase_chunk(spec, 4, 2, limit=sample - 1) == 1  # one sample at least
    assert _implicit.phase_chunk(spec, 4, 2, limit=100 * sample) == min(
        spec.n, 2 * _implicit.SAMPLE_CHUNK_BYTES // sample)


def test_an_inf_weight_keeps_the_strided_input_gradient_exact(phase_calls):
    # the zeros around dZ would meet the inf as 0 * inf: the phase-plane kernel takes it
    x_shape, w_shape, kwargs = PHASE_CASES["stride 2"]
    rng = np.random.default_rng(9)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    w[5, 3, 0, 2] = np.inf
    g = rng.standard_normal(plan_conv2d(x_shape, w_shape, **kwargs).spec.y_shape)
    g = g.astype(np.float32)
    mask = (True, False, False)
    got = npconv.conv2d_backward(x, w, g, algorithm="jit", output_mask=mask, **kwargs)[0]
    want = npconv.conv2d_backward(x.astype(np.float64), w.astype(np.float64),
                                  g.astype(np.float64), algorithm="naive", output_mask=mask,
                                  **kwargs)[0]
    assert not phase_calls
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def test_phases_need_a_strided_layer_with_enough_input_channels():
    x_shape, w_shape, kwargs = PHASE_CASES["stride 2"]
    assert jit.phases(plan_conv2d(x_shape, w_shape, **kwargs).spec, 4)
    assert not jit.phases(plan_conv2d(x_shape, w_shape, padding=1).spec, 4)  # stride 1
    assert not jit.phases(plan_conv2d(x_shape, w_shape, **kwargs).spec, 8)  # float64
    thin = plan_conv2d((16, 8, 28, 28), (64, 8, 3, 3), stride=2, padding=1).spec
    assert not jit.phases(thin, 4)  # 8 input channels: the tiles would be mostly padding
    before = tuning.workspace_limit()
    npconv.set_workspace_limit(1024)  # dZ's padded copy and the phases' planes: too big
    try:
        assert not jit.phases(plan_conv2d(x_shape, w_shape, **kwargs).spec, 4)
    finally:
        npconv.set_workspace_limit(before)


def test_the_forward_pass_takes_longer_columns_with_few_output_channels():
    # K = 800: past IMPLICIT_MAX_K, within IMPLICIT_FORWARD_MAX_K for 64 output channels
    narrow = plan_conv2d((32, 32, 28, 28), (64, 32, 5, 5), stride=2, padding=2).spec
    wide = plan_conv2d((16, 128, 28, 28), (256, 128, 3, 3), stride=2, padding=1).spec
    assert jit.implicit(narrow, "forward", 4) and not jit.implicit(narrow, "grad_weight", 4)
    assert not jit.implicit(wide, "forward", 4)  # 256 channels: BLAS's GEMM wins
    assert npconv.explain_choice(narrow).algorithm == "jit"
    assert npconv.explain_choice(wide).algorithm == "im2col"


def test_strided_layers_with_few_output_channels_take_the_implicit_gemm():
    stem = plan_conv2d((16, 3, 112, 112), (8, 3, 3, 3), stride=2, padding=1).spec  # K = 27
    thin = plan_conv2d((16, 32, 56, 56), (8, 32, 3, 3), stride=2, padding=1).spec
    four = plan_conv2d((16, 3, 112, 112), (4, 3, 3, 3), stride=2, padding=1).spec
    wider = plan_conv2d((16, 3, 112, 112), (24, 3, 3, 3), stride=2, padding=1).spec
    cifar = plan_conv2d((64, 3, 32, 32), (32, 3, 3, 3), padding=1).spec  # stride 1
    for spec in (stem, thin):
        assert jit.implicit(spec, "forward", 4) and jit.implicit(spec, "grad_weight", 4)
    assert jit.implicit(four, "forward", 4) and not jit.implicit(four, "grad_weight", 4)
    assert not jit.implicit(wider, "forward", 4)  # K = 27 with 24 channels: im2col
    assert not jit.implicit(cifar, "forward", 4)


def _tile_storer(co: int, px: int):
    """A compiled ``store(out, start, pitch, bias, row, values)`` that passes
    ``values[p, c]`` to :func:`npconv._numba.store_transposed` as its register tile."""
    tile = ", ".join("(" + ", ".join(f"values[{p}, {c}]" for c in range(co)) + ",)"
                     for p in range(px))
    source = (f"def store(out, start, pitch, bias, row, values):\n"
              f"    store_transposed(out, start, pitch, bias, row, ({tile},))\n")
    namespace = {"store_transposed": store_transposed}
    exec(source, namespace)
    return numba.njit(namespace["store"])


# the forward kernels' tiles (both vector widths), tiles of one vector or part of one,
# and tiles stored value by value: pixels not a power of two, more pixels than a vector
# has lanes, channels not a whole number of vectors
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tile", [(32, 8), (16, 16), (16, 4), (8, 8), (4, 2), (2, 1),
                                  (16, 1), (8, 3), (4, 32), (24, 8), (5, 4)],
                         ids=lambda t: f"{t[0]}x{t[1]}")
def test_a_transposed_tile_store_adds_the_bias_and_lands_row_by_row(tile, dtype):
    co, px = tile
    rng = np.random.default_rng(co * 100 + px)
    values = rng.standard_normal((px, co)).astype(dtype)
    pitch, start, row = px + 5, 3, 2  # rows apart, an unaligned start, a bias offset
    bias = rng.standard_normal(row + co + 1).astype(dtype)
    out = np.full(start + co * pitch + 4, np.nan, dtype=dtype)
    _tile_storer(co, px)(out, np.uint64(start), np.uint64(pitch), bias, row, values)
    want = np.full_like(out, np.nan)
    for c in range(co):  # the plain store, float by float: bit for bit the same sums
        want[start + c * pitch:start + c * pitch + px] = values[:, c] + bias[row + c]
    np.testing.assert_array_equal(out, want)  # NaN where nothing may be written


def test_a_transposed_tile_store_without_a_bias_copies_the_values_as_they_are():
    """bias None: the values stored unchanged, a zero's sign included (+0.0 added would
    turn -0.0 into +0.0), with vectors and value by value alike."""
    for co, px in [(16, 16), (32, 8), (8, 3)]:
        values = np.random.default_rng(co + px).standard_normal((px, co)).astype(np.float32)
        values[0, 0] = values[px - 1, co - 1] = -0.0
        out = np.full(2 + co * (px + 1) + 3, np.nan, dtype=np.float32)
        _tile_storer(co, px)(out, np.uint64(2), np.uint64(px + 1), None, 0, values)
        want = np.full_like(out, np.nan)
        for c in range(co):
            want[2 + c * (px + 1):2 + c * (px + 1) + px] = values[:, c]
        np.testing.assert_array_equal(out, want)
        assert np.signbit(out[2]) and np.signbit(out[2 + (co - 1) * (px + 1) + px - 1])


# dZ (N, G, C_out/G, P) -> dzt (N, P, G, channels padded): whole blocks only, channels or
# pixels past them, a pixel block cut short, one pixel, more channels than one block
@pytest.mark.parametrize("lanes", [4, 8, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parallel", [False, True])
def test_the_pixel_major_copy_of_dz_and_its_bias_sums(lanes, dtype, parallel):
    rng = np.random.default_rng(lanes)
    for (n, g, cog, ohw), cp in [((2, 1, 16, 64), 16), ((3, 2, 20, 70), 32),
                                 ((1, 1, 5, 1), 8), ((2, 3, 33, 129), 48),
                                 ((2, 1, 32, 200), 32)]:
        dz = rng.standard_normal((n, g, cog, ohw)).astype(dtype)
        dz[0, 0, 0, 0] = -0.0  # kept as it is
        dzt = np.full((n, ohw, g, cp), np.nan, dtype=dtype)
        blocks = -(-ohw // _implicit.PIXEL_BLOCK)
        sums = np.full((n * blocks, g, cog), np.nan)
        _implicit._PIXEL_MAJOR[lanes][parallel](dz, dzt, sums)
        want = np.zeros_like(dzt)
        want[..., :cog] = dz.transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(dzt, want)  # padding channels 0, nothing unwritten
        assert np.signbit(dzt[0, 0, 0, 0])
        parts = [dz[b, :, :, t:t + _implicit.PIXEL_BLOCK].astype(np.float64).sum(axis=-1)
                 for b in range(n) for t in range(0, ohw, _implicit.PIXEL_BLOCK)]
        np.testing.assert_allclose(sums, np.stack(parts), rtol=1e-13, atol=1e-13)
        dzt[:] = np.nan  # without sums: the copy alone
        _implicit._PIXEL_MAJOR[lanes][parallel](dz, dzt, np.empty((0, g, cog)))
        np.testing.assert_array_equal(dzt, want)

