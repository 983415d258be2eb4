"""npconv's thread-pool environment defaults, and how the benchmarks undo them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OPENBLAS_THREAD_TIMEOUT")
SCRIPT = f"""
import os, npconv
names = {VARS!r}
child = dict(os.environ)
npconv._undo_thread_defaults(child)
print(*[os.environ.get(k) for k in names], *[child.get(k) for k in names])
"""


def _run(**overrides) -> tuple[dict, dict]:
    """The four variables as npconv left them, and as a child started after
    ``_undo_thread_defaults`` would see them."""
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    env.update(overrides)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    values = [None if v == "None" else v for v in out]
    return dict(zip(VARS, values[:4], strict=True)), dict(zip(VARS, values[4:], strict=True))


def test_defaults_are_set_and_undone():
    import npconv

    ours, child = _run()
    assert ours == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": str(npconv.OMP_SPIN_ROUNDS),
                    "KMP_BLOCKTIME": "1", "OPENBLAS_THREAD_TIMEOUT": "4"}
    assert child == dict.fromkeys(VARS)


def test_user_settings_are_kept():
    settings = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "7", "KMP_BLOCKTIME": "9",
                "OPENBLAS_THREAD_TIMEOUT": "20"}
    assert _run(**settings) == (settings, settings)


def test_a_wait_policy_of_the_users_is_not_overridden_by_a_spin_count():
    # GNU OpenMP lets GOMP_SPINCOUNT override OMP_WAIT_POLICY: npconv sets neither spin
    # variable where the user chose a policy
    ours, child = _run(OMP_WAIT_POLICY="PASSIVE")
    assert ours == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": None,
                    "OPENBLAS_THREAD_TIMEOUT": "4"}
    assert child == {**dict.fromkeys(VARS), "OMP_WAIT_POLICY": "PASSIVE"}


def test_one_spin_variable_of_the_users_keeps_the_other_default():
    ours, _ = _run(GOMP_SPINCOUNT="1000")
    assert ours["GOMP_SPINCOUNT"] == "1000" and ours["KMP_BLOCKTIME"] == "1"


def test_small_problems_leave_numbas_thread_pool_unstarted():
    """Small problems run on one thread, and remembering their calls reads the thread
    count without starting Numba's pool (a program that forks afterwards keeps a child
    free of GNU OpenMP's fork check); the first parallel kernel starts it."""
    script = """
import numpy as np, npconv
from numba.np.ufunc import parallel
x = np.ones((8, 3, 7, 6), np.float32)
w = np.ones((2, 3, 4, 5), np.float32)
for _ in range(2):
    y = npconv.conv2d(x, w)
    npconv.conv2d_backward(x, w, np.ones_like(y))
print(parallel._is_initialized)
npconv.conv2d(np.ones((16, 64, 56, 56), np.float32), np.ones((64, 64, 3, 3), np.float32))
print(parallel._is_initialized)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]


SETTLE = """
import sys
if sys.argv[1] == "numpy-first":
    import numpy
import npconv
import numpy as np
from threadpoolctl import ThreadpoolController

libs = [c for c in ThreadpoolController().select(internal_api="openblas").lib_controllers
        if hasattr(c.dynlib, "openblas_read_env")]
timeouts = [c.dynlib.openblas_thread_timeout() for c in libs]
# BLAS still multiplies correctly on its restarted threads
rng = np.random.default_rng(0)
a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 250))
ok = np.allclose(a @ b, np.einsum("ik,kj->ij", a, b))
print(len(libs), len(npconv._SETTLED), *timeouts, ok)
"""


def _settle(order: str, **overrides) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    env.update(overrides)
    return subprocess.run([sys.executable, "-c", SETTLE, order], env=env, capture_output=True,
                          text=True, check=True).stdout.split()


def test_an_openblas_loaded_before_npconv_takes_the_short_spin():
    # NumPy imported first has loaded OpenBLAS, which read OPENBLAS_THREAD_TIMEOUT before
    # npconv set it: npconv makes it read the environment again and restart its threads
    libs, settled, *timeouts, ok = _settle("numpy-first")
    if libs == "0":
        pytest.skip("no OpenBLAS with openblas_read_env in this environment")
    assert settled == libs and timeouts == ["4"] * int(libs) and ok == "True"
    # npconv first: OpenBLAS loads after the variable is set, nothing to restart
    libs, settled, *timeouts, ok = _settle("npconv-first")
    assert settled == "0" and timeouts == ["4"] * int(libs) and ok == "True"
    # a timeout of the user's is the user's: left alone
    libs, settled, *timeouts, ok = _settle("numpy-first", OPENBLAS_THREAD_TIMEOUT="20")
    assert settled == "0" and timeouts == ["20"] * int(libs) and ok == "True"
