"""Serial and parallel compilations of one loop body keep separate on-disk caches."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from npconv._numba import serial_and_parallel

MODULE = textwrap.dedent("""
    import numpy as np
    from numba import prange
    from npconv._numba import serial_and_parallel

    def total(a):
        s = 0.0
        for i in prange(a.size):
            s += a[i]
        return s

    SERIAL, PARALLEL = serial_and_parallel(total)
    a = np.arange(1000.0)
    assert SERIAL(a) == PARALLEL(a) == a.sum()
    print(len(SERIAL.stats.cache_hits), len(PARALLEL.stats.cache_hits),
          PARALLEL.targetoptions.get("parallel", False),
          SERIAL.targetoptions.get("parallel", False))
""")


def _run(tmp_path: Path) -> str:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, str(tmp_path / "loops.py")], env=env,
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    return out.stdout.split()


def test_each_variant_has_its_own_cache_entry(tmp_path):
    (tmp_path / "loops.py").write_text(MODULE)
    assert _run(tmp_path) == ["0", "0", "True", "False"]  # compiled and saved
    indexes = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").rglob("*.nbi"))
    assert indexes == ["loops.total_parallel", "loops.total_serial"]
    assert _run(tmp_path) == ["1", "1", "True", "False"]  # both loaded from their own


def test_variants_keep_name_and_doc():
    def body(a):
        """Doc."""
        return a

    serial, parallel = serial_and_parallel(body)
    assert serial.py_func.__name__ == parallel.py_func.__name__ == "body"
    assert serial.py_func.__doc__ == "Doc."
    assert serial.py_func.__qualname__ != parallel.py_func.__qualname__


def _features_in_child(env_extra: dict, before: str = "") -> list[str]:
    """(KERNEL_FEATURES or 'None', VECTOR_BYTES, Numba's feature string) in a fresh process
    that runs ``before`` first."""
    code = (before + "import npconv, npconv._numba as n; from numba.core import config; "
            "print(str(n.KERNEL_FEATURES)[-60:], n.VECTOR_BYTES, "
            "(config.CPU_FEATURES or 'host')[-60:])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert "not a recognized feature" not in out.stderr
    return out.stdout.split()


def test_kernels_compile_without_gathers_unless_the_user_chose_the_cpu():
    import platform

    from llvmlite import binding

    tuned, vector_bytes, numba_features = _features_in_child({})
    if platform.machine().lower() in ("x86_64", "amd64") and binding.llvm_version_info >= (17,):
        assert "+prefer-no-gather" in tuned and numba_features in tuned
    assert vector_bytes in ("32", "64")
    tuned, vector_bytes, numba_features = _features_in_child({"NUMBA_CPU_FEATURES": "+avx2"})
    assert (tuned, vector_bytes, numba_features) == ("None", "32", "+avx2")
    tuned, _, numba_features = _features_in_child({"NUMBA_CPU_NAME": "generic"})
    assert tuned == "None" and numba_features == "host"
    # Numba compiled before npconv came: its features are fixed, and npconv reads them
    tuned, vector_bytes, numba_features = _features_in_child(
        {}, "from numba import njit; njit(lambda v: v + 1)(1); ")
    assert tuned == "None" and numba_features == "host" and vector_bytes in ("32", "64")


def test_vector_width_follows_the_features():
    from npconv._numba import _vector_bytes

    assert _vector_bytes("+avx2,+fma,+avx512f,+prefer-no-gather") == 64
    assert _vector_bytes("+avx2,+fma,-avx512f") == 32
    assert _vector_bytes("+avx2,+avx512f,+prefer-256-bit") == 32  # the user's choice
