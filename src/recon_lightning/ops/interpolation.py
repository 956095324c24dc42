"""Inverse-distance 3-NN feature propagation (PointNet++ ``three_nn`` + ``three_interpolate``)."""

from __future__ import annotations

import torch

from ._checks import check_points, check_same_batch
from .fps import gather_points
from .knn import knn


def three_nn_interpolate(
    xyz_dst: torch.Tensor, xyz_src: torch.Tensor, features_src: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """Interpolate source features onto destination points.

    Weights are 1/(d² + 1e-8) on squared distances to the 3 nearest sources, normalised to sum 1.

    Args:
        xyz_dst: (B, N, 3); xyz_src: (B, S, 3) with S >= 3; features_src: (B, S, C).
        backend: the kNN backend (see :func:`~recon_lightning.ops.knn.knn`).

    Returns:
        (B, N, C) interpolated features.
    """
    check_points("xyz_dst", xyz_dst)
    check_points("xyz_src", xyz_src)
    check_same_batch("xyz_dst", xyz_dst, "xyz_src", xyz_src)
    if features_src.dim() != 3 or features_src.shape[:2] != xyz_src.shape[:2]:
        raise ValueError(
            f"features_src must be (B, S, C) matching xyz_src {tuple(xyz_src.shape[:2])}; "
            f"got {tuple(features_src.shape)}"
        )
    d2, idx = knn(xyz_dst, xyz_src, 3, backend=backend)
    # Weights are constants, as in PointNet++'s three_interpolate (no gradient through three_nn).
    w = 1.0 / (d2.detach() + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    return (gather_points(features_src, idx) * w.unsqueeze(-1)).sum(2)
