"""Scratch buffers: reused per name and thread, never shared across names or threads."""

from __future__ import annotations

import threading

import numpy as np

from npconv import _scratch
from npconv._scratch import scratch


def test_reused_per_name_grown_when_needed():
    _scratch.release()
    a = scratch("t-a", (4, 5), np.float32)
    assert a.shape == (4, 5) and a.dtype == np.float32 and a.flags.c_contiguous
    assert np.shares_memory(a, scratch("t-a", (10,), np.float64))  # reused: 80 bytes
    assert not np.shares_memory(a, scratch("t-b", (4, 5), np.float32))  # another name
    big = scratch("t-a", (1000,), np.float64)  # grown: a new buffer
    assert big.shape == (1000,) and not np.shares_memory(a, big)


def test_large_requests_are_not_kept(monkeypatch):
    monkeypatch.setattr(_scratch, "KEEP_MAX_BYTES", 100)
    first = scratch("t-big", (50,), np.float32)
    assert not np.shares_memory(first, scratch("t-big", (50,), np.float32))


def test_threads_have_their_own():
    mine = scratch("t-thread", (8,), np.float32)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(scratch("t-thread", (8,), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(mine, theirs[0])



def test_buffers_and_packed_weights_start_on_a_cache_line(monkeypatch):
    """The kernels' vector loads read whole cache lines: scratch buffers (kept or not)
    and the implicit GEMM's packed weights start on ALIGN bytes, whatever NumPy's
    allocator returns (it aligns small arrays to 16 bytes only)."""
    from npconv._scratch import ALIGN, aligned_empty
    from npconv.algorithms._blocked import _weight_tiles

    _scratch.release()
    for n in range(1, 40):  # sizes whose NumPy arrays start at 0, 16, 32 or 48 past a line
        a = aligned_empty((n, 3), np.float32)
        assert a.ctypes.data % ALIGN == 0 and a.shape == (n, 3) and a.flags.c_contiguous
        z = aligned_empty((n,), np.float64, zero=True)
        assert z.ctypes.data % ALIGN == 0 and not z.any()
        assert scratch(f"t-align-{n}", (n, 7), np.float32).ctypes.data % ALIGN == 0
        w = np.random.default_rng(n).standard_normal((n, 2, 3, 3)).astype(np.float32)
        packed, nblk = _weight_tiles(w, 1, 16)
        assert packed.ctypes.data % ALIGN == 0
        expect = np.zeros((nblk * 16, 2, 9), np.float32)
        expect[:n] = w.reshape(n, 2, 9)
        np.testing.assert_array_equal(  # (blocks, C_in, taps, 16 channels)
            packed, expect.reshape(nblk, 16, 2, 9).transpose(0, 2, 3, 1).reshape(-1))
    monkeypatch.setattr(_scratch, "KEEP_MAX_BYTES", 100)  # the buffers not kept, too
    assert scratch("t-align-big", (33,), np.float32).ctypes.data % ALIGN == 0


def test_weights_are_packed_from_any_view():
    """_weight_tiles reads W where it lies: contiguous, or the adjoint's rotated,
    channel-swapped view; grouped; channels padded to whole tiles; on one thread and two."""
    from npconv.algorithms import _blocked
    from npconv.algorithms.transpose import transposed_kernel

    rng = np.random.default_rng(7)
    for shape, groups, cb in [((12, 3, 3, 3), 3, 16), ((40, 8, 5, 5), 2, 32),
                              ((6, 4, 2, 3), 1, 4), ((64, 128, 3, 3), 1, 32)]:
        for dtype in (np.float32, np.float64):
            w = rng.standard_normal(shape).astype(dtype)
            for view in (w, transposed_kernel(w, groups)):
                c_dst, c_src_g, kh, kw = view.shape
                c_dst_g = c_dst // groups
                nblk = -(-c_dst_g // cb)
                want = np.zeros((groups, nblk * cb, c_src_g, kh * kw), dtype=dtype)
                want[:, :c_dst_g] = view.reshape(groups, c_dst_g, c_src_g, kh * kw)
                want = want.reshape(groups, nblk, cb, c_src_g, kh * kw).transpose(0, 1, 3, 4, 2)
                packed, blocks = _blocked._weight_tiles(view, groups, cb)
                assert blocks == nblk and packed.dtype == dtype
                np.testing.assert_array_equal(packed, want.reshape(-1))
                assert (w.size >= _blocked.COPY_PARALLEL_MIN) == (shape[0] == 64)

# ----------------------------------------------------------------- recycled results
BIG = (512, 1024)  # 2 MiB of float32: above OUTPUT_MIN_BYTES


def test_a_released_result_is_handed_out_again():
    _scratch.release()
    a = _scratch.output(BIG, np.float32)
    address = a.ctypes.data
    del a
    b = _scratch.output(BIG, np.float32)
    assert b.ctypes.data == address and b.shape == BIG and b.flags.c_contiguous


def test_a_held_result_is_never_reused():
    _scratch.release()
    a = _scratch.output(BIG, np.float32)
    a[...] = 1
    b = _scratch.output(BIG, np.float32)
    assert not np.shares_memory(a, b)
    view = b[3]  # only a view of b survives
    del b
    view_base = view.base
    c = _scratch.output(BIG, np.float32)
    assert not np.shares_memory(c, view_base) and not np.shares_memory(c, a)
    c[...] = 2
    assert (a == 1).all()
    in_a_list = [c]  # held through a container
    del c
    d = _scratch.output(BIG, np.float32)
    assert not np.shares_memory(d, in_a_list[0])


def test_zeros_read_only_and_other_shapes():
    _scratch.release()
    a = _scratch.output(BIG, np.float32)
    a[...] = 5
    del a
    z = _scratch.output(BIG, np.float32, zero=True)
    assert (z == 0).all()  # reused, and zeroed
    z.flags.writeable = False
    address = z.ctypes.data
    del z
    fresh = _scratch.output(BIG, np.float32)
    assert fresh.flags.writeable and fresh.ctypes.data != address  # the read-only one is dropped
    assert _scratch.output((1024, 512), np.float32).shape == (1024, 512)  # shapes must match
    assert _scratch.output(BIG, np.float64).dtype == np.float64
    small = _scratch.output((4, 4), np.float32)
    del small
    assert not _scratch._local.__dict__.get("outputs") or all(
        b.nbytes >= _scratch.OUTPUT_MIN_BYTES for b in _scratch._local.outputs)


def test_the_pool_forgets_released_results_beyond_its_budget(monkeypatch):
    _scratch.release()
    monkeypatch.setattr(_scratch, "OUTPUT_POOL_BYTES", 3 * 2**21)
    held = [_scratch.output((2**19 + i, 1), np.float32) for i in range(5)]  # all in use
    assert len(_scratch._local.outputs) == 5  # in use: tracked, not freed by the pool
    del held
    _scratch.output((2**19 + 9, 1), np.float32)
    assert sum(b.nbytes for b in _scratch._local.outputs) <= 3 * 2**21


def test_convolution_results_stay_independent():
    """Results the caller keeps are never overwritten by later calls."""
    import npconv

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    xs = [rng.standard_normal((4, 16, 64, 64)).astype(np.float32) for _ in range(3)]
    for algorithm in ("auto", "im2col", "jit", "winograd"):
        ys = [npconv.conv2d(x, w, padding=1, algorithm=algorithm) for x in xs]
        assert ys[0].nbytes >= _scratch.OUTPUT_MIN_BYTES
        dxs = [npconv.conv2d_backward(x, w, y, padding=1, algorithm=algorithm)[0]
               for x, y in zip(xs, ys, strict=True)]
        for x, y, dx in zip(xs, ys, dxs, strict=True):
            np.testing.assert_array_equal(y, npconv.conv2d(x, w, padding=1, algorithm=algorithm))
            np.testing.assert_array_equal(
                dx, npconv.conv2d_backward(x, w, y, padding=1, algorithm=algorithm)[0])
        assert len({id(a) for a in ys + dxs}) == 6


def test_empty_cache_lets_go_of_everything_but_what_the_caller_holds():
    import npconv

    held = _scratch.output(BIG, np.float32)
    held[...] = 3
    released = _scratch.output(BIG, np.float32)
    del released
    scratch("t-cache", (8,), np.float32)
    npconv.empty_cache()
    assert not _scratch._local.__dict__.get("outputs")
    assert not _scratch._local.__dict__.get("buffers")
    assert (held == 3).all()
    assert not np.shares_memory(_scratch.output(BIG, np.float32), held)
