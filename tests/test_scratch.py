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
