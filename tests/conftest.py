"""Shared test fixtures: where the official reference vectors live, and test-wide settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

#: Test vectors made by running the reference code (provenance in its README.md).
OFFICIAL = Path(__file__).resolve().parent / "fixtures" / "official"

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The official fixtures folder; the tests that need it fail loudly if it is missing."""
    if not OFFICIAL.is_dir():
        pytest.fail(f"official fixtures not found at {OFFICIAL}; is the checkout complete?")
    return OFFICIAL


def load_fixture(path: Path) -> dict:
    """Load a fixture file safely (tensors and plain containers only)."""
    return torch.load(path, weights_only=True, map_location="cpu")
