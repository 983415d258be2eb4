"""Splitting im2col's and winograd's work between threads by samples (npconv._workers)."""

import threading

import numpy as np
import pytest

import npconv
from npconv import _workers
from npconv.spec import plan_conv2d

from reference import assert_close


@pytest.fixture
def two_threads():
    before = npconv.get_num_threads()
    npconv.set_num_threads(2)
    if npconv.get_num_threads() < 2 or not _workers._blas_libraries():
        npconv.set_num_threads(before)
        pytest.skip("needs two threads and a BLAS library threadpoolctl controls")
    yield
    npconv.set_num_threads(before)


@pytest.fixture
def always_split(monkeypatch, two_threads):
    monkeypatch.setattr(_workers, "SPLIT_MIN_MACS", 0)


def test_shares_divide_the_samples(two_threads, monkeypatch):
    spec = plan_conv2d((5, 4, 9, 9), (6, 4, 3, 3)).spec
    monkeypatch.setattr(_workers, "SPLIT_MIN_MACS", 0)
    assert _workers.shares(spec) == [(0, 2), (2, 5)]
    one = plan_conv2d((1, 4, 9, 9), (6, 4, 3, 3)).spec
    assert _workers.shares(one) == [(0, 1)]  # fewer samples than threads: all threads together
    monkeypatch.setattr(_workers, "SPLIT_MIN_MACS", spec.flops)  # a layer below the threshold
    assert _workers.shares(spec) == [(0, 5)]
    npconv.set_num_threads(1)
    monkeypatch.setattr(_workers, "SPLIT_MIN_MACS", 0)
    assert _workers.shares(spec) == [(0, 5)]


@pytest.mark.parametrize("limit", [None, 1, 3000], ids=["whole-shares", "rows-of-one", "chunks"])
@pytest.mark.parametrize("kwargs, kernel", [
    (dict(padding=1), (3, 3)),  # wide rows
    (dict(stride=2, padding=(1, 2), dilation=(1, 2), groups=2), (3, 3)),  # narrow rows
    (dict(padding=(0, 2), dilation=2), (2, 3)),  # wide rows, dilated
    (dict(groups=2), (1, 1)),  # pointwise
], ids=["wide", "strided-grouped", "wide-dilated", "pointwise"])
def test_split_im2col_agrees_with_naive(always_split, limit, kwargs, kernel):
    before = npconv.workspace_limit()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 11, 9))  # 5 samples: shares of 2 and 3
    w = rng.standard_normal((6, 4 // kwargs.get("groups", 1), *kernel))
    y_ref = npconv.conv2d(x, w, algorithm="naive", **kwargs)
    g = rng.standard_normal(y_ref.shape)
    ref = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    spec = plan_conv2d(x.shape, w.shape, **kwargs).spec
    assert len(_workers.shares(spec)) == 2
    try:
        if limit is not None:
            npconv.set_workspace_limit(limit)
        assert_close(npconv.conv2d(x, w, algorithm="im2col", **kwargs), y_ref, "y")
        got = npconv.conv2d_backward(x, w, g, algorithm="im2col", **kwargs)
        for name, a, b in zip(("dX", "dW", "dB"), got, ref, strict=True):
            assert_close(a, b, name)
        for mask, i in (((True, False, False), 0), ((False, True, False), 1)):
            alone = npconv.conv2d_backward(x, w, g, algorithm="im2col", output_mask=mask,
                                           **kwargs)[i]
            assert_close(alone, ref[i], f"{('dX', 'dW')[i]} alone")
    finally:
        npconv.set_workspace_limit(before)


def test_split_weight_gradient_is_reproducible(always_split):
    """The threads' partial dW are added in a fixed order: the same bits every call."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    g = rng.standard_normal((6, 8, 16, 16)).astype(np.float32)
    first = npconv.conv2d_backward(x, w, g, padding=1, algorithm="im2col")[1].copy()
    for _ in range(5):
        again = npconv.conv2d_backward(x, w, g, padding=1, algorithm="im2col")[1]
        np.testing.assert_array_equal(again, first)


def test_split_keeps_inf_handling(always_split):
    """An inf in x: the wide-row junk must not turn dW into NaN in either share."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 6, 6))
    x[3, 1, 2, 4] = np.inf
    w = rng.standard_normal((3, 2, 3, 3))
    g = rng.standard_normal((4, 3, 6, 6))
    got = npconv.conv2d_backward(x, w, g, padding=1, algorithm="im2col")[1]
    ref = npconv.conv2d_backward(x, w, g, padding=1, algorithm="naive")[1]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))


def test_run_restores_blas_threads_and_raises_after_all_finish(two_threads):
    libraries = _workers._blas_libraries()
    before = [lib.get_num_threads() for lib in libraries]
    seen, finished = [], threading.Event()

    def slow():
        seen.append([lib.get_num_threads() for lib in libraries])
        seen.append(_workers.threads())  # no nested splits inside a share
        finished.set()
        return "slow"

    def failing():
        finished.wait(5)
        raise RuntimeError("share failed")

    assert _workers.run([slow, lambda: 2]) == ["slow", 2]
    assert seen == [[1] * len(libraries), 1]
    assert [lib.get_num_threads() for lib in libraries] == before
    finished.clear()
    with pytest.raises(RuntimeError, match="share failed"):
        _workers.run([failing, slow])
    assert finished.is_set()
    assert [lib.get_num_threads() for lib in libraries] == before
    assert _workers.threads() == 2


def test_shares_run_on_numbas_threads_and_keep_their_buffers(two_threads):
    """Each share on its own Numba thread (with GNU OpenMP the first on the calling
    thread), whose Python thread state, and so its scratch buffers, outlive the call; a
    thread of the caller's keeps its name. In a forked child (or without the compiled
    launcher) the pool of Python threads runs them instead."""
    from npconv import _scratch

    if _workers._launcher() is None:
        pytest.skip("this Numba cannot compile the launcher")

    def where():
        buf = _scratch.scratch("test share", (4,), np.float32)
        return threading.get_ident(), threading.current_thread().name, buf.ctypes.data

    first = _workers.run([where, where])
    again = _workers.run([where, where])
    assert first == again  # the same threads, and the same buffers from one call to the next
    assert first[0][0] != first[1][0]
    for ident, name, _ in first:  # Numba's threads, named as npconv's workers
        assert ident == threading.get_ident() or name.startswith(_scratch.WORKER_PREFIX)

    shares = []
    thread = threading.Thread(target=lambda: shares.extend(_workers.run([where, where])),
                              name="callers-thread")
    thread.start()
    thread.join()
    assert thread.name == "callers-thread"
    for ident, name, _ in shares:
        assert name == "callers-thread" if ident == thread.ident else name.startswith(
            _scratch.WORKER_PREFIX)


def test_empty_cache_releases_the_workers_buffers(always_split):
    from npconv import _scratch

    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    npconv.conv2d(x, w, padding=1, algorithm="im2col")
    assert any(_scratch._worker_buffers)  # the worker's share kept its column matrix
    npconv.empty_cache()
    assert not any(_scratch._worker_buffers)
    npconv.conv2d(x, w, padding=1, algorithm="im2col")
    assert any(_scratch._worker_buffers)  # still tracked after a release
    npconv.empty_cache()
    assert not any(_scratch._worker_buffers)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((5, 6, 26, 26), (8, 6, 3, 3), dict(padding=1)),  # float32: F(4x4, 3x3)
    ((3, 8, 13, 11), (6, 4, 3, 3), dict(padding=(1, 0), groups=2)),  # F(2x2, 3x3)
    ((3, 4, 30, 29), (4, 4, 3, 3), dict(padding=2, dilation=(2, 3))),  # phase sub-images
], ids=["f4", "grouped", "dilated"])
def test_split_winograd_agrees_with_naive(always_split, dtype, x_shape, w_shape, kwargs):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    spec = plan_conv2d(x.shape, w.shape, **kwargs).spec
    assert len(_workers.shares(spec)) == 2
    y_ref = npconv.conv2d(x, w, algorithm="naive", **kwargs)
    g = rng.standard_normal(y_ref.shape).astype(dtype)
    ref = npconv.conv2d_backward(x, w, g, algorithm="naive", **kwargs)
    assert_close(npconv.conv2d(x, w, algorithm="winograd", **kwargs), y_ref, "y")
    got = npconv.conv2d_backward(x, w, g, algorithm="winograd", **kwargs)
    for name, a, b in zip(("dX", "dW", "dB"), got, ref, strict=True):
        assert_close(a, b, name)


def _split_call_in_child(queue):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 8, 16, 16))
    w = rng.standard_normal((8, 8, 3, 3))
    y = npconv.conv2d(x, w, padding=1, algorithm="im2col")
    queue.put(float(np.abs(y - npconv.conv2d(x, w, padding=1, algorithm="naive")).max()))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_can_split_again(always_split):
    """The parent's worker threads do not exist in a forked child: the child must start
    its own rather than queue work for threads that will never run it."""
    import multiprocessing

    rng = np.random.default_rng(8)
    npconv.conv2d(rng.standard_normal((4, 8, 16, 16)), rng.standard_normal((8, 8, 3, 3)),
                  padding=1, algorithm="im2col")  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_split_call_in_child, args=(queue,))
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in a split call")
    assert child.exitcode == 0
    assert queue.get(timeout=5) < 1e-9
