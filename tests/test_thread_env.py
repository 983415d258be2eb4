"""npconv's thread-pool environment defaults, and how the benchmarks undo them."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import os, npconv
env = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
child = dict(os.environ)
npconv._undo_thread_defaults(child)
print(env["OMP_WAIT_POLICY"], env["OPENBLAS_THREAD_TIMEOUT"],
      child.get("OMP_WAIT_POLICY"), child.get("OPENBLAS_THREAD_TIMEOUT"))
"""


def _run(**overrides) -> list[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(overrides)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def test_defaults_are_set_and_undone():
    assert _run() == ["PASSIVE", "4", "None", "None"]


def test_user_settings_are_kept():
    assert _run(OMP_WAIT_POLICY="ACTIVE", OPENBLAS_THREAD_TIMEOUT="20") == [
        "ACTIVE", "20", "ACTIVE", "20"]
