"""Chamfer distances with the reference's formulas (extensions/chamfer_dist).

``chamfer_l2`` = mean over X of min_y |x-y|² + mean over Y of min_x |x-y|² (means over all B·N and
B·M points, the two terms summed). ``chamfer_l1`` = (mean sqrt(d1) + mean sqrt(d2)) / 2.
"""

from __future__ import annotations

import torch

from ._checks import check_points, check_same_batch
from .knn import knn


def nearest_sq_dists(
    pred: torch.Tensor, target: torch.Tensor, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable squared distance of every point to its nearest neighbour in the other set.

    Args:
        pred: (B, N, 3); target: (B, M, 3).

    Returns:
        ``(dist1, dist2)``: (B, N) for pred -> target and (B, M) for target -> pred.
    """
    check_points("pred", pred)
    check_points("target", target)
    check_same_batch("pred", pred, "target", target)
    d1, _ = knn(pred, target, 1, backend=backend)
    d2, _ = knn(target, pred, 1, backend=backend)
    return d1.squeeze(-1), d2.squeeze(-1)


def chamfer_l2(pred: torch.Tensor, target: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Reference ``ChamferDistanceL2``: mean(dist1) + mean(dist2), squared distances. Scalar."""
    d1, d2 = nearest_sq_dists(pred, target, backend)
    return d1.mean() + d2.mean()


def chamfer_l1(pred: torch.Tensor, target: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Reference ``ChamferDistanceL1``: (mean(sqrt dist1) + mean(sqrt dist2)) / 2. Scalar."""
    d1, d2 = nearest_sq_dists(pred, target, backend)
    return (d1.sqrt().mean() + d2.sqrt().mean()) / 2
