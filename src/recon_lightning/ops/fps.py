"""Furthest point sampling with the semantics of pointnet2_ops' CUDA kernel.

The reference (``pointnet2_ops.furthest_point_sample``) always takes point 0 first, keeps a running
minimum squared distance that starts at 1e10, and then repeatedly takes the point with the largest
running minimum. Points with x²+y²+z² <= 1e-3 are never taken after index 0 (the kernel's skip of
zero padding); if no point qualifies, index 0 is returned. Exact ties go to the lowest index.
"""

from __future__ import annotations

import torch

from ._checks import check_points

#: Squared norm at or below which the reference kernel skips a point (``mag <= 1e-3``).
SKIP_NORM_SQ = 1e-3


def furthest_point_sample_torch(xyz: torch.Tensor, n: int, skip_origin: bool = True) -> torch.Tensor:
    """Reference path: one vectorised-over-batch torch loop of ``n`` steps.

    Args:
        xyz: (B, N, 3) coordinates.
        n: number of samples.
        skip_origin: apply the kernel's rule that points with |p|² <= 1e-3 are never taken after 0.

    Returns:
        (B, n) int64 indices into N.
    """
    b, num, _ = xyz.shape
    xyz = xyz.detach()
    idx = torch.zeros(b, n, dtype=torch.long, device=xyz.device)
    min_d = torch.full((b, num), 1e10, dtype=xyz.dtype, device=xyz.device)
    if skip_origin:
        eligible = (xyz * xyz).sum(-1) > SKIP_NORM_SQ
    rows = torch.arange(b, device=xyz.device)
    last = torch.zeros(b, dtype=torch.long, device=xyz.device)
    for j in range(1, n):
        diff = xyz - xyz[rows, last].unsqueeze(1)
        d = (diff * diff).sum(-1)
        min_d = torch.minimum(min_d, d)
        score = torch.where(eligible, min_d, -1.0) if skip_origin else min_d
        # argmax returns the first maximal index: ties go to the lowest index. When no point is
        # eligible every score is -1 and argmax gives 0, which is the kernel's fallback.
        last = score.argmax(dim=1)
        idx[:, j] = last
    return idx


def furthest_point_sample(
    xyz: torch.Tensor, n: int, skip_origin: bool = True, backend: str = "auto"
) -> torch.Tensor:
    """Furthest point sampling; see the module docstring for the exact semantics.

    Args:
        xyz: (B, N, 3) coordinates.
        n: number of samples, 1 <= n <= N.
        skip_origin: the reference kernel's skip of points with |p|² <= 1e-3 (default on).
        backend: ``"auto"`` or ``"torch"``.

    Returns:
        (B, n) int64 indices.
    """
    check_points("xyz", xyz)
    if not 1 <= n <= xyz.shape[1]:
        raise ValueError(f"n must be in [1, N={xyz.shape[1]}]; got n={n}")
    if backend not in ("auto", "torch"):
        raise ValueError(f"unknown FPS backend {backend!r}; choose 'auto' or 'torch'")
    return furthest_point_sample_torch(xyz, n, skip_origin=skip_origin)


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather rows of ``x`` (B, N, C) by ``idx`` (B, ...) -> (B, ..., C)."""
    b = x.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])
