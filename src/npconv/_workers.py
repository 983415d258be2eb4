"""Splitting one call's work between threads by samples, with BLAS single-threaded.

A multi-threaded BLAS splits every GEMM between the cores, and a parallel Numba kernel
every packing pass: each of a chunk's steps wakes the threads (which npconv lets sleep
between calls), splits, and waits for the slowest. For a batch of samples there is a
cheaper split: give each thread its own share of the samples, and let it pack,
multiply (single-threaded BLAS) and unpack its share on its own, with its own buffers
(:mod:`npconv._scratch` keeps them per thread). The threads meet once per call instead
of once per step, each thread's column matrix stays in its core's caches between being
written and being read, and a single-threaded GEMM runs closer to the core's peak than
half of a two-threaded one (OpenBLAS sgemm here: (128, 576) @ (576, 784) at 72
GFLOP/s on one thread, 87 on two). im2col and winograd split their calls this way
(:func:`shares`): im2col's passes on the suite's strided layer ran 1.5-1.6x faster,
on its pointwise layer 1.1-1.5x; winograd's on ResNet's layers 1.04-1.2x.

:func:`run` runs the shares at once, one per thread of Numba's thread pool (the first
on the calling thread), each in object mode inside one parallel region; in a forked
child, or where Numba cannot compile that region, on a small pool of Python threads
instead. The BLAS library is held at one thread meanwhile (through threadpoolctl,
restored afterwards). The shares must write disjoint memory; a share
that accumulates (a weight gradient) returns its partial sum, and the caller adds them
in a fixed order, so the result does not depend on which thread finishes first.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from itertools import pairwise

from . import tuning
from ._scratch import WORKER_PREFIX, release_workers

_lock = threading.Lock()  # one split at a time: it changes the process's BLAS threads
_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


# The shares run on Numba's own threads (:func:`_launcher`) while this is True: a forked
# child runs them on a pool of Python threads instead (GNU OpenMP, Numba's usual
# threading layer, aborts a child that launches a parallel region after its parent did).
_numba_threads = True


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's worker threads (a pool that believes it
    has idle workers would leave every task queued forever), and a lock another thread
    held at the fork would never be released: start both afresh, and split on Python
    threads from now on."""
    global _pool, _pool_size, _lock, _numba_threads
    _pool, _pool_size, _lock = None, 0, threading.Lock()
    _numba_threads = False
    _pinned.clear()
    release_workers(forget=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@cache
def _blas_libraries() -> tuple:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process."""
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def threads() -> int:
    """Threads a split may use now: npconv's thread count, or 1 inside a share (no
    nested splits) or when the BLAS library's threads cannot be controlled."""
    if getattr(_local, "inside", False) or not _blas_libraries():
        return 1
    return tuning.get_num_threads()


# A call is split between the threads by samples from this many multiply-adds on; below
# it the split costs more than it saves (im2col, measured per pass against the unsplit
# call: 1.0-1.3x faster from 15 to 60 million, 1.1-1.6x on the suite's strided and
# pointwise layers, 0.75-0.9x at 6 million).
SPLIT_MIN_MACS = 32_000_000


def shares(spec) -> list[tuple[int, int]]:
    """``(n_lo, n_hi)``: the samples of a convolution ``spec`` (a ConvSpec) each thread
    takes when the call is split by samples (as evenly as they divide), or ``[(0, N)]``
    when it runs on all threads together: one thread, fewer samples than threads, or a
    small layer."""
    t = min(threads(), spec.n)
    if t <= 1 or spec.flops < 2 * SPLIT_MIN_MACS:
        return [(0, spec.n)]
    return list(pairwise(spec.n * i // t for i in range(t + 1)))


def _pool_with(workers: int) -> ThreadPoolExecutor:
    """The worker pool, with at least ``workers`` threads (called with no split
    running, so a smaller pool it replaces is idle)."""
    global _pool, _pool_size
    if _pool is None or _pool_size < workers:
        if _pool is not None:
            _pool.shutdown(wait=False)
            release_workers(forget=True)  # the old threads' buffers
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=WORKER_PREFIX)
        _pool_size = workers
    return _pool


def _inside(task):
    _local.inside = True
    try:
        return task()
    finally:
        _local.inside = False


# Waking a pool thread that sleeps on a queue cost 70-240 us per split here (the OS
# wakes it; until then its core may be held by a Numba thread still spinning after the
# last parallel kernel), and 60 us more for the calling thread to wake when the pool
# thread finished last: on the res28 layer the pool thread's share started 240 us after
# the calling thread's. So the shares run inside a Numba parallel region instead, each
# in object mode on one of Numba's threads, which pick the region up where they spin
# and meet at its end without sleeping: the second share starts 34-106 us after the
# first. Forward + backward steps, ms, pool / Numba's threads, taking turns in one
# process, on an AVX-512 Xeon: res28 24.45 / 24.25, res56 29.37 / 29.15, (8, 64, 28,
# 28) with 64 3x3 kernels 4.71 / 4.38, (4, 256, 14, 14) with 256 8.62 / 8.18; the
# pointwise suite layer on im2col, in separate processes, 1.88-1.91 / 1.72-1.77.
_tasks: list = []  # the shares of the split running now (under _lock)
_results: list = []  # each share's (True, result) or (False, exception)
_pinned: set = set()  # the threads whose Python thread state is kept (_pin)


def _pin() -> None:
    """Keep the calling Numba thread's Python thread state between object-mode blocks
    (each block would otherwise make a fresh one: its thread-local scratch buffers
    would be lost with it, and allocated again on every call), and name the thread as
    npconv's worker, so that :func:`npconv.empty_cache` releases its buffers."""
    ident = threading.get_ident()
    if ident in _pinned:
        return
    thread = threading.current_thread()
    if isinstance(thread, threading._DummyThread):  # not a thread Python started
        import ctypes

        ctypes.pythonapi.PyGILState_Ensure()  # never released: the state stays
        thread.name = f"{WORKER_PREFIX}-numba-{len(_pinned)}"
    _pinned.add(ident)


def _share(i: int) -> None:
    """Run share ``i`` of the split (on a Numba thread), keeping its result or error."""
    try:
        _pin()
        _results[i] = (True, _inside(_tasks[i]))
    except BaseException as e:  # raised again on the calling thread
        _results[i] = (False, e)


@cache
def _launcher():
    """The compiled launcher, or None where it cannot be built: one Numba parallel region
    whose iterations run the shares in object mode. Compiled on first use, in about
    0.4 s (not cached on disk: Numba cannot reload an object-mode block of a parallel
    loop)."""
    import warnings

    from numba import njit, objmode, prange
    from numba.core.errors import NumbaWarning

    @njit(parallel=True, nogil=True)
    def launch(n):  # pragma: no cover - compiled
        for i in prange(n):
            with objmode():
                _share(i)

    try:
        with warnings.catch_warnings():  # "object mode won't allow parallel execution":
            warnings.simplefilter("ignore", NumbaWarning)  # of the block, not the loop
            launch.compile("(int64,)")
    except Exception:  # this Numba cannot: the pool of Python threads runs them
        return None
    return launch


def _run_on_numba_threads(tasks: list) -> list:
    """:func:`run`'s shares, one per Numba thread; errors raised once all have finished
    (the first share's first)."""
    global _tasks, _results
    _tasks, _results = list(tasks), [None] * len(tasks)
    try:
        _launcher()(len(tasks))  # the shares, one per iteration
        done = _results
    finally:
        _tasks, _results = [], []
    errors = [value for ok, value in done if not ok]
    if errors:
        raise errors[0]
    return [value for _, value in done]


def run(tasks: list) -> list:
    """Run ``tasks`` (callables taking no argument) at once, one thread each, and return
    their results in order. With one task it simply runs on the calling thread (BLAS and
    Numba keep all their threads). An exception from any task is raised once all of
    them have finished."""
    if len(tasks) == 1:
        return [tasks[0]()]
    with _lock:
        libraries = _blas_libraries()
        before = [lib.get_num_threads() for lib in libraries]
        for lib in libraries:
            lib.set_num_threads(1)
        try:
            if (_numba_threads and len(tasks) <= tuning.get_num_threads()
                    and _launcher() is not None):
                return _run_on_numba_threads(tasks)
            futures = [_pool_with(len(tasks) - 1).submit(_inside, t) for t in tasks[1:]]
            first, error = None, None
            try:
                first = _inside(tasks[0])
            except BaseException as e:  # wait for the others before raising
                error = e
            results = [first]
            for f in futures:
                try:
                    results.append(f.result())
                except BaseException as e:
                    error = error or e
            if error is not None:
                raise error
            return results
        finally:
            for lib, n in zip(libraries, before, strict=True):
                lib.set_num_threads(n)


def split(spec, task, *args) -> list:
    """Run ``task(*args, n_lo, n_hi, share)`` for each of ``spec``'s :func:`shares` at
    once (:func:`run`; ``share`` is the number of shares), and return the results in
    order."""
    parts = shares(spec)
    return run([partial(task, *args, lo, hi, len(parts)) for lo, hi in parts])


def summed(partials: list):
    """The shares' partial sums (arrays; a weight gradient) added in a fixed order, so the
    result does not depend on which thread finished first (into the first one)."""
    total = partials[0]
    for part in partials[1:]:
        total += part
    return total
