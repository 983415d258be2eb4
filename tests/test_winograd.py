"""The specialised Winograd algorithm, on both its tiles (F(2x2, 3x3), and F(4x4, 3x3)
for float32 at precision 'high'): parity with PyTorch on every curated case it supports,
clear refusals for the others, chunking and thread independence."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import npconv
from npconv import grad, tuning
from npconv.algorithms import _winograd_source, winograd
from npconv.spec import plan_conv2d
from test_parity import DTYPES, case_arrays
from test_properties import EXAMPLES, arrays

from cases import CASES
from reference import assert_close, torch_conv2d

# the choices named here are AVX2's (conftest.avx2_rule)
pytestmark = pytest.mark.usefixtures("avx2_rule")


def _supported(case) -> bool:
    return winograd.unsupported(plan_conv2d(case.x, case.w, **case.kwargs).spec) is None


SUPPORTED = [c for c in CASES if _supported(c)]
REFUSED = [c for c in CASES if not _supported(c)]
TILES = pytest.mark.parametrize("m", [2, 4], ids=["F2", "F4"])


@contextlib.contextmanager
def tiles(m: int):
    """Run float32 winograd on F(m x m, 3x3): m = 4 on every output size (precision
    'high'), m = 2 at precision 'highest'."""
    old = winograd.F4_MIN_SIZE, npconv.get_float32_precision()
    winograd.F4_MIN_SIZE = 1
    npconv.set_float32_precision("high" if m == 4 else "highest")
    try:
        yield
    finally:
        winograd.F4_MIN_SIZE = old[0]
        npconv.set_float32_precision(old[1])


def test_the_curated_cases_cover_both_sides():
    ids = {c.id for c in SUPPORTED}
    # groups, depthwise, every padding form and mode, dilation, one sample, one channel
    assert {"groups", "depthwise", "pad-explicit", "same", "reflect", "circular-full-wrap",
            "dilation", "n1", "c1"} <= ids
    assert {"book", "1x1", "same-dilated", "same-stride2", "everything"} <= {c.id for c in REFUSED}


@pytest.mark.parametrize(("dtype", "m"), [(DTYPES[0], 2), (DTYPES[1], 2), (DTYPES[1], 4)],
                         ids=["f64", "f32-F2", "f32-F4"])
@pytest.mark.parametrize("case", SUPPORTED, ids=[c.id for c in SUPPORTED])
def test_matches_torch(torch, case, dtype, m):
    with tiles(m):
        _matches_torch(torch, case, dtype, m)


def _matches_torch(torch, case, dtype, m):
    x, w, b, g, plan, pads = case_arrays(case, dtype)
    s = plan.spec
    assert winograd.tile_size(s, dtype) == m
    ref = torch_conv2d(torch, x, w, b, g, s.stride, pads, s.dilation, s.groups, plan.mode)
    ctx = f"[winograd F{m} {case.id} {np.dtype(dtype)}]"
    y = npconv.conv2d(x, w, b, algorithm="winograd", **case.kwargs)
    assert_close(y, ref[0], "y", ctx)
    dx, dw, db = npconv.conv2d_backward(x, w, g, algorithm="winograd", **case.kwargs)
    for name, got, want in zip(("dX", "dW", "dB"), (dx, dw, db), ref[1:], strict=True):
        assert_close(got, want, name, ctx)
    assert_close(grad.conv2d_input(x.shape, w, g, algorithm="winograd", **case.kwargs),
                 ref[1], "grad.conv2d_input", ctx)
    assert_close(grad.conv2d_weight(x, w.shape, g, algorithm="winograd", **case.kwargs),
                 ref[2], "grad.conv2d_weight", ctx)


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_unsupported_configurations_are_refused_with_the_reason(case):
    x, w, _, g, plan, _ = case_arrays(case, np.float64)
    reason = winograd.unsupported(plan.spec)
    with pytest.raises(ValueError, match="algorithm='winograd' cannot run") as err:
        npconv.conv2d(x, w, algorithm="winograd", **case.kwargs)
    assert reason in str(err.value) and str(list(w.shape)) in str(err.value)
    with pytest.raises(ValueError, match="cannot run"):
        npconv.conv2d_backward(x, w, g, algorithm="winograd", **case.kwargs)


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(padding=((2, 0), (1, 3)), groups=2),
                                    dict(padding=0), dict(padding=(3, 1), dilation=(2, 3))],
                         ids=["pad1", "asymmetric-groups", "valid", "dilated"])
@TILES
def test_chunks_and_threads_do_not_change_results(monkeypatch, kwargs, m):
    """Chunks of one sample or of all, serial or parallel kernels, each chunk's GEMMs
    split between the threads by transform index or not: y and dX are bit-identical
    (each sample's arithmetic is the same); dW, summed over chunks in a different order,
    agrees with the naive loops."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 9, 8) if "dilation" not in kwargs else (5, 4, 17, 15)
                            ).astype(np.float32)
    w = rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 3)).astype(np.float32)
    spec = plan_conv2d(x.shape, w.shape, **kwargs).spec
    g = rng.standard_normal(spec.y_shape).astype(np.float32)
    naive = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    results = []
    for chunk_bytes, parallel_min, split_min in ((1, 0, 10**12), (1 << 30, 0, 10**12),
                                                 (1 << 30, 10**12, 10**12), (1, 0, 0),
                                                 (1 << 30, 0, 0)):
        monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
        monkeypatch.setattr(winograd, "PARALLEL_MIN_MACS", parallel_min)
        monkeypatch.setattr(winograd, "MATMUL_SPLIT_MIN_MACS", {32: split_min, 64: split_min})
        with tiles(m):
            assert winograd.tile_size(spec, x.dtype) == m
            y = npconv.conv2d(x, w, algorithm="winograd", **kwargs)
            dx, dw, _ = npconv.conv2d_backward(x, w, g, algorithm="winograd", **kwargs)
        results.append((y, dx, dw))
        assert_close(y, npconv.conv2d(x, w, algorithm="naive", **kwargs), "y")
        assert_close(dx, naive[0], "dX")
        assert_close(dw, naive[1], "dW")
    for y, dx, _ in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(dx, results[0][1])


def test_batched_gemms_split_between_threads_by_transform_index(monkeypatch):
    """A chunk's GEMMs, one per transform index, run as runs of indices on the threads
    (each a single-threaded BLAS call per GEMM) from MATMUL_SPLIT_MIN_MACS on, where the
    call is parallel; else as one np.matmul."""
    runs = []

    def run(tasks):
        runs.append(len(tasks))
        return [task() for task in tasks]

    monkeypatch.setattr(winograd._workers, "run", run)
    monkeypatch.setattr(winograd._workers, "threads", lambda: 2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 2, 24, 32)).astype(np.float32)
    b = rng.standard_normal((16, 2, 40, 32)).astype(np.float32).transpose(0, 1, 3, 2)
    want = np.matmul(a, b)  # b: a transposed view, as the backward pass passes
    macs = 16 * 2 * 24 * 40 * 32
    for least, parallel, split in ((macs, True, 2), (macs + 1, True, None),
                                   (macs, False, None)):
        monkeypatch.setattr(winograd, "MATMUL_SPLIT_MIN_MACS", {32: least, 64: least})
        runs.clear()
        out = np.full((16, 2, 24, 40), np.nan, dtype=np.float32)
        winograd._matmul(a, b, out, parallel)
        assert runs == ([split] if split else [])
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_float64_matches_the_naive_loops_on_a_resnet_like_layer():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 64, 15, 13))
    w = rng.standard_normal((64, 64, 3, 3))
    g = rng.standard_normal((2, 64, 15, 13))
    want = npconv.conv2d_backward(x, w, g, padding=1, algorithm="im2col")
    got = npconv.conv2d_backward(x, w, g, padding=1, algorithm="winograd")
    for name, a, b in zip(("dX", "dW", "dB"), got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(npconv.conv2d(x, w, padding=1, algorithm="winograd"),
                               npconv.conv2d(x, w, padding=1, algorithm="im2col"),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 2, 3, 0)], ids=["pad1", "asymmetric"])
def test_f4_is_exact_arithmetic_in_float64(pads):
    """F(4x4, 3x3) runs only float32 through the API; its maps in float64 show that
    they are the convolution and its adjoints (to rounding: 1e-13 here)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 16, 17, 22))
    w = rng.standard_normal((12, 8, 3, 3))
    kwargs = dict(padding=((pads[0], pads[1]), (pads[2], pads[3])), groups=2)
    spec = plan_conv2d(x.shape, w.shape, **kwargs).spec
    g = rng.standard_normal(spec.y_shape)
    y = winograd._forward(x, w, spec, 4)
    dx, dw = winograd._backward(x, w, g, spec, True, True, 4)
    want = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    for name, a, b in (("y", y, npconv.conv2d(x, w, algorithm="naive", **kwargs)),
                       ("dX", dx, want[0]), ("dW", dw, want[1])):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11, err_msg=name)


@TILES
def test_float32_rounding_error_is_as_documented(m):
    """The figures of :func:`npconv.set_precision`: the largest error against float64,
    relative to the largest output, on a ResNet-like layer."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 64, 28, 28))
    w = rng.standard_normal((64, 64, 3, 3)) / 24
    g = rng.standard_normal((2, 64, 28, 28))
    want = (npconv.conv2d(x, w, padding=1), *npconv.conv2d_backward(x, w, g, padding=1)[:2])
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    with tiles(m):
        got = (npconv.conv2d(x32, w32, padding=1, algorithm="winograd"),
               *npconv.conv2d_backward(x32, w32, g32, padding=1, algorithm="winograd")[:2])
    bound = 1e-6 if m == 2 else 4e-6
    for name, a, b in zip(("y", "dX", "dW"), got, want, strict=True):
        rel = np.abs(a - b).max() / np.abs(b).max()
        assert rel < bound, f"F{m} {name}: {rel:.2e}"


def test_the_tile_follows_dtype_precision_and_output_size(monkeypatch):
    big = plan_conv2d((1, 8, 24, 30), (8, 8, 3, 3), padding=1).spec
    small = plan_conv2d((1, 8, 23, 40), (8, 8, 3, 3), padding=1).spec
    f32, f64 = np.float32, np.float64
    assert npconv.get_float32_precision() == "high"  # the default
    assert (winograd.tile_size(big, f32), winograd.tile_size(small, f32)) == (4, 2)
    assert winograd.tile_size(big, f64) == 2
    resnet = plan_conv2d((16, 64, 56, 56), (64, 64, 3, 3), padding=1).spec
    assert "F(4x4, 3x3)" in npconv.explain_choice(resnet, f32, "backward").reason
    assert "F(2x2, 3x3)" in npconv.explain_choice(resnet, f64, "backward").reason
    assert tuning._key(big, f32, "forward").endswith("float32_precision=high")
    monkeypatch.setattr(tuning, "_precision", "highest")
    assert winograd.tile_size(big, f32) == 2
    assert "F(2x2, 3x3)" in npconv.explain_choice(resnet).reason
    # autotune keeps each level's measurements apart
    assert tuning._key(big, f32, "forward").endswith("float32_precision=highest")


def test_a_dilated_layer_runs_on_its_phase_sub_images():
    """Dilation (2, 3): 2 x 3 phases, each with the output size of the largest one
    (ceil(OH / 2) x ceil(OW / 3)), stacked along the batch as one undilated layer; the
    tile follows the phases' size, not the layer's."""
    spec = plan_conv2d((3, 8, 50, 75), (8, 8, 3, 3), padding=(2, 3), dilation=(2, 3)).spec
    assert (spec.oh, spec.ow) == (50, 75)
    assert winograd.phase_size(spec) == (25, 25)
    sub = winograd._phase_spec(spec)
    assert (sub.n, sub.h, sub.w, sub.padding, sub.dilation) == (18, 27, 27, (0,) * 4, (1, 1))
    assert winograd.tile_size(spec, np.float32) == 4
    narrow = plan_conv2d((3, 8, 46, 75), (8, 8, 3, 3), padding=(2, 3), dilation=(2, 3)).spec
    assert winograd.phase_size(narrow) == (23, 25) and winograd.tile_size(narrow, np.float32) == 2
    # every x pixel lands in exactly one phase and comes back from it
    x = np.arange(np.prod(spec.x_shape), dtype=np.float64).reshape(spec.x_shape)
    phases = winograd._split(x, spec, sub, "x", "test phases")
    assert np.count_nonzero(phases) == x.size - 1  # x[0, 0, 0, 0] is the zero
    np.testing.assert_array_equal(winograd._merge(phases, spec, sub, "x", spec.x_shape), x)


def test_auto_runs_dilated_layers_with_many_channels_on_winograd():
    wide = plan_conv2d((4, 256, 32, 32), (256, 256, 3, 3), padding=2, dilation=2).spec
    for op in tuning.OPS:
        choice = npconv.explain_choice(wide, np.float32, op)
        assert choice.algorithm == "winograd" and "4 phase sub-images" in choice.reason
    # x's and dY's phases: 16 samples of 256 channels on 18x18 and of 256 on 16x16
    assert winograd.phase_bytes(wide, 4) == 16 * 256 * (18 * 18 + 16 * 16) * 4
    before = npconv.workspace_limit()
    try:  # the phase copies must fit the workspace limit
        npconv.set_workspace_limit(winograd.phase_bytes(wide, 4) - 1)
        assert npconv.explain_choice(wide).algorithm != "winograd"
    finally:
        npconv.set_workspace_limit(before)
    # not with 32 channels (the suite's dilated layer), nor on phases under 12x12
    for shape, d, algorithm in (((16, 32, 32, 32), 2, "jit"), ((16, 96, 32, 32), 2, "jit"),
                                ((4, 256, 32, 32), 4, "im2col")):
        spec = plan_conv2d(shape, (shape[1], shape[1], 3, 3), padding=d, dilation=d).spec
        assert npconv.explain_choice(spec).algorithm == algorithm


def test_set_float32_precision_checks_its_argument_and_reads_the_environment():
    for bad in ("low", "HIGH", None, 1):
        with pytest.raises(ValueError, match="precision must be one of"):
            npconv.set_float32_precision(bad)
    code = "import npconv; print(npconv.get_float32_precision())"
    env = dict(os.environ, NPCONV_FLOAT32_PRECISION="highest")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "highest"
    env["NPCONV_FLOAT32_PRECISION"] = "fast"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "precision must be one of" in out.stderr


@pytest.mark.parametrize(("m", "points"), [(2, (0, 1, -1)), (3, (0, 1, -1, 2)),
                                           (4, (0, 1, -1, -0.5, 2)),
                                           (6, (0, 1, -1, 2, -2, 0.5, -0.5))])
def test_toom_cook_matrices_compute_the_correlation(m, points):
    """y = A^T [(G g) * (B^T d)] is the 1-D correlation of d with g, for any points."""
    bt, g_mat, at = winograd.toom_cook(m, 3, points)
    rng = np.random.default_rng(m)
    d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
    want = np.array([d[i:i + 3] @ g for i in range(m)])
    np.testing.assert_allclose(at @ ((g_mat @ g) * (bt @ d)), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="distinct finite points"):
        winograd.toom_cook(m, 3, points[:-1] + points[:1])


@TILES
@pytest.mark.parametrize("pairs", [(1, 1), (5, 51), (16, 16), (3, 86), (20, 30)],
                         ids=["1", "255", "256", "258", "600"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_transforms_are_the_kronecker_products_rounded_once(m, pairs, dtype):
    """U = G g G^T and dW = G^T dU G, by blocks of kernels (the last one partial, one or
    several blocks, serial or parallel), equal (G (x) G) g and its transpose computed in
    float64: float32 results rounded once (to an ulp: where the two float64 sums round
    to either side of a float32), float64 ones to the rounding of float64 sums."""
    def check(got, want):
        if dtype == np.float32:
            np.testing.assert_array_max_ulp(got, want.astype(dtype), maxulp=1)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-15 * np.abs(want).max())

    rng = np.random.default_rng(8)
    c_out, c_in = pairs
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    kron = np.kron(winograd.G_OF[m], winograd.G_OF[m])  # ((m+2)^2, 9)
    u = winograd._transformed_weight(w, 1, m)
    assert u.shape == ((m + 2) ** 2, 1, c_out, c_in) and u.dtype == dtype
    check(u.reshape(-1, c_out * c_in), kron @ w.reshape(-1, 9).T.astype(np.float64))
    du = rng.standard_normal(((m + 2) ** 2, 1, c_out, c_in)).astype(dtype)
    spec = plan_conv2d((1, c_in, 5, 5), w.shape, padding=1).spec
    dw = winograd._weight_grad(du, spec, m)
    assert dw.shape == w.shape and dw.dtype == dtype
    check(dw.reshape(-1, 9).T, kron.T @ du.reshape((m + 2) ** 2, -1).astype(np.float64))


def test_f4_input_and_output_matrices_are_exact_in_binary():
    """B^T and A^T of F(4x4) hold small integers times powers of two (the data's
    transforms add no rounding of their coefficients); G's 1/3 and 1/15 are applied to
    the weights in float64."""
    assert np.all((winograd.BT4 * 2) % 1 == 0) and np.all((winograd.AT4 * 8) % 1 == 0)


def test_generated_sources_write_each_coefficient_once():
    assert _winograd_source._combination([(1, "a"), (0, "b"), (-1, "c"), (2.5, "d")]) == (
        "a - c + 2.5 * d")
    assert _winograd_source._combination([(-4, "a"), (1, "b")]) == "-4.0 * a + b"
    assert _winograd_source._combination([(0, "a")]) == "0.0"


def test_transposed_convolution_runs_on_winograd():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 6, 7))
    w = rng.standard_normal((4, 3, 3, 3))  # (C_in, C_out, KH, KW) for the transpose
    want = npconv.conv_transpose2d(x, w, padding=1, algorithm="naive")
    got = npconv.conv_transpose2d(x, w, padding=1, algorithm="winograd")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    want = npconv.conv_transpose2d(x, w, padding=(1, 2), dilation=(2, 3), algorithm="naive")
    got = npconv.conv_transpose2d(x, w, padding=(1, 2), dilation=(2, 3), algorithm="winograd")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="stride 1"):
        npconv.conv_transpose2d(x, w, stride=2, algorithm="winograd")


@TILES
def test_a_non_finite_result_is_recomputed_directly(monkeypatch, m):
    """inf - inf inside a tile's transform would give NaN where the direct sum gives
    inf: such results come from im2col instead (PyTorch's pattern, tests/test_errors)."""
    x = np.ones((1, 1, 8, 8), dtype=np.float32)
    x[0, 0, 3, 3] = np.inf
    w = np.ones((1, 1, 3, 3), dtype=np.float32)
    calls = []
    real = winograd._direct

    def counted():
        calls.append(1)
        return real()

    monkeypatch.setattr(winograd, "_direct", counted)
    with tiles(m):
        y = npconv.conv2d(x, w, padding=1, algorithm="winograd")
        assert calls and np.isinf(y).sum() == 9 and not np.isnan(y).any()
        calls.clear()
        npconv.conv2d(np.ones((1, 1, 8, 8), np.float32), w, padding=1, algorithm="winograd")
        assert not calls  # finite results are kept


@st.composite
def supported_configurations(draw):
    """A random configuration winograd runs: 3x3, stride 1, any dilation and padding."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in, c_out = groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    dilation = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2, 4])))
    kwargs = dict(padding=((pads[0], pads[1]), (pads[2], pads[3])), groups=groups,
                  padding_mode=mode, dilation=dilation)
    x_shape, w_shape = (draw(st.integers(1, 3)), c_in, h, w), (c_out, c_in // groups, 3, 3)
    try:
        plan_conv2d(x_shape, w_shape, **kwargs)
    except ValueError:
        assume(False)
    return x_shape, w_shape, kwargs, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(supported_configurations(), st.sampled_from([(np.float64, 2), (np.float32, 2),
                                                    (np.float32, 4)]))
def test_random_supported_configurations_match_torch(torch, config, tile):
    dtype, m = tile
    with tiles(m):
        _random_configuration_matches_torch(torch, config, dtype)


def _random_configuration_matches_torch(torch, config, dtype):
    x_shape, w_shape, kwargs, seed = config
    x, w, b, g, plan = arrays(x_shape, w_shape, kwargs, seed, dtype)
    pads = tuple(a + p for a, p in zip(plan.mode_padding, plan.spec.padding, strict=True))
    ref = torch_conv2d(torch, x, w, b, g, (1, 1), pads, plan.spec.dilation, plan.spec.groups,
                       plan.mode)
    ctx = f"[winograd x{x_shape} w{w_shape} {kwargs}]"
    assert_close(npconv.conv2d(x, w, b, algorithm="winograd", **kwargs), ref[0], "y", ctx)
    got = npconv.conv2d_backward(x, w, g, algorithm="winograd", **kwargs)
    for name, have, want in zip(("dX", "dW", "dB"), got, ref[1:], strict=True):
        assert_close(have, want, name, ctx)
