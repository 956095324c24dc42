"""Fixtures of the point-op tests: Triton's interpreter and a clean Triton availability state."""

from __future__ import annotations

import pytest

from recon_lightning.ops import _triton


@pytest.fixture
def interpret(monkeypatch):
    """Triton's interpreter on for this test, so CPU tensors run the kernels (in numpy). The
    kernels read the variable at each launch (``_triton.Kernel``): this works in one process
    whether or not ``TRITON_INTERPRET`` was set when triton was imported."""
    if _triton.triton_error() is not None:
        pytest.skip(f"triton is not usable here: {_triton.triton_error()}")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def fresh_triton_state(monkeypatch):
    """A clean availability state for this test only; the real one is restored afterwards."""
    monkeypatch.setattr(_triton, "_state", {"checked": False, "error": None, "warned": False})
