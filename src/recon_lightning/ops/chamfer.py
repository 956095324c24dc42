"""Chamfer distances with the reference's formulas (extensions/chamfer_dist).

``chamfer_l2`` = mean over X of min_y |x-y|² + mean over Y of min_x |x-y|² (means over all B·N and
B·M points, the two terms summed). ``chamfer_l1`` = (mean sqrt(d1) + mean sqrt(d2)) / 2.

The nearest neighbours are found without autograd by a backend, then gathered, and the squared
distances recomputed with autograd: gradients are those of the reference kernel (ties to the lowest
index) and memory stays O(B·(N+M)). Backends as for :func:`~recon_lightning.ops.knn.knn`; the
numba one finds both directions in one sweep over the pairs for small sets (the patch case) and
with its tree search (k=1) for larger ones; the Triton one runs its fused running-minimum kernel
once per direction. ``auto``: ``numba`` on CPU; on CUDA dense torch while the (B, N, M) distance
matrix fits in ``_CUDA_DENSE_MAX_BYTES``, else ``keops``, else ``triton``, else ``torch``.
Under autocast the distances are float32 (half-precision inputs are promoted, as autocast's own
``cdist``).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _triton
from ._backend import (
    as_numpy,
    autocast_off,
    check_backend,
    dense_bytes,
    full_precision,
    require_cpu,
    with_keops_fallback,
    with_triton_fallback,
)
from ._checks import check_points, check_same_batch
from ._parallel import ranges, run
from .fps import gather_points
from .knn import knn_indices, knn_indices_torch

#: numba backend: the fused both-direction sweep while both sets have <= _BRUTE_MAX_N points,
#: else the tree search (measured crossover, docs/benchmarks-ops.md).
_BRUTE_MAX_N = 512
#: ``auto`` on CUDA: dense torch while the (B, N, M) distance matrix has at most this many bytes,
#: KeOps or Triton above. Not measured yet (no GPU here); ``benchmarks/ops.py --device cuda``.
_CUDA_DENSE_MAX_BYTES = 64 << 20

CHAMFER_BACKENDS = ("auto", "torch", "numba", "kdtree", "keops", "triton")


def _nearest_numba(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if max(x.shape[1], y.shape[1]) > _BRUTE_MAX_N:
        return _nearest_by_knn(x, y, "numba")
    from ._knn_numba import nearest_both

    xn, yn = as_numpy(x), as_numpy(y)
    i1 = np.empty(xn.shape[:2], np.int64)
    i2 = np.empty(yn.shape[:2], np.int64)
    run(nearest_both, [(xn, yn, b0, b1, i1, i2) for b0, b1 in ranges(len(xn))])
    return torch.from_numpy(i1), torch.from_numpy(i2)


def _nearest_by_knn(
    x: torch.Tensor, y: torch.Tensor, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return knn_indices(x, y, 1, backend)[..., 0], knn_indices(y, x, 1, backend)[..., 0]


def nearest_indices(
    x: torch.Tensor, y: torch.Tensor, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour indices in both directions, without autograd.

    Args:
        x: (B, N, 3); y: (B, M, 3).

    Returns:
        ``(idx1, idx2)``: (B, N) int64 into ``y`` and (B, M) int64 into ``x``.
    """
    if backend == "auto":
        if x.device.type == "cuda":
            return _nearest_cuda(x, y)
        backend = "numba" if x.device.type == "cpu" else "torch"
    if backend == "numba":
        require_cpu("chamfer", backend, x)
        return _nearest_numba(x, y)
    if backend == "torch":
        return _nearest_torch(x, y)
    if backend == "triton":
        _triton.require_triton("chamfer", x)
    return _nearest_by_knn(x, y, backend)


def _nearest_torch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return knn_indices_torch(x, y, 1)[..., 0], knn_indices_torch(y, x, 1)[..., 0]


def _nearest_cuda(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``auto`` on CUDA: dense torch for small jobs, else KeOps, else Triton, else torch."""
    if dense_bytes(x, y) <= _CUDA_DENSE_MAX_BYTES:
        return _nearest_torch(x, y)
    return with_keops_fallback(
        "chamfer",
        lambda: _nearest_by_knn(x, y, "keops"),
        lambda: with_triton_fallback(
            "chamfer", lambda: _nearest_by_knn(x, y, "triton"), lambda: _nearest_torch(x, y)
        ),
    )


def nearest_sq_dists(
    pred: torch.Tensor, target: torch.Tensor, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable squared distance of every point to its nearest neighbour in the other set.

    Args:
        pred: (B, N, 3); target: (B, M, 3).
        backend: ``"auto"``, ``"torch"``, ``"numba"``, ``"kdtree"``, ``"keops"`` or ``"triton"``.

    Returns:
        ``(dist1, dist2)``: (B, N) for pred -> target and (B, M) for target -> pred; float32
        under autocast when an input is half precision.
    """
    check_points("pred", pred)
    check_points("target", target)
    pred, target = full_precision(pred, target)
    check_same_batch("pred", pred, "target", target)
    check_backend("chamfer", backend, CHAMFER_BACKENDS)
    with autocast_off(pred):
        idx1, idx2 = nearest_indices(pred, target, backend)
        idx1, idx2 = idx1.to(pred.device), idx2.to(pred.device)
        d1 = (pred - gather_points(target, idx1)).square().sum(-1)
        d2 = (target - gather_points(pred, idx2)).square().sum(-1)
    return d1, d2


def chamfer_l2(pred: torch.Tensor, target: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Reference ``ChamferDistanceL2``: mean(dist1) + mean(dist2), squared distances. Scalar."""
    d1, d2 = nearest_sq_dists(pred, target, backend)
    return d1.mean() + d2.mean()


def chamfer_l1(pred: torch.Tensor, target: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Reference ``ChamferDistanceL1``: (mean(sqrt dist1) + mean(sqrt dist2)) / 2. Scalar."""
    d1, d2 = nearest_sq_dists(pred, target, backend)
    return (d1.sqrt().mean() + d2.sqrt().mean()) / 2
