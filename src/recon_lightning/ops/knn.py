"""k nearest neighbours of query points among a point set, batched.

Every backend only *finds* the neighbour indices, without autograd; :func:`knn` then gathers the
neighbours and recomputes their squared distances with autograd, so gradients flow to both inputs
and no differentiable (B, M, N) matrix is ever held.

Backends (``backend=``):

* ``torch``: dense distances in bounded query blocks and ``topk``; any device, the reference.
* ``numba``: compiled brute force, parallel over queries, O(B·M·k) memory; CPU.
* ``kdtree``: pykdtree, one tree for the whole batch; CPU clouds of thousands of points and more.
* ``keops``: pykeops ``argKmin`` on a symbolic distance matrix; the GPU path.
* ``auto``: CUDA -> ``keops`` (``torch`` if KeOps is unavailable, with one warning); CPU ->
  ``numba`` while the brute-force work B·M·N is small, else ``kdtree`` (thresholds measured in
  benchmarks/ops.py, docs/benchmarks-ops.md).
"""

from __future__ import annotations

import torch

from ._backend import as_numpy, check_backend, numba_threads, require_cpu, with_keops_fallback
from ._checks import check_count, check_points, check_same_batch
from .fps import gather_points

#: Elements of one dense distance block in the torch path (bounds peak memory).
_TORCH_BLOCK_ELEMS = 1 << 24
#: CPU ``auto``: compiled brute force while candidates per query N <= this and the total work
#: B·M·N <= _BRUTE_MAX_PAIRS; measured crossover with the KD-tree on the 2-core benchmark machine.
_BRUTE_MAX_N = 8192
_BRUTE_MAX_PAIRS = 1 << 26

KNN_BACKENDS = ("auto", "torch", "numba", "kdtree", "keops")


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


def knn_indices_numba(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Compiled brute force on CPU (see ``_knn_numba``); (B, M, k) int64, nearest first."""
    from ._knn_numba import knn_brute

    numba_threads()
    q, p = as_numpy(query), as_numpy(points)
    if q.dtype != p.dtype:
        q, p = q.astype("float32"), p.astype("float32")
    return torch.from_numpy(knn_brute(q, p, k))


def _auto_cpu(query: torch.Tensor, points: torch.Tensor) -> str:
    b, m, _ = query.shape
    n = points.shape[1]
    return "numba" if n <= _BRUTE_MAX_N and b * m * n <= _BRUTE_MAX_PAIRS else "kdtree"


def knn_indices(query: torch.Tensor, points: torch.Tensor, k: int, backend: str) -> torch.Tensor:
    """Neighbour indices (B, M, k) int64, nearest first, by the chosen backend (no validation)."""
    if backend == "auto":
        if query.device.type == "cuda":
            return with_keops_fallback(
                "knn",
                lambda: knn_indices(query, points, k, "keops"),
                lambda: knn_indices_torch(query, points, k),
            )
        backend = _auto_cpu(query, points) if query.device.type == "cpu" else "torch"
    if backend == "torch":
        return knn_indices_torch(query, points, k)
    if backend == "keops":
        from ._keops import knn_indices_keops

        return knn_indices_keops(query, points, k)
    require_cpu("knn", backend, query)
    if backend == "numba":
        return knn_indices_numba(query, points, k)
    from ._kdtree import knn_indices_kdtree

    return knn_indices_kdtree(query, points, k)


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
        backend: ``"auto"``, ``"torch"``, ``"numba"``, ``"kdtree"`` or ``"keops"`` (module doc).

    Returns:
        ``(sq_dists, idx)``, both (B, M, k), nearest first; ``sq_dists`` is differentiable in
        ``query`` and ``points``. Near-ties may order differently across backends.
    """
    check_points("query", query)
    check_points("points", points)
    check_same_batch("query", query, "points", points)
    k = check_count("k", k, points.shape[1], "N")
    check_backend("knn", backend, KNN_BACKENDS)
    idx = knn_indices(query, points, k, backend)
    return sq_dist_gathered(query, points, idx), idx
