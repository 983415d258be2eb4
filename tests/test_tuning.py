"""Algorithm choice, the im2col workspace limit (chunking) and thread counts."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import _workers, tuning
from npconv.algorithms import winograd
from npconv.spec import plan_conv2d

from reference import assert_close

# the choices named here are AVX2's (conftest.avx2_rule); AVX-512's are tested apart
pytestmark = pytest.mark.usefixtures("avx2_rule")


@pytest.fixture
def small_workspace():
    before = npconv.workspace_limit()
    yield
    npconv.set_workspace_limit(before)


@pytest.mark.parametrize("chunking", ["rows-of-one", "row-chunks", "batch-chunks"])
@pytest.mark.parametrize("kwargs", [
    dict(padding=1),
    dict(stride=2, padding=(1, 2), dilation=(1, 2), groups=2),
    dict(),  # 1x1 weight below: the in-place pointwise path
], ids=["3x3", "strided-grouped", "pointwise"])
def test_chunked_im2col_equals_unchunked(small_workspace, chunking, kwargs):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 11, 9)).astype(np.float32)
    kernel = (1, 1) if not kwargs else (3, 3)
    w = rng.standard_normal((6, 4 // kwargs.get("groups", 1), *kernel)).astype(np.float32)
    y_full = npconv.conv2d(x, w, algorithm="im2col", **kwargs)
    g = rng.standard_normal(y_full.shape).astype(np.float32)
    full = npconv.conv2d_backward(x, w, g, algorithm="im2col", **kwargs)
    spec = plan_conv2d(x.shape, w.shape, **kwargs).spec
    per_sample = spec.c_in * spec.kh * spec.kw * spec.oh * spec.ow * x.itemsize
    limit = {"rows-of-one": 1, "row-chunks": per_sample // 2,
             "batch-chunks": 2 * per_sample}[chunking]
    npconv.set_workspace_limit(limit)
    from npconv.algorithms.im2col import chunks
    assert len(list(chunks(spec, 4))) > 1  # really chunked
    assert_close(npconv.conv2d(x, w, algorithm="im2col", **kwargs), y_full, "y (chunked)")
    chunked = npconv.conv2d_backward(x, w, g, algorithm="im2col", **kwargs)
    for name, a, b in zip(("dX", "dW", "dB"), chunked, full, strict=True):
        assert_close(a, b, f"{name} (chunked)")


def test_im2col_chunks_take_at_least_the_gemm_columns_the_limit_allows(small_workspace):
    from npconv import _scratch
    from npconv.algorithms import im2col

    # long columns on small images: a cache-sized chunk would hold 3 of a thread's 8
    # samples (147 columns)
    spec = plan_conv2d((16, 512, 7, 7), (512, 512, 3, 3), padding=1).spec
    per_column = (spec.c_in * 9 + spec.c_out) * 4
    for share in (1, 2):
        npconv.set_workspace_limit(256 * 2**20)
        budget = im2col.chunk_budget(spec, 4, share)
        assert budget >= im2col.MIN_GEMM_COLUMNS * per_column
        assert budget <= min(256 * 2**20 // share, _scratch.KEEP_MAX_BYTES)
        n0, n1, i0, i1 = next(im2col.chunks(spec, 4, 0, 8, share))
        assert (i0, i1) == (0, spec.oh)
        assert (n1 - n0) * spec.oh * spec.ow == 8 * 49  # the whole share: one GEMM
        # the workspace limit still bounds it
        npconv.set_workspace_limit(4 * 2**20)
        assert im2col.chunk_budget(spec, 4, share) == 4 * 2**20 // share
    # short columns keep the cache-sized chunks
    small = plan_conv2d((16, 16, 56, 56), (16, 16, 3, 3), padding=1).spec
    npconv.set_workspace_limit(256 * 2**20)
    assert im2col.chunk_budget(small, 4, 2) == im2col.CACHE_BYTES // 2


def test_workspace_limit_validated(small_workspace):
    with pytest.raises(ValueError, match="positive number of bytes"):
        npconv.set_workspace_limit(0)
    with pytest.raises(ValueError, match="positive number of bytes"):
        npconv.set_workspace_limit(1.5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("algorithm", ["jit", "im2col"])
def test_thread_counts_give_the_same_answer(threads, algorithm):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 12, 10)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    kwargs = dict(stride=(1, 2), padding=1, groups=2)
    ref_y = npconv.conv2d(x.astype(np.float64), w.astype(np.float64), algorithm="naive",
                          **kwargs)
    g = rng.standard_normal(ref_y.shape).astype(np.float32)
    ref = npconv.conv2d_backward(x.astype(np.float64), w.astype(np.float64),
                                 g.astype(np.float64), algorithm="naive", **kwargs)
    before = npconv.get_num_threads()
    try:
        npconv.set_num_threads(threads)
        import numba

        assert npconv.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
        assert_close(npconv.conv2d(x, w, algorithm=algorithm, **kwargs),
                     ref_y.astype(np.float32), "y")
        got = npconv.conv2d_backward(x, w, g, algorithm=algorithm, **kwargs)
        for name, a, b in zip(("dX", "dW", "dB"), got, ref, strict=True):
            assert_close(a, b.astype(np.float32), name)
    finally:
        npconv.set_num_threads(before)


def test_set_num_threads_validated():
    with pytest.raises(ValueError, match="positive integer"):
        npconv.set_num_threads(0)


@pytest.mark.parametrize("x, w, kwargs, op, expected", [
    ((8, 3, 7, 6), (2, 3, 4, 5), {}, "forward", "jit"),  # the book's layer: tiny
    ((16, 64, 56, 56), (64, 1, 3, 3), dict(groups=64, padding=1), "forward", "jit"),
    ((16, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "forward", "winograd"),  # ResNet
    ((16, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "backward", "winograd"),
    ((16, 128, 28, 28), (128, 128, 3, 3), dict(padding=1), "grad_weight", "winograd"),
    ((16, 64, 56, 56), (64, 64, 3, 3), dict(padding=1, dilation=2), "forward", "jit"),
    ((16, 64, 56, 56), (128, 64, 3, 3), dict(padding=1, stride=2), "forward", "jit"),  # implicit
    ((1, 64, 56, 56), (128, 64, 3, 3), dict(padding=1, stride=2), "grad_weight", "jit"),
    ((16, 64, 56, 56), (128, 64, 3, 3), dict(padding=1, stride=2), "backward", "jit"),
    ((16, 64, 56, 56), (192, 64, 3, 3), dict(padding=1, stride=2), "backward", "im2col"),
    ((64, 32, 32, 32), (32, 32, 3, 3), dict(padding=1), "forward", "jit"),  # tiled
    ((16, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), "forward", "winograd"),  # 320 tiles
    ((16, 512, 7, 7), (512, 512, 5, 5), dict(padding=2), "forward", "im2col"),  # deep, small
    ((16, 128, 7, 7), (128, 128, 3, 3), dict(padding=1), "forward", "jit"),
    ((16, 128, 7, 7), (128, 128, 3, 3), dict(padding=1), "backward", "winograd"),
    ((16, 128, 7, 7), (128, 128, 2, 2), dict(padding=1), "backward", "im2col"),  # deep
    ((8, 256, 14, 14), (256, 256, 5, 5), dict(padding=2), "forward", "im2col"),  # deep
    ((8, 256, 14, 14), (256, 256, 5, 5), dict(padding=2), "backward", "im2col"),
    ((8, 256, 14, 14), (32, 256, 5, 5), dict(padding=2), "backward", "jit"),  # thin GEMMs
    ((8, 192, 28, 28), (64, 192, 5, 5), dict(padding=2), "backward", "jit"),
    ((16, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), "backward", "winograd"),
    ((16, 512, 7, 7), (512, 512, 5, 5), dict(padding=2), "backward", "im2col"),  # few pixels
    ((64, 32, 32, 32), (32, 32, 3, 3), dict(padding=1), "backward", "winograd"),  # F(4x4)
    ((64, 1, 28, 28), (6, 1, 5, 5), dict(padding=2), "backward", "jit"),  # LeNet's first
    ((64, 6, 14, 14), (16, 6, 5, 5), {}, "forward", "jit"),  # LeNet's second: tiled
    ((64, 6, 14, 14), (16, 6, 5, 5), {}, "grad_input", "jit"),
    ((64, 6, 14, 14), (16, 6, 5, 5), {}, "backward", "jit"),
    ((64, 16, 28, 28), (32, 16, 5, 5), dict(stride=2), "forward", "jit"),  # strided: implicit
    ((64, 16, 28, 28), (32, 16, 5, 5), dict(stride=2), "grad_input", "jit"),  # phases
    ((64, 16, 28, 28), (128, 16, 5, 5), dict(stride=2), "grad_input", "im2col"),  # > 64
    ((16, 256, 14, 14), (64, 256, 1, 1), {}, "forward", "im2col"),  # pointwise
    ((64, 32, 32, 32), (2, 32, 3, 3), dict(padding=1), "forward", "im2col"),  # 2 outputs
    ((32, 64, 16, 16), (64, 64, 3, 3), dict(padding=1), "backward", "winograd"),  # 2304 tiles
    ((32, 64, 16, 16), (64, 64, 3, 3), dict(padding=1), "forward", "jit"),  # narrow, small
    ((16, 64, 20, 20), (64, 64, 3, 3), dict(padding=1), "forward", "winograd"),
    ((32, 96, 14, 14), (96, 96, 3, 3), dict(padding=1), "backward", "winograd"),
    ((32, 128, 12, 12), (128, 128, 3, 3), dict(padding=1), "forward", "winograd"),
    ((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "forward", "jit"),  # one sample
    ((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "grad_weight", "winograd"),
    ((1, 64, 56, 56), (64, 64, 5, 5), dict(padding=2), "grad_weight", "im2col"),  # few
    ((1, 128, 28, 28), (128, 128, 3, 3), dict(padding=1), "forward", "winograd"),
    ((1, 128, 28, 28), (128, 128, 5, 5), dict(padding=2), "forward", "im2col"),  # few
    ((64, 3, 64, 64), (32, 3, 3, 3), dict(padding=1), "backward", "im2col"),  # stem
    ((64, 3, 64, 64), (32, 3, 3, 3), dict(padding=1), "grad_weight", "jit"),
    ((64, 3, 32, 32), (32, 3, 3, 3), dict(padding=1), "backward", "jit"),  # CIFAR's
    ((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "backward", "winograd"),
    ((1, 64, 56, 56), (64, 64, 5, 5), dict(padding=2), "backward", "im2col"),
    ((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "grad_input", "winograd"),
    ((2, 8, 128, 128), (8, 8, 5, 5), dict(padding=2), "backward", "jit"),  # few channels
    ((1, 32, 112, 112), (32, 32, 3, 3), dict(padding=1), "forward", "jit"),
    ((2, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "grad_weight", "winograd"),  # 420
    ((2, 128, 28, 28), (128, 128, 3, 3), dict(padding=1), "grad_input", "winograd"),
    ((6, 128, 28, 28), (128, 128, 3, 3), dict(padding=1), "grad_input", "winograd"),  # 336
    ((5, 256, 14, 14), (256, 256, 3, 3), dict(padding=1), "forward", "winograd"),  # F2: 280
    ((5, 256, 14, 14), (256, 256, 5, 5), dict(padding=2), "forward", "im2col"),  # deep
    ((3, 64, 28, 28), (64, 64, 5, 5), dict(padding=2), "backward", "jit"),
    ((16, 3, 112, 112), (8, 3, 3, 3), dict(stride=2, padding=1), "forward", "jit"),  # stem
    ((1, 64, 14, 14), (64, 64, 3, 3), dict(stride=2, padding=1), "forward", "jit"),  # small
    ((1, 64, 14, 14), (64, 64, 3, 3), dict(stride=2, padding=1), "backward", "im2col"),
    ((1, 64, 14, 14), (64, 64, 3, 3), dict(stride=2, padding=1), "grad_weight", "im2col"),
    ((1, 64, 14, 14), (64, 64, 3, 3), dict(padding=1), "backward", "winograd"),  # small
    ((1, 32, 14, 14), (32, 32, 3, 3), dict(padding=1), "backward", "jit"),  # small
    ((1, 32, 28, 28), (32, 32, 3, 3), dict(stride=2, padding=1), "backward", "jit"),  # 47
    ((1, 96, 14, 14), (96, 96, 3, 3), dict(padding=1), "forward", "jit"),  # 423 a pixel
    ((1, 96, 14, 14), (96, 96, 3, 3), dict(padding=1), "backward", "im2col"),
    ((1, 96, 14, 14), (96, 96, 3, 3), dict(padding=1), "grad_input", "im2col"),
    ((16, 3, 112, 112), (8, 3, 3, 3), dict(stride=2, padding=1), "backward", "jit"),
    ((16, 32, 56, 56), (8, 32, 3, 3), dict(stride=2, padding=1), "backward", "jit"),
    ((16, 32, 56, 56), (16, 32, 3, 3), dict(stride=2, padding=1), "backward", "jit"),
    ((16, 32, 56, 56), (64, 32, 5, 5), dict(stride=2, padding=2), "backward",
     "jit+im2col"),  # dX phase by phase, dW (K = 800) on im2col
    ((2, 64, 112, 112), (16, 64, 3, 3), dict(stride=2, padding=1), "backward", "im2col"),
    ((16, 128, 56, 56), (128, 4, 3, 3), dict(stride=2, padding=1, groups=32), "backward",
     "jit"),  # ResNeXt
    ((16, 3, 112, 112), (32, 3, 3, 3), dict(stride=2, padding=1), "backward", "im2col"),
    ((16, 64, 56, 56), (16, 64, 1, 1), dict(stride=2), "backward", "im2col"),  # 1x1
    ((16, 64, 56, 56), (16, 64, 1, 1), dict(stride=2), "forward", "jit"),
    ((16, 3, 112, 112), (24, 3, 3, 3), dict(stride=2, padding=1), "forward", "im2col"),
    ((32, 32, 28, 28), (64, 32, 5, 5), dict(stride=2, padding=2), "forward", "jit"),  # K 800
    ((16, 128, 28, 28), (256, 128, 3, 3), dict(stride=2, padding=1), "forward", "im2col"),
    ((16, 128, 17, 17), (128, 128, 1, 7), dict(padding=(0, 3)), "forward", "jit"),  # 1x7
    ((16, 128, 17, 17), (128, 128, 1, 7), dict(padding=(0, 3)), "backward", "im2col"),
    ((16, 128, 17, 17), (128, 128, 7, 1), dict(padding=(3, 0)), "forward", "im2col"),
    ((16, 64, 28, 28), (64, 64, 3, 1), dict(padding=(1, 0)), "forward", "jit"),
    ((16, 64, 28, 28), (64, 64, 3, 1), dict(padding=(1, 0)), "backward", "im2col"),
    ((16, 32, 28, 28), (32, 32, 3, 1), dict(padding=(1, 0)), "backward", "jit"),
])
def test_auto_choice_is_explained(x, w, kwargs, op, expected):
    spec = plan_conv2d(x, w, **kwargs).spec
    choice = npconv.explain_choice(spec, np.float32, op)
    assert choice.algorithm == expected == tuning.choose(spec, np.float32, op)
    assert len(choice.reason) > 20


def test_avx512_keeps_forward_passes_on_the_implicit_gemm(monkeypatch):
    """With AVX-512 the forward passes of winograd's layers stay on the implicit GEMM on
    outputs below 48x48 with fewer than 128 channels, and with few tiles; their backward
    passes do not."""
    from npconv.algorithms import _implicit, jit

    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    monkeypatch.setattr(_implicit, "VECTOR_BYTES", 64)
    narrow = plan_conv2d((16, 64, 40, 40), (64, 64, 3, 3), padding=1).spec
    forward = npconv.explain_choice(narrow)
    assert forward.algorithm == "jit" and "32 channels x 8 pixels" in forward.reason
    assert "512-bit vectors" in forward.reason
    assert npconv.explain_choice(narrow, np.float32, "backward").algorithm == "winograd"
    small = plan_conv2d((32, 128, 24, 24), (128, 128, 3, 3), padding=1).spec
    assert npconv.explain_choice(small).algorithm == "winograd"  # from 128 channels
    f2 = plan_conv2d((16, 128, 16, 16), (128, 128, 3, 3), padding=1).spec
    assert npconv.explain_choice(f2).algorithm == "jit"  # F(2x2) from 256 channels
    few = plan_conv2d((2, 128, 28, 28), (128, 128, 3, 3), padding=1).spec  # 14,336
    assert npconv.explain_choice(few).algorithm == "jit"
    few96 = plan_conv2d((2, 96, 28, 28), (96, 96, 3, 3), padding=1).spec
    assert npconv.explain_choice(few96).algorithm == "jit"
    four = plan_conv2d((4, 128, 28, 28), (128, 128, 3, 3), padding=1).spec  # 28,672
    assert npconv.explain_choice(four).algorithm == "winograd"
    res28 = plan_conv2d((16, 128, 28, 28), (128, 128, 3, 3), padding=1).spec
    res56 = plan_conv2d((16, 64, 56, 56), (64, 64, 3, 3), padding=1).spec
    for spec in (res28, res56):
        assert all(npconv.explain_choice(spec, np.float32, op).algorithm == "winograd"
                   for op in ("forward", "backward"))
    narrow28 = plan_conv2d((16, 96, 28, 28), (96, 96, 3, 3), padding=1).spec
    assert npconv.explain_choice(narrow28).algorithm == "jit"
    # fewer samples than threads: winograd cannot split the call between them
    # (up to 64 channels, or 160 on few tiles x channels)
    single = plan_conv2d((1, 128, 40, 40), (128, 128, 3, 3), padding=1).spec
    large = plan_conv2d((1, 128, 56, 56), (128, 128, 3, 3), padding=1).spec  # 210 tiles
    wide = plan_conv2d((1, 192, 28, 28), (192, 192, 3, 3), padding=1).spec
    before = npconv.get_num_threads()
    try:
        npconv.set_num_threads(1)
        assert npconv.explain_choice(single).algorithm == "winograd"
        npconv.set_num_threads(2)
        if npconv.get_num_threads() == 2:
            assert npconv.explain_choice(single).algorithm == "jit"
            assert npconv.explain_choice(large).algorithm == "winograd"
            assert npconv.explain_choice(wide).algorithm == "winograd"  # 56 tiles, F(4x4)
            assert npconv.explain_choice(single, np.float32, "backward").algorithm == "winograd"
    finally:
        npconv.set_num_threads(before)
    # long columns: the backward pass on jit where both its gradients run on the implicit
    # GEMM (dX from 32 input channels), else im2col
    five = plan_conv2d((4, 128, 28, 28), (128, 128, 5, 5), padding=2).spec  # K = 3200
    choice = npconv.explain_choice(five, np.float32, "backward")
    assert choice.algorithm == "jit" and "both gradients" in choice.reason
    five64 = plan_conv2d((4, 64, 28, 28), (64, 64, 5, 5), padding=2).spec  # K = 1600
    assert npconv.explain_choice(five64, np.float32, "backward").algorithm == "jit"
    wide = plan_conv2d((4, 128, 28, 28), (192, 128, 5, 5), padding=2).spec  # dW: 192
    choice = npconv.explain_choice(wide, np.float32, "backward")
    assert choice.algorithm == "im2col" and "columns this long" in choice.reason
    # 5x5 kernels with 96 or more output channels: im2col from 51,200 channels x pairs
    # where dX cannot run as the adjoint correlation (fewer than 32 input channels)
    for c_in, c_out, expected in ((16, 128, "im2col"), (24, 128, "im2col"),
                                  (40, 128, "jit"), (64, 96, "jit")):
        wide5 = plan_conv2d((8, c_in, 28, 28), (c_out, c_in, 5, 5), padding=2).spec
        assert npconv.explain_choice(wide5, np.float32, "backward").algorithm == expected
        assert npconv.explain_choice(wide5).algorithm == "jit"  # the forward pass: not this
    narrow5 = plan_conv2d((8, 8, 28, 28), (128, 8, 5, 5), padding=2).spec  # 128 x 200
    assert npconv.explain_choice(narrow5, np.float32, "backward").algorithm == "jit"
    three = plan_conv2d((8, 128, 28, 28), (128, 128, 3, 3), padding=2, dilation=2).spec
    assert npconv.explain_choice(three, np.float32, "backward").algorithm == "jit"  # 9 taps
    three = plan_conv2d((16, 128, 7, 7), (128, 128, 3, 3), padding=1).spec  # K = 1152
    assert npconv.explain_choice(three, np.float32, "backward").algorithm == "jit"
    f2 = plan_conv2d((16, 128, 14, 14), (128, 128, 3, 3), padding=1).spec  # F(2x2)
    assert npconv.explain_choice(f2, np.float32, "backward").algorithm == "winograd"
    assert npconv.explain_choice(f2).algorithm == "jit"  # the forward pass: not this
    f2_96 = plan_conv2d((16, 96, 14, 14), (96, 96, 3, 3), padding=1).spec
    assert npconv.explain_choice(f2_96, np.float32, "backward").algorithm == "jit"
    wide = plan_conv2d((4, 192, 14, 14), (192, 192, 5, 5), padding=2).spec  # K = 4800
    assert npconv.explain_choice(wide).algorithm == "im2col"
    thin = plan_conv2d((1, 192, 28, 28), (64, 192, 5, 5), padding=2).spec
    assert npconv.explain_choice(thin).algorithm == "jit"  # 64 output channels: tiled
    # gradients on outputs below 10x10: the register-tiled kernels up to 128 channels
    small128 = plan_conv2d((16, 128, 9, 9), (128, 128, 3, 3), padding=1).spec
    assert npconv.explain_choice(small128, np.float32, "backward").algorithm == "jit"
    # forward passes with 384 or more channels: winograd from 8x8 outputs
    for c, size, expected in ((512, 10, "winograd"), (384, 8, "winograd"), (256, 10, "jit"),
                              (512, 7, "im2col")):
        spec = plan_conv2d((16, c, size, size), (c, c, 3, 3), padding=1).spec
        assert npconv.explain_choice(spec).algorithm == expected, (c, size)
    # F(2x2) from 14x14 at 128 channels (jit's dX and dW both on the implicit GEMM), from
    # 10x10 at 160
    for n, c, size, expected in ((16, 128, 10, "jit"), (8, 128, 13, "jit"),
                                 (16, 160, 10, "winograd")):
        spec = plan_conv2d((n, c, size, size), (c, c, 3, 3), padding=1).spec
        assert npconv.explain_choice(spec, np.float32, "backward").algorithm == expected, c
    # many weights per pixel: jit from three samples where both gradients are implicit
    for n, expected in ((6, "jit"), (3, "jit"), (2, "im2col")):
        spec = plan_conv2d((n, 128, 10, 10), (128, 128, 3, 3), padding=1).spec
        assert npconv.explain_choice(spec, np.float32, "backward").algorithm == expected, n
    # ... and with one or two samples up to 64 output channels
    for c_out, expected in ((64, "jit"), (96, "im2col")):
        spec = plan_conv2d((1, 192, 28, 28), (c_out, 192, 5, 5), padding=2).spec
        assert npconv.explain_choice(spec, np.float32, "backward").algorithm == expected
    # and from 256 channels F(2x2) winograd, from 7x7 outputs and 110 tiles
    small256 = plan_conv2d((16, 256, 10, 10), (256, 256, 3, 3), padding=1).spec
    assert npconv.explain_choice(small256, np.float32, "backward").algorithm == "winograd"
    assert npconv.explain_choice(small256).algorithm == "jit"  # the forward: not this
    res7 = plan_conv2d((16, 512, 7, 7), (512, 512, 3, 3), padding=1).spec  # 320 tiles
    assert npconv.explain_choice(res7, np.float32, "backward").algorithm == "winograd"
    few7 = plan_conv2d((4, 512, 7, 7), (512, 512, 3, 3), padding=1).spec  # 80
    assert npconv.explain_choice(few7, np.float32, "backward").algorithm == "im2col"
    tiny = plan_conv2d((64, 256, 6, 6), (256, 256, 3, 3), padding=1).spec
    assert npconv.explain_choice(tiny, np.float32, "backward").algorithm != "winograd"
    # one-dimensional kernels: the backward pass on jit where its dW and dX both run on
    # the implicit GEMM (columns up to 1152 pairs)
    for x, w, pad, expected in (((16, 128, 17, 17), (128, 128, 1, 7), (0, 3), "jit"),
                                ((16, 64, 28, 28), (64, 64, 3, 1), (1, 0), "jit"),
                                ((16, 160, 17, 17), (160, 160, 1, 7), (0, 3), "jit"),
                                ((16, 192, 17, 17), (192, 192, 7, 1), (3, 0), "im2col")):
        spec = plan_conv2d(x, w, padding=pad).spec
        assert npconv.explain_choice(spec, np.float32, "backward").algorithm == expected, x
    # small batches: the implicit GEMM up to 80,000 tiles x channels (from 128
    # channels, 20,000)
    for n, c, size, expected in ((5, 64, 56, "jit"), (8, 64, 56, "winograd"),
                                 (8, 128, 28, "winograd"), (2, 128, 56, "winograd"),
                                 (2, 64, 112, "winograd")):
        spec = plan_conv2d((n, c, size, size), (c, c, 3, 3), padding=1).spec
        assert npconv.explain_choice(spec).algorithm == expected, (n, c, size)
        assert npconv.explain_choice(spec, np.float32, "backward").algorithm == "winograd"
    # unit-stride 1x1 layers: the implicit GEMM's forward pass only on small outputs
    small = plan_conv2d((16, 128, 14, 14), (128, 128, 1, 1)).spec
    assert npconv.explain_choice(small).algorithm == "jit"
    large = plan_conv2d((16, 128, 28, 28), (512, 128, 1, 1)).spec
    assert npconv.explain_choice(large).algorithm == "im2col"
    # ... and up to 192 input channels (faster alone past them, not in a step) ...
    wide_out = plan_conv2d((16, 256, 14, 14), (128, 256, 1, 1)).spec
    assert npconv.explain_choice(wide_out).algorithm == "im2col"
    # ... unless the layer has at most 96 output channels: then every pass is the jit
    # algorithm's (the suite's pointwise layer), on outputs of up to 256 pixels; up to 256
    # output channels where it has at most 32 million multiply-adds
    for x, c_out, expected in (((16, 256, 14, 14), 64, "jit"), ((16, 256, 7, 7), 96, "jit"),
                               ((16, 256, 16, 16), 16, "jit"),
                               ((16, 256, 28, 28), 64, "im2col"),  # 784 pixels
                               ((16, 256, 7, 7), 128, "jit"),  # 25.7 million
                               ((4, 128, 10, 10), 256, "jit"),  # 13.1 million
                               ((8, 256, 8, 8), 256, "im2col")):  # 33.6 million
        spec = plan_conv2d(x, (c_out, x[1], 1, 1)).spec
        for op in ("forward", "backward", "grad_input", "grad_weight"):
            assert npconv.explain_choice(spec, np.float32, op).algorithm == expected, (
                x, c_out, op)
    many = plan_conv2d((8, 128, 7, 7), (512, 128, 1, 1)).spec  # 512 channels, 25.7 million
    assert npconv.explain_choice(many, np.float32, "backward").algorithm == "im2col"
    # and on larger outputs small layers of two samples or more (40 million multiply-adds)
    for x, c_out, expected in (((2, 256, 28, 28), 64, "jit"), ((3, 64, 28, 28), 256, "jit"),
                               ((10, 128, 28, 28), 128, "im2col"),  # 128 million
                               ((2, 256, 28, 28), 256, "im2col"),
                               ((1, 256, 40, 40), 64, "im2col")):  # one sample
        spec = plan_conv2d(x, (c_out, x[1], 1, 1)).spec
        for op in ("forward", "backward"):
            assert npconv.explain_choice(spec, np.float32, op).algorithm == expected, (x, op)
    two = plan_conv2d((2, 256, 28, 28), (64, 256, 1, 1)).spec
    assert "2 samples, 25,690,112 multiply-adds" in npconv.explain_choice(two).reason
    seven = plan_conv2d((7, 256, 28, 28), (64, 256, 1, 1)).spec  # 90 million
    assert npconv.explain_choice(seven).algorithm == "jit"  # the forward pass up to 96
    assert npconv.explain_choice(seven, np.float32, "backward").algorithm == "im2col"
    padded = plan_conv2d((16, 256, 14, 14), (64, 256, 1, 1), padding=1).spec
    assert npconv.explain_choice(padded, np.float32, "backward").algorithm == "im2col"
    suite = plan_conv2d((16, 256, 14, 14), (64, 256, 1, 1)).spec
    assert npconv.explain_choice(suite, np.float64).algorithm == "im2col"
    # one or two samples: jit's backward where its dW and dX both run on the implicit
    # GEMM; im2col with many weights per pixel
    one = plan_conv2d((1, 64, 56, 56), (64, 64, 3, 3), padding=1).spec
    assert npconv.explain_choice(one, np.float32, "backward").algorithm == "jit"
    one96 = plan_conv2d((1, 96, 28, 28), (96, 96, 3, 3), padding=1).spec
    assert npconv.explain_choice(one96, np.float32, "backward").algorithm == "jit"
    one160 = plan_conv2d((1, 160, 20, 20), (160, 160, 3, 3), padding=1).spec
    assert npconv.explain_choice(one160, np.float32, "backward").algorithm == "im2col"
    # but one sample's backward pass on F(4x4) from 128 channels: winograd
    one128 = plan_conv2d((1, 128, 28, 28), (128, 128, 3, 3), padding=1).spec
    assert npconv.explain_choice(one128, np.float32, "backward").algorithm == "winograd"
    two5x5 = plan_conv2d((2, 64, 28, 28), (64, 64, 5, 5), padding=2).spec
    assert npconv.explain_choice(two5x5, np.float32, "backward").algorithm == "jit"
    # long columns: any K from 1024 output pixels, up to 2304 pairs from 512
    two = plan_conv2d((2, 256, 10, 10), (256, 256, 3, 3), padding=1).spec
    assert npconv.explain_choice(two).algorithm == "im2col"
    # (on 14x14, from 192 channels, winograd: 112 tiles)
    two14 = plan_conv2d((2, 256, 14, 14), (256, 256, 3, 3), padding=1).spec
    assert npconv.explain_choice(two14).algorithm == "winograd"
    res7 = plan_conv2d((16, 512, 7, 7), (512, 512, 3, 3), padding=1).spec  # K = 4608
    assert npconv.explain_choice(res7).algorithm == "im2col"
    res7_32 = plan_conv2d((32, 512, 7, 7), (512, 512, 3, 3), padding=1).spec
    assert npconv.explain_choice(res7_32).algorithm == "jit"
    res7_12 = plan_conv2d((12, 256, 7, 7), (256, 256, 3, 3), padding=1).spec  # K = 2304
    assert npconv.explain_choice(res7_12).algorithm == "jit"  # 588 output pixels
    res14_5 = plan_conv2d((5, 256, 14, 14), (256, 256, 3, 3), padding=1).spec  # 280 tiles
    assert npconv.explain_choice(res14_5).algorithm == "winograd"
    assert npconv.explain_choice(res56, np.float64).algorithm == "winograd"  # f32 kernels
    lenet2 = plan_conv2d((64, 6, 14, 14), (16, 6, 5, 5)).spec
    assert "16 channels x 16 pixels" in npconv.explain_choice(lenet2).reason
    deep = plan_conv2d((6, 512, 7, 7), (512, 512, 3, 3), padding=1).spec  # K = 4608
    assert npconv.explain_choice(deep).algorithm == "im2col"
    # float32 winograd's F(2x2, 3x3) (14x14 outputs) only from 256 channels (backward,
    # undilated: 128)
    res14 = plan_conv2d((16, 256, 14, 14), (256, 256, 3, 3), padding=1).spec
    assert npconv.explain_choice(res14, np.float32, "backward").algorithm == "winograd"
    assert npconv.explain_choice(res14).algorithm == "winograd"  # forward too, from 12x12
    res14_128 = plan_conv2d((16, 128, 14, 14), (128, 128, 3, 3), padding=1).spec
    assert npconv.explain_choice(res14_128, np.float32, "backward").algorithm == "winograd"
    dilated128 = plan_conv2d((8, 128, 28, 28), (128, 128, 3, 3), padding=2, dilation=2).spec
    assert npconv.explain_choice(dilated128, np.float32, "backward").algorithm == "jit"
    # from 128 channels, fewer tiles: 200 (F(4x4) and F(2x2)); backward, 80 and
    # 110, with two samples or 256 channels, and one sample's on F(4x4) from 40
    def backward(x, c_out, **kwargs):
        spec = plan_conv2d(x, (c_out, x[1], 3, 3), **kwargs).spec
        return npconv.explain_choice(spec, np.float32, "backward").algorithm

    def forward(x, c_out, **kwargs):
        return npconv.explain_choice(plan_conv2d(x, (c_out, x[1], 3, 3), **kwargs).spec).algorithm

    assert backward((4, 128, 28, 28), 128, padding=1) == "winograd"  # 224 tiles
    assert backward((3, 128, 28, 28), 128, padding=1) == "winograd"  # 168
    assert backward((2, 128, 24, 24), 128, padding=1) == "winograd"  # 84
    assert backward((1, 128, 32, 32), 128, padding=1) == "winograd"  # 72: one sample
    assert backward((1, 128, 24, 24), 128, padding=1) == "winograd"  # 42: F(4x4)
    assert backward((1, 128, 20, 20), 128, padding=1) != "winograd"  # 110: F(2x2)
    assert forward((3, 128, 28, 28), 128, padding=1) == "jit"  # the forward: not this
    assert backward((1, 256, 40, 40), 256, padding=1) == "winograd"  # 110: 256 channels
    assert backward((1, 256, 28, 28), 256, padding=1) == "winograd"  # 56: one sample
    assert backward((2, 96, 28, 28), 96, padding=1) == "jit"  # 112, below 128 channels
    assert backward((4, 112, 28, 28), 112, padding=1) == "winograd"  # 224: F(4x4) from 96
    assert backward((6, 96, 24, 24), 96, padding=1) != "winograd"  # 252, but 24x24
    assert backward((5, 256, 14, 14), 256, padding=1) == "winograd"  # 280, F(2x2)
    assert backward((3, 256, 14, 14), 256, padding=1) == "winograd"  # 168
    assert backward((2, 256, 14, 14), 256, padding=1) == "winograd"  # 112
    assert backward((2, 256, 10, 10), 256, padding=1) != "winograd"  # 60
    assert forward((4, 256, 14, 14), 256, padding=1) == "winograd"  # 224, F(2x2)
    assert forward((3, 256, 14, 14), 256, padding=1) == "winograd"  # 168: from 192 channels
    assert forward((1, 256, 14, 14), 256, padding=1) != "winograd"  # 56, 100 for those
    assert forward((2, 128, 28, 28), 128, padding=1) == "jit"  # 112: 200 with 128 channels
    assert backward((4, 512, 7, 7), 512, padding=1) != "winograd"  # 80
    assert backward((1, 64, 56, 56), 64, padding=1) == "jit"  # 210, below 128 channels
    # dilated: 256 channels, phases of at least 14x14
    for x, expected in (((1, 256, 32, 32), "winograd"), ((1, 512, 28, 28), "winograd"),
                        ((1, 256, 64, 64), "winograd"), ((1, 256, 24, 24), "im2col"),
                        ((3, 256, 14, 14), "im2col"), ((1, 192, 32, 32), "im2col")):
        assert backward(x, x[1], padding=2, dilation=2) == expected, x
    assert npconv.explain_choice(res14, np.float64, "backward").algorithm == "winograd"
    stem32 = plan_conv2d((64, 3, 64, 64), (32, 3, 3, 3), padding=1).spec
    stem64 = plan_conv2d((16, 3, 96, 96), (64, 3, 3, 3), padding=1).spec
    assert npconv.explain_choice(stem32, np.float32, "backward").algorithm == "jit"
    assert npconv.explain_choice(stem64, np.float32, "backward").algorithm == "im2col"
    monkeypatch.setattr(tuning, "_precision", "highest")  # F(2x2, 3x3) everywhere
    assert npconv.explain_choice(res56, np.float32, "backward").algorithm != "winograd"


@pytest.mark.parametrize("threads", [1, 2])
def test_weight_gradient_alone_follows_the_im2col_split(threads):
    """dW alone of a strided layer with more output channels than the implicit GEMM wins
    at: the implicit GEMM on one thread, im2col once im2col splits the samples between
    two."""
    before = npconv.get_num_threads()
    try:
        npconv.set_num_threads(threads)
        if npconv.get_num_threads() != threads:
            pytest.skip(f"needs {threads} threads")
        spec = plan_conv2d((16, 64, 56, 56), (256, 64, 3, 3), padding=1, stride=2).spec
        splits = len(_workers.shares(spec)) > 1
        assert splits == (threads > 1 and bool(_workers._blas_libraries()))
        choice = npconv.explain_choice(spec, np.float32, "grad_weight")
        assert choice.algorithm == ("im2col" if splits else "jit")
        assert ("split" in choice.reason) == splits
        assert tuning.choose(spec, np.float32, "forward") == "jit"  # the forward stays
    finally:
        npconv.set_num_threads(before)


def test_avx2_runs_strided_gradients_on_jit_up_to_160_channels():
    """With AVX2 tiles a strided layer's dW runs on the implicit GEMM (K up to 640) up to
    160 output channels, and then so does the whole backward pass, dX phase by phase
    (past 64 channels only with dW on jit); a stem's backward pass is not split."""
    def choice(x, c_out, op, k=3, n=16):
        spec = plan_conv2d((n, *x), (c_out, x[0], k, k), padding=k // 2, stride=2).spec
        return npconv.explain_choice(spec, np.float32, op)

    for c_out in (16, 64, 128, 160):
        assert choice((64, 56, 56), c_out, "grad_weight").algorithm == "jit", c_out
        backward = choice((64, 56, 56), c_out, "backward")
        assert backward.algorithm == "jit" and "stride phase" in backward.reason, c_out
    assert choice((64, 56, 56), 192, "backward").algorithm == "im2col"
    assert choice((64, 56, 56), 128, "grad_input").algorithm == "im2col"  # dX alone: 64
    assert choice((32, 56, 56), 64, "backward", k=5).algorithm == "jit+im2col"  # K 800
    stem = (3, 112, 112)
    assert choice(stem, 32, "grad_weight", k=7).algorithm == "jit"
    assert choice(stem, 32, "backward", k=7).algorithm == "im2col"


def test_avx512_splits_the_backward_pass_of_strided_layers(monkeypatch):
    """With AVX-512 a strided layer's dW runs on the implicit GEMM (columns up to 1024
    pairs, any with up to 160 output channels), and its dX phase by phase on jit up to
    128 output channels (the backward pass all on jit), on im2col past them (the
    backward pass split)."""
    from npconv.algorithms import _implicit, jit

    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    monkeypatch.setattr(_implicit, "VECTOR_BYTES", 64)
    down = plan_conv2d((16, 64, 56, 56), (128, 64, 3, 3), padding=1, stride=2).spec
    choice = npconv.explain_choice(down, np.float32, "backward")
    assert choice.algorithm == "jit" and "stride phase" in choice.reason
    assert npconv.explain_choice(down, np.float32, "grad_weight").algorithm == "jit"
    assert npconv.explain_choice(down, np.float32, "grad_input").algorithm == "jit"
    wide = plan_conv2d((16, 64, 56, 56), (160, 64, 3, 3), padding=1, stride=2).spec
    choice = npconv.explain_choice(wide, np.float32, "backward")
    assert choice.algorithm == "im2col+jit" and "dX on im2col" in choice.reason
    assert npconv.explain_choice(wide, np.float32, "grad_input").algorithm == "im2col"
    # columns past 1024 pairs: dW stays on the implicit GEMM with few output channels;
    # where its partial sums do not fit the workspace, dX on jit and dW on im2col
    five = plan_conv2d((8, 128, 28, 28), (64, 128, 5, 5), padding=2, stride=2).spec
    assert npconv.explain_choice(five, np.float32, "backward").algorithm == "jit"
    before = npconv.workspace_limit()
    try:
        npconv.set_workspace_limit(_implicit.weight_sums_bytes(five, 4) - 1)
        assert npconv.explain_choice(five, np.float32, "backward").algorithm == "jit+im2col"
    finally:
        npconv.set_workspace_limit(before)
    long_k = plan_conv2d((10, 128, 28, 28), (256, 128, 3, 3), padding=1, stride=2).spec
    assert npconv.explain_choice(long_k, np.float32, "backward").algorithm == "im2col"
    two = plan_conv2d((2, 64, 56, 56), (128, 64, 3, 3), padding=1, stride=2).spec
    assert npconv.explain_choice(two, np.float32, "backward").algorithm == "im2col"
    # one or two samples with K = 1152: im2col, but not for a dilated layer
    dilated_two = plan_conv2d((2, 128, 32, 32), (128, 128, 3, 3), padding=2, dilation=2).spec
    assert npconv.explain_choice(dilated_two, np.float32, "backward").algorithm == "jit"
    undilated = plan_conv2d((1, 128, 20, 20), (128, 128, 3, 3), padding=1).spec
    assert npconv.explain_choice(undilated, np.float32, "backward").algorithm == "im2col"
    # many weights per output pixel: dW on im2col, not the implicit GEMM
    few_pixels = plan_conv2d((1, 96, 14, 14), (96, 96, 3, 3), padding=1).spec
    choice = npconv.explain_choice(few_pixels, np.float32, "grad_weight")
    assert choice.algorithm == "im2col"
    assert "82,944 weights for 196 output pixels" in choice.reason
    # one or two samples: phase by phase up to 64 output channels, with AVX-512 only
    few = plan_conv2d((2, 64, 56, 56), (64, 64, 3, 3), padding=1, stride=2).spec
    one = plan_conv2d((1, 16, 224, 224), (32, 16, 3, 3), padding=1, stride=2).spec
    for spec in (few, one):
        choice = npconv.explain_choice(spec, np.float32, "backward")
        assert choice.algorithm.startswith("jit") and "stride phase" in choice.reason
    monkeypatch.setattr(jit, "VECTOR_BYTES", 32)
    monkeypatch.setattr(_implicit, "VECTOR_BYTES", 32)
    assert all("stride phase" not in npconv.explain_choice(spec, np.float32, "backward").reason
               for spec in (few, one))
    monkeypatch.setattr(jit, "VECTOR_BYTES", 64)
    monkeypatch.setattr(_implicit, "VECTOR_BYTES", 64)
    pointwise = plan_conv2d((16, 128, 56, 56), (256, 128, 1, 1), stride=2).spec
    assert npconv.explain_choice(pointwise, np.float32, "backward").algorithm == "im2col"
    # float64: the implicit dW runs float64 with AVX-512 too
    assert npconv.explain_choice(down, np.float64, "backward").algorithm == "im2col+jit"


def test_winograd_counts_the_tiles_of_its_gemms():
    f32 = np.float32
    res56 = plan_conv2d((16, 64, 56, 56), (64, 64, 3, 3), padding=1).spec
    assert winograd.gemm_width(res56, f32) == 16 * 14 * 15  # F(4x4): 14 x (14 + 1 junk)
    assert winograd.gemm_width(res56, np.float64) == 16 * 28 * 29  # F(2x2)
    one = plan_conv2d((1, 128, 28, 28), (128, 128, 3, 3), padding=1).spec
    assert winograd.gemm_width(one, f32) == 7 * 8 < tuning.WINOGRAD_MIN_TILES[4]
    assert winograd.gemm_width(one, f32) >= tuning.WINOGRAD_AVX2_F4_MIN_TILES
    assert npconv.explain_choice(one, op="grad_input").algorithm == "winograd"
    fewer = plan_conv2d((1, 128, 24, 24), (128, 128, 3, 3), padding=1).spec
    assert winograd.gemm_width(fewer, f32) == 6 * 7 < tuning.WINOGRAD_AVX2_F4_MIN_TILES
    assert npconv.explain_choice(fewer, op="grad_input").algorithm != "winograd"
    dilated = plan_conv2d((2, 128, 32, 32), (128, 128, 3, 3), padding=2, dilation=2).spec
    assert winograd.gemm_width(dilated, f32) == 4 * 2 * 8 * 9  # phases x samples x tiles


@pytest.mark.parametrize("x, op, expected", [
    ((1, 128, 28, 28), "forward", True),  # F(4x4), 56 tiles, 96+ channels
    ((2, 64, 40, 40), "forward", False),  # F(4x4), 220 tiles, 64 channels
    ((4, 64, 40, 40), "forward", True),  # 440 tiles
    ((4, 32, 40, 40), "backward", True),  # F(4x4) backward from 32 channels at 300 tiles
    ((2, 32, 40, 40), "backward", False),
    ((1, 48, 28, 28), "backward", True),  # from 48 at any tile count from 50
    ((2, 512, 14, 14), "forward", True),  # F(2x2), 112 tiles, 192+ channels
    ((1, 384, 10, 10), "forward", False),  # 30 tiles
    ((16, 512, 7, 7), "forward", True),  # 7x7 outputs
    ((4, 128, 10, 10), "backward", True),  # 96+ channels backward, 120 tiles
    ((2, 128, 8, 8), "backward", False),  # 40 tiles
    ((4, 128, 20, 20), "forward", True),  # 96-191 channels: 440 tiles
    ((8, 96, 12, 12), "forward", False),  # 336
    ((16, 96, 8, 8), "forward", False),  # 8x8 outputs
    ((16, 64, 10, 10), "forward", False),  # narrow forward: 20x20 outputs
    ((16, 64, 10, 10), "backward", True),  # 480 tiles
    ((4, 64, 14, 14), "backward", False),  # 224
    ((2, 48, 16, 16), "backward", True),  # two samples: from 10x10 outputs
    ((1, 48, 12, 12), "grad_weight", True),  # below SMALL_PROBLEM_MACS too
    ((2, 48, 8, 8), "backward", False),
    ((16, 32, 14, 14), "backward", False),  # F(2x2) from 48 channels
])
def test_avx2_winograd_thresholds(x, op, expected):
    """With AVX2 tiles undilated float32 layers take winograd by the WINOGRAD_AVX2
    thresholds (F(4x4) from fewer tiles than F(2x2), the backward pass from fewer channels
    and tiles than the forward pass)."""
    spec = plan_conv2d(x, (x[1], x[1], 3, 3), padding=1).spec
    assert (tuning.choose(spec, np.float32, op) == "winograd") == expected


def test_float64_keeps_winograd_on_narrow_layers():
    """The register-tiled kernels caught up with F(2x2) on narrow float32 layers only."""
    spec = plan_conv2d((32, 64, 16, 16), (64, 64, 3, 3), padding=1).spec
    assert tuning.choose(spec, np.float32, "forward") == "jit"
    choice = npconv.explain_choice(spec, np.float64, "forward")
    assert choice.algorithm == "winograd" and "F(2x2, 3x3)" in choice.reason


def test_auto_keeps_tiled_copies_within_the_workspace_limit(small_workspace):
    spec = plan_conv2d((16, 32, 56, 56), (32, 32, 3, 3), padding=1).spec
    assert tuning.choose(spec, np.float32, "forward") == "jit"
    npconv.set_workspace_limit(2**20)  # the padded copies take about 13 MB
    assert tuning.choose(spec, np.float32, "forward") == "im2col"


@pytest.mark.parametrize("rows", ["wide", "narrow"])
@pytest.mark.parametrize("limit", [None, 1, 3000], ids=["one-chunk", "rows-of-one", "chunks"])
@pytest.mark.parametrize("kwargs", [
    dict(padding=1),
    dict(padding=((2, 0), (1, 3)), dilation=(2, 3), groups=2),
    dict(padding=0, dilation=2),
    dict(stride=(1, 2), padding=1),  # stride 2 across: never wide
], ids=["3x3", "asymmetric-dilated-grouped", "valid-dilated", "strided"])
def test_wide_and_narrow_rows_agree_with_naive(monkeypatch, small_workspace, rows, limit,
                                               kwargs):
    from npconv.algorithms import im2col

    # wide rows are normally used only where the junk columns are cheap; force both ways
    monkeypatch.setattr(im2col, "WIDE_MAX_WASTE", 100.0 if rows == "wide" else -1.0)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 9, 8))
    w = rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 2))
    spec = plan_conv2d(x.shape, w.shape, **kwargs).spec
    assert im2col.layout(spec).wide == (rows == "wide" and spec.stride == (1, 1))
    if limit is not None:
        npconv.set_workspace_limit(limit)
    y = npconv.conv2d(x, w, algorithm="im2col", **kwargs)
    assert_close(y, npconv.conv2d(x, w, algorithm="naive", **kwargs), "y")
    g = rng.standard_normal(y.shape)
    got = npconv.conv2d_backward(x, w, g, algorithm="im2col", **kwargs)
    ref = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    for name, a, b in zip(("dX", "dW", "dB"), got, ref, strict=True):
        assert_close(a, b, name)


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(padding=(0, 2), dilation=(2, 1)),
                                    dict(padding=2, groups=4), dict(stride=(2, 1), padding=1)],
                         ids=["3x3", "dilated", "depthwise", "strided"])
def test_jit_wide_and_row_kernels_agree(kwargs):
    from npconv.algorithms import jit
    from npconv.spec import plan_conv2d as plan

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 8, 7))
    w = rng.standard_normal((4, 4 // kwargs.get("groups", 1), 3, 3))
    spec = plan(x.shape, w.shape, **kwargs).spec
    assert jit._wide(spec) == (spec.stride == (1, 1))
    y = jit.forward(x, w, spec)
    assert_close(y, npconv.conv2d(x, w, algorithm="naive", **kwargs), "y")
    g = rng.standard_normal(y.shape)
    ref = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    assert_close(jit.grad_input(g, w, spec), ref[0], "dX")
    assert_close(jit.grad_weight(x, g, spec), ref[1], "dW")


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(padding=(2, 0), dilation=(1, 2)),
                                    dict(padding=1, groups=2)],
                         ids=["3x3", "dilated", "grouped"])
def test_jit_channel_blocks_and_threads_do_not_change_results(monkeypatch, kwargs):
    """The plane kernels' channel blocks, the register-tiled kernel's tiles and the
    serial/parallel choice change only how the work is split: every output sums in
    the same order, so the bits are equal."""
    from npconv.algorithms import _blocked, jit
    from npconv.spec import plan_conv2d as plan

    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 6, 9, 8)).astype(np.float32)
    w = rng.standard_normal((8, 6 // kwargs.get("groups", 1), 3, 3)).astype(np.float32)
    spec = plan(x.shape, w.shape, **kwargs).spec
    g = rng.standard_normal(spec.y_shape).astype(np.float32)
    monkeypatch.setattr(jit, "tiled", lambda spec, op, itemsize: False)
    monkeypatch.setattr(jit, "indexed", lambda spec: False)
    results = []
    for block_bytes, parallel_min in ((1, 0), (16 * 1024, 0), (1 << 30, 1 << 60)):
        monkeypatch.setattr(jit, "BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(jit, "PARALLEL_MIN_MACS", parallel_min)
        results.append((jit.forward(x, w, spec), jit.grad_input(g, w, spec),
                        jit.grad_weight(x, g, spec)))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    naive = (npconv.conv2d(x, w, algorithm="naive", **kwargs),
             *npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)[:2])
    for name, a, b in zip(("y", "dX", "dW"), results[0], naive, strict=True):
        assert_close(a, b, name)
    tiled = []
    for parallel, copy_min in ((False, 0), (True, 1 << 60), (True, 0)):  # copies too
        monkeypatch.setattr(_blocked, "COPY_PARALLEL_MIN", copy_min)
        tiled.append(_blocked.correlate(x, w, (spec.oh, spec.ow), spec.padding[0],
                                        spec.padding[2], spec.dilation, spec.groups, parallel))
    for other in tiled[1:]:
        np.testing.assert_array_equal(tiled[0], other)
    assert_close(tiled[0], naive[0], "y (register tiles)")
    b = rng.standard_normal(spec.c_out).astype(np.float32)  # added as y is copied out
    for copy_min in (0, 1 << 60):
        monkeypatch.setattr(_blocked, "COPY_PARALLEL_MIN", copy_min)
        with_bias = _blocked.correlate(x, w, (spec.oh, spec.ow), spec.padding[0],
                                       spec.padding[2], spec.dilation, spec.groups, True, b)
        np.testing.assert_array_equal(with_bias, tiled[0] + b.reshape(1, -1, 1, 1))
    for cb in _blocked.SCATTER_BLOCKS:  # each tile width the input gradient can take
        monkeypatch.setattr(_blocked, "scatter_block", lambda channels, cb=cb: cb)
        tiled_dx = [_blocked.scatter_input_grad(g, w, (spec.h, spec.w), spec.padding,
                                                spec.dilation, spec.groups, parallel)
                    for parallel in (False, True)]
        np.testing.assert_array_equal(tiled_dx[0], tiled_dx[1])
        assert_close(tiled_dx[0], naive[1], f"dX (register tiles of {cb} channels)")
    tiled_dw = [_blocked.weight_grad(x, g, (spec.kh, spec.kw), spec.padding[0],
                                     spec.padding[2], spec.dilation, spec.groups, parallel)
                for parallel in (False, True)]
    np.testing.assert_array_equal(tiled_dw[0], tiled_dw[1])
    assert_close(tiled_dw[0], naive[2], "dW (register tiles)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vector_bytes", [32, 64], ids=["avx2", "avx512"])
def test_register_tiles_of_either_vector_width_match_the_loops(monkeypatch, vector_bytes,
                                                               dtype):
    """Each machine compiles the tiles of its own vector width; both are run here."""
    from npconv.algorithms import _blocked
    from npconv.spec import plan_conv2d as plan

    monkeypatch.setattr(_blocked, "VECTOR_BYTES", vector_bytes)
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 5, 11, 13)).astype(dtype)  # 11 x 15 wide rows: tile tails
    w = rng.standard_normal((6, 5, 3, 2)).astype(dtype)
    spec = plan(x.shape, w.shape, padding=(1, 2), dilation=(1, 2)).spec
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    y = _blocked.correlate(x, w, (spec.oh, spec.ow), spec.padding[0], spec.padding[2],
                           spec.dilation, spec.groups, True)
    dx = _blocked.scatter_input_grad(g, w, (spec.h, spec.w), spec.padding, spec.dilation,
                                     spec.groups, True)
    dw = _blocked.weight_grad(x, g, (spec.kh, spec.kw), spec.padding[0], spec.padding[2],
                              spec.dilation, spec.groups, True)
    naive = (npconv.conv2d(x, w, algorithm="naive", padding=(1, 2), dilation=(1, 2)),
             *npconv.conv2d_backward(x, w, g, algorithm="naive", padding=(1, 2),
                                     dilation=(1, 2))[:2])
    for name, a, b in zip(("y", "dX", "dW"), (y, dx, dw), naive, strict=True):
        assert a.dtype == dtype
        assert_close(a, b, name)


def test_scatter_tiles_pad_the_fewest_channels():
    from npconv.algorithms import _blocked

    widths = {c: _blocked.scatter_block(c) for c in (3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 64)}
    assert widths == {3: 3, 4: 4, 5: 3, 6: 3, 7: 4, 8: 4, 9: 3, 10: 4, 12: 4, 16: 4, 64: 4}


@pytest.fixture
def autotune_off():
    yield
    tuning.set_autotune(False)
    tuning._measured_choices.clear()


def test_autotune_measures_once_caches_and_reloads(autotune_off, tmp_path, monkeypatch):
    cache = tmp_path / "autotune.json"
    tuning._measured_choices.clear()
    npconv.set_autotune(True, cache)
    spec = plan_conv2d((4, 3, 12, 12), (5, 3, 3, 3), padding=1).spec
    choice = npconv.explain_choice(spec, np.float32, "backward")
    assert choice.algorithm in tuning.CANDIDATES
    assert "measured" in choice.reason and all(a in choice.reason for a in tuning.CANDIDATES)
    x = np.ones((4, 3, 12, 12), np.float32)
    w = np.ones((5, 3, 3, 3), np.float32)
    y = npconv.conv2d(x, w, padding=1)  # measures "forward", then runs the winner
    assert_close(y, npconv.conv2d(x, w, padding=1, algorithm="naive"), "y")
    saved = cache.read_text()
    assert ";backward;" in saved and ";forward;" in saved

    def no_timing(*args, **kwargs):
        raise AssertionError("measured again")

    # a fresh process (empty memory cache) reads the file instead of measuring
    tuning._measured_choices.clear()
    monkeypatch.setattr(tuning, "_time_op", no_timing)
    npconv.set_autotune(True, cache)
    assert npconv.explain_choice(spec, np.float32, "backward") == choice
    npconv.conv2d(x, w, padding=1)


def test_autotune_rejects_a_corrupt_cache_file(autotune_off, tmp_path):
    cache = tmp_path / "autotune.json"
    cache.write_text("{not json")
    npconv.set_autotune(True, cache)
    spec = plan_conv2d((1, 1, 5, 5), (1, 1, 3, 3)).spec
    with pytest.raises(ValueError, match="not an npconv autotune file"):
        npconv.explain_choice(spec)
    assert cache.read_text() == "{not json"  # the user's file is left alone


def test_autotune_arguments_validated():
    with pytest.raises(TypeError, match="enabled must be a bool"):
        npconv.set_autotune("yes")
    spec = plan_conv2d((1, 1, 5, 5), (1, 1, 3, 3)).spec
    with pytest.raises(ValueError, match="op must be one of"):
        npconv.explain_choice(spec, np.float32, "sideways")


@pytest.mark.parametrize("limit", [None, 1, (4 + 6) * 42 * 8 * 3],  # 3 samples of x and y
                         ids=["one-chunk", "sample-by-sample", "chunks-of-3"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("parallel_copies", [False, True], ids=["serial", "parallel"])
def test_pointwise_batched_gemms_agree_with_naive(small_workspace, monkeypatch, limit, groups,
                                                  parallel_copies):
    from npconv.algorithms import im2col

    if parallel_copies:  # the channel-major copies of a chunk on the thread pool
        monkeypatch.setattr(im2col, "CM_PARALLEL_MIN", 0)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 4, 6, 7))
    w = rng.standard_normal((6, 4 // groups, 1, 1))
    if limit is not None:
        npconv.set_workspace_limit(limit)
    spec = plan_conv2d(x.shape, w.shape, groups=groups).spec
    expected = {None: [(0, 5)], 1: [(n, n + 1) for n in range(5)]}.get(limit, [(0, 3), (3, 5)])
    assert list(im2col._pointwise_chunks(spec, x.itemsize)) == expected
    y = npconv.conv2d(x, w, groups=groups, algorithm="im2col")
    assert_close(y, npconv.conv2d(x, w, groups=groups, algorithm="naive"), "y")
    g = rng.standard_normal(y.shape)
    got = npconv.conv2d_backward(x, w, g, groups=groups, algorithm="im2col")
    ref = npconv.conv2d_backward(x, w, g, groups=groups, algorithm="naive")
    for name, a, b in zip(("dX", "dW", "dB"), got, ref, strict=True):
        assert_close(a, b, name)
    dx = npconv.grad.conv2d_input(x.shape, w, g, groups=groups, algorithm="im2col")
    assert_close(dx, ref[0], "dX alone")


def test_autotune_rejects_a_cache_file_of_the_wrong_shape(autotune_off, tmp_path):
    cache = tmp_path / "autotune.json"
    cache.write_text('{"choices": ["im2col"]}')
    npconv.set_autotune(True, cache)
    with pytest.raises(ValueError, match="not an npconv autotune file"):
        npconv.explain_choice(plan_conv2d((1, 1, 5, 5), (1, 1, 3, 3)).spec)


def _auto_rule_script():
    """benchmarks/auto_rule.py, loaded as a module."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "auto_rule.py"
    spec = importlib.util.spec_from_file_location("auto_rule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rule_audit_samples_valid_layers_and_measures_the_rules_choice(tmp_path):
    script = _auto_rule_script()
    layers = script.sample(30, seed=3)
    assert len(layers) == 30
    for x, w, kwargs in layers:
        spec = plan_conv2d(x, w, **kwargs).spec  # every sampled layer is valid
        assert 1 <= spec.n <= 64
    rows = script.audit(((2, 8, 12, 12), (8, 8, 3, 3), dict(padding=1)), np.float32, 1, 1)
    assert [r["op"] for r in rows] == ["forward", "backward"]
    for r in rows:
        assert set(r["ms"]) == {"transpose", "im2col", "jit", "winograd"}
        assert r["rule"] in r["ms"] and r["best"] == min(r["ms"], key=r["ms"].get)
        assert r["regret"] >= 1.0


def test_the_rule_audit_times_a_split_backward_pass(monkeypatch):
    script = _auto_rule_script()
    monkeypatch.setattr(tuning, "choose",
                        lambda spec, dtype, op: "im2col+jit" if op == "backward" else "jit")
    rows = script.audit(((2, 8, 12, 12), (8, 8, 3, 3), dict(stride=2)), np.float32, 1, 1)
    forward, backward = rows
    assert set(forward["ms"]) == {"transpose", "im2col", "jit"}
    assert set(backward["ms"]) == {"transpose", "im2col", "jit", "im2col+jit"}
    assert backward["rule"] == "im2col+jit" and backward["regret"] >= 1.0
