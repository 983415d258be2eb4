"""Compiling one loop body twice: serial for small problems, parallel for large ones.

Numba keys its on-disk cache by the function's qualified name and its bytecode, not
by the compile options: ``njit(cache=True)(f)`` and ``njit(parallel=True,
cache=True)(f)`` share one cache entry, and in a later process both load whichever
was saved last (the parallel kernel then runs serially, or the serial one wakes the
thread pool). :func:`serial_and_parallel` gives each variant its own function object
and qualified name, so each has its own cache entry.
"""

from __future__ import annotations

import types

from numba import njit


def _variant(fn, suffix: str):
    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                               fn.__closure__)
    clone.__qualname__ = f"{fn.__qualname__}_{suffix}"
    clone.__doc__ = fn.__doc__
    return clone


def serial_and_parallel(fn, **options):
    """``(serial, parallel)`` dispatchers of ``fn`` (its loops written with ``prange``),
    both cached on disk, each under its own name; ``options`` go to both ``njit``."""
    return (njit(cache=True, **options)(_variant(fn, "serial")),
            njit(parallel=True, cache=True, **options)(_variant(fn, "parallel")))


def generated(source: str, name: str, namespace: dict):
    """The function ``name`` defined by ``source`` in a module's ``namespace`` (its
    ``globals()``) and under the module's file name, so that Numba caches the compiled
    kernel beside the module and can rebuild its globals when loading it."""
    exec(compile(source, namespace["__file__"], "exec"), namespace)
    return namespace.pop(name)
