"""k nearest neighbours of query points among a point set, batched."""

from __future__ import annotations

import torch

from ._checks import check_points, check_same_batch
from .fps import gather_points

#: Elements of one dense distance block in the torch path (bounds peak memory).
_TORCH_BLOCK_ELEMS = 1 << 24


def knn_indices_torch(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Reference path: dense squared distances in query blocks, ``topk`` smallest, sorted.

    Returns (B, M, k) int64 indices, nearest first. Runs without autograd.
    """
    b, m, _ = query.shape
    n = points.shape[1]
    block = max(1, _TORCH_BLOCK_ELEMS // max(1, b * n))
    out = []
    with torch.no_grad():
        p_sq = (points * points).sum(-1).unsqueeze(1)  # (B, 1, N)
        for s in range(0, m, block):
            q = query[:, s : s + block]
            d = (q * q).sum(-1, keepdim=True) - 2.0 * q @ points.transpose(1, 2) + p_sq
            out.append(d.topk(k, dim=-1, largest=False, sorted=True).indices)
    return torch.cat(out, dim=1)


def sq_dist_gathered(query: torch.Tensor, points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Squared distances from ``query`` (B, M, 3) to ``points`` gathered by ``idx`` (B, M, k).

    Computed from coordinate differences, with autograd, so only (B, M, k) values are held.
    """
    nbr = gather_points(points, idx)  # (B, M, k, 3)
    diff = nbr - query.unsqueeze(2)
    return (diff * diff).sum(-1)


def knn(
    query: torch.Tensor, points: torch.Tensor, k: int, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours.

    Args:
        query: (B, M, 3) query points.
        points: (B, N, 3) points searched.
        k: neighbours per query, 1 <= k <= N.
        backend: ``"auto"`` or ``"torch"``.

    Returns:
        ``(sq_dists, idx)``, both (B, M, k), nearest first; ``sq_dists`` is differentiable in
        ``query`` and ``points``.
    """
    check_points("query", query)
    check_points("points", points)
    check_same_batch("query", query, "points", points)
    if not 1 <= k <= points.shape[1]:
        raise ValueError(f"k must be in [1, N={points.shape[1]}]; got k={k}")
    if backend not in ("auto", "torch"):
        raise ValueError(f"unknown kNN backend {backend!r}; choose 'auto' or 'torch'")
    idx = knn_indices_torch(query, points, k)
    return sq_dist_gathered(query, points, idx), idx
