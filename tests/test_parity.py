"""Every algorithm x every curated case x dtype against PyTorch: y, dX, dW, dB."""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import grad, tuning
from npconv.spec import plan_conv2d

from cases import CASES
from reference import VARIANTS, assert_close, torch_conv2d, use_variant

DTYPES = [np.float64, np.float32]


def make_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values in a contiguous, non-contiguous or read-only array."""
    if layout == "noncontiguous":
        big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype=a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
        assert not out.flags.c_contiguous
        return out
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
    return a


def case_arrays(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x).astype(dtype)
    w = rng.standard_normal(case.w).astype(dtype)
    b = rng.standard_normal(case.w[0]).astype(dtype)
    plan = plan_conv2d(case.x, case.w, **case.kwargs)
    g = rng.standard_normal(plan.spec.y_shape).astype(dtype)
    pads = tuple(a + p for a, p in zip(plan.mode_padding, plan.spec.padding, strict=True))
    return x, w, b, g, plan, pads


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_torch(torch, variant, case, dtype, monkeypatch):
    algorithm = use_variant(variant, monkeypatch)
    x, w, b, g, plan, pads = case_arrays(case, dtype)
    s = plan.spec
    ref = torch_conv2d(torch, x, w, b, g, s.stride, pads, s.dilation, s.groups, plan.mode)
    ctx = f"[{variant} {case.id} {np.dtype(dtype)}]"
    y = npconv.conv2d(x, w, b, algorithm=algorithm, **case.kwargs)
    assert_close(y, ref[0], "y", ctx)
    dx, dw, db = npconv.conv2d_backward(x, w, g, algorithm=algorithm, **case.kwargs)
    for name, got, want in zip(("dX", "dW", "dB"), (dx, dw, db), ref[1:], strict=True):
        assert_close(got, want, name, ctx)
    # the one-at-a-time API of npconv.grad gives the same
    assert_close(grad.conv2d_input(x.shape, w, g, algorithm=algorithm, **case.kwargs),
                 ref[1], "grad.conv2d_input", ctx)
    assert_close(grad.conv2d_weight(x, w.shape, g, algorithm=algorithm, **case.kwargs),
                 ref[2], "grad.conv2d_weight", ctx)
    assert_close(grad.conv2d_bias(g), ref[3], "grad.conv2d_bias", ctx)


@pytest.mark.parametrize("layout", ["noncontiguous", "fortran", "readonly"])
@pytest.mark.parametrize("algorithm", npconv.ALGORITHMS)
def test_input_layouts(torch, algorithm, layout):
    case = next(c for c in CASES if c.id == "everything")
    x, w, b, g, plan, pads = case_arrays(case, np.float32)
    s = plan.spec
    ref = torch_conv2d(torch, x, w, b, g, s.stride, pads, s.dilation, s.groups, plan.mode)
    x_l, w_l, b_l, g_l = (make_layout(a, layout) for a in (x, w, b, g))
    ctx = f"[{algorithm} {layout}]"
    assert_close(npconv.conv2d(x_l, w_l, b_l, algorithm=algorithm, **case.kwargs), ref[0], "y",
                 ctx)
    dx, dw, db = npconv.conv2d_backward(x_l, w_l, g_l, algorithm=algorithm, **case.kwargs)
    for name, got, want in zip(("dX", "dW", "dB"), (dx, dw, db), ref[1:], strict=True):
        assert_close(got, want, name, ctx)
    if layout == "readonly":
        assert not x_l.flags.writeable  # npconv never wrote into the caller's arrays


@pytest.mark.parametrize("algorithm", npconv.ALGORITHMS)
def test_unbatched_input(torch, algorithm):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, torch.tensor(b), stride=2, padding=1)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y = npconv.conv2d(x, w, b, stride=2, padding=1, algorithm=algorithm)
    assert_close(y, ty.detach().numpy(), "y")
    dx, dw, db = npconv.conv2d_backward(x, w, g, stride=2, padding=1, algorithm=algorithm)
    assert_close(dx, tx.grad.numpy(), "dX")
    assert_close(dw, tw.grad.numpy(), "dW")
    assert_close(grad.conv2d_input(x.shape, w, g, stride=2, padding=1, algorithm=algorithm),
                 tx.grad.numpy(), "grad.conv2d_input")
    assert db.shape == (4,)


@pytest.mark.parametrize("algorithm", npconv.ALGORITHMS)
def test_output_mask_computes_only_what_is_asked(algorithm):
    case = CASES[0]
    x, w, _, g, _, _ = case_arrays(case, np.float64)
    full = npconv.conv2d_backward(x, w, g, algorithm=algorithm)
    for mask in [(True, False, False), (False, True, False), (False, False, True),
                 (False, False, False), (True, True, False)]:
        got = npconv.conv2d_backward(x, w, g, output_mask=mask, algorithm=algorithm)
        for want, have, asked in zip(full, got, mask, strict=True):
            if asked:
                np.testing.assert_array_equal(have, want)
            else:
                assert have is None


@pytest.mark.parametrize("algorithm", [*npconv.ALGORITHMS, "auto"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_dtype_preserved(algorithm, dtype):
    x, w, b, g, _, _ = case_arrays(CASES[-1], dtype)
    kwargs = CASES[-1].kwargs
    outs = [npconv.conv2d(x, w, b, algorithm=algorithm, **kwargs),
            *npconv.conv2d_backward(x, w, g, algorithm=algorithm, **kwargs),
            npconv.conv_transpose2d(g, w, algorithm=algorithm, stride=kwargs["stride"],
                                    groups=2)]
    assert all(o.dtype == dtype for o in outs)


def test_book_convention_divides_by_batch_size():
    """The book's layer divides dW and dB by N; npconv returns exact gradients (N times more)."""
    case = CASES[0]  # the book's X (8, 3, 7, 6), W (2, 3, 4, 5)
    x, w, _, g, _, _ = case_arrays(case, np.float64)
    _, dw, db = npconv.conv2d_backward(x, w, g)
    n = x.shape[0]
    # the book's backward_dw_simple, written out: sum over samples, then / batch size
    book_dw = np.zeros_like(w)
    for i in range(n):
        book_dw += npconv.grad.conv2d_weight(x[i:i + 1], w.shape, g[i:i + 1], algorithm="naive")
    book_dw /= n
    book_db = g.sum(axis=(0, 2, 3)) / n
    np.testing.assert_allclose(dw / n, book_dw, rtol=1e-12)
    np.testing.assert_allclose(db / n, book_db, rtol=1e-12)
    assert not np.allclose(dw, book_dw)


def test_variants_cover_every_algorithm():
    assert set(npconv.ALGORITHMS) <= set(VARIANTS)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_backward_pass_split_between_algorithms_matches_torch(torch, case, dtype,
                                                               monkeypatch):
    """auto's split backward pass (npconv.algorithms._split: dX by im2col, dW by the jit
    algorithm, through its implicit GEMM), forced on every case, every mask."""
    use_variant("jit-implicit", monkeypatch)
    monkeypatch.setattr(tuning, "choose",
                        lambda spec, dtype, op: "im2col+jit" if op == "backward" else "im2col")
    x, w, b, g, plan, pads = case_arrays(case, dtype)
    s = plan.spec
    ref = torch_conv2d(torch, x, w, b, g, s.stride, pads, s.dilation, s.groups, plan.mode)
    ctx = f"[im2col+jit {case.id} {np.dtype(dtype)}]"
    full = npconv.conv2d_backward(x, w, g, **case.kwargs)
    for name, got, want in zip(("dX", "dW", "dB"), full, ref[1:], strict=True):
        assert_close(got, want, name, ctx)
        assert got.dtype == dtype
    for mask in [(True, False, False), (False, True, False), (False, False, True)]:
        got = npconv.conv2d_backward(x, w, g, output_mask=mask, **case.kwargs)
        for want, have, asked in zip(full, got, mask, strict=True):
            if asked:
                np.testing.assert_array_equal(have, want)
            else:
                assert have is None


def test_a_split_is_only_autos():
    with pytest.raises(ValueError, match="unknown algorithm"):
        npconv.conv2d_backward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)),
                               np.ones((1, 1, 2, 2)), algorithm="im2col+jit")


@pytest.mark.parametrize("kwargs", [dict(padding=1, groups=8),
                                    dict(stride=2, padding=(1, 0), groups=8),
                                    dict(padding=2, dilation=2, groups=4)],
                         ids=["depthwise", "strided-depthwise", "grouped-dilated"])
def test_plane_kernels_fuse_the_bias_and_db(kwargs, monkeypatch):
    """The plane kernels add the bias as they copy y out and sum dB from the dZ planes
    their dW reads: y bit for bit the sums plus the bias, dB the float64 sum of dZ."""
    from npconv.algorithms import jit

    monkeypatch.setattr(jit, "indexed", lambda spec: False)
    monkeypatch.setattr(jit, "PARALLEL_MIN_MACS", 0)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 8, 11, 10)).astype(np.float32)
    w = rng.standard_normal((8, 8 // kwargs["groups"], 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    spec = plan_conv2d(x.shape, w.shape, **kwargs).spec
    assert not jit.tiled(spec, "forward", 4) and not jit.implicit(spec, "forward", 4)
    y = npconv.conv2d(x, w, b, algorithm="jit", **kwargs)
    np.testing.assert_array_equal(
        y, npconv.conv2d(x, w, algorithm="jit", **kwargs) + b.reshape(1, -1, 1, 1))
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = npconv.conv2d_backward(x, w, g, algorithm="jit", **kwargs)
    np.testing.assert_array_equal(
        db, g.astype(np.float64).sum(axis=(0, 2, 3)).astype(np.float32))
    _, dw_alone, _ = npconv.conv2d_backward(x, w, g, algorithm="jit",
                                            output_mask=(False, True, False), **kwargs)
    np.testing.assert_array_equal(dw, dw_alone)
    ref = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    for name, got, want in zip(("dX", "dW"), (dx, dw), ref, strict=False):
        assert_close(got, want, name)


@pytest.mark.parametrize("stride", [(2, 2), (2, 3), (3, 2), (1, 2)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_stride_phases_hold_the_padded_plane(stride):
    """jit's stride phases of a padded plane (two columns at a time at a column stride of
    2), against the padded plane sliced by NumPy, for odd and even widths, every padding
    parity, and phase rows and columns that cut the plane short or run past it."""
    from npconv.algorithms import jit

    sh, sw = stride
    rng = np.random.default_rng(sh * 10 + sw)
    for h, w in [(7, 9), (6, 8), (5, 1), (1, 2), (12, 13)]:
        src = rng.standard_normal((h, w)).astype(np.float32)
        for top, left in [(0, 0), (1, 1), (2, 3), (3, 2), (0, 5)]:
            full = (-(-(h + top) // sh), -(-(w + left) // sw))  # every pixel in a phase
            for rows, wq in [full, (full[0] + 2, full[1] + 2), (max(1, full[0] - 1), max(
                    1, full[1] - 2))]:
                padded = np.zeros((rows * sh, wq * sw), dtype=np.float32)
                padded[top:top + h, left:left + w] = src[:rows * sh - top, :wq * sw - left]
                want = padded.reshape(rows, sh, wq, sw).transpose(1, 3, 0, 2)
                got = np.full((sh, sw, rows, wq), np.nan, dtype=np.float32)
                jit._fill_phases(src, got, top, left, sh, sw)
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kw", [2, 3, 4, 5])
def test_col2im_at_stride_2_adds_tap_pairs_at_every_border(kw):
    """im2col's dX at a column stride of 2 (col2im adds taps v and v + 1 as column pairs)
    against the loops: odd and even widths, left padding from none to past the kernel,
    output columns that reach only one tap of a pair."""
    rng = np.random.default_rng(kw)
    for w, left, right in [(9, 0, 0), (10, 1, 0), (7, 3, 2), (6, 4, 1), (11, 2, 4), (2, 5, 5)]:
        x_shape, w_shape = (2, 3, 5, w), (4, 3, 2, kw)
        kwargs = dict(stride=2, padding=((1, 0), (left, right)))
        try:
            spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
        except ValueError:
            continue  # a kernel wider than the padded input
        g = rng.standard_normal(spec.y_shape)
        wt = rng.standard_normal(w_shape)
        x = rng.standard_normal(x_shape)
        dx = npconv.conv2d_backward(x, wt, g, algorithm="im2col", output_mask=(True, False, False),
                                    **kwargs)[0]
        want = npconv.conv2d_backward(x, wt, g, algorithm="naive",
                                      output_mask=(True, False, False), **kwargs)[0]
        assert_close(dx, want, f"dX, width {w}, padding {left}/{right}")
