"""Input validation for the models: fail early with a message that says what to fix."""

from __future__ import annotations

import torch


def check_point_cloud(points: torch.Tensor, num_group: int, group_size: int) -> None:
    """Raise unless ``points`` is a finite (B, N, 3) floating tensor with enough points.

    Args:
        points: (B, N, 3) coordinates.
        num_group: number of FPS centres the model draws (needs N >= num_group).
        group_size: points per patch (needs N >= group_size).
    """
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3); got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"points must be a floating-point tensor, got {points.dtype}")
    b, n, _ = points.shape
    if b == 0:
        raise ValueError("points has an empty batch (B = 0)")
    if n < num_group:
        raise ValueError(
            f"points has N={n} points per cloud but the model draws num_group={num_group} "
            "centres; pass at least num_group points"
        )
    if n < group_size:
        raise ValueError(
            f"points has N={n} points per cloud but each patch needs group_size={group_size}"
        )
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points contains non-finite coordinates (NaN or inf)")


def check_dtype(points: torch.Tensor, reference: torch.Tensor) -> None:
    """Raise if ``points`` and the model's parameters (``reference``) differ in dtype."""
    if points.dtype != reference.dtype:
        raise TypeError(
            f"points are {points.dtype} but the model's parameters are {reference.dtype}; "
            f"cast one of them (e.g. model.to({points.dtype}) or points.to({reference.dtype}))"
        )
