"""Batch-level point-cloud sampling and augmentation, vectorised over the batch, on any device.

These restate the reference's ``datasets/data_transforms.py`` (``PointcloudRotate``,
``PointcloudScaleAndTranslate``, ``PointcloudScale``, ``PointcloudTranslate``) and the resampling
in ``tools/runner_finetune.py`` without the per-sample Python loops and ``.cuda()`` calls: each
function draws one random tensor for the whole batch on the batch's device. Random draws use
torch's generator (pass ``generator`` for reproducible draws), never numpy, so that DataLoader
workers and DDP ranks get independent streams from Lightning's seeding.

Shapes: ``points`` is (B, N, C) with xyz in the first three channels; extra channels (normals)
are carried along by the sampling functions and left untouched by the geometric transforms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from recon_lightning.ops import furthest_point_sample, gather_points

#: The reference runner's oversampling before the random subset: npoints -> point_all.
POINT_ALL: dict[int, int] = {1024: 1200, 2048: 2400, 4096: 4800, 8192: 8192}

BatchTransform = Callable[..., torch.Tensor]


def point_all_for(npoints: int, available: int) -> int:
    """How many FPS points the reference draws before taking a random ``npoints`` subset.

    Args:
        npoints: points the model sees (1024, 2048, 4096 or 8192 in the reference).
        available: points stored per cloud in the batch; ``point_all`` is capped by it.

    Other ``npoints`` values (the reference raises for them) oversample by the same 1.17 ratio
    as 1024 -> 1200, so tiny test clouds and custom sizes work.
    """
    if npoints < 1:
        raise ValueError(f"npoints must be >= 1; got {npoints}")
    if npoints > available:
        raise ValueError(
            f"npoints={npoints} exceeds the {available} points stored per cloud; lower npoints"
        )
    point_all = POINT_ALL.get(npoints, math.ceil(npoints * 1200 / 1024))
    return min(point_all, available)


def _uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    like: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def rotation_y_matrices(angle: torch.Tensor) -> torch.Tensor:
    """(B,) angles -> (B, 3, 3) matrices ``[[c, 0, s], [0, 1, 0], [-s, 0, c]]`` (reference form)."""
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    rows = [
        torch.stack([c, zero, s], dim=-1),
        torch.stack([zero, one, zero], dim=-1),
        torch.stack([-s, zero, c], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def rotate_y(
    points: torch.Tensor,
    angle: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate each cloud about the y axis (``PointcloudRotate``).

    Args:
        points: (B, N, C) clouds, xyz first.
        angle: (B,) angles in radians; default uniform in [0, 2π) per cloud.
        generator: torch generator for the random angles.

    Returns:
        (B, N, C) rotated clouds: ``xyz @ R`` with R from :func:`rotation_y_matrices`, the
        reference's right-multiplication.
    """
    if angle is None:
        angle = _uniform((points.shape[0],), 0.0, 2.0 * math.pi, points, generator)
    rot = rotation_y_matrices(angle.to(device=points.device, dtype=points.dtype))
    xyz = torch.bmm(points[..., :3], rot)
    return torch.cat([xyz, points[..., 3:]], dim=-1) if points.shape[-1] > 3 else xyz


def scale(
    points: torch.Tensor,
    scale_low: float = 2.0 / 3.0,
    scale_high: float = 3.0 / 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-cloud anisotropic scale, each axis uniform in [low, high] (``PointcloudScale``)."""
    factors = _uniform((points.shape[0], 1, 3), scale_low, scale_high, points, generator)
    return _apply_xyz(points, points[..., :3] * factors)


def translate(
    points: torch.Tensor,
    translate_range: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-cloud shift, each axis uniform in [-range, range] (``PointcloudTranslate``)."""
    shift = _uniform((points.shape[0], 1, 3), -translate_range, translate_range, points, generator)
    return _apply_xyz(points, points[..., :3] + shift)


def scale_and_translate(
    points: torch.Tensor,
    scale_low: float = 2.0 / 3.0,
    scale_high: float = 3.0 / 2.0,
    translate_range: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Anisotropic scale then shift per cloud (``PointcloudScaleAndTranslate``), (B, N, C)."""
    b = points.shape[0]
    factors = _uniform((b, 1, 3), scale_low, scale_high, points, generator)
    shift = _uniform((b, 1, 3), -translate_range, translate_range, points, generator)
    return _apply_xyz(points, points[..., :3] * factors + shift)


def identity(points: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """No augmentation (the reference's vote transform for OBJ_BG / OBJ_ONLY)."""
    return points


def _apply_xyz(points: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    return torch.cat([xyz, points[..., 3:]], dim=-1) if points.shape[-1] > 3 else xyz


#: Batch transforms by the names the configs use.
BATCH_TRANSFORMS: dict[str, BatchTransform] = {
    "none": identity,
    "rotate_y": rotate_y,
    "scale": scale,
    "translate": translate,
    "scale_and_translate": scale_and_translate,
}


def get_batch_transform(name: str) -> BatchTransform:
    """Look up a batch transform by name (``none``, ``rotate_y``, ``scale``, ...)."""
    try:
        return BATCH_TRANSFORMS[name]
    except KeyError:
        raise ValueError(
            f"unknown point transform {name!r}; choose one of {sorted(BATCH_TRANSFORMS)}"
        ) from None


def normalize_unit_sphere(points: torch.Tensor) -> torch.Tensor:
    """Centre each cloud on its centroid and scale its farthest point to radius 1.

    Args:
        points: (..., N, 3) clouds (batched or single).

    Returns:
        Same shape. A degenerate cloud (all points equal) is only centred, not divided by zero.
    """
    centred = points - points.mean(dim=-2, keepdim=True)
    radius = centred.norm(dim=-1).amax(dim=-1, keepdim=True).unsqueeze(-1)
    return centred / torch.where(radius > 0, radius, torch.ones_like(radius))


def normalize_unit_sphere_np(points: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`normalize_unit_sphere` for per-item use in datasets: (N, 3) -> (N, 3).

    The reference's ``pc_norm`` / ``pc_normalize``: subtract the centroid, divide by the largest
    distance to it. Float32 in, float32 out.
    """
    centred = points - points.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((centred * centred).sum(axis=1)).max())
    return (centred / radius if radius > 0 else centred).astype(np.float32, copy=False)


def fps_sample(points: torch.Tensor, n: int) -> torch.Tensor:
    """Deterministic furthest point sampling to ``n`` points (the reference's ``misc.fps``).

    Args:
        points: (B, N, C) clouds; FPS runs on xyz, all C channels are gathered.
        n: points to keep, n <= N.

    Returns:
        (B, n, C) in FPS order (starting at index 0, as pointnet2_ops does).
    """
    idx = furthest_point_sample(points[..., :3].contiguous(), n)
    return gather_points(points, idx)


def random_subset(
    points: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    shared: bool = True,
) -> torch.Tensor:
    """A random subset of ``n`` points per cloud, without replacement.

    Args:
        points: (B, N, C).
        n: subset size, n <= N.
        generator: torch generator for the draw.
        shared: use one index draw for the whole batch, as the reference does
            (``np.random.choice(point_all, npoints, False)`` once per batch); ``False`` draws an
            independent subset per cloud.

    Returns:
        (B, n, C).
    """
    b, num = points.shape[:2]
    if not 1 <= n <= num:
        raise ValueError(f"subset size must be in [1, {num}]; got {n}")
    if shared:
        perm = torch.randperm(num, generator=generator, device=points.device)[:n]
        return points[:, perm]
    keys = torch.rand(b, num, generator=generator, device=points.device)
    return gather_points(points, keys.argsort(dim=1)[:, :n])


def fps_then_subset(
    points: torch.Tensor,
    npoints: int,
    point_all: int | None = None,
    generator: torch.Generator | None = None,
    shared: bool = True,
) -> torch.Tensor:
    """The reference's training resampling: FPS to ``point_all``, then a random ``npoints`` subset.

    Args:
        points: (B, N, C) stored clouds.
        npoints: points per output cloud.
        point_all: FPS size; default :func:`point_all_for` (1200 for 1024, ..., capped by N).
        generator: torch generator for the subset draw.
        shared: one subset draw per batch (reference) or one per cloud.

    Returns:
        (B, npoints, C).
    """
    if point_all is None:
        point_all = point_all_for(npoints, points.shape[1])
    return random_subset(fps_sample(points, point_all), npoints, generator, shared)


def vote_views(
    points: torch.Tensor,
    npoints: int,
    times: int = 10,
    transform: BatchTransform | None = None,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """The reference's test-time voting inputs: FPS once, then ``times`` random subsets.

    Args:
        points: (B, N, C) stored clouds (the eval batch's ``points_raw``).
        npoints: points per view.
        times: number of views (10 in the reference).
        transform: test-time transform applied to each view (DataModule's ``vote_transform``).
        generator: torch generator for subsets and transforms.

    Returns:
        ``times`` tensors of shape (B, npoints, C); average the model's logits over them.
    """
    pooled = fps_sample(points, point_all_for(npoints, points.shape[1]))
    views = []
    for _ in range(times):
        view = random_subset(pooled, npoints, generator)
        views.append(transform(view, generator=generator) if transform is not None else view)
    return views
