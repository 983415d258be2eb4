"""Scratch buffers kept from call to call, one set per thread.

A fresh multi-MiB ``np.empty`` on every call costs more than it seems: glibc hands
large blocks back to the kernel when they are freed, so every call page-faults its
temporaries in again (measured on CIFAR's layer: the register-tiled forward pass took
8 ms instead of 2). The algorithms therefore take their temporaries (padded planes,
column matrices, wide outputs) from :func:`scratch`, which reuses one buffer per name
and thread, growing it when a larger one is needed. Only internal temporaries come
from here, never an array handed back to the caller. Buffers above
:data:`KEEP_MAX_BYTES` are not kept.
"""

from __future__ import annotations

import threading
from math import prod

import numpy as np

KEEP_MAX_BYTES = 64 * 2**20
_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, backed by the
    calling thread's buffer ``name``: valid until the next ``scratch(name, ...)`` call
    of this thread."""
    dtype = np.dtype(dtype)
    nbytes = prod(shape) * dtype.itemsize
    if nbytes > KEEP_MAX_BYTES:
        return np.empty(shape, dtype=dtype)
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = buffers[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def release() -> None:
    """Free the calling thread's buffers."""
    _local.__dict__.pop("buffers", None)
