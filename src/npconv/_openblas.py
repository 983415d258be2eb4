"""OpenBLAS's idle threads when NumPy was imported before npconv.

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when it loads, and by default its
threads spin for about 0.1 s after every BLAS call (2**28 cycles), on the cores Numba's
kernels need next. npconv sets the variable when it is imported (``npconv/__init__.py``),
which is too late for an OpenBLAS that NumPy loaded before: with ``import numpy``
first, every jit kernel that ran within 0.1 s of a BLAS call shared its core with a
spinning thread (measured on an AVX-512 Xeon: a small 1x1 layer's forward + backward
3.0 ms with im2col's steps in between, against 0.16 ms). :func:`settle` makes such a
library read its environment again and restarts its thread pool, whose threads then
take the new timeout. The two functions it calls, ``openblas_read_env`` and
``blas_thread_shutdown_`` (the pool restarts on the next threaded BLAS call), are
exported by OpenBLAS 0.3 (the fork handler uses the second); a library without them is
left as it is.
"""

from __future__ import annotations


def settle() -> list[str]:
    """Make every OpenBLAS library loaded in this process read its environment again and
    restart its threads; returns the paths of the libraries restarted. Called once, at
    import, before any thread of npconv's can run a BLAS call."""
    from threadpoolctl import ThreadpoolController

    restarted = []
    for library in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        read_env = getattr(library.dynlib, "openblas_read_env", None)
        shutdown = getattr(library.dynlib, "blas_thread_shutdown_", None)
        if read_env is None or shutdown is None:
            continue
        read_env()
        shutdown()
        restarted.append(library.filepath)
    return restarted
