"""Point tokenizer grouping: FPS centers and kNN patches, as the reference's ``Group``."""

from __future__ import annotations

import torch

from .fps import FPS_BACKENDS, furthest_point_sample, gather_points
from .knn import knn


def group(
    xyz: torch.Tensor, num_group: int, group_size: int, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split clouds into ``num_group`` patches of ``group_size`` points.

    Args:
        xyz: (B, N, 3) points.
        num_group: number of FPS centers G (with the reference kernel's skip rule).
        group_size: neighbours per center k.
        backend: the kNN backend (``"auto"``, ``"torch"``, ``"numba"``, ``"kdtree"``,
            ``"keops"``, ``"triton"``); FPS uses it too where FPS has it (``torch``, ``numba``,
            ``triton``), else its own ``"auto"``.

    Returns:
        ``(neighborhood, center)``: (B, G, k, 3) coordinates relative to their center, nearest
        first, and (B, G, 3) centers in FPS order.
    """
    if xyz.dim() == 3 and group_size > xyz.shape[1]:
        raise ValueError(f"group_size={group_size} exceeds the number of points N={xyz.shape[1]}")
    fps_backend = backend if backend in FPS_BACKENDS else "auto"
    center_idx = furthest_point_sample(xyz, num_group, backend=fps_backend)
    center = gather_points(xyz, center_idx)
    _, idx = knn(center, xyz, group_size, backend=backend)
    neighborhood = gather_points(xyz, idx) - center.unsqueeze(2)
    return neighborhood, center
