"""Shared test fixtures: the PyTorch reference and the tolerance table.

In CI (``CI=true``) or with ``NPCONV_REQUIRE_TORCH=1`` a missing PyTorch is an error,
so the parity tests can never be skipped silently there.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_TORCH = os.environ.get("CI", "").lower() == "true" or os.environ.get(
    "NPCONV_REQUIRE_TORCH") == "1"


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as torch_module
    except ImportError:
        if REQUIRE_TORCH:
            pytest.fail("PyTorch is required for the parity tests here (CI or "
                        "NPCONV_REQUIRE_TORCH=1): pip install torch==2.13.0")
        pytest.skip("PyTorch is not installed")
    torch_module.set_num_threads(1)
    return torch_module


@pytest.fixture(autouse=True)
def _fresh_preparations():
    """Each test starts with no remembered conv2d preparations (npconv.functional), so
    that what a test patches is what its calls run."""
    from npconv import functional

    functional.forget_prepared()
    yield
    functional.forget_prepared()


@pytest.fixture
def avx2_rule(monkeypatch):
    """The algorithm rules as on an AVX2 machine, whatever this one has: the tests that
    name the choice for a shape are written for them (AVX-512's limits are tested where
    they differ, :data:`npconv.algorithms.jit.IMPLICIT_ANY_SHAPE_CHANNELS`)."""
    from npconv.algorithms import _implicit, jit

    monkeypatch.setattr(jit, "VECTOR_BYTES", 32)
    monkeypatch.setattr(_implicit, "VECTOR_BYTES", 32)
