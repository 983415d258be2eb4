"""Scratch buffers kept from call to call, one set per thread.

A fresh multi-MiB ``np.empty`` on every call costs more than it seems: glibc hands
large blocks back to the kernel when they are freed, so every call page-faults its
temporaries in again (measured on CIFAR's layer: the register-tiled forward pass took
8 ms instead of 2). The algorithms therefore take their temporaries (padded planes,
column matrices, wide outputs) from :func:`scratch`, which reuses one buffer per name
and thread, growing it when a larger one is needed. Only internal temporaries come
from there, never an array handed back to the caller. Buffers above
:data:`KEEP_MAX_BYTES` are not kept.

The large results handed back (y, dX) come from :func:`output`, which hands out again
an array it returned before once the caller has let go of it (and never before).
"""

from __future__ import annotations

import sys
import threading
from math import prod

import numpy as np

KEEP_MAX_BYTES = 64 * 2**20
# Scratch buffers and packed weights start on a cache line (ALIGN bytes): the kernels
# load AVX-512 vectors of whole rows from them, and a vector split across two lines
# costs two loads. NumPy aligns small arrays to 16 bytes only (its large ones mostly
# start on a line): the implicit GEMM's packed weights sat at 48 bytes past a line, and
# its forward passes ran 2-7% slower on them (the pointwise and strided suite layers,
# Inception's 1x7 dX; :func:`aligned_empty`).
ALIGN = 64
# Results handed back to the caller (y, dX) from this size up (and up to
# KEEP_MAX_BYTES) are recycled by :func:`output`, up to this many bytes of them per
# thread.
OUTPUT_MIN_BYTES = 2**20
OUTPUT_POOL_BYTES = 256 * 2**20
_local = threading.local()
# The scratch buffers of npconv's own worker threads (:mod:`npconv._workers`), which
# :func:`release` lets go of too.
WORKER_PREFIX = "npconv-worker"
_worker_buffers: list[dict] = []


def _refs_of_a_list_item() -> int:
    """``sys.getrefcount`` of an object held only by a list, as this interpreter counts
    it (the call's own argument counts once on most versions, not on all)."""
    held = [object()]
    return sys.getrefcount(held[0])


_FREE = _refs_of_a_list_item()  # a pooled result at this count is held by nobody else


def aligned_empty(shape: tuple[int, ...], dtype, zero: bool = False) -> np.ndarray:
    """A C-contiguous array of ``shape`` and ``dtype`` whose data start on a multiple of
    :data:`ALIGN` bytes: uninitialised, or zeros with ``zero``."""
    dtype = np.dtype(dtype)
    nbytes = prod(shape) * dtype.itemsize
    raw = (np.zeros if zero else np.empty)(nbytes + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, backed by the
    calling thread's buffer ``name`` (starting on :data:`ALIGN` bytes): valid until the
    next ``scratch(name, ...)`` call of this thread."""
    dtype = np.dtype(dtype)
    nbytes = prod(shape) * dtype.itemsize
    if nbytes > KEEP_MAX_BYTES:
        return aligned_empty(shape, dtype)
    buffers = _local.__dict__.get("buffers")
    if buffers is None:
        buffers = _local.buffers = {}
        if threading.current_thread().name.startswith(WORKER_PREFIX):
            _worker_buffers.append(buffers)
    buf = buffers.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = buffers[name] = aligned_empty((max(nbytes, 1),), np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def output(shape: tuple[int, ...], dtype, zero: bool = False) -> np.ndarray:
    """A C-contiguous array of ``shape`` and ``dtype`` for a result handed back to the
    caller: uninitialised, or zeros with ``zero``.

    A training loop asks for the same large results call after call, and a fresh
    multi-MiB array is page-faulted in again each time once glibc has given the freed
    one back to the kernel (ResNet-sized layers: 2,500-3,200 faults and 9-18% of a
    forward + backward step here). So this thread keeps the large arrays it handed out
    (up to :data:`OUTPUT_POOL_BYTES`), and hands one out again once nothing else refers
    to it: no variable, view, buffer or container of the caller's holds it (its
    reference count is down to the pool's own). An array the caller still holds is
    never reused; one it made read-only is dropped, and one it reshaped in place no
    longer matches.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = prod(shape) * dtype.itemsize
    if not OUTPUT_MIN_BYTES <= nbytes <= KEEP_MAX_BYTES:
        return np.zeros(shape, dtype=dtype) if zero else np.empty(shape, dtype=dtype)
    pool = _local.__dict__.setdefault("outputs", [])
    for i in range(len(pool)):
        if sys.getrefcount(pool[i]) <= _FREE and pool[i].shape == shape and pool[i].dtype == dtype:
            a = pool.pop(i)
            if a.flags.writeable and a.flags.c_contiguous:
                pool.append(a)  # most recently used last
                if zero:
                    a.fill(0)
                return a
            break
    a = np.zeros(shape, dtype=dtype) if zero else np.empty(shape, dtype=dtype)
    pool.append(a)
    held = sum(b.nbytes for b in pool)
    i = 0
    while held > OUTPUT_POOL_BYTES and i < len(pool) - 1:  # forget the oldest free ones
        if sys.getrefcount(pool[i]) <= _FREE:
            held -= pool.pop(i).nbytes
        else:
            i += 1
    return a


def release() -> None:
    """Let go of the calling thread's scratch buffers and recycled results, and of the
    scratch buffers of npconv's worker threads (public as ``npconv.empty_cache()``):
    results the caller still holds are untouched; the rest is freed, and later calls
    allocate afresh."""
    _local.__dict__.pop("buffers", None)
    _local.__dict__.pop("outputs", None)
    release_workers()


def release_workers(forget: bool = False) -> None:
    """Let go of the scratch buffers of npconv's worker threads; with ``forget`` (their
    threads are gone: a pool replaced, or a forked child) stop tracking them too."""
    for buffers in _worker_buffers:
        buffers.clear()
    if forget:
        _worker_buffers.clear()
