"""Shared inputs for the point-op tests: devices, dtypes, official operator vectors, clouds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: CPU always; CUDA as a parameter that skips cleanly without a device.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]
DTYPES = [torch.float32, torch.float64]


def on_cuda(fn):
    """The GPU tests: the ``cuda`` marker (``-m cuda`` selects them), skipped without a device."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return pytest.mark.cuda(skip(fn))


def grid_points(side: int, seed: int = 0) -> torch.Tensor:
    """(1, side³, 3) float64 integer grid in a shuffled order: countless exact distance ties."""
    g = torch.arange(side, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g, g)
    return grid[torch.randperm(len(grid), generator=torch.Generator().manual_seed(seed))][None]


def load_ops(official_dir: Path) -> dict:
    """The official operator vectors (``ops/data.pt``), tensors and plain containers only."""
    return torch.load(official_dir / "ops" / "data.pt", weights_only=True, map_location="cpu")


def blobs(b: int, n: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    """(b, n, 3) clouds of three anisotropic Gaussian blobs scaled to unit radius, as the
    datasets' clouds are. Continuous random coordinates: no exact distance ties."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(b, 3, 1, 3, generator=g, dtype=torch.float64)
    scales = 0.05 + 0.3 * torch.rand(b, 3, 1, 3, generator=g, dtype=torch.float64)
    which = torch.randint(0, 3, (b, n), generator=g)
    pts = torch.randn(b, 3, n, 3, generator=g, dtype=torch.float64) * scales + centers
    pts = pts[torch.arange(b)[:, None], which, torch.arange(n)[None, :]]
    pts = pts - pts.mean(1, keepdim=True)
    pts = pts / pts.norm(dim=-1).amax(1).clamp_min(1e-12).view(b, 1, 1)
    return pts.to(dtype)
